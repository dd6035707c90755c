"""sentangle: multimodal sentiment analysis with disentangled representations."""

from sentangle.api import *  # noqa: F403  (the API is the package's public surface; api.__all__ lists it)
from sentangle.api import __all__ as _api
from sentangle.core.version import __version__

__all__ = [*_api, "__version__"]
