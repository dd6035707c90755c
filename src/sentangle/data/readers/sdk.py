"""Reader for CMU-Multimodal-SDK computational sequences (.csd, HDF5).

A .csd file holds one top-level group named after the sequence ('Opinion Segment Labels',
'COVAREP', ...) with a 'data' group (one group per video id, each with datasets 'features' (n, d)
and 'intervals' (n, 2) = start, end in seconds) and a 'metadata' group. In a label file each row
is one labelled segment (opinion utterance) of the video, in the video's segment order: row i of
video v is the segment the SDK calls "v[i]" (0-based). For CMU-MOSI, label.csv's 1-based clip_id k
is row k - 1 (checked on the real files in tests/data/test_sdk.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.data.batch import MODALITIES
from sentangle.data.dataset import SPLITS, MSADataset, Split

OVERLAP_RULE = (
    "a feature frame belongs to a segment when their open intervals intersect: "
    "frame_start < segment_end and frame_end > segment_start (frames that only touch a "
    "segment's boundary are left out, so back-to-back segments never share a frame)"
)


def read_csd(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video id -> (features float32 (n, d), intervals float64 (n, 2)), checked for shape and finiteness."""
    return _read_csd(Path(path), neg_inf_to_zero=False)[0]


def _read_csd(path: Path, neg_inf_to_zero: bool) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a CMU-SDK computational sequence (.csd)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot be opened as HDF5 ({e}); expected a .csd computational sequence") from e
    out, neg_inf, dim = {}, 0, None
    with f:
        roots = list(f.keys())
        if len(roots) != 1:
            raise DataError(f"{path}: has top-level entries {roots}; expected exactly one sequence group")
        root = f[roots[0]]
        if not isinstance(root, h5py.Group) or not isinstance(root.get("data"), h5py.Group):
            found = list(root.keys()) if isinstance(root, h5py.Group) else type(root).__name__
            raise DataError(f"{path}: {roots[0]!r} has no 'data' group (found {found}); expected 'data' and 'metadata'")
        data = root["data"]
        if len(data) == 0:
            raise DataError(f"{path}: {roots[0]}/data is empty; expected one group per video")
        for vid, g in data.items():
            where = f"{path}: video {vid!r}"
            if not isinstance(g, h5py.Group) or not {"features", "intervals"} <= set(g.keys()):
                found = list(g.keys()) if isinstance(g, h5py.Group) else type(g).__name__
                raise DataError(f"{where} has {found}; expected datasets 'features' and 'intervals'")
            try:
                feats = np.asarray(g["features"][()], dtype=np.float32)
            except (TypeError, ValueError) as e:
                raise DataError(f"{where}: 'features' has dtype {g['features'].dtype}; expected numbers") from e
            intervals = np.asarray(g["intervals"][()], dtype=np.float64)
            if feats.ndim != 2:
                raise DataError(f"{where}: 'features' has shape {feats.shape}; expected (n, d)")
            if intervals.shape != (feats.shape[0], 2):
                raise DataError(
                    f"{where}: 'intervals' has shape {intervals.shape} but 'features' has "
                    f"{feats.shape[0]} rows; expected ({feats.shape[0]}, 2)"
                )
            if dim is not None and feats.shape[1] != dim:
                raise DataError(f"{where}: 'features' has {feats.shape[1]} columns, other videos have {dim}")
            dim = feats.shape[1]
            if not np.isfinite(intervals).all() or (intervals[:, 1] < intervals[:, 0]).any():
                raise DataError(
                    f"{where}: 'intervals' has non-finite values or end < start; expected (start, end) seconds"
                )
            if neg_inf_to_zero:
                where_inf = np.isneginf(feats)
                neg_inf += int(where_inf.sum())
                feats[where_inf] = 0.0
            bad = ~np.isfinite(feats)
            if bad.any():
                raise DataError(f"{where}: 'features' has {int(bad.sum())} NaN/inf values; expected finite features")
            out[vid] = (feats, intervals)
    return out, neg_inf


def read_sdk_dataset(
    label_csd: str | Path,
    features: dict[str, str | Path],
    folds: dict[str, list[str]],
    name: str = "sdk",
    max_len: dict[str, int] | None = None,
    label_column: int = 0,
) -> MSADataset:
    """One sample per labelled segment of `label_csd`, with each modality's frames cut from `features`.

    `features` maps a modality ('text' / 'audio' / 'vision') to its .csd; `folds` maps a split to its
    video ids (every one must be in the label file; videos in no fold are left out). The label is
    column `label_column` of the segment's row (0 = sentiment). Frames are cut by OVERLAP_RULE, put
    in time order, and right-padded to the longest segment, or to `max_len[m]` keeping the first
    frames. A segment with no frame in a modality (or whose video that file lacks) gets an all-False
    mask row; these are counted in `info`. -inf in audio becomes 0 (counted, with a warning), as in
    the MMSA/MulT files derived from these sequences.
    """
    label_path = Path(label_csd)
    labels = read_csd(label_path)
    max_len = dict(max_len or {})
    if any(int(t) < 1 for t in max_len.values()):
        raise ConfigError(f"max_len values must be at least 1, got {max_len}")
    unknown = [m for m in features if m not in MODALITIES]
    if unknown:
        raise ConfigError(f"unknown modalities {unknown}; expected some of {MODALITIES}")
    owner: dict[str, str] = {}
    for s, vids in folds.items():
        if s not in SPLITS:
            raise DataError(f"folds: unknown split {s!r}; expected some of {list(SPLITS)}")
        for v in vids:
            if v not in labels:
                raise DataError(
                    f"{label_path}: video {v!r} of fold {s!r} is not in the label file; "
                    f"expected every fold video among its {len(labels)} videos"
                )
            if v in owner:
                raise DataError(f"folds: video {v!r} is in both {owner[v]!r} and {s!r}; a video must be in one split")
            owner[v] = s
    width = next(iter(labels.values()))[0].shape[1]
    if not 0 <= label_column < width:
        raise DataError(
            f"{label_path}: label_column {label_column} out of range; the label features have {width} columns"
        )

    sequences, neg_inf = {}, {}
    for m, p in features.items():
        sequences[m], neg_inf[m] = _read_csd(Path(p), neg_inf_to_zero=(m == "audio"))
        if neg_inf[m]:
            warnings.warn(f"{p}: {m}: replaced {neg_inf[m]} -inf values with 0", stacklevel=2)
        missing = sorted(v for v in owner if v not in sequences[m])
        if missing:
            warnings.warn(
                f"{p}: {len(missing)} fold videos have no {m} sequence (e.g. {missing[0]!r}); "
                "their segments get empty masks",
                stacklevel=2,
            )

    # Cut every segment once, then pad all splits to one length per modality.
    cut: dict[str, dict[str, list]] = {s: {"ids": [], "labels": [], **{m: [] for m in features}} for s in folds}
    for s, vids in folds.items():
        for v in vids:
            seg_feats, seg_iv = labels[v]
            cut[s]["ids"] += [f"{v}[{i}]" for i in range(len(seg_iv))]
            cut[s]["labels"].append(seg_feats[:, label_column])
            for m, seqs in sequences.items():
                cut[s][m] += _cut_video(seqs.get(v), seg_iv)

    dims = {m: next(iter(seqs.values()))[0].shape[1] for m, seqs in sequences.items()}
    lengths = {m: max([1] + [len(x) for s in folds for x in cut[s][m]]) for m in features}
    lengths.update({m: int(t) for m, t in max_len.items() if m in features})
    empty: dict[str, dict[str, int]] = {m: {} for m in features}
    truncated = {m: 0 for m in features}
    splits = {}
    for s in folds:
        feats, masks = {}, {}
        for m in features:
            frames = cut[s][m]
            t = lengths[m]
            x = np.zeros((len(frames), t, dims[m]), dtype=np.float32)
            mk = np.zeros((len(frames), t), dtype=bool)
            for i, fr in enumerate(frames):
                k = min(len(fr), t)
                if k:
                    x[i, :k], mk[i, :k] = fr[:k], True
                truncated[m] += int(len(fr) > t)
            empty[m][s] = int((~mk.any(axis=1)).sum())
            feats[m], masks[m] = x, mk
        y = np.concatenate(cut[s]["labels"]).astype(np.float32) if cut[s]["labels"] else np.zeros(0, np.float32)
        splits[s] = Split(features=feats, masks=masks, labels=y, ids=cut[s]["ids"])

    info = {
        "format": "cmu_sdk",
        "label_file": str(label_path),
        "feature_files": {m: str(p) for m, p in features.items()},
        "overlap_rule": OVERLAP_RULE,
        "padded_length": lengths,
        "segments_without_frames": empty,
        "truncated_segments": truncated,
        "replaced_neg_inf": neg_inf,
        "label_videos_in_no_fold": len(set(labels) - set(owner)),
    }
    ds = MSADataset(name=name, splits=splits, source=str(label_path), info=info)
    return ds.validate(required=tuple(s for s in SPLITS if s in folds) or ("train",))


def _cut_video(seq: tuple[np.ndarray, np.ndarray] | None, segments: np.ndarray) -> list[np.ndarray]:
    """The frames of one video's sequence that fall in each segment (OVERLAP_RULE), in time order."""
    if seq is None:
        return [np.zeros((0, 0), np.float32)] * len(segments)
    feats, iv = seq
    order = np.argsort(iv[:, 0], kind="stable")
    feats, iv = feats[order], iv[order]
    inside = (iv[None, :, 0] < segments[:, 1:2]) & (iv[None, :, 1] > segments[:, 0:1])  # (segments, frames)
    return [feats[row] for row in inside]
