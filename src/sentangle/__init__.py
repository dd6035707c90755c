"""sentangle: multimodal sentiment analysis with disentangled representations."""

from sentangle.api import create_model, describe, list_datasets, list_models, load_checkpoint, load_dataset, train
from sentangle.config import make_config
from sentangle.core.version import __version__

__all__ = [
    "train",
    "make_config",
    "create_model",
    "list_models",
    "load_dataset",
    "list_datasets",
    "describe",
    "load_checkpoint",
    "__version__",
]
