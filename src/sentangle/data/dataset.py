"""Dataset with named splits, validation, normalisation and collate.

Every reader produces an `MSADataset`; every model consumes the `Batch` objects it yields.
Sequences are stored pre-padded as (N, T, d) float32 arrays with (N, T) boolean masks, so a batch
is an index into arrays (no per-sample Python work) trimmed to the longest real sequence in it.
The arrays are in memory, or memory-mapped files (data/lazy.py) for data larger than memory: then
statistics are computed in chunks and normalisation is applied to each batch as it is gathered
(`Split.transforms`) instead of rewriting the arrays; everything else is the same code.
"""

from __future__ import annotations

import mmap as mmap_module
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from sentangle.core.errors import DataError
from sentangle.data.batch import MODALITIES, Batch

SPLITS = ("train", "valid", "test")


@dataclass
class Split:
    features: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    labels: np.ndarray
    ids: list[str]
    texts: list[str] | None = None
    tokens: dict[str, np.ndarray] | None = None
    # modality -> normalisation applied when a batch is gathered (memory-mapped features only)
    transforms: dict[str, Standardize] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> Split:
        """The samples `index` (memory-mapped features are read into memory)."""
        index = np.asarray(index)
        return Split(
            features={m: gather(x, index) for m, x in self.features.items()},
            masks={m: x[index] for m, x in self.masks.items()},
            labels=self.labels[index],
            ids=[self.ids[i] for i in index],
            texts=None if self.texts is None else [self.texts[i] for i in index],
            tokens=None if self.tokens is None else {k: v[index] for k, v in self.tokens.items()},
            transforms=dict(self.transforms),
        )


@dataclass
class Standardize:
    """(x - mean) / scale, dropped columns and padding set to 0, clipped to +-clip; float32 out."""

    mean: np.ndarray  # (d,) float64
    scale: np.ndarray  # (d,) float64
    dropped: np.ndarray  # (d,) bool
    clip: float

    def apply(self, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
        """Normalised copy of (n, T, d) `x` with (n, T) `mask`, and how many values were clipped."""
        z = (x - self.mean) / self.scale
        z[..., self.dropped] = 0.0
        z *= mask[..., None]
        clipped = int(np.count_nonzero(np.abs(z) > self.clip))
        return np.clip(z, -self.clip, self.clip).astype(np.float32), clipped

    def to_json(self) -> dict:
        """Plain JSON: the float64 mean and scale as lists (JSON floats round-trip them exactly),
        the dropped column indices, clip."""
        return {
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "dropped": [int(i) for i in np.flatnonzero(self.dropped)],
            "clip": float(self.clip),
        }

    @classmethod
    def from_json(cls, value, where: str) -> Standardize:
        """The inverse of `to_json`; DataError naming `where` and the field for anything else."""
        if not isinstance(value, dict) or set(value) != {"mean", "scale", "dropped", "clip"}:
            raise DataError(f"{where}: expected {{mean, scale, dropped, clip}}, got {str(value)[:100]}")
        try:
            mean, scale = np.array(value["mean"], dtype=np.float64), np.array(value["scale"], dtype=np.float64)
            index, clip = np.array(value["dropped"], dtype=np.int64), float(value["clip"])
        except (TypeError, ValueError) as e:
            raise DataError(
                f"{where}: mean and scale must be lists of numbers, dropped of column indices ({e})"
            ) from None
        d = mean.shape[0] if mean.ndim == 1 else -1
        if d < 1 or scale.shape != (d,) or not np.isfinite(mean).all() or not (np.isfinite(scale) & (scale > 0)).all():
            raise DataError(f"{where}: expected finite mean and positive scale lists of the same length")
        if index.ndim != 1 or ((index < 0) | (index >= d)).any() or not clip > 0:
            raise DataError(f"{where}: expected dropped column indices in [0, {d}) and a positive clip")
        dropped = np.zeros(d, dtype=bool)
        dropped[index] = True
        return cls(mean, scale, dropped, clip)


def statistics_to_json(normalizers: dict[str, Standardize]) -> dict[str, dict]:
    """modality -> Standardize.to_json(): what a checkpoint and a model folder store."""
    return {m: norm.to_json() for m, norm in normalizers.items()}


def statistics_from_json(value, where: str) -> dict[str, Standardize]:
    if not isinstance(value, dict) or not all(m in MODALITIES for m in value):
        raise DataError(f"{where}: expected a mapping from modalities ({', '.join(MODALITIES)}) to statistics")
    return {m: Standardize.from_json(v, f"{where}.{m}") for m, v in value.items()}


def is_mapped(x: np.ndarray) -> bool:
    return isinstance(x, np.memmap)


def release(x: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array from this process (the OS keeps them cached).

    Pages read through a mapping count towards the process's resident memory until the kernel needs
    them back, so an epoch over a mapped file would otherwise look as large as the file."""
    mm = getattr(x, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap_module, "MADV_DONTNEED"):
        mm.madvise(mmap_module.MADV_DONTNEED)


def gather(x: np.ndarray, index: np.ndarray, t: int | None = None) -> np.ndarray:
    """Rows `index` (first `t` frames) of an in-memory or memory-mapped array, as an in-memory array."""
    rows = x[index] if t is None else x[index, :t]
    if is_mapped(x):
        rows = np.array(rows)
        release(x)
    return rows


def row_chunks(x: np.ndarray, budget: int = 1 << 26):
    """Slices of rows of `x` of about `budget` bytes each (64 MB): bounded temporaries on big arrays."""
    per_row = max(int(np.prod(x.shape[1:])) * x.itemsize, 1)
    step = max(budget // per_row, 1)
    for i in range(0, x.shape[0], step):
        yield slice(i, min(i + step, x.shape[0]))


def feature_stats(
    x: np.ndarray, mask: np.ndarray, transform: Standardize | None = None, ddof: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std (population with ddof=0, sample with ddof=1) over the real frames of
    (N, T, d) `x`, in float64; of `transform`(x) when given (statistics of normalised data).

    Row chunks merged with Chan et al.'s pairwise update, so a memory-mapped array is read once
    and never held whole."""
    d = x.shape[-1]
    n, mean, m2 = 0, np.zeros(d), np.zeros(d)
    for rows in row_chunks(x):
        chunk = np.asarray(x[rows])
        release(x)
        if transform is not None:
            chunk = transform.apply(chunk, mask[rows])[0]
        real = chunk[mask[rows]].astype(np.float64)
        k = real.shape[0]
        if k == 0:
            continue
        mean_k = real.mean(0)
        m2_k = ((real - mean_k) ** 2).sum(0)
        delta = mean_k - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + m2_k + delta**2 * (n * k / total)
        n = total
    if n <= ddof:
        return mean, np.zeros(d)
    return mean, np.sqrt(m2 / (n - ddof))


def full_masks(x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """Masks for (N, T, d) features: all frames real, or the first `lengths[i]` frames real."""
    n, t = x.shape[:2]
    if lengths is None:
        return np.ones((n, t), dtype=bool)
    lengths = np.clip(np.asarray(lengths).astype(np.int64), 0, t)
    return np.arange(t)[None, :] < lengths[:, None]


@dataclass
class MSADataset:
    """Named splits of multimodal samples plus what the task is.

    `source` names the file or folder the data came from, so that every error can name it.
    `info` collects what happened on the way in (replaced values, normalisation) for the run folder.
    """

    name: str
    splits: dict[str, Split]
    task: str = "regression"  # or "classification"
    class_names: list[str] | None = None
    label_range: tuple[float, float] | None = (-3.0, 3.0)
    source: str = ""
    # The encoder whose tokens (or top-layer inputs) the text is, when text feeds an in-model encoder;
    # readers of pre-tokenized files set it, text.prepare_text sets it from the model's setting.
    text_encoder: str | None = None
    # Raw texts not yet encoded: each split's positions in the reader's order (text.prepare_text)
    text_order: dict[str, np.ndarray] | None = None
    info: dict = field(default_factory=dict)
    # modality -> the normalisation its features went through (normalize / normalize_with): what a
    # trained model needs to read new data the same way (statistics_to_json, runs/checkpoint.py)
    normalizers: dict[str, Standardize] = field(default_factory=dict)

    # ---- what the model needs to know -------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        first = next(iter(self.splits.values()))
        names = set(first.features) | ({"text"} if first.tokens is not None else set())
        return tuple(m for m in MODALITIES if m in names)

    @property
    def input_dims(self) -> dict[str, int]:
        first = next(iter(self.splits.values()))
        return {m: int(x.shape[-1]) for m, x in first.features.items()}

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    @property
    def output_dim(self) -> int:
        return 1 if self.task == "regression" else len(self.class_names or [])

    # ---- checks -------------------------------------------------------------------------------
    def validate(self, required: tuple[str, ...] = ("train", "valid")) -> MSADataset:
        """Check every split (DataError naming the source, split and field). A sample with no real
        frame of a modality is allowed: the modality counts as missing for it (masked out); a
        modality with 0 frames, or no real frame in a whole split, is refused."""
        where = self.source or self.name
        if self.task not in ("regression", "classification"):
            raise DataError(f"{where}: task must be 'regression' or 'classification', got {self.task!r}")
        if self.task == "classification" and not self.class_names:
            raise DataError(f"{where}: a classification dataset needs class_names")
        for s in required:
            if s not in self.splits:
                raise DataError(
                    f"{where}: missing split {s!r}; found {sorted(self.splits)}, expected at least {list(required)}"
                )
        dims = None
        for s, sp in self.splits.items():
            self._validate_split(where, s, sp)
            here = {m: x.shape[-1] for m, x in sp.features.items()}
            if dims is not None and here != dims:
                raise DataError(f"{where}: split {s!r} has feature dims {here}, other splits have {dims}")
            dims = here
        return self

    def _validate_split(self, where: str, s: str, sp: Split) -> None:
        n = len(sp)
        if n == 0:
            raise DataError(f"{where}: split {s!r} is empty; expected at least one sample")
        if sp.labels.ndim != 1:
            raise DataError(f"{where}: {s}.labels has shape {sp.labels.shape}; expected (N,)")
        if len(sp.ids) != n:
            raise DataError(f"{where}: {s}.ids has {len(sp.ids)} entries but there are {n} labels")
        if not sp.features and sp.tokens is None and sp.texts is None:
            raise DataError(f"{where}: split {s!r} has no modality; expected at least one of {MODALITIES}")
        for m, x in sp.features.items():
            if m not in MODALITIES:
                raise DataError(f"{where}: unknown modality {m!r}; expected one of {MODALITIES}")
            if x.ndim != 3 or x.shape[0] != n:
                raise DataError(f"{where}: {s}.{m} has shape {x.shape}; expected (N={n}, T, d)")
            mask = sp.masks.get(m)
            if mask is None or mask.shape != x.shape[:2] or mask.dtype != bool:
                got = None if mask is None else (mask.shape, mask.dtype)
                raise DataError(f"{where}: {s}.{m} mask is {got}; expected bool {x.shape[:2]}")
            # A sample without a real frame of a modality is that modality missing for it (the
            # models mask it out).
            if x.shape[1] == 0:
                raise DataError(
                    f"{where}: {s}.{m} has 0 frames per sample (shape {x.shape}); expected at least one "
                    "frame (T >= 1), or leave the modality out"
                )
            if not any(np.asarray(mask[rows]).any() for rows in row_chunks(mask)):
                if s == "train":  # a model would learn nothing from it, without a word
                    raise DataError(
                        f"{where}: {s}.{m} has no real frame in any sample (lengths/mask all 0); expected at "
                        "least one real frame in the training split, or leave the modality out"
                    )
                # on valid/test it is the modality missing at test time, which every model reads as such
                warnings.warn(
                    f"{where}: {s}.{m} has no real frame in any sample; models read {m} as missing there",
                    stacklevel=2,
                )
            count, first = 0, None
            for rows in row_chunks(x):
                bad = ~np.isfinite(np.asarray(x[rows]))
                release(x)
                if bad.any():
                    count += int(bad.sum())
                    first = first if first is not None else rows.start + int(np.argwhere(bad.any(axis=(1, 2)))[0, 0])
            if count:
                assert first is not None  # set with the first bad chunk
                raise DataError(
                    f"{where}: {s}.{m} has {count} NaN/inf values (first in sample {sp.ids[first]!r}); "
                    "expected finite features"
                )
        if self.task == "regression":
            if not np.isfinite(sp.labels).all():
                raise DataError(f"{where}: {s}.labels contains NaN/inf; expected finite sentiment scores")
            if self.label_range is not None:
                lo, hi = self.label_range
                out = (sp.labels < lo) | (sp.labels > hi)
                if out.any():
                    i = int(np.argmax(out))
                    raise DataError(
                        f"{where}: {s}.labels has {int(out.sum())} values outside [{lo}, {hi}] "
                        f"(e.g. {float(sp.labels[i])} for {sp.ids[i]!r})"
                    )
        else:
            c = len(self.class_names or [])
            if not np.issubdtype(sp.labels.dtype, np.integer) or sp.labels.min() < 0 or sp.labels.max() >= c:
                raise DataError(
                    f"{where}: {s}.labels must be integer class indices in [0, {c}); got {sp.labels.dtype} in [{sp.labels.min()}, {sp.labels.max()}]"
                )

    # ---- transforms ---------------------------------------------------------------------------
    def select_modalities(self, modalities: list[str] | tuple[str, ...]) -> MSADataset:
        unknown = set(modalities) - set(self.modalities)
        if unknown:
            raise DataError(
                f"{self.source or self.name}: modalities {sorted(unknown)} not in this dataset; it has {list(self.modalities)}"
            )
        for sp in self.splits.values():
            sp.features = {m: x for m, x in sp.features.items() if m in modalities}
            sp.masks = {m: x for m, x in sp.masks.items() if m in modalities}
            sp.transforms = {m: t for m, t in sp.transforms.items() if m in modalities}
            if "text" not in modalities:
                sp.tokens = None
        self.normalizers = {m: t for m, t in self.normalizers.items() if m in modalities}
        return self

    def normalize(
        self, modalities=("audio", "vision"), clip: float = 10.0, drop_tol: float = 1e-2, std_floor: float = 0.05
    ) -> MSADataset:
        """Standardise features with statistics of the real training frames only.

        Real feature files have columns that are (nearly) constant on train but not elsewhere, and
        heavy outliers. Columns whose train std is below `drop_tol` times the median column std
        carry nothing learnable, so they are set to 0 everywhere; other stds are floored at
        `std_floor` times the median so no column divides by ~0; the result is clipped to
        +-`clip` so one outlier in valid/test cannot dominate a prediction.
        """
        train = self.splits["train"]
        report = {}
        for m in modalities:
            if m not in train.features:
                continue
            mean, std = feature_stats(train.features[m], train.masks[m])
            med = float(np.median(std)) if np.any(std > 0) else 1.0
            med = med if med > 0 else float(std[std > 0].mean())
            dropped = std < drop_tol * med
            norm = Standardize(mean, np.maximum(std, std_floor * med), dropped, clip)
            clipped = self._standardize(m, norm)
            report[m] = {
                "dropped_columns": [int(i) for i in np.flatnonzero(dropped)],
                "floored_columns": int(((std < std_floor * med) & ~dropped).sum()),
                "clipped_values": clipped,
                "clip": clip,
            }
        self.info["normalization"] = report
        return self

    def normalize_with(self, normalizers: dict[str, Standardize]) -> MSADataset:
        """Standardise with given statistics (a trained model's) instead of this data's own, so a
        sample is read the same whatever else its file holds; modalities the data lacks are skipped."""
        report = {}
        for m, norm in normalizers.items():
            if m not in next(iter(self.splits.values())).features:
                continue
            d = self.input_dims[m]
            if norm.mean.shape != (d,):
                raise DataError(
                    f"{self.source or self.name}: {m} has {d} features; the given statistics are for {norm.mean.shape[0]}"
                )
            report[m] = {
                "dropped_columns": [int(i) for i in np.flatnonzero(norm.dropped)],
                "clipped_values": self._standardize(m, norm, given=True),
                "clip": norm.clip,
                "statistics": "given",
            }
        self.info["normalization"] = report
        return self

    def _standardize(self, m: str, norm: Standardize, given: bool = False) -> dict[str, int]:
        """Apply `norm` to modality `m` of every split; values clipped per split."""
        clipped = {}
        for s, sp in self.splits.items():
            x, mask = sp.features[m], sp.masks[m]
            clipped[s] = 0
            if is_mapped(x):  # the file stays as it is; each batch is normalised when gathered
                for rows in row_chunks(x):
                    clipped[s] += norm.apply(np.asarray(x[rows]), mask[rows])[1]
                    release(x)
                sp.transforms[m] = norm
                continue
            out = np.empty(x.shape, dtype=np.float32)
            for rows in row_chunks(x):
                out[rows], c = norm.apply(x[rows], mask[rows])
                clipped[s] += c
            sp.features[m] = out
        self.normalizers[m] = norm
        # Dropped columns of given statistics were reported when the model was trained.
        if (norm.dropped.any() and not given) or any(clipped.values()):
            warnings.warn(
                f"{self.source or self.name}: {m}: {int(norm.dropped.sum())} (nearly) constant training "
                f"columns set to 0, values clipped to +-{norm.clip}: {clipped}",
                stacklevel=3,
            )
        return clipped

    # ---- batches ------------------------------------------------------------------------------
    def batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        group_by_length: bool = False,
    ) -> Iterator[Batch]:
        """Batches of `split` in order, or shuffled. `group_by_length` (with shuffle): the shuffled
        order is cut into chunks of 50 batches, each chunk sorted by sample length (`lengths`) and
        cut into batches, and the batches are shuffled: every sample once per epoch, as random as
        the chunks allow, with little padding."""
        if split not in self.splits:
            raise DataError(f"{self.source or self.name}: no split {split!r}; it has {sorted(self.splits)}")
        sp = self.splits[split]
        n = len(sp)
        order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
        groups = [order[start : start + batch_size] for start in range(0, n, batch_size)]
        if shuffle and group_by_length:
            size, length = 50 * batch_size, lengths(sp)
            groups = []
            for start in range(0, n, size):
                chunk = order[start : start + size]
                chunk = chunk[np.argsort(-length[chunk], kind="stable")]
                groups += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        for index in groups:
            yield collate(sp, index, self.task)


def group_of(sample_id: str) -> str:
    """The group of a sample (its video, or speaker in the speech corpora) from its id:
    "video$_$clip" (MMSA) or "video_clip"."""
    return sample_id.split("$_$")[0] if "$_$" in sample_id else sample_id.rsplit("_", 1)[0]


def sample_groups(ds: MSADataset, split: str) -> list[str]:
    """`group_of` every sample of `split`, in order: the groups a speaker-independent protocol
    keeps apart (emodb: speaker "03"; ravdess: actor "Actor_01")."""
    return [group_of(i) for i in ds.splits[split].ids]


def lengths(sp: Split) -> np.ndarray:
    """Per sample, what its cost grows with: its token count when a text encoder runs inside the
    model (it dominates), otherwise its real frames summed over modalities."""
    if sp.tokens is not None:
        return np.asarray(sp.tokens["attention_mask"]).sum(axis=1)
    total = np.zeros(len(sp), dtype=np.int64)
    for m in sp.masks.values():
        for rows in row_chunks(m):
            total[rows] += np.asarray(m[rows]).sum(axis=1)
    return total


def through_last_real(mask) -> np.ndarray:
    """Per sample of a (N, T) mask, the length up to and including its last real frame (0 when it
    has none): what a sample occupies once padding after it is cut."""
    mask = np.asarray(mask).astype(bool)
    return np.where(mask.any(1), mask.shape[1] - np.argmax(mask[:, ::-1], axis=1), 0)


def _trim(mask: np.ndarray) -> int:
    """Length that keeps every real frame of the batch (at least 1 so shapes stay valid)."""
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[-1]) + 1 if cols.size else 1


def collate(sp: Split, index: np.ndarray, task: str = "regression") -> Batch:
    """Gather samples `index` of a split into a Batch, trimming padding no sample in it uses."""
    feats, masks = {}, {}
    for m, x in sp.features.items():
        mk = sp.masks[m][index]
        mk = np.ascontiguousarray(mk[:, : _trim(mk)])
        rows = gather(x, index, mk.shape[1])
        if m in sp.transforms:
            rows = sp.transforms[m].apply(rows, mk)[0]
        feats[m] = torch.from_numpy(np.ascontiguousarray(rows))
        masks[m] = torch.from_numpy(mk)
    tokens = None
    if sp.tokens is not None:
        am = sp.tokens["attention_mask"][index]
        t = _trim(am.astype(bool))
        tokens = {k: torch.from_numpy(np.ascontiguousarray(v[index, :t])) for k, v in sp.tokens.items()}
    labels = torch.from_numpy(sp.labels[index])
    labels = labels.float() if task == "regression" else labels.long()
    return Batch(features=feats, masks=masks, labels=labels, ids=[sp.ids[i] for i in index], tokens=tokens)
