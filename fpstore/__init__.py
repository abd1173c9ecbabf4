"""fpstore: an audio fingerprint store in PostgreSQL."""

__version__ = "0.1.0"
