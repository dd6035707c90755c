"""Grouped cross-validation (train.protocol: grouped_cv): speaker-independent folds.

Speech-emotion benchmarks (EmoDB: 10 speakers, RAVDESS: 24 actors) have no fixed split; they are
reported over folds that never put a speaker in training and test at once. Here:

* A sample's group is the prefix of its id before "$_$" (ids are "<speaker>$_$<clip>").
* Every split of the dataset is pooled, the group names are sorted and dealt round-robin into K
  folds (train.folds; 0 or "loso": one fold per group): fold i gets the sorted groups i, i+K,
  i+2K ... so fold sizes differ by at most one group.
* Fold k trains on every fold but k and k+1 (mod K), selects its epoch on fold k+1 (valid) and
  predicts fold k (test). Every sample is in exactly one fold's test and one fold's valid part.
* Normalisation statistics are computed on each fold's train part alone: the dataset is loaded
  unnormalised and each fold normalises itself, so no test speaker's features shape the inputs.

The training itself is the runner's per-seed function, called once per fold (runs/runner.py);
this module only cuts the data and pools the folds' predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.data.dataset import SPLITS, MSADataset, Split
from sentangle.evaluation.metrics import compute_metrics
from sentangle.runs.predictions import stored_predictions

SEPARATOR = "$_$"
POOLED_SPLITS = ("valid", "test")  # each sample is in one fold's valid and one fold's test part


def group_of(sample_id: str) -> str | None:
    """The speaker (group) of a sample id "<group>$_$<clip>", or None when the id has no "$_$"."""
    return sample_id.split(SEPARATOR, 1)[0] if SEPARATOR in sample_id else None


def _pad(x: np.ndarray, t: int) -> np.ndarray:
    return x if x.shape[1] == t else np.pad(x, [(0, 0), (0, t - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def concat_splits(parts: list[Split]) -> Split:
    """One split of the samples of `parts`, in order; sequences padded to the longest (zeros,
    mask False; token ids 0 beyond their attention mask)."""
    first = parts[0]

    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        t = max(a.shape[1] for a in arrays)
        return np.concatenate([_pad(np.asarray(a), t) for a in arrays])

    return Split(
        features={m: joined([p.features[m] for p in parts]) for m in first.features},
        masks={m: joined([p.masks[m] for p in parts]) for m in first.masks},
        labels=np.concatenate([p.labels for p in parts]),
        ids=[i for p in parts for i in p.ids],
        texts=None if first.texts is None else [t for p in parts for t in p.texts or []],
        tokens=None if first.tokens is None else {k: joined([p.tokens[k] for p in parts]) for k in first.tokens},  # type: ignore[index]
    )


class Folds:
    """The folds of a dataset: `plan[k]` = {split: sorted group names} of fold k."""

    def __init__(self, ds: MSADataset, folds: int):
        where = ds.source or ds.name
        if ds.normalizers:
            raise ConfigError(
                f"{where}: train.protocol=grouped_cv normalises each fold with its own training speakers' "
                "statistics, but this dataset is already normalised (with its train split's); load it with "
                "normalize=() (runs.runner.dataset_from_config does for a grouped_cv config)"
            )
        self.ds = ds
        self.pooled = concat_splits([ds.splits[s] for s in SPLITS if s in ds.splits])
        groups: list[str] = []
        for i in self.pooled.ids:
            g = group_of(i)
            if g is None:
                raise DataError(
                    f"{where}: train.protocol=grouped_cv groups samples by the speaker before '{SEPARATOR}' in "
                    f"their id (<speaker>{SEPARATOR}<clip>), but sample {i!r} has no '{SEPARATOR}'"
                )
            groups.append(g)
        self.groups = np.asarray(groups)
        names = sorted(set(groups))
        shown = f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
        if len(names) < 3:
            raise DataError(
                f"{where}: train.protocol=grouped_cv needs at least 3 speakers (a fold each for test, valid and "
                f"train; the id prefix before '{SEPARATOR}'), found {len(names)}: {shown}"
            )
        k = folds or len(names)
        if k > len(names):
            raise ConfigError(
                f"train.folds={folds}: more folds than {where} has speakers ({len(names)}, the id prefix before "
                f"'{SEPARATOR}': {shown}); expected at most {len(names)}, or 0 / loso for one fold per speaker"
            )
        dealt = [names[i::k] for i in range(k)]
        self.plan = [
            {
                "train": sorted(g for j, fold in enumerate(dealt) if j not in (i, (i + 1) % k) for g in fold),
                "valid": dealt[(i + 1) % k],
                "test": dealt[i],
            }
            for i in range(k)
        ]

    def __len__(self) -> int:
        return len(self.plan)

    def dataset(self, k: int, normalize=("audio", "vision")) -> MSADataset:
        """Fold k as a dataset with train / valid / test splits, normalised on its train part."""
        ds = self.ds
        splits = {s: self.pooled.subset(np.flatnonzero(np.isin(self.groups, self.plan[k][s]))) for s in SPLITS}
        fold = MSADataset(
            name=ds.name,
            splits=splits,
            task=ds.task,
            class_names=ds.class_names,
            label_range=ds.label_range,
            source=f"{ds.source or ds.name} (grouped_cv fold {k})",
            text_encoder=ds.text_encoder,
            info={key: v for key, v in ds.info.items() if key != "normalization"},
        )
        fold.validate(required=SPLITS)
        if normalize:
            fold.normalize(tuple(normalize))
        return fold


def pooled_predictions(
    fold_dirs: list[Path], splits=POOLED_SPLITS
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, list[str]]], list[str] | None]:
    """{split: (predictions, labels, ids)} of the folds' stored predictions, concatenated in fold
    order, and the class names; every sample occurs once per split."""
    out, names = {}, None
    for split in splits:
        parts = []
        for d in fold_dirs:
            stored = stored_predictions(d, split)
            if stored is None:
                raise DataError(f"{d}: no {split} predictions stored; the fold has to be trained again")
            parts.append(stored)
            names = stored[3]
        out[split] = (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            [i for p in parts for i in p[2]],
        )
    return out, names


def pooled_metrics(
    pooled: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], task: str, num_classes: int | None
) -> dict[str, dict[str, float]]:
    """Each split's metrics over the pooled predictions: one number per seed, every sample predicted
    by the model that did not train on its speaker (not a mean of per-fold metrics, which weighs a
    small fold like a large one)."""
    return {s: compute_metrics(task, pred, label, num_classes) for s, (pred, label, _) in pooled.items()}
