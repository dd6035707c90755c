"""A served model: a model folder loaded once per process, the requests it is asked turned into
datasets for runs/inference.py, its card, and the short-window batching of JSON requests.

A request's prediction must not depend on the requests it shares a batch with. Texts are encoded
together, each batch of the encoder padded to its longest text with padding masked out of
attention, so a text's features change only by float rounding; `predict_clips` then batches the
model's input by length, as `sentangle predict` does.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue

import numpy as np

from sentangle.core.errors import ConfigError, UserError
from sentangle.data.dataset import MSADataset, Split
from sentangle.data.extract import MediaClip
from sentangle.data.text import ALL_LAYERS, TextFeaturizer, describe_setting, prepare_text
from sentangle.models.portable import is_model_folder
from sentangle.runs.inference import (
    checked_input,
    default_model_dir,
    load_trained,
    media_input,
    model_features,
    model_modalities,
    predict_rows,
    required_statistics,
    text_setting_of,
)


def default_model_dirs() -> list[Path]:
    """The model folders `sentangle serve` serves when it is given none: the bundled text model."""
    return [default_model_dir()]


@dataclass(frozen=True)
class Limits:
    """What one request may ask (per worker process for the counts)."""

    max_body_bytes: int = 25 * 2**20  # a whole request, uploads included
    max_text_chars: int = 2000  # the text encoders read 64-512 tokens; far longer text is cut anyway
    max_media_seconds: float = 60.0  # per uploaded file
    max_batch_items: int = 256  # texts or CSV rows of one batch request
    max_feature_frames: int = 5000  # frames per modality of given features
    extractions: int = 1  # media extractions running at once; more wait
    extraction_wait_s: float = 30.0  # then 503 "busy"
    batch_window_s: float = 0.005  # how long the first text of a batch waits for others
    max_batch_size: int = 64  # texts in one forward pass


class RequestError(UserError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Item:
    """One JSON input: a text and/or features (frames x dims per modality, as the extractor gives
    them, before normalisation)."""

    text: str | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        """Items batched together give the same modalities."""
        return self.text is not None, tuple(sorted(self.features))


_FEATURIZERS: dict[str, TextFeaturizer] = {}


def featurizer_for(setting: dict) -> TextFeaturizer:
    """One text encoder per setting in a process, shared by the models that read it."""
    key = json.dumps(setting, sort_keys=True)
    if key not in _FEATURIZERS:
        _FEATURIZERS[key] = TextFeaturizer(setting)
    return _FEATURIZERS[key]


class ServedModel:
    """A model folder, loaded once: weights, normalisation statistics, feature spec and its text
    encoder, kept in memory (encoding writes no cache file)."""

    def __init__(self, folder: str | Path, name: str, limits: Limits | None = None):
        folder, limits = Path(folder), limits or Limits()
        if not is_model_folder(folder):
            raise ConfigError(f"MODEL_DIR {folder}: not a model folder; expected a folder written by sentangle export")
        self.name, self.folder, self.limits = name, folder, limits
        self.trained = load_trained(folder)
        self.stats = required_statistics(self.trained)
        self.features = model_features(self.trained)
        self.modalities = model_modalities(self.trained)
        self.task = self.features.get("task", "regression")
        self.class_names = self.features.get("class_names")
        self.text_setting = text_setting_of(self.trained)
        # Raw text needs the encoder the model was trained with; a model trained on a file's text
        # features (no setting) reads text only as given features.
        self.featurizer = (
            featurizer_for(self.text_setting) if "text" in self.modalities and self.text_setting is not None else None
        )
        self.lock = threading.Lock()  # one forward pass at a time: torch already uses every core
        self.batcher = Batcher(self.predict_items, limits.batch_window_s, limits.max_batch_size)
        self.card = model_card(self)

    # ---- checks before any work ---------------------------------------------------------------
    def reads(self, modality: str, what: str) -> None:
        if modality not in self.modalities:
            raise RequestError(
                422, f"{what}: model {self.name!r} reads no {modality}; it reads {', '.join(self.modalities)}"
            )

    def check_text(self, text: str | None, where: str = "text") -> None:
        if text is None:
            return
        if not text.strip():
            raise RequestError(422, f"{where}: empty; expected a sentence, or leave the field out")
        if len(text) > self.limits.max_text_chars:
            raise RequestError(
                413, f"{where}: {len(text)} characters; at most {self.limits.max_text_chars} are accepted"
            )
        self.reads("text", where)
        if self.featurizer is None:
            raise RequestError(
                422,
                f"{where}: model {self.name!r} was trained on text features that do not say which encoder made "
                "them; it reads text only as features.text",
            )

    def item(self, text: str | None, features: dict[str, list[list[float]]] | None) -> Item:
        """A JSON input checked against what the model reads (RequestError naming the field)."""
        self.check_text(text)
        arrays = {}
        for m, frames in (features or {}).items():
            where = f"features.{m}"
            self.reads(m, where)
            if m == "text" and text is not None:
                raise RequestError(422, f"{where}: give the text either as text or as features, not both")
            dims = self.trained.input_dims.get(m)
            if dims is None:
                raise RequestError(422, f"{where}: model {self.name!r} encodes text itself (tokens); give it as text")
            try:
                x = np.asarray(frames, np.float32)
            except ValueError:  # frames of different lengths
                x = np.zeros((0,), np.float32)
            if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != dims:
                raise RequestError(
                    422,
                    f"{where}: expected a list of frames, each a list of {dims} numbers (at least one frame)",
                )
            if x.shape[0] > self.limits.max_feature_frames:
                raise RequestError(
                    413, f"{where}: {x.shape[0]} frames; at most {self.limits.max_feature_frames} are accepted"
                )
            arrays[m] = x
        if text is None and not arrays:
            raise RequestError(
                422, f"no input: give text (or features of {', '.join(self.trained.input_dims)}) to predict on"
            )
        return Item(text, arrays)

    # ---- prediction ---------------------------------------------------------------------------
    def predict_items(self, items: list[Item]) -> list[dict | Exception]:
        """A record per item (runs.inference.predict_rows, contributions included) or the error of
        its group; items with the same modalities are predicted together."""
        groups: dict[tuple, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(it.key, []).append(i)
        out: list[dict | Exception] = [Exception("not predicted")] * len(items)
        for idx in groups.values():
            try:
                rows = self._rows(self.items_dataset([items[i] for i in idx]))
            except Exception as e:  # the group's requests get the error, the others their answer
                rows = [e] * len(idx)  # type: ignore[list-item]
            for i, r in zip(idx, rows):
                out[i] = r
        return out

    def items_dataset(self, items: list[Item]) -> MSADataset:
        """Items of one key as a dataset of one split "test", normalised with the model's statistics."""
        n, feats, masks = len(items), {}, {}
        for m in items[0].features:
            width = max(len(it.features[m]) for it in items)
            x = np.zeros((n, width, self.trained.input_dims[m]), np.float32)
            mask = np.zeros((n, width), bool)
            for k, it in enumerate(items):
                x[k, : len(it.features[m])], mask[k, : len(it.features[m])] = it.features[m], True
            feats[m], masks[m] = x, mask
        texts = None if items[0].text is None else [str(it.text) for it in items]
        labels = np.zeros(n, np.float32 if self.task == "regression" else np.int64)
        split = Split(feats, masks, labels, [f"input-{k}" for k in range(n)], texts)
        ds = MSADataset(
            "request", {"test": split}, self.task, self.class_names, None, source="the request", info={"labels": "none"}
        )
        prepare_text(ds, self.text_setting, featurizer=self.featurizer)
        ds.validate(required=())
        return checked_input(self.trained, ds, self.stats, self.missing(ds.modalities))

    def missing(self, given) -> tuple[str, ...]:
        """The modalities the model reads that the input lacks: read as missing (masked out)."""
        return tuple(m for m in self.modalities if m not in given)

    def _rows(self, ds: MSADataset) -> list[dict]:
        with self.lock:
            return predict_rows(self.trained, ds, contributions=True)

    def predict_media(self, text: str | None, audio: Path | None, video: Path | None, workdir: Path) -> dict:
        """One clip given as files, extracted with the model's own extractors (runs.inference.media_input);
        the extraction cache lives in `workdir`, which the caller removes."""
        given = {"text"} if text is not None else set()
        if audio is not None or (video is not None and "audio" in self.modalities):
            given.add("audio")
        if video is not None:
            given.add("vision")
        clip = MediaClip("input", text, None if audio is None else str(audio), None if video is None else str(video))
        ds, _ = media_input(
            self.trained, [clip], self.missing(given), cache_dir=workdir / "cache", text_featurizer=self.featurizer
        )
        return self._rows(ds)[0]

    def answer(self, row: dict) -> dict:
        """A record of predict_rows as the API's Prediction."""
        out: dict = {
            "model": self.name,
            "contributions": {},
            "diagnostics": {},
            "missing": [],
        }
        probabilities = {}
        for k, v in row.items():
            if k in ("id", "label"):
                continue
            if k == "prediction":
                out["score" if self.task == "regression" else "label"] = v
            elif k == "polarity":
                out["polarity"] = v
            elif k.startswith("prob_"):
                probabilities[k[len("prob_") :]] = v
            elif k.startswith("contribution_"):
                out["contributions"][k[len("contribution_") :]] = v
            elif not k.startswith("logit_"):
                out["diagnostics"][k] = v
        if probabilities:
            out["probabilities"] = probabilities
        out["missing"] = [m for m in self.modalities if m not in out["contributions"]]
        return out


class Batcher:
    """Requests that arrive within `window` seconds of the first one waiting (or while a batch
    runs) are predicted in one call of `run`, up to `max_size` of them: under load, batches grow
    and so does throughput. One thread per model, started on the first request."""

    def __init__(self, run: Callable[[list], list], window: float, max_size: int):
        self.run, self.window, self.max_size = run, window, max_size
        self.queue: Queue = Queue()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()

    def submit(self, item) -> Future:
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="sentangle-batcher", daemon=True)
                self.thread.start()
        future: Future = Future()
        self.queue.put((item, future))
        return future

    def _loop(self) -> None:
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_size:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except Empty:
                    break
            try:
                results = self.run([item for item, _ in batch])
            except Exception as e:  # never let the thread die: every waiting request gets the error
                results = [e] * len(batch)
            for (_, future), result in zip(batch, results):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


# ---- the model card -------------------------------------------------------------------------------
def card_tables(markdown: str, section: str = "Metrics") -> list[dict]:
    """The tables of one section of a model card (runs/export.model_card): per table, its caption
    (the line before it), the seeds the caption names, and its rows as {column: cell}."""
    match = re.search(rf"^## {section}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    if not match:
        return []
    tables: list[dict] = []
    caption, header = "", None
    rows: list[dict] = []
    for line in [*match.group(1).splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip().strip("*").strip("`") for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(c) <= set("-: ") for c in cells):
                rows.append(dict(zip(header, cells)))
            continue
        if header is not None:
            seeds = re.search(r"seeds? \[?([\d, ]+)\]?", caption)
            numbers = [int(s) for s in re.findall(r"\d+", seeds.group(1))] if seeds else []
            tables.append({"caption": caption.rstrip(":"), "seeds": numbers, "rows": rows})
            caption, rows, header = "", [], None
        if line.strip():
            caption = line.strip()
    return tables


def model_card(served: ServedModel) -> dict:
    """What /v1/models says of a model: from its config, preprocessing.json and README.md."""
    build = served.trained.model.build_args or {}
    features = served.features
    readme = served.folder / "README.md"
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), build.get("name", ""))
    setting = served.text_setting
    return {
        "name": served.name,
        "title": title,
        "model": build.get("name"),
        "options": build.get("options", {}),
        "task": served.task,
        "class_names": served.class_names,
        "label_range": features.get("label_range"),
        "dataset": features.get("dataset"),
        "modalities": served.modalities,
        "input_dims": served.trained.input_dims,
        "text_encoder": None
        if setting is None
        else {**setting, "description": describe_setting(setting), "raw_text": setting["finetune"] != ALL_LAYERS},
        "extractors": features.get("extractors") or {},
        "metrics": card_tables(text),
        "card": text,
    }


def load_models(folders: list[Path], limits: Limits | None = None) -> dict[str, ServedModel]:
    """Each folder loaded once, named by its folder name (ConfigError when two share one)."""
    models: dict[str, ServedModel] = {}
    for folder in folders:
        name = Path(folder).resolve().name
        if name in models:
            raise ConfigError(
                f"MODEL_DIR {folder}: another model folder is also named {name!r}; the API names models by "
                "their folder, so rename one"
            )
        models[name] = ServedModel(folder, name, limits)
    return models
