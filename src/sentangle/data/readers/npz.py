"""Reader for utterance-level feature files (.npz), e.g. the bc-LSTM MOSI release.

Layout: 'id' (N,), 'label' (N,), a split column (N,) with values train/valid/test, and one (N, d)
array per modality. Each utterance vector becomes a sequence of one frame, so the same models
run on it as on frame-level data.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.data.batch import MODALITIES
from sentangle.data.dataset import SPLITS, MSADataset, Split
from sentangle.data.readers.mmsa import float_array, id_strings, label_vector


def read_npz_utterances(
    path: str | Path, modalities=("text", "audio"), split_key: str = "split", name: str = "npz"
) -> MSADataset:
    """Read an utterance-feature .npz, using the file's own split column (never re-splitting)."""
    path = Path(path)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ConfigError(f"unknown modalities {unknown}; expected some of {MODALITIES}")
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an .npz file")
    try:
        # allow_pickle=False: an .npz can hold pickled object arrays, which could run code on load.
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            needed = ["id", "label", split_key, *modalities]
            missing = [k for k in needed if k not in keys]
            if missing:
                raise DataError(f"{path}: missing key(s) {missing}; found {sorted(keys)}")
            arrays = {}
            for k in needed:
                try:
                    arrays[k] = z[k]
                except ValueError as e:  # object arrays need pickle, which is refused
                    raise DataError(
                        f"{path}: key {k!r} is an object array ({e}); expected plain numbers/strings"
                    ) from e
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot be read as an .npz ({type(e).__name__}: {e})") from e

    labels = label_vector(arrays["label"], path, "", "label")
    n = len(labels)
    ids = id_strings(arrays["id"], n, path, "", "id")
    split_col = np.asarray(id_strings(arrays[split_key], n, path, "", split_key))
    bad = sorted(str(v) for v in set(split_col) - set(SPLITS))  # str: numpy 2 would print np.str_('dev')
    if bad:
        raise DataError(f"{path}: {split_key!r} has value(s) {bad}; expected only {list(SPLITS)}")
    feats = {}
    for m in modalities:
        x = float_array(arrays[m], path, "", m, 2)
        if x.shape[0] != n:
            raise DataError(f"{path}: {m!r} has shape {x.shape} but there are {n} labels; expected ({n}, d)")
        feats[m] = x[:, None, :]

    splits = {}
    for s in SPLITS:
        idx = np.flatnonzero(split_col == s)
        if idx.size == 0:
            continue  # validate() names the missing split
        splits[s] = Split(
            features={m: np.ascontiguousarray(x[idx]) for m, x in feats.items()},
            masks={m: np.ones((idx.size, 1), dtype=bool) for m in feats},
            labels=labels[idx],
            ids=[ids[i] for i in idx],
        )
    ds = MSADataset(
        name=name,
        splits=splits,
        source=str(path),
        info={
            "format": "npz_utterances",
            "split_key": split_key,
            "split_sizes": {s: len(sp) for s, sp in splits.items()},
        },
    )
    return ds.validate(required=SPLITS)
