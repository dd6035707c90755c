from sentangle.core.errors import DataError
from sentangle.data.batch import MODALITIES, Batch
from sentangle.data.dataset import SPLITS, MSADataset, Split, collate, full_masks

__all__ = ["MODALITIES", "SPLITS", "Batch", "DataError", "MSADataset", "Split", "collate", "full_masks"]
