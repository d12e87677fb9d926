"""currant: the all-in-one distribution of workflows. The API is ``import workflows``."""

from workflows import *  # noqa: F403
from workflows import __all__ as __all__

__version__ = "0.1.0"
