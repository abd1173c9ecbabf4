"""The storage layer: every SQL statement and every PostgreSQL connection of fpstore."""
