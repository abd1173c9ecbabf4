"""``python -m fpstore`` runs the command-line interface."""

from fpstore.cli import main

main()
