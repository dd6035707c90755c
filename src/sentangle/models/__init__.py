"""Importing this package registers every model."""
from . import lf_dnn, text_only  # noqa: F401  (registration side effect)
from .base import ModelOutput, MSAModel, create_model, list_models

__all__ = ["ModelOutput", "MSAModel", "create_model", "list_models"]
