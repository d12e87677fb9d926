"""PostgreSQL store for workflows."""

# The one version source: pyproject.toml reads it (a plain literal, so the build need not import).
__version__ = "0.1.0"
