"""currant: the all-in-one distribution of workflows. The API is ``import workflows``."""

from importlib import metadata as _metadata

from workflows import *  # noqa: F403
from workflows import __all__ as __all__

# The version is written once, in pyproject.toml, and read back from the installed
# distribution. No fallback for a copy that is not installed: it could not run anyway (core finds
# its store through the installed entry points).
__version__ = _metadata.version("currant")
