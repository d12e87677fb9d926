"""currant: the all-in-one distribution of workflows. The API is ``import workflows``."""

from workflows import *  # noqa: F403
from workflows import __all__ as __all__

# The one version source: pyproject.toml reads it (a plain literal, so the build need not import).
__version__ = "0.1.0"
