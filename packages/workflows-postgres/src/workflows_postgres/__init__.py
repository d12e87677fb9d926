"""PostgreSQL store for workflows."""

from importlib import metadata as _metadata

# The version is written once, in pyproject.toml, and read back from the installed
# distribution. No fallback for a copy that is not installed: it could not run anyway (core finds
# its store through the installed entry points).
__version__ = _metadata.version("workflows-postgres")
