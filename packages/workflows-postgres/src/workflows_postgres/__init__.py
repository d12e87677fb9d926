"""PostgreSQL store for workflows."""

__version__ = "0.1.0"
