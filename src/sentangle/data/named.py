"""Named datasets, each one call away, and `load_dataset` (names or feature files).

Real data resolves under a data root: the `root` argument, else $SENTANGLE_DATA_ROOT, else
./data, else ../shared/data. A missing file is reported with every place it was looked for.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from sentangle.core.errors import DataError
from sentangle.core.registry import DATASETS, check_options
from sentangle.data.dataset import MSADataset, Split, sample_groups
from sentangle.data.lazy import is_lazy_folder, read_lazy
from sentangle.data.readers.labelcsv import read_label_csv
from sentangle.data.readers.mintrec import read_mintrec
from sentangle.data.readers.mmsa import read_mmsa_pickle
from sentangle.data.readers.mult import read_mult_pickle
from sentangle.data.readers.npz import read_npz_utterances
from sentangle.data.readers.speech import check_options as check_speech_options
from sentangle.data.readers.speech import read_speech
from sentangle.data.readers.urfunny import read_urfunny
from sentangle.data.safe_pickle import load_pickle
from sentangle.data.synthetic import make_synthetic
from sentangle.data.text import prepare_text, text_setting

ENV_ROOT = "SENTANGLE_DATA_ROOT"


def root_candidates(root: str | os.PathLike | None = None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    out = [Path(os.environ[ENV_ROOT])] if os.environ.get(ENV_ROOT) else []
    return out + [Path("data"), Path("..") / "shared" / "data"]


def find_file(root, relative: str, dataset: str) -> Path:
    tried = [c / relative for c in root_candidates(root)]
    for path in tried:
        if path.exists():
            return path
    where = ", ".join(str(p.resolve()) for p in tried)
    raise DataError(
        f"dataset {dataset!r} needs {relative}; not found at {where}. "
        f"Point --data-root (or ${ENV_ROOT}) at the folder that holds it."
    )


# Reader arguments the loader supplies itself, not options of a config.
READER_ARGUMENTS = ("root", "data", "return_factors")


@DATASETS.register("synthetic")
def synthetic(root=None, **kwargs) -> MSADataset:
    """The controllable synthetic benchmark (docs/synthetic.md); needs no files."""

    check_options(make_synthetic, kwargs, "dataset 'synthetic'", skip=READER_ARGUMENTS)
    ds = make_synthetic(**kwargs)
    assert isinstance(ds, MSADataset)  # check_options refused return_factors
    return ds


@DATASETS.register("mosi")
def mosi(root=None) -> MSADataset:
    """CMU-MOSI, standard split 1284/229/686, real transcripts only (text modality)."""

    return read_label_csv(find_file(root, "mosi/label.csv", "mosi"), "mosi")


@DATASETS.register("mosei")
def mosei(root=None) -> MSADataset:
    """CMU-MOSEI text; whatever splits its label file holds (the shared copy: train and valid)."""

    return read_label_csv(find_file(root, "mosei/label.csv", "mosei"), "mosei")


@DATASETS.register("mintrec")
def mintrec(root=None, labels="intent20") -> MSADataset:
    """MIntRec text, 20 intents (or `labels: binary` for the 2 coarse classes)."""

    folder = find_file(root, "mintrec/train.tsv", "mintrec").parent
    return read_mintrec(folder, "mintrec", labels=labels)


@DATASETS.register("mosi_utt")
def mosi_utt(root=None, shortcut_vision=False) -> MSADataset:
    """Real MOSI on the bc-LSTM release's own split: transcript tokens + 73-d openSMILE audio.

    The release's vision (3D-CNN) vectors were learned with the labels of its training part, so
    they predict train/valid labels and fail at test. `shortcut_vision: true` adds them as a
    deliberately misleading third modality for shortcut studies; never use it for a headline score.
    """

    npz_path = find_file(root, "mosi/bclstm_utterance_features.npz", "mosi_utt")
    csv_path = find_file(root, "mosi/label.csv", "mosi_utt")
    mods = ("audio", "vision") if shortcut_vision else ("audio",)
    ds = read_npz_utterances(npz_path, modalities=mods, name="mosi_utt")
    text_by_id = _mosi_texts(csv_path)
    all_ids = [i for sp in ds.splits.values() for i in sp.ids]
    missing = [i for i in all_ids if i not in text_by_id]
    if missing:
        raise DataError(f"{csv_path}: no transcript for {len(missing)} ids of {npz_path} (e.g. {missing[:3]})")
    for sp in ds.splits.values():
        sp.texts = [text_by_id[i] for i in sp.ids]
    ds.source = f"{npz_path} + {csv_path}"
    return ds


@DATASETS.register("emodb")
def emodb(root=None, audio="egemaps", text="en", max_frames=None, workers=1, perturb=None) -> MSADataset:
    """EmoDB (Berlin emotional speech): 535 German utterances, 10 speakers, 7 emotions, the fixed
    speaker-independent split 344/99/92. audio: a registered audio extractor or none; text: en (an
    English rendering of the sentence), de (the German sentence spoken) or none; max_frames caps the
    frames (window averages); workers: extraction processes; perturb: a waveform perturbation of
    the test clips (data/waveform.py). See readers/speech.py."""

    check_speech_options("emodb", audio, text, max_frames, workers, perturb)  # before looking for files
    path = find_file(root, "emodb/labels.csv", "emodb")
    return read_speech(path, "emodb", audio, text, max_frames, workers, perturb)


@DATASETS.register("ravdess")
def ravdess(root=None, audio="egemaps", text="en", max_frames=None, workers=1, perturb=None) -> MSADataset:
    """RAVDESS speech: 1,440 English utterances, 24 actors, 8 emotions, the fixed actor-independent
    split 960/240/240. Options as emodb's; text: en (the statement spoken) or none."""

    check_speech_options("ravdess", audio, text, max_frames, workers, perturb)  # before looking for files
    path = find_file(root, "ravdess/labels.csv", "ravdess")
    return read_speech(path, "ravdess", audio, text, max_frames, workers, perturb)


@DATASETS.register("mmsa")
def mmsa(root=None, file="MOSI/Processed/unaligned_50.pkl", text="auto", trusted=False) -> MSADataset:
    """An MMSA feature pickle (aligned_50.pkl / unaligned_50.pkl), `file` under the data root."""

    path = Path(file) if Path(file).is_absolute() else find_file(root, file, "mmsa")
    return read_mmsa_pickle(path, name=Path(file).stem, trusted=trusted, text=text)


@DATASETS.register("mult")
def mult(root=None, file="mosi_data.pkl", trusted=False) -> MSADataset:
    """A MulT word-aligned feature pickle (mosi_data.pkl, mosei_senti_data.pkl), `file` under the data root."""

    path = Path(file) if Path(file).is_absolute() else find_file(root, file, "mult")
    return read_mult_pickle(path, name=Path(file).stem, trusted=trusted)


def _mosi_texts(csv_path: Path) -> dict[str, str]:
    import csv

    with open(csv_path, encoding="utf-8", newline="") as f:
        return {f"{r['video_id']}_{r['clip_id']}": r["text"] for r in csv.DictReader(f)}


FILE_OPTIONS = {
    ".pkl": ("trusted",),
    ".pickle": ("trusted",),
    ".npz": ("split_key",),
    ".csv": (),
}


def _from_file(path: Path, **kwargs) -> MSADataset:
    """A feature file given by path: the format is told by its suffix and its keys."""
    suffix = path.suffix.lower()
    if suffix in FILE_OPTIONS:
        check_options(None, kwargs, f"feature file {path} ({suffix})", valid=FILE_OPTIONS[suffix])
    if suffix in (".pkl", ".pickle"):
        trusted = kwargs.get("trusted", False)
        data = load_pickle(path, trusted=trusted)
        first = data.get("train") if isinstance(data, dict) else None
        # MulT keeps labels as an (N, 1, 1) array and has no MMSA-only keys; MMSA's 'labels', where
        # present, is a dict. Not asking for the exact shape lets the MulT reader name a wrong one.
        mult = (
            isinstance(first, dict)
            and "regression_labels" not in first
            and "text_bert" not in first
            and not any(k.endswith("_lengths") for k in first)
            and "labels" in first
            and not isinstance(first["labels"], dict)
        )
        reader = read_mult_pickle if mult else read_mmsa_pickle
        return reader(path, trusted=trusted, data=data)
    if suffix == ".npz":
        return read_npz_utterances(path, **{k: v for k, v in kwargs.items() if k in ("modalities", "split_key")})
    if suffix == ".csv":
        return read_label_csv(path, path.stem)
    raise DataError(f"{path}: unknown feature file type {suffix!r}; expected .pkl (MMSA/MulT), .npz or label .csv")


def holdout_from_valid(ds: MSADataset) -> MSADataset:
    """Split `valid` by video into a first half (new valid) and a second half (test).

    For files without a test split (the shared MOSEI copy): select on one half, report the other.
    Ids are "video$_$clip" or "video_clip"; grouping by video keeps a speaker out of both halves.
    """
    if "test" in ds.splits:
        raise DataError(f"{ds.source}: holdout_from_valid asked for, but the data already has a test split")
    sp = ds.splits["valid"]
    videos = sample_groups(ds, "valid")
    order = sorted(set(videos))
    first = set(order[: len(order) // 2])
    idx = np.arange(len(sp))
    in_first = np.array([v in first for v in videos])
    ds.splits["valid"], ds.splits["test"] = sp.subset(idx[in_first]), sp.subset(idx[~in_first])
    return ds


OLD_TEXT_OPTIONS = {"encoder": "name", "max_length": "max_length", "finetune_text": "finetune"}


def load_dataset(
    name: str,
    root=None,
    modalities: list[str] | None = None,
    normalize: list[str] | tuple[str, ...] = ("audio", "vision"),
    holdout_valid: bool = False,
    text_encoder: dict | None = None,
    cache_dir=None,
    required_splits: tuple[str, ...] = ("train", "valid"),
    **kwargs,
) -> MSADataset:
    """Load a named dataset (see `list_datasets()`), a feature file or a converted feature folder
    (`sentangle data convert`), validated and normalised. `required_splits`: () reads data with
    test clips only (input to a trained model, normalised with its statistics: normalize=()).

    Raw texts are encoded for `text_encoder`, the model's text encoder setting (text.text_setting;
    default: frozen MiniLM features), with the feature cache under `cache_dir`."""
    old = {k: kwargs.pop(k) for k in OLD_TEXT_OPTIONS if k in kwargs}
    if old:
        warnings.warn(
            f"dataset option(s) {sorted(old)} are deprecated: the text encoder is a model setting now, "
            "model.text_encoder: {name, finetune, max_length} (here: load_dataset(text_encoder=...))",
            FutureWarning,
            stacklevel=2,
        )
        text_encoder = {**(text_encoder or {}), **{OLD_TEXT_OPTIONS[k]: v for k, v in old.items()}}
    setting = text_setting(text_encoder)
    path = Path(name)

    if is_lazy_folder(path):  # a converted feature folder (data/lazy.py): features memory-mapped
        ds = read_lazy(path)
    elif path.suffix:  # dataset names have none
        if not path.exists():
            raise DataError(f"feature file {path} does not exist")
        ds = _from_file(path, **kwargs)
    else:
        make = DATASETS.get(name)
        check_options(make, kwargs, f"dataset {name!r}", skip=READER_ARGUMENTS)
        ds = make(root=root, **kwargs)
    prepare_text(ds, setting, cache_dir)
    if holdout_valid:
        ds = holdout_from_valid(ds)
    if modalities:
        ds.select_modalities(modalities)
    ds.validate(required=required_splits)
    if normalize:
        ds.normalize(tuple(normalize))
    return ds


def list_datasets() -> list[str]:
    return DATASETS.names()


def describe(ds: MSADataset) -> dict:
    """What `sentangle data info` prints: sizes, modalities, shapes, label statistics."""
    out: dict = {
        "name": ds.name,
        "source": str(ds.source),
        "task": ds.task,
        "modalities": list(ds.modalities),
        "input_dims": ds.input_dims,
        "splits": {},
    }
    if ds.class_names:
        out["classes"] = list(ds.class_names)
    for s, sp in ds.splits.items():
        info: dict = {"samples": len(sp)}
        for m, mask in sp.masks.items():
            lengths = mask.sum(1)
            info[m] = {"max_len": int(mask.shape[1]), "mean_len": round(float(lengths.mean()), 1)}
        if sp.tokens is not None:
            info["text_tokens"] = {"max_len": int(sp.tokens["input_ids"].shape[1])}
        if ds.task == "regression":
            info["label_mean"] = round(float(sp.labels.mean()), 4)
            info["label_std"] = round(float(sp.labels.std()), 4)
        else:
            info["class_counts"] = np.bincount(sp.labels, minlength=len(ds.class_names or [])).tolist()
        out["splits"][s] = info
    return out


__all__ = ["load_dataset", "list_datasets", "describe", "find_file", "Split"]


@DATASETS.register("urfunny")
def urfunny(
    root=None,
    text="auto",
    context=False,
    max_context=5,
    max_frames=None,
    trusted=False,
) -> MSADataset:
    """UR-FUNNY humor detection (binary: not_humor / humor) from the release's pickles under urfunny/.

    Reads every modality whose files exist; a folder with only data_folds.pkl + humor_label_sdk.pkl
    (the shared copy) fails with the list of missing files. See readers/urfunny.py for the layout.
    """

    folder = find_file(root, "urfunny/data_folds.pkl", "urfunny").parent
    return read_urfunny(
        folder,
        "urfunny",
        text=text,
        context=context,
        max_context=max_context,
        max_frames=max_frames,
        trusted=trusted,
    )
