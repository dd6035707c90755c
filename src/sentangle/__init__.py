"""sentangle: multimodal sentiment analysis with disentangled representations."""
__version__ = "0.1.0"

from .api import create_model, describe, list_datasets, list_models, load_checkpoint, load_dataset, make_config, train  # noqa: E402

__all__ = ["train", "make_config", "create_model", "list_models", "load_dataset", "list_datasets", "describe",
           "load_checkpoint", "__version__"]
