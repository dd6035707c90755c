"""Reader for the word-aligned pickles of the MulT repository (`mosi_data.pkl`, `mosei_senti_data.pkl`).

Layout: {'train' | 'valid' | 'test': {...}} with, per split of N samples,
  'text' (N, 50, 300) GloVe, 'audio' (N, 50, 74) COVAREP, 'vision' (N, 50, 35) Facet,
  'labels' (N, 1, 1) sentiment, 'id' (N, 3) or (N,) strings/bytes.

Padding: these files are LEFT-padded; the padding frames are all-zero rows at the start of each
sequence. The files carry no lengths, so each modality's mask is "this frame is not all zeros",
computed before -inf is replaced. Frames keep their positions (the three modalities share one
word-aligned time axis), so a mask can start with False and, where a real frame happens to be all
zeros (e.g. a word without a GloVe vector), have False inside the sequence: models must use the
mask itself, not `mask.sum()` as a prefix length.
"""

from __future__ import annotations

from pathlib import Path

from sentangle.core.errors import DataError
from sentangle.data.dataset import SPLITS, MSADataset, Split
from sentangle.data.readers.mmsa import (
    check_rows,
    float_array,
    id_strings,
    label_vector,
    nonzero_frames,
    pickle_splits,
    replace_neg_inf,
)
from sentangle.data.safe_pickle import load_pickle


def read_mult_pickle(path: str | Path, name: str = "mult", trusted: bool = False, data=None) -> MSADataset:
    """Read a MulT aligned-data pickle into an `MSADataset` (see the module docstring for masks).

    `data`: the already unpickled content of `path`, to avoid unpickling twice."""
    path = Path(path)
    raw = pickle_splits(load_pickle(path, trusted=trusted) if data is None else data, path)
    splits, neg_inf = {}, {}
    for s, d in raw.items():
        if "labels" not in d:
            raise DataError(
                f"{path}: split {s!r} has no 'labels'; found keys {sorted(map(str, d))}, expected (N, 1, 1)"
            )
        labels = label_vector(d["labels"], path, s, "labels")
        n = len(labels)
        if "id" not in d:
            raise DataError(
                f"{path}: split {s!r} has no 'id'; found keys {sorted(map(str, d))}, expected (N, 3) or (N,)"
            )
        ids = id_strings(d["id"], n, path, s)
        features, masks = {}, {}
        neg_inf[s] = 0
        for m in ("text", "audio", "vision"):
            if m not in d:
                continue
            x = float_array(d[m], path, s, m, 3)
            check_rows(x, n, path, s, m)
            masks[m] = nonzero_frames(x)
            if m == "audio":
                neg_inf[s] = replace_neg_inf(x, path, s)
            features[m] = x
        if not features:
            raise DataError(
                f"{path}: split {s!r} has no modality; expected at least one of 'text', 'audio', "
                f"'vision', found keys {sorted(map(str, d))}"
            )
        splits[s] = Split(features=features, masks=masks, labels=labels, ids=ids)
    ds = MSADataset(
        name=name,
        splits=splits,
        source=str(path),
        info={"format": "mult", "padding": "left", "replaced_neg_inf": neg_inf},
    )
    return ds.validate(required=SPLITS)
