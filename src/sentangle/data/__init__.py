from .batch import MODALITIES, Batch
from .dataset import SPLITS, DataError, MSADataset, Split, collate, full_masks

__all__ = ["MODALITIES", "SPLITS", "Batch", "DataError", "MSADataset", "Split", "collate", "full_masks"]
