"""Importing this package registers every model: each module in it registers its own."""

import importlib
import pkgutil

from sentangle.models.base import ModelOutput, MSAModel, create_model, list_models, load_model

# Model files register themselves with @MODELS.register; importing them all here means a new
# model is one new file, with no list to keep in step.
for _info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
    importlib.import_module(_info.name)

__all__ = ["ModelOutput", "MSAModel", "create_model", "list_models", "load_model"]
