"""Feature folders that are read lazily: memory-mapped arrays, batches gather only their rows.

A MOSEI-sized feature file (about 4 GB of float32 sequences) need not fit in memory. Converted once
into a folder of .npy arrays, it is opened with `np.load(mmap_mode="r")`: a batch reads its own rows
from the page cache, statistics for normalisation are computed in chunks, and normalisation is
applied to each batch as it is gathered (`dataset.Standardize`), so the file is never rewritten and
never held whole. Everything downstream (validation, batches, the trainer) is the dataset code
every other reader uses.

Layout (`sentangle data convert IN OUT`, `save_lazy`, `LazyWriter`):

    OUT/sentangle-features.json   format, name, task, class names, label range, source, info, splits
    OUT/<split>/<modality>.npy    (N, T, d) float32 features as read (not normalised)
    OUT/<split>/<modality>_mask.npy  (N, T) bool, True = a real frame
    OUT/<split>/labels.npy        (N,) float32 scores or int64 class indices
    OUT/<split>/ids.json          N sample ids (and texts.json when the source had transcripts)
    OUT/<split>/tokens_<key>.npy  (N, L) token arrays for an in-model text encoder, if any

Masks, labels and ids are small and loaded into memory; only the features are mapped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sentangle.core.errors import DataError
from sentangle.core.io import _jsonable, new_output, output_errors, write_json
from sentangle.data.batch import MODALITIES
from sentangle.data.dataset import MSADataset, Split, row_chunks

META = "sentangle-features.json"
FORMAT = "sentangle-features-1"


def is_lazy_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / META).is_file()


class LazyWriter:
    """Write a lazy feature folder split by split and chunk by chunk, never holding a split whole.

    Nothing appears at `folder` until `close()`: the arrays are written into a hidden temporary folder
    beside it, which is renamed into place at the end (and removed if writing fails).

        w = LazyWriter("mosei_lazy", name="mosei")
        w.add_split("train", n, {"text": (50, 768), "audio": (50, 74)})
        w.write("train", 0, part)          # a Split holding rows 0 .. len(part)-1
        ...
        w.close()
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        name: str,
        task: str = "regression",
        class_names: list[str] | None = None,
        label_range=(-3.0, 3.0),
        source: str = "",
        text_encoder: str | dict | None = None,
        info: dict | None = None,
        overwrite: bool = False,
    ):
        self.folder = Path(folder)
        if self.folder.exists() and not overwrite:
            raise FileExistsError(f"{self.folder} exists; pass overwrite=True (--overwrite) to replace it")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.folder.parent / f".{self.folder.name}.tmp-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self.meta: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "task": task,
            "class_names": class_names,
            "label_range": None if label_range is None else list(label_range),
            "source": str(source),
            "text_encoder": text_encoder,
            "info": info or {},
            "splits": {},
        }
        self.arrays: dict[str, dict[str, np.memmap]] = {}
        self.ids: dict[str, list] = {}
        self.texts: dict[str, list] = {}
        self.filled: dict[str, int] = {}

    def add_split(
        self,
        split: str,
        n: int,
        shapes: dict[str, tuple[int, int]],
        label_dtype=np.float32,
        tokens: dict[str, tuple[int, np.dtype]] | None = None,
    ) -> None:
        """Reserve `split`: `n` samples, (T, d) per modality, token arrays as key -> (L, dtype)."""
        unknown = set(shapes) - set(MODALITIES)
        if unknown:
            raise DataError(f"{self.folder}: unknown modalities {sorted(unknown)}; expected some of {MODALITIES}")
        (self.tmp / split).mkdir()
        out: dict[str, np.memmap] = {}
        for m, (t, d) in shapes.items():
            out[m] = np.lib.format.open_memmap(self.tmp / split / f"{m}.npy", "w+", np.float32, (n, t, d))
            out[f"{m}_mask"] = np.lib.format.open_memmap(self.tmp / split / f"{m}_mask.npy", "w+", bool, (n, t))
        for k, (length, dtype) in (tokens or {}).items():
            out[f"tokens_{k}"] = np.lib.format.open_memmap(
                self.tmp / split / f"tokens_{k}.npy", "w+", dtype, (n, length)
            )
        out["labels"] = np.lib.format.open_memmap(self.tmp / split / "labels.npy", "w+", label_dtype, (n,))
        self.arrays[split], self.ids[split], self.texts[split], self.filled[split] = out, [None] * n, [None] * n, 0
        self.meta["splits"][split] = {"samples": n, "shapes": {m: list(s) for m, s in shapes.items()}}

    def write(self, split: str, start: int, part: Split) -> None:
        """Rows start .. start + len(part) - 1 of `split`."""
        out, k = self.arrays[split], len(part)
        if start + k > out["labels"].shape[0]:
            raise DataError(
                f"{self.folder}: {split} rows {start}..{start + k - 1} exceed the {out['labels'].shape[0]} reserved"
            )
        rows = slice(start, start + k)
        for m, x in part.features.items():
            if x.shape[1:] != out[m].shape[1:]:
                raise DataError(
                    f"{self.folder}: {split}.{m} chunk has frames x dims {x.shape[1:]}; "
                    f"the split was reserved as {out[m].shape[1:]}"
                )
            out[m][rows] = x
            out[f"{m}_mask"][rows] = part.masks[m]
        for key, v in (part.tokens or {}).items():
            out[f"tokens_{key}"][rows] = v
        out["labels"][rows] = part.labels
        self.ids[split][rows] = part.ids
        if part.texts is not None:
            self.texts[split][rows] = part.texts
        self.filled[split] += k

    def close(self) -> Path:
        try:
            for split, out in self.arrays.items():
                n = out["labels"].shape[0]
                if self.filled[split] != n:
                    raise DataError(
                        f"{self.folder}: split {split!r} got {self.filled[split]} rows written of {n} reserved"
                    )
                for a in out.values():
                    a.flush()
                (self.tmp / split / "ids.json").write_text(json.dumps([str(i) for i in self.ids[split]]))
                if all(t is not None for t in self.texts[split]):
                    (self.tmp / split / "texts.json").write_text(json.dumps(self.texts[split]))
            self.arrays.clear()
            write_json(self.tmp / META, self.meta)
            if self.folder.exists():
                shutil.rmtree(self.folder)
            os.replace(self.tmp, self.folder)
        except BaseException:
            self.abort()
            raise
        return self.folder

    def abort(self) -> None:
        self.arrays.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def save_lazy(ds: MSADataset, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `ds` (as read, before normalisation) as a lazy feature folder; returns the folder."""
    with new_output(folder), output_errors(folder, "folder"):
        w = LazyWriter(
            folder,
            ds.name,
            ds.task,
            ds.class_names,
            ds.label_range,
            ds.source,
            ds.text_encoder,
            json.loads(json.dumps(ds.info, default=_jsonable)),
            overwrite,
        )
        try:
            for s, sp in ds.splits.items():
                tokens = {k: (v.shape[1], v.dtype) for k, v in (sp.tokens or {}).items()}
                w.add_split(s, len(sp), {m: x.shape[1:] for m, x in sp.features.items()}, sp.labels.dtype, tokens)
                # chunks of the largest modality's rows keep the temporaries bounded
                big = max(sp.features.values(), key=lambda x: x[0].nbytes, default=sp.labels[:, None])
                for rows in row_chunks(big):
                    w.write(s, rows.start, sp.subset(np.arange(rows.start, rows.stop)))
        except BaseException:
            w.abort()
            raise
        return w.close()


def read_lazy(folder: str | os.PathLike) -> MSADataset:
    """Open a lazy feature folder: features memory-mapped, everything else in memory."""
    folder = Path(folder)
    meta_path = folder / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{folder}: no {META}; not a sentangle feature folder (make one with `sentangle data convert`)"
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: format is {meta.get('format')!r}; expected {FORMAT!r}")
    splits = {}
    for s, spec in meta["splits"].items():
        d = folder / s
        features, masks = {}, {}
        for m, shape in spec["shapes"].items():
            features[m] = _load(d / f"{m}.npy", mmap=True)
            masks[m] = _load(d / f"{m}_mask.npy")
            if list(features[m].shape) != [spec["samples"], *shape] or masks[m].shape != features[m].shape[:2]:
                raise DataError(
                    f"{d / f'{m}.npy'}: shape {features[m].shape} (mask {masks[m].shape}); "
                    f"{META} says {[spec['samples'], *shape]}"
                )
        tokens = {p.stem[len("tokens_") :]: _load(p) for p in sorted(d.glob("tokens_*.npy"))} or None
        ids = json.loads((d / "ids.json").read_text(encoding="utf-8"))
        texts = json.loads((d / "texts.json").read_text(encoding="utf-8")) if (d / "texts.json").exists() else None
        splits[s] = Split(
            features=features, masks=masks, labels=_load(d / "labels.npy"), ids=ids, texts=texts, tokens=tokens
        )
    info = {**meta.get("info", {}), "lazy_folder": str(folder)}
    rng = meta.get("label_range")
    return MSADataset(
        name=meta["name"],
        splits=splits,
        task=meta["task"],
        class_names=meta.get("class_names"),
        label_range=None if rng is None else tuple(rng),
        source=str(folder),
        text_encoder=meta.get("text_encoder"),
        info=info,
    )


def _load(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; the feature folder {path.parent.parent} is incomplete") from None
    except ValueError as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
