"""A trained model and the data it is asked about: what `sentangle eval` and `predict` read.

The model comes from a run's checkpoint.pt or from a portable model folder (`sentangle export`).
When it carries its training data's normalisation statistics, the input is normalised with those,
not with statistics of the input's own training split: a clip then gets the same prediction
whatever other clips its file holds.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from sentangle.config import RunConfig
from sentangle.core.errors import DataError, UserError
from sentangle.data.dataset import MSADataset, Standardize
from sentangle.data.named import load_dataset
from sentangle.data.preprocessing import preprocessing_statistics
from sentangle.models.base import MSAModel, load_model
from sentangle.models.portable import is_model_folder
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.runner import dataset_from_config


@dataclass
class Trained:
    model: MSAModel
    cfg: RunConfig | None  # the run's config (a checkpoint); None for a model folder
    preprocessing: dict | None  # None: a checkpoint written before statistics were stored
    input_dims: dict[str, int]  # the feature sizes it reads (text tokens not included)
    source: Path

    @property
    def what(self) -> str:
        return f"{'model folder' if self.cfg is None else 'checkpoint'} {self.source}"


def load_trained(path: str | os.PathLike, allow_unverified: bool = False) -> Trained:
    """A checkpoint.pt, or a model folder (models/portable.py)."""
    path = Path(path)
    if is_model_folder(path):
        model = load_model(path)
        assert model.build_args is not None  # load_model builds through create_model
        return Trained(model, None, model.preprocessing, dict(model.build_args["input_dims"]), path)
    model, cfg, payload = load_checkpoint(path, allow_unverified=allow_unverified)
    return Trained(model, cfg, payload.get("preprocessing"), dict(payload["data"]["input_dims"]), path)


def recomputed_statistics(trained: Trained, root=None) -> dict[str, Standardize] | None:
    """For a checkpoint written before statistics were stored: those of its run's dataset, or None
    when that cannot be loaded (with a warning saying what happens instead)."""
    assert trained.cfg is not None
    try:
        return dataset_from_config(trained.cfg, root).normalizers
    except UserError as e:
        warnings.warn(
            f"{trained.what} carries no normalisation statistics (written before they were stored) and its "
            f"training data cannot be loaded to recompute them ({e}); normalising the input with its own "
            "training split instead, so a clip's prediction depends on the other clips of the input",
            stacklevel=3,
        )
        return None


def input_dataset(trained: Trained, data: str | None = None, root=None, trusted: bool = False) -> MSADataset:
    """`data` (a dataset name or feature file; default: the model's own dataset) as the model reads
    it: normalised with the model's training statistics where they are known."""
    cfg, features = trained.cfg, (trained.preprocessing or {}).get("features") or {}
    stats = preprocessing_statistics(trained.preprocessing, trained.what)
    if stats is None and data and cfg is not None:  # (on its own dataset it normalises itself as in training)
        stats = recomputed_statistics(trained, root)
    if stats is None and cfg is None:
        warnings.warn(
            f"{trained.what} carries no normalisation statistics (saved without its data's preprocessing); "
            "normalising the input with its own training split",
            stacklevel=2,
        )
    options: dict = {} if stats is None else {"normalize": ()}
    text = cfg.model.get("text_encoder") if cfg is not None else features.get("text_encoder")
    if data:
        pickled = Path(data).suffix.lower() in (".pkl", ".pickle")  # the only files with a trust option
        trust: dict = {"trusted": trusted} if pickled else {}
        ds = load_dataset(data, root=root, text_encoder=text, **trust, **options)
    elif cfg is not None:
        ds = dataset_from_config(cfg, root, **options)
    else:
        spec = dict(features.get("dataset") or {})
        name = spec.pop("name", None)
        if name is None or Path(name).suffix:
            raise DataError(
                f"{trained.what} was trained on {name or 'data it does not name'}, which it does not carry; "
                "give the data to read (a dataset name or feature file)"
            )
        ds = load_dataset(name, root=root, text_encoder=text, **{**spec, **options})
    check_inputs(trained, ds, data)
    return ds if stats is None else ds.normalize_with(stats)


def check_inputs(trained: Trained, ds: MSADataset, data: str | None) -> None:
    """DataError for feature sizes the model was not trained on; a warning for modalities it was
    trained with that the data lacks (the model reads them as missing)."""
    want, have = trained.input_dims, ds.input_dims
    wrong = {m: (have.get(m), d) for m, d in want.items() if m in have and have[m] != d}
    if wrong:
        raise DataError(f"{ds.source or data}: feature sizes {wrong} (got, expected) do not match {trained.what}")
    absent = sorted(set(want) - set(have))
    if absent:
        # The model runs on (it treats the modality as wholly missing), but its numbers are then
        # those of a robustness condition, not of the trained model on complete data.
        warnings.warn(
            f"{ds.source or data} has no {', '.join(absent)}, which {trained.what} "
            f"was trained with: predicting with {'it' if len(absent) == 1 else 'them'} missing "
            "(zeros, masked out)",
            stacklevel=3,
        )
