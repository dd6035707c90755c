"""UR-FUNNY (multimodal humor detection) from the release's pickles, all keyed by sample id.

Layout (ROC-HCI/UR-FUNNY, README and UR-FUNNY-V1.md; the RTIL/SATI and MISA loaders read the same):
  data_folds.pkl                   {'train': [id, ...], 'dev': [...], 'test': [...]}
  humor_label_sdk.pkl              {id: 1.0 humor / 0.0 not}
  language_sdk.pkl (V2)            {id: {'punchline_sentence': str, 'context_sentences': [str, ...],
                                         'punchline_embedding_indexes': [int], 'context_embedding_indexes': [[int]],
                                         'punchline_intervals', 'context_intervals'}}
  word_embedding_indexes_sdk.pkl (V1)  {id: {'punchline_embedding_indexes': [int], 'context_embedding_indexes': [[int]]}}
  word_list.pkl                    [word, ...]    the words the indexes point to (the MISA/SATI loaders)
  word_embedding_list.pkl          [vector, ...]  their GloVe 840B 300-d vectors (the V1 release)
  covarep_features_sdk.pkl         {id: {'punchline_features': (T, 81), 'context_features': [(T_i, 81), ...]}}
  openface_features_sdk.pkl        {id: {'punchline_features': (T, 75 in V1, 371 in V2), 'context_features': [...]}}
Audio and vision are word-aligned: frame t of the punchline is the average over word t.

Assumed where the documents are vague: a 'punchline_sentence' may also be a list of words (joined
with spaces), and each context sentence may be a string or a list of words; ids may be ints (the
shared V1 folds) or strings, and become strings here. Non-finite feature values become 0 (as the
release's loaders do with nan_to_num), counted in `info`.

Text is the raw punchline (optionally after its last `max_context` context sentences) through the
project's text encoder (`text='sentence'`), or the word-aligned GloVe vectors of
word_embedding_list.pkl (`text='glove'`). The fold 'dev' becomes the split 'valid'.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.data.dataset import MSADataset, Split
from sentangle.data.safe_pickle import load_pickle

CLASS_NAMES = ["not_humor", "humor"]
FOLDS = {"train": "train", "dev": "valid", "test": "test"}
FILES = {
    "folds": "data_folds.pkl",
    "labels": "humor_label_sdk.pkl",
    "language": "language_sdk.pkl",
    "indexes": "word_embedding_indexes_sdk.pkl",
    "words": "word_list.pkl",
    "vectors": "word_embedding_list.pkl",
    "audio": "covarep_features_sdk.pkl",
    "vision": "openface_features_sdk.pkl",
}
TEXT_CHOICES = ("auto", "sentence", "glove")


# ---- folds and labels ---------------------------------------------------------------------------
def read_urfunny_folds(folder, trusted: bool = False) -> dict[str, tuple[list, np.ndarray]]:
    """{'train' | 'valid' | 'test': (ids as stored, int64 labels)} from data_folds.pkl + humor_label_sdk.pkl."""
    folder = Path(folder)
    path = folder / FILES["folds"]
    folds = load_pickle(path, trusted=trusted)
    if not isinstance(folds, Mapping):
        raise DataError(f"{path}: top level is a {type(folds).__name__}; expected a dict with keys {list(FOLDS)}")
    missing = [k for k in FOLDS if k not in folds]
    if missing:
        raise DataError(
            f"{path}: missing fold(s) {missing}; found keys {sorted(map(str, folds))}, expected {list(FOLDS)}"
        )
    label_path = folder / FILES["labels"]
    labels = load_pickle(label_path, trusted=trusted)
    if not isinstance(labels, Mapping):
        raise DataError(f"{label_path}: top level is a {type(labels).__name__}; expected a dict id -> 0/1")
    seen: dict = {}
    out = {}
    for fold, split in FOLDS.items():
        ids = folds[fold]
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence | np.ndarray):
            raise DataError(f"{path}: fold {fold!r} is a {type(ids).__name__}; expected a list of sample ids")
        ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        if not ids:
            raise DataError(f"{path}: fold {fold!r} is empty; expected at least one sample id")
        y = np.empty(len(ids), dtype=np.int64)
        for i, sid in enumerate(ids):
            if sid in seen:
                raise DataError(
                    f"{path}: id {sid!r} is in fold {fold!r} and in fold {seen[sid]!r}; expected disjoint folds"
                )
            seen[sid] = fold
            if sid not in labels:
                raise DataError(
                    f"{label_path}: no label for id {sid!r} of fold {fold!r}; expected every fold id labelled"
                )
            value = labels[sid]
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = float("nan")
            if v not in (0.0, 1.0):
                raise DataError(f"{label_path}: id {sid!r} has label {value!r}; expected 0 (not humor) or 1 (humor)")
            y[i] = int(v)
        out[split] = (ids, y)
    return out


# ---- per-id records -------------------------------------------------------------------------------
def _load_dict(path: Path, trusted: bool) -> Mapping:
    data = load_pickle(path, trusted=trusted)
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: top level is a {type(data).__name__}; expected a dict keyed by sample id")
    return data


def _record(data: Mapping, path: Path, sid, key: str):
    if sid not in data:
        raise DataError(f"{path}: no entry for id {sid!r}; expected every id of data_folds.pkl")
    rec = data[sid]
    if not isinstance(rec, Mapping):
        raise DataError(f"{path}: id {sid!r} is a {type(rec).__name__}; expected a dict with key {key!r}")
    if key not in rec:
        raise DataError(f"{path}: id {sid!r} has no {key!r}; found keys {sorted(map(str, rec))}")
    return rec[key]


def _frames(value, path: Path, sid, key: str, dim: int | None) -> np.ndarray:
    """(T, d) float32 from a list of frames; an empty punchline is (0, d)."""
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: id {sid!r} {key}: not a numeric (T, d) array ({e})") from None
    if x.size == 0 and dim is not None:
        return np.zeros((0, dim), np.float32)
    if x.ndim != 2:
        raise DataError(f"{path}: id {sid!r} {key} has shape {x.shape}; expected (T, d): one feature vector per word")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{path}: id {sid!r} {key} has {x.shape[1]} features; other ids have {dim}")
    return x


def _context_list(value, path: Path, sid, key: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
        raise DataError(
            f"{path}: id {sid!r} {key} is a {type(value).__name__}; expected a list with one entry per context sentence"
        )
    return list(value)


def _sentence(value, path: Path, sid, key: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(isinstance(w, (str, bytes)) for w in value):
        return " ".join(w.decode("utf-8", "replace") if isinstance(w, bytes) else w for w in value)
    raise DataError(f"{path}: id {sid!r} {key} is a {type(value).__name__}; expected a sentence (str or list of words)")


def _indexes(value, path: Path, sid, key: str, size: int) -> np.ndarray:
    try:
        idx = np.asarray(value, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: id {sid!r} {key} is not a list of word indexes") from None
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise DataError(
            f"{path}: id {sid!r} {key} has index {int(bad[0])}; expected indexes into a word list of {size}"
        )
    return idx


def _pad(seqs: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    t = max(1, max(len(s) for s in seqs))
    x = np.zeros((len(seqs), t, dim), np.float32)
    mask = np.zeros((len(seqs), t), bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    return x, mask


# ---- the reader -------------------------------------------------------------------------------------
def _available(folder: Path, text: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Which files each modality would read, and which it lacks (every alternative)."""
    have = lambda k: (folder / FILES[k]).is_file()  # noqa: E731
    sources, missing = {}, {}
    sentence = ["language"] if have("language") else ["indexes", "words"] if have("indexes") and have("words") else None
    glove_idx = "language" if have("language") else "indexes"
    glove = [glove_idx, "vectors"] if have(glove_idx) and have("vectors") else None
    pick = {"sentence": sentence, "glove": glove, "auto": sentence or glove}[text]
    if pick:
        sources["text"] = pick
    else:
        alternatives = {
            "sentence": [["language"], ["indexes", "words"]],
            "glove": [["language", "vectors"], ["indexes", "vectors"]],
        }
        options = alternatives["sentence"] + alternatives["glove"] if text == "auto" else alternatives[text]
        missing["text"] = [" + ".join(FILES[k] for k in opt) for opt in options]
    for m in ("audio", "vision"):
        if have(m):
            sources[m] = [m]
        else:
            missing[m] = [FILES[m]]
    return sources, missing


def read_urfunny(
    folder,
    name: str = "urfunny",
    modalities: Sequence[str] | None = None,
    text: str = "auto",
    context: bool = False,
    max_context: int = 5,
    max_frames: int | None = None,
    trusted: bool = False,
) -> MSADataset:
    """Read UR-FUNNY as a binary classification dataset (class 0 not_humor, 1 humor).

    `modalities`: None reads every modality whose files exist (warning about the rest; an error
    when none exists); a list requires those. `context`: put the last `max_context` context
    sentences (and their audio/vision frames) before the punchline. `max_frames`: keep at most
    the last that many audio/vision (and GloVe) frames, where the punchline ends.
    """
    folder = Path(folder)
    if text not in TEXT_CHOICES:
        raise ConfigError(f"text={text!r}; expected one of {list(TEXT_CHOICES)}")
    if modalities is not None:
        unknown = [m for m in modalities if m not in ("text", "audio", "vision")]
        if unknown:
            raise ConfigError(f"modalities {unknown} are not UR-FUNNY modalities; expected some of text, audio, vision")
    if max_context < 0 or (max_frames is not None and max_frames < 1):
        raise ConfigError(f"max_context must be >= 0 and max_frames >= 1 (or None); got {max_context}, {max_frames}")
    folds = read_urfunny_folds(folder, trusted=trusted)
    sources, missing = _available(folder, text)
    wanted = list(modalities) if modalities is not None else ["text", "audio", "vision"]
    lacking = {m: missing[m] for m in wanted if m in missing}
    if lacking and (modalities is not None or len(lacking) == len(wanted)):
        detail = "; ".join(f"{m} needs {' or '.join(opts)}" for m, opts in lacking.items())
        present = sorted(p.name for p in folder.iterdir() if p.is_file())
        raise DataError(
            f"{folder}: UR-FUNNY files missing: {detail}. The folder holds {present}. "
            "data_folds.pkl and humor_label_sdk.pkl give only ids and labels; the text and "
            "feature pickles come from the UR-FUNNY release (see ROC-HCI/UR-FUNNY)."
        )
    if lacking:
        warnings.warn(
            f"{folder}: reading UR-FUNNY without {sorted(lacking)}: "
            + "; ".join(f"{m} needs {' or '.join(opts)}" for m, opts in lacking.items()),
            stacklevel=2,
        )
    use = [m for m in wanted if m in sources]

    order = [(split, sid) for split, (ids, _) in folds.items() for sid in ids]
    info: dict[str, Any] = {
        "format": "urfunny",
        "context": context,
        "max_context": max_context if context else 0,
        "files": {m: [FILES[k] for k in sources[m]] for m in use},
        "nonfinite_set_to_0": {},
    }
    if lacking:
        info["missing_files"] = {m: opts for m, opts in lacking.items()}
    feats: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    texts = None

    for m in ("audio", "vision"):
        if m not in use:
            continue
        path = folder / FILES[m]
        data = _load_dict(path, trusted)
        seqs, dim = [], None
        for _, sid in order:
            x = _frames(_record(data, path, sid, "punchline_features"), path, sid, "punchline_features", dim)
            dim = x.shape[1] if dim is None else dim
            if context and max_context:
                ctx = _context_list(_record(data, path, sid, "context_features"), path, sid, "context_features")
                parts = [_frames(c, path, sid, f"context_features[{j}]", dim) for j, c in enumerate(ctx)]
                x = np.concatenate(parts[-max_context:] + [x], axis=0)
            seqs.append(x[-max_frames:] if max_frames else x)
        stacked, masks[m] = _pad(seqs, dim or 0)  # dim is None only without samples
        bad = ~np.isfinite(stacked)
        info["nonfinite_set_to_0"][m] = int(bad.sum())
        if bad.any():
            stacked[bad] = 0.0
            warnings.warn(f"{path}: set {int(bad.sum())} NaN/inf values to 0", stacklevel=2)
        feats[m] = stacked

    if "text" in use:
        kind = "glove" if "vectors" in sources["text"] else "sentence"
        info["text"] = kind
        if kind == "sentence":
            # raw sentences; text.prepare_text encodes them for the model's text encoder setting
            texts = _sentences(folder, sources["text"], order, context, max_context, trusted)
        else:
            feats["text"], masks["text"] = _glove(
                folder, sources["text"], order, context, max_context, max_frames, trusted
            )

    if info.get("text") == "glove" and len(masks) > 1:
        # The release's modalities are word-aligned; the RTIL/SATI loader drops samples where they
        # are not. Here they stay (dropping would change the test set), counted for the record.
        lengths = np.stack([k.sum(1) for k in masks.values()])
        info["word_length_mismatch"] = int((lengths != lengths[0]).any(0).sum())
    splits, start = {}, 0
    for split, (ids, labels) in folds.items():
        sl = slice(start, start + len(ids))
        splits[split] = Split(
            features={m: feats[m][sl] for m in ("text", "audio", "vision") if m in feats},
            masks={m: masks[m][sl] for m in ("text", "audio", "vision") if m in masks},
            labels=labels,
            ids=[str(i) for i in ids],
            texts=None if texts is None else texts[sl],
        )
        start += len(ids)
    ds = MSADataset(
        name=name,
        splits=splits,
        task="classification",
        class_names=list(CLASS_NAMES),
        label_range=None,
        source=str(folder),
        info=info,
    )
    return ds.validate(required=("train", "valid", "test"))


def _sentences(folder: Path, files: list[str], order, context: bool, max_context: int, trusted: bool) -> list[str]:
    if files == ["language"]:
        path = folder / FILES["language"]
        data = _load_dict(path, trusted)

        def parts(sid):
            punch = _sentence(_record(data, path, sid, "punchline_sentence"), path, sid, "punchline_sentence")
            if not (context and max_context):
                return [punch]
            ctx = _context_list(_record(data, path, sid, "context_sentences"), path, sid, "context_sentences")
            return [_sentence(c, path, sid, f"context_sentences[{j}]") for j, c in enumerate(ctx)][-max_context:] + [
                punch
            ]
    else:
        path = folder / FILES["indexes"]
        data = _load_dict(path, trusted)
        words_path = folder / FILES["words"]
        words = load_pickle(words_path, trusted=trusted)
        if isinstance(words, (str, bytes)) or not isinstance(words, Sequence | np.ndarray):
            raise DataError(f"{words_path}: top level is a {type(words).__name__}; expected a list of words")
        words = [w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w) for w in words]

        def as_text(value, sid, key):
            return " ".join(words[i] for i in _indexes(value, path, sid, key, len(words)))

        def parts(sid):
            punch = as_text(_record(data, path, sid, "punchline_embedding_indexes"), sid, "punchline_embedding_indexes")
            if not (context and max_context):
                return [punch]
            ctx = _context_list(
                _record(data, path, sid, "context_embedding_indexes"), path, sid, "context_embedding_indexes"
            )
            return [as_text(c, sid, f"context_embedding_indexes[{j}]") for j, c in enumerate(ctx)][-max_context:] + [
                punch
            ]

    return [" ".join(p for p in parts(sid) if p) for _, sid in order]


def _glove(folder: Path, files: list[str], order, context: bool, max_context: int, max_frames, trusted: bool):
    path = folder / FILES[files[0]]
    data = _load_dict(path, trusted)
    vec_path = folder / FILES["vectors"]
    try:
        vectors = np.asarray(load_pickle(vec_path, trusted=trusted), dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{vec_path}: not a list of equal-length word vectors ({e}); expected (words, 300)") from None
    if vectors.ndim != 2:
        raise DataError(f"{vec_path}: has shape {vectors.shape}; expected (words, dim) word vectors")
    seqs = []
    for _, sid in order:
        idx = _indexes(
            _record(data, path, sid, "punchline_embedding_indexes"),
            path,
            sid,
            "punchline_embedding_indexes",
            len(vectors),
        )
        if context and max_context:
            ctx = _context_list(
                _record(data, path, sid, "context_embedding_indexes"), path, sid, "context_embedding_indexes"
            )
            idx = np.concatenate(
                [_indexes(c, path, sid, f"context_embedding_indexes[{j}]", len(vectors)) for j, c in enumerate(ctx)][
                    -max_context:
                ]
                + [idx]
            )
        idx = idx[-max_frames:] if max_frames else idx
        seqs.append(vectors[idx])
    return _pad(seqs, vectors.shape[1])
