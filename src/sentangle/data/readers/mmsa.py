"""Reader for the MMSA toolkit feature pickles (`aligned_50.pkl`, `unaligned_50.pkl`).

Layout: {'train' | 'valid' | 'test': {key: array}} with, per split of N samples,
  'text'              (N, L, 768) text features (BERT outputs), and/or
  'text_bert'         (N, 3, L)   BERT input ids / attention mask / segment ids,
  'audio'             (N, Ta, da), 'vision' (N, Tv, dv),
  'audio_lengths', 'vision_lengths' (N,)  only in the unaligned files,
  'regression_labels' (N,)  (some versions: 'labels' = {'M': (N,)}),
  'id' (N,) strings, 'raw_text' (N,) strings.
Sequences are right-padded: the real frames come first.

The helpers below are shared with the MulT reader, which stores the same kind of pickle.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.data.dataset import SPLITS, MSADataset, Split, full_masks
from sentangle.data.safe_pickle import load_pickle

TEXT_CHOICES = ("auto", "features", "bert")


# ---- helpers shared with mult.py and npz.py ----------------------------------------------------
def _field(split: str, key: str) -> str:
    return f"{split}.{key}" if split else key


def pickle_splits(data, path: Path) -> dict[str, Mapping]:
    """The train/valid/test dicts of a feature pickle, or a DataError naming what is missing."""
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: top level is a {type(data).__name__}; expected a dict with keys {list(SPLITS)}")
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise DataError(
            f"{path}: missing split(s) {missing}; found keys {sorted(map(str, data))}, expected {list(SPLITS)}"
        )
    for s in SPLITS:
        if not isinstance(data[s], Mapping):
            raise DataError(f"{path}: split {s!r} is a {type(data[s]).__name__}; expected a dict of arrays")
    return {s: data[s] for s in SPLITS}


def float_array(value, path: Path, split: str, key: str, ndim: int) -> np.ndarray:
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {_field(split, key)} is not numeric ({e}); expected a float array") from e
    if x.ndim != ndim:
        want = {1: "(N,)", 2: "(N, d)", 3: "(N, T, d)"}[ndim]
        raise DataError(f"{path}: {_field(split, key)} has shape {x.shape}; expected {want}")
    return x


def check_rows(x: np.ndarray, n: int, path: Path, split: str, key: str) -> None:
    if x.shape[0] != n:
        raise DataError(
            f"{path}: {_field(split, key)} has shape {x.shape} ({x.shape[0]} rows) but there are {n} labels; "
            "expected one row per sample"
        )


def label_vector(value, path: Path, split: str, key: str) -> np.ndarray:
    """Labels as (N,) float32; accepts (N, 1) and (N, 1, 1) as stored by some releases."""
    try:
        y = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {_field(split, key)} is not numeric ({e}); expected (N,) sentiment scores") from e
    if y.ndim == 0 or any(d != 1 for d in y.shape[1:]):
        raise DataError(f"{path}: {_field(split, key)} has shape {y.shape}; expected (N,) sentiment scores")
    return y.reshape(-1)


def id_strings(value, n: int, path: Path, split: str, key: str = "id") -> list[str]:
    """Sample ids as strings; a 2-D id array (e.g. video, start, end) joins its non-empty parts with '_'."""
    ids = np.asarray(value)
    if ids.ndim not in (1, 2):
        raise DataError(f"{path}: {_field(split, key)} has shape {ids.shape}; expected (N,) or (N, parts)")
    check_rows(ids, n, path, split, key)

    def text(v) -> str:
        return (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip()

    if ids.ndim == 1:
        return [text(v) for v in ids]
    return ["_".join(p for p in map(text, row) if p) for row in ids]


def replace_neg_inf(x: np.ndarray, path: Path, split: str, key: str = "audio") -> int:
    """Set -inf to 0 in place, as every MOSI/MOSEI pipeline does for COVAREP audio (log of 0 energy).

    Returns the count and warns once, so the replacement is visible rather than silent.
    """
    where = np.isneginf(x)
    count = int(where.sum())
    if count:
        x[where] = 0.0
        warnings.warn(f"{path}: {_field(split, key)}: replaced {count} -inf values with 0", stacklevel=3)
    return count


def nonzero_frames(x: np.ndarray) -> np.ndarray:
    """Mask of frames that are not all zeros: the padding convention of these pickles."""
    return (x != 0).any(axis=-1)


# ---- MMSA ----------------------------------------------------------------------------------
def read_mmsa_pickle(
    path: str | Path,
    name: str = "mmsa",
    trusted: bool = False,
    text: str = "auto",
    bert_model: str = "bert-base-uncased",
    data: Mapping | None = None,
) -> MSADataset:
    """Read an MMSA `aligned_50.pkl` / `unaligned_50.pkl` into an `MSADataset`.

    `text`: "auto" uses the 'text' features when present and the 'text_bert' tokens otherwise;
    "features" requires the features, "bert" requires the tokens (stored in `Split.tokens` for an
    in-model encoder, named by `bert_model` in `dataset.text_encoder`). `data`: the already
    unpickled content of `path`, so a caller that looked inside does not unpickle twice.
    Masks: text from the text_bert attention mask if present, else its non-zero frames; audio and
    vision from '*_lengths' (unaligned files), else the text mask (aligned to the tokens) when
    text_bert is present, else all frames.
    """
    if text not in TEXT_CHOICES:
        raise ConfigError(f"text must be one of {TEXT_CHOICES}, got {text!r}")
    path = Path(path)
    raw = pickle_splits(load_pickle(path, trusted=trusted) if data is None else data, path)
    splits, neg_inf, clipped = {}, {}, {}
    for s, d in raw.items():
        splits[s], neg_inf[s], clipped[s] = _mmsa_split(d, path, s, text)
    info = {
        "format": "mmsa",
        "replaced_neg_inf": neg_inf,
        "aligned": not any("audio_lengths" in d or "vision_lengths" in d for d in raw.values()),
    }
    if any(clipped.values()):
        info["clipped_lengths"] = clipped
    uses_tokens = splits["train"].tokens is not None
    ds = MSADataset(
        name=name, splits=splits, source=str(path), info=info, text_encoder=bert_model if uses_tokens else None
    )
    return ds.validate(required=SPLITS)


def _mmsa_split(d: Mapping, path: Path, s: str, text: str) -> tuple[Split, int, dict[str, int]]:
    if "regression_labels" in d:
        labels = label_vector(d["regression_labels"], path, s, "regression_labels")
    elif isinstance(d.get("labels"), Mapping) and "M" in d["labels"]:
        labels = label_vector(d["labels"]["M"], path, s, "labels['M']")
    else:
        raise DataError(
            f"{path}: split {s!r} has no 'regression_labels' (nor 'labels' = {{'M': ...}}); "
            f"found keys {sorted(map(str, d))}"
        )
    n = len(labels)
    if "id" not in d:
        raise DataError(f"{path}: split {s!r} has no 'id'; found keys {sorted(map(str, d))}, expected sample ids (N,)")
    ids = id_strings(d["id"], n, path, s)

    attention = None
    if "text_bert" in d:
        bert = _token_array(d["text_bert"], n, path, s)
        input_ids, attention = bert[:, 0], bert[:, 1]

    features, masks, tokens = {}, {}, None
    use_tokens = text == "bert" or (text == "auto" and "text" not in d and attention is not None)
    if use_tokens:
        if attention is None:
            raise DataError(f"{path}: split {s!r} has no 'text_bert', but text='bert' asks for BERT tokens")
        tokens = {"input_ids": input_ids, "attention_mask": attention}
    elif "text" in d:
        x = float_array(d["text"], path, s, "text", 3)
        check_rows(x, n, path, s, "text")
        if attention is not None:
            if attention.shape != x.shape[:2]:
                raise DataError(
                    f"{path}: {s}.text_bert has {attention.shape[1]} tokens but {s}.text has "
                    f"{x.shape[1]} frames; expected one feature frame per token"
                )
            masks["text"] = attention.astype(bool)
        else:
            masks["text"] = nonzero_frames(x)
        features["text"] = x
    elif text == "features":
        raise DataError(f"{path}: split {s!r} has no 'text' features, but text='features' asks for them")

    neg_inf, clipped = 0, {}
    for m in ("audio", "vision"):
        if m not in d:
            continue
        x = float_array(d[m], path, s, m, 3)
        check_rows(x, n, path, s, m)
        if f"{m}_lengths" in d:
            masks[m], clipped[m] = _length_mask(d[f"{m}_lengths"], x, path, s, f"{m}_lengths")
        elif attention is not None:
            if x.shape[1] != attention.shape[1]:
                raise DataError(
                    f"{path}: {s}.{m} has {x.shape[1]} frames but text_bert has {attention.shape[1]} "
                    f"tokens and there is no '{m}_lengths'; expected aligned data (equal lengths) "
                    "or lengths for unaligned data"
                )
            masks[m] = attention.astype(bool)
        else:
            masks[m] = full_masks(x)
        if m == "audio":
            neg_inf = replace_neg_inf(x, path, s)
        features[m] = x

    if not features and tokens is None:
        raise DataError(
            f"{path}: split {s!r} has no modality; expected at least one of 'text', 'text_bert', "
            f"'audio', 'vision', found keys {sorted(map(str, d))}"
        )
    texts = None
    if "raw_text" in d:
        texts = id_strings(d["raw_text"], n, path, s, "raw_text")
    split = Split(features=features, masks=masks, labels=labels, ids=ids, texts=texts, tokens=tokens)
    return split, neg_inf, {m: c for m, c in clipped.items() if c}


def _token_array(value, n: int, path: Path, s: str) -> np.ndarray:
    try:
        t = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {s}.text_bert is not numeric ({e}); expected (N, 3, L) token ids") from e
    if t.ndim != 3 or t.shape[1] != 3:
        raise DataError(
            f"{path}: {s}.text_bert has shape {t.shape}; expected (N, 3, L): ids, attention mask, segment ids"
        )
    check_rows(t, n, path, s, "text_bert")
    if not np.isfinite(t).all() or (t != np.round(t)).any() or (t < 0).any():
        raise DataError(f"{path}: {s}.text_bert has non-integer or negative values; expected token ids")
    if not np.isin(t[:, 1], (0, 1)).all():
        raise DataError(f"{path}: {s}.text_bert row 1 (attention mask) has values other than 0/1")
    return t.astype(np.int64)


def _length_mask(value, x: np.ndarray, path: Path, s: str, key: str) -> tuple[np.ndarray, int]:
    lengths = label_vector(value, path, s, key)
    check_rows(lengths, x.shape[0], path, s, key)
    if not np.isfinite(lengths).all() or (lengths < 0).any() or (lengths != np.round(lengths)).any():
        raise DataError(f"{path}: {s}.{key} has negative, fractional or non-finite values; expected frame counts")
    # Some releases count frames before truncating to the padded length; keep the frames that exist.
    over = int((lengths > x.shape[1]).sum())
    if over:
        warnings.warn(f"{path}: {s}.{key}: {over} lengths exceed the {x.shape[1]} stored frames; clipped", stacklevel=4)
    return full_masks(x, lengths), over
