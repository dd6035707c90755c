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

import numpy as np
import torch

from sentangle.config import RunConfig
from sentangle.core.errors import ConfigError, DataError, MissingFileError, UserError
from sentangle.data.dataset import MSADataset, Split, Standardize, collate, through_last_real
from sentangle.data.extract import MediaClip, media_clips, media_dataset
from sentangle.data.extractors.asr import transcriber
from sentangle.data.named import load_dataset
from sentangle.data.preprocessing import encoded_with, preprocessing_statistics
from sentangle.data.text import TextFeaturizer, prepare_text, text_setting
from sentangle.models.base import MSAModel, load_model
from sentangle.models.portable import is_model_folder
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.predictions import prediction_rows, probabilities
from sentangle.runs.runner import dataset_from_config

# The model folder that ships inside the package (benchmarks/pretrained.py rebuilds it): what
# `sentangle predict --text ...` and the Python API use when no model is given.
DEFAULT_MODEL = "text-mosei"


def default_model_dir() -> Path:
    """The bundled model folder: text only, frozen MiniLM features, trained on CMU-MOSEI's train
    split (its README.md is the model card). MissingFileError when the installation lacks it."""
    folder = Path(__file__).resolve().parents[1] / "pretrained" / DEFAULT_MODEL
    if not is_model_folder(folder):
        raise MissingFileError(
            f"the bundled model {DEFAULT_MODEL} is not installed (expected a model folder at {folder}); "
            "reinstall sentangle, or give a MODEL (a model folder or checkpoint.pt)"
        )
    return folder


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


def load_trained(path: str | os.PathLike | None = None, allow_unverified: bool = False) -> Trained:
    """A checkpoint.pt, or a model folder (models/portable.py); None: the bundled model."""
    path = default_model_dir() if path is None else Path(path)
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


def input_dataset(
    trained: Trained,
    data: str | None = None,
    root=None,
    trusted: bool = False,
    allow_missing: tuple[str, ...] = (),
    labelled: bool = True,
) -> MSADataset:
    """`data` (a dataset name or feature file; default: the model's own dataset) as the model reads
    it: normalised with the model's training statistics where they are known. `labelled=False`
    (predict) also reads a folder without train and valid splits, e.g. unlabelled clips from
    `sentangle extract`."""
    cfg, features = trained.cfg, model_features(trained)
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
    if not labelled and stats is not None:
        options["required_splits"] = ()
    text = text_setting_of(trained)
    if data:
        pickled = Path(data).suffix.lower() in (".pkl", ".pickle")  # the only files with a trust option
        trust: dict = {"trusted": trusted} if pickled else {}
        ds = load_dataset(data, root=root, text_encoder=text, **trust, **options)
    elif cfg is not None:
        if cfg.train.protocol == "grouped_cv":
            raise ConfigError(
                f"{trained.what} is one fold's model of a grouped cross-validation run (train.protocol: "
                "grouped_cv): its dataset's own splits hold speakers it trained on, so their metrics would not "
                "be held-out ones (those are in the run folder: the fold's and the seed's metrics.json and "
                "predictions.npz); give the data to read (a dataset name or feature file)"
            )
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
    return checked_input(trained, ds, stats, allow_missing, data)


def model_features(trained: Trained) -> dict:
    """The feature spec the model was trained on (data/preprocessing.py), {} for old checkpoints."""
    return (trained.preprocessing or {}).get("features") or {}


def text_setting_of(trained: Trained) -> dict | None:
    cfg = trained.cfg
    return cfg.model.get("text_encoder") if cfg is not None else model_features(trained).get("text_encoder")


def model_modalities(trained: Trained) -> list[str]:
    """What the model reads: the spec's modalities, else its feature inputs (old checkpoints)."""
    return list(model_features(trained).get("modalities") or trained.input_dims)


def checked_input(
    trained: Trained, ds: MSADataset, stats: dict | None, allow_missing: tuple[str, ...], data: str | None = None
) -> MSADataset:
    check_inputs(trained, ds, data, allow_missing)
    return ds if stats is None else ds.normalize_with(stats)


def _spec_text(m: str, dims: int | None, extractor: dict | None) -> str:
    size = "" if dims is None else f"{dims} features"
    if not extractor:
        return f"{m}: {size} (extractor not recorded)"
    return (
        f"{m}: {size} from {extractor.get('name')} ({extractor.get('package')} {extractor.get('version')}, "
        f"settings {extractor.get('settings')})"
    )


def check_inputs(
    trained: Trained, ds: MSADataset, data: str | None = None, allow_missing: tuple[str, ...] = ()
) -> None:
    """Refuse input the model cannot read as it read its training data, naming both sides: other
    feature sizes, other extractors or extractor settings, text from another encoder, or a
    modality the model reads that the input lacks (unless `allow_missing` names it: then it is read
    as missing, as the robustness suite's missing-modality condition does). Another version of the
    same extractor is a warning."""
    where, what = ds.source or data or ds.name, trained.what
    wanted = model_modalities(trained)
    unknown = sorted(set(allow_missing) - set(wanted))
    if unknown:
        raise ConfigError(f"--allow-missing {', '.join(unknown)}: {what} reads no such modality; it reads {wanted}")
    mine = model_features(trained).get("extractors") or {}
    theirs = ds.info.get("extractors") or {}
    have = ds.input_dims
    for m, d in trained.input_dims.items():
        if m not in have:
            continue
        a, b = mine.get(m), theirs.get(m)
        other_extractor = a and b and (a.get("name"), a.get("settings")) != (b.get("name"), b.get("settings"))
        if have[m] != d or other_extractor:
            raise DataError(
                f"{where} does not hold the features {what} was trained on: "
                f"input {_spec_text(m, have[m], b)}; model {_spec_text(m, d, a)}"
            )
        if a and b and a.get("version") != b.get("version"):
            warnings.warn(
                f"{where}: {m} features from {b.get('package')} {b.get('version')}; {what} was trained on "
                f"{a.get('package')} {a.get('version')} (same extractor and settings): small differences are possible",
                stacklevel=3,
            )
    model_text, input_text = text_setting_of(trained), encoded_with(ds)
    if model_text is not None and input_text is not None:
        name = text_setting(model_text)["name"]
        if input_text["name"] != name:
            raise DataError(
                f"{where}: its text was encoded by {input_text['name']!r}; {what} reads text from "
                f"its text encoder {name!r} (give raw texts and the model encodes them itself)"
            )
    absent = [m for m in wanted if m not in ds.modalities]
    refused = [m for m in absent if m not in allow_missing]
    if refused:
        raise DataError(
            f"{where} has no {', '.join(refused)}, which {what} reads; give it, or pass "
            f"{' '.join(f'--allow-missing {m}' for m in refused)} to predict with "
            f"{'it' if len(refused) == 1 else 'them'} missing (masked out, as the robustness suite's missing condition)"
        )
    if absent:
        # The model runs on (it treats the modality as wholly missing), but its numbers are then
        # those of a robustness condition, not of the trained model on complete data.
        warnings.warn(
            f"{where} has no {', '.join(absent)}, which {what} was trained with: predicting with "
            f"{'it' if len(absent) == 1 else 'them'} missing (zeros, masked out)",
            stacklevel=3,
        )


# ---- unlabelled clips -----------------------------------------------------------------------------
def required_statistics(trained: Trained) -> dict[str, Standardize]:
    """The model's normalisation statistics; DataError when it has none (new input, unlike its own
    dataset, cannot then be read as its training data was)."""
    stats = preprocessing_statistics(trained.preprocessing, trained.what)
    if stats is None:
        raise DataError(
            f"{trained.what} carries no normalisation statistics, so new input cannot be read as its training "
            "data was; export it again from its run folder (sentangle export), which recomputes them"
        )
    return stats


def media_input(
    trained: Trained,
    clips: list[MediaClip],
    allow_missing: tuple[str, ...] = (),
    workers: int = 1,
    progress: bool = False,
    cache_dir=None,
    asr: str | None = None,
    text_featurizer: TextFeaturizer | None = None,
) -> tuple[MSADataset, dict[str, str]]:
    """Clips given as text and media files (`predict --text/--audio/--video`, or a CSV with
    --media), extracted with the model's own extractors and settings and normalised with its
    training statistics; ({id: why} for clips that could not be read). `cache_dir`: the per-clip
    extraction cache; `text_featurizer` encodes the texts in memory (no text cache written)."""
    features = model_features(trained)
    stats = required_statistics(trained)
    extractors = features.get("extractors") or {}
    wanted = model_modalities(trained)
    given = {"audio": any(c.audio or c.video for c in clips), "vision": any(c.video for c in clips)}
    run: dict[str, dict] = {}
    for m in ("audio", "vision"):
        if m not in wanted or not given[m]:
            continue  # not read by the model, or not given: check_inputs refuses it unless allowed
        if m not in extractors:
            source = (features.get("dataset") or {}).get("name", "data that does not say")
            raise DataError(
                f"{trained.what} was trained on {m} features of {source}, which do not say how they were "
                f"extracted; it reads prepared features only (give a feature file), not {m} media"
            )
        run[m] = extractors[m]
    vision = run.get("vision")
    fps = float(vision["frames_per_second"]) if vision else 5.0
    ds, failures = media_dataset(
        clips,
        run["audio"]["name"] if "audio" in run else None,
        vision["name"] if vision else None,
        fps,
        features.get("max_frames"),
        task=features.get("task", "regression"),
        class_names=features.get("class_names"),
        workers=workers,
        progress=progress,
        cache_dir=cache_dir,
        asr=asr,
    )
    prepare_text(ds, text_setting_of(trained), featurizer=text_featurizer)
    ds.validate(required=())
    return checked_input(trained, ds, stats, allow_missing), failures


def _lengths(sp) -> np.ndarray:
    """Per clip, the length of every modality up to its last real frame (and its token count):
    clips batched together then share every padded length."""
    masks = [*sp.masks.values(), *([sp.tokens["attention_mask"]] if sp.tokens is not None else [])]
    cols = [through_last_real(mask) for mask in masks]
    return np.stack(cols, axis=1) if cols else np.zeros((len(sp), 1), np.int64)


def predict_clips(
    model: MSAModel, ds: MSADataset, split: str, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, np.ndarray]]:
    """(predictions, labels, ids, diagnostics) of one split, each clip's prediction its own whatever
    file or batch it arrives in. A batch is cut to its longest clip, and some models average frames
    in windows of the padded length (`windows_padding`, layers.masked_downsample): theirs batch a
    clip only with clips of its own lengths; the others in order. Diagnostics: the model's per-clip
    gates and branch weights (its `extras` named *gate* or *weight*)."""
    if split not in ds.splits:
        raise DataError(f"{ds.source or ds.name}: no split {split!r}; it has {sorted(ds.splits)}")
    sp = ds.splits[split]
    keys = _lengths(sp) if model.windows_padding else np.zeros((len(sp), 1), np.int64)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    preds: list = [None] * len(sp)
    extras: dict[str, list] = {}
    model.eval()
    with torch.no_grad():
        for g in range(int(group.max()) + 1 if len(sp) else 0):
            members = np.flatnonzero(group.reshape(-1) == g)
            for start in range(0, len(members), batch_size):
                index = members[start : start + batch_size]
                out = model(collate(sp, index, ds.task))
                for k, i in enumerate(index):
                    preds[i] = out.prediction[k].float().numpy()
                for name, value in out.extras.items():
                    if ("gate" in name or "weight" in name) and value.dim() in (1, 2) and value.shape[0] == len(index):
                        column = extras.setdefault(name, [None] * len(sp))
                        for k, i in enumerate(index):
                            column[i] = value[k].float().numpy()
    diagnostics = {n: np.stack(v) for n, v in extras.items() if all(x is not None for x in v)}
    return np.stack(preds) if preds else np.zeros(0, np.float32), np.asarray(sp.labels), list(sp.ids), diagnostics


def without(sp: Split, m: str, input_dims: dict[str, int]) -> Split:
    """`sp` with modality `m` missing, as the robustness suite's missing condition removes it: the
    batch lacks it and the model reads it as wholly missing (MSAModel.inputs). When nothing would be
    left, `m` stays as that same missing form (zeros, no real frame), which a batch needs to exist."""
    feats = {k: v for k, v in sp.features.items() if k != m}
    masks = {k: v for k, v in sp.masks.items() if k != m}
    tokens = None if m == "text" else sp.tokens
    if not feats and tokens is None:
        feats = {m: np.zeros((len(sp), 1, input_dims[m]), np.float32)}
        masks = {m: np.zeros((len(sp), 1), bool)}
    return Split(feats, masks, sp.labels, sp.ids, sp.texts, tokens, {k: t for k, t in sp.transforms.items() if k != m})


def _scores(pred: np.ndarray, chosen: np.ndarray | None) -> np.ndarray:
    """A score per clip: the prediction (regression), or the probability of class `chosen`."""
    if pred.ndim == 1:
        return pred.astype(np.float64)
    return probabilities(pred)[np.arange(len(pred)), chosen]


def modality_contributions(
    model: MSAModel, ds: MSADataset, split: str = "test", pred: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per modality the input has, per clip: the prediction minus the prediction with that modality
    missing (`without`). For a classifier, the change in the probability of the class predicted on
    the whole input. `pred`: the predictions on the whole input, when already computed."""
    sp = ds.splits[split]
    if pred is None:
        pred = predict_clips(model, ds, split)[0]
    chosen = None if pred.ndim == 1 else pred.argmax(1)
    full = _scores(pred, chosen)
    dims = {**model.input_dims, **ds.input_dims}
    out = {}
    for m in ds.modalities:
        masked = MSADataset(ds.name, {split: without(sp, m, dims)}, ds.task, ds.class_names, ds.label_range)
        out[m] = full - _scores(predict_clips(model, masked, split)[0], chosen)
    return out


def predict_rows(trained: Trained, ds: MSADataset, split: str = "test", contributions: bool = False) -> list[dict]:
    """One record per clip of `split` (runs/predictions.prediction_rows); `contributions` adds
    contribution_<modality> (modality_contributions) to each."""
    pred, label, ids, diagnostics = predict_clips(trained.model, ds, split)
    features = model_features(trained)
    labelled = ds.info.get("labels") != "none"
    rows = prediction_rows(
        pred,
        ids,
        None if ds.task == "regression" else (ds.class_names or features.get("class_names")),
        label if labelled else None,
        features.get("label_range", ds.label_range),
        diagnostics,
    )
    if contributions:
        for m, delta in modality_contributions(trained.model, ds, split, pred).items():
            for row, d in zip(rows, delta):
                row[f"contribution_{m}"] = round(float(d), 6)
    return rows


def predict_input(
    trained: Trained,
    data: str | None = None,
    *,
    text: str | None = None,
    audio: str | os.PathLike | None = None,
    video: str | os.PathLike | None = None,
    media: str | os.PathLike | None = None,
    split: str = "test",
    allow_missing: tuple[str, ...] = (),
    root=None,
    trusted: bool = False,
    workers: int = 1,
    progress: bool = False,
    asr: str | None = None,
) -> list[dict]:
    """What `sentangle predict` computes: one record per clip (runs/predictions.prediction_rows),
    then one {"id", "error"} per clip that could not be read, with the reason. The input is one clip (`text` and/or `audio` /
    `video` files), a CSV of clips with the folder `media` that holds them, or `data` (a dataset
    name, feature file or folder; default the model's own dataset), whose `split` is predicted.
    `asr` (a recogniser, extractors/asr.py) transcribes the clips given without text."""
    single = text is not None or audio is not None or video is not None
    if asr is not None and not (single or media is not None):
        raise ConfigError("--asr transcribes clips given as media (--audio / --video, or a CSV with --media)")
    if asr is not None:
        transcriber(asr)  # an unknown name or a missing package fails here
    if single and (data or media):
        raise ConfigError("give one input: a clip (--text / --audio / --video) or DATA, not both")
    if media is not None and not (data and Path(data).suffix.lower() == ".csv"):
        raise ConfigError(f"--media {media} needs DATA to be a CSV of clips (video_id, clip_id, text)")
    failures: dict[str, str] = {}
    if single:
        for flag, file in (("--audio", audio), ("--video", video)):
            if file is not None and not Path(file).is_file():
                raise MissingFileError(f"{flag} {file}: no such file; expected an audio or video clip")
        clips = [MediaClip("input", text, None if audio is None else str(audio), None if video is None else str(video))]
    elif media is not None:
        clips, failures = media_clips(media, str(data), asr=asr is not None)
    if single or media is not None:
        if not clips:
            raise DataError(f"{data}: none of its clips was found under {media}")
        ds, failed = media_input(trained, clips, allow_missing, workers, progress, asr=asr)
        failures.update(failed)
    else:
        ds = input_dataset(trained, data, root, trusted, allow_missing, labelled=False)
    return predict_rows(trained, ds, split) + [{"id": i, "error": why} for i, why in failures.items()]
