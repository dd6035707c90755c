"""`sentangle extract MEDIA_DIR CSV OUT`: a user's own clips turned into a feature folder.

The CSV is an MMSA label.csv: video_id, clip_id, text, and optionally label, mode, start, end and
file. Each clip is found by `file` (relative to MEDIA_DIR), else as MEDIA_DIR/<video_id>/<clip_id>.<ext>
(the MMSA Raw layout), else MEDIA_DIR/<video_id>_<clip_id>.<ext>, else, when the row has start/end,
as the whole video MEDIA_DIR/<video_id>.<ext>. start/end (seconds) cut the clip out of a file named by
`file` or out of a whole video; a file found by the clip layouts is already the clip, so start/end
(which MOSI's label.csv gives in video time) are not applied to it.

Every clip's features are cached on disk (keyed by the file's path, size and mtime, the cut and the
extractor's spec; written atomically), so a killed run resumes where it stopped and a second run
extracts nothing. The folder (data/lazy.py layout) is written whole or not at all; texts stay raw
strings (the model's text encoder setting encodes them at train time). report.json and report.md
in it count clips, seconds, frames and list every clip that failed, with the reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import json
import math
import multiprocessing as mp
import os
import pickle
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentangle.core.errors import ConfigError, DataError, MissingFileError
from sentangle.core.io import atomic_write, check_output, exit_with_parent, new_output, output_errors, write_json
from sentangle.core.io import write_text as write_text_file
from sentangle.data.dataset import SPLITS, MSADataset, Split, through_last_real
from sentangle.data.extractors.asr import transcriber
from sentangle.data.extractors.audio import SAMPLE_RATE, audio_extractor, package_version
from sentangle.data.lazy import LazyWriter, read_lazy
from sentangle.data.media import MEDIA_EXTENSIONS, decode_audio, probe
from sentangle.data.readers.labelcsv import MODE_ALIASES, label_rows
from sentangle.data.text import default_cache_dir
from sentangle.data.waveform import perturb

REQUIRED = ("video_id", "clip_id", "text")
CACHE_VERSION = "sentangle-extract-1"  # bump when a cache entry's layout or content changes
VISION_MODULE = "sentangle.data.extractors.vision"
MSA_RANGE = (-3.0, 3.0)  # the sentiment scale of MOSI/MOSEI, kept when every label lies in it
TEXT_NOTE = (
    "texts are stored raw (texts.json); the model's text encoder setting (model.text_encoder) encodes them at load time"
)


@dataclass
class Clip:
    """One row of the CSV."""

    line: int
    id: str
    video_id: str
    clip_id: str
    text: str
    label: str
    split: str
    start: float | None
    end: float | None
    file: str


@dataclass
class Job:
    """What a worker needs for one clip (plain values: it crosses into spawned processes). The
    audio and the faces may come from two files (`sentangle predict --audio A --video V`)."""

    index: int
    path: str  # the clip's file: audio from it, and faces unless vision_path is given
    start: float | None
    end: float | None
    audio: str | None
    vision: str | None
    fps: float
    cache_dir: str
    vision_path: str | None = None
    asr: str | None = None  # a recogniser (extractors/asr.py) when the clip has no transcript
    perturb: dict | None = None  # a waveform perturbation (waveform.perturbation) before audio extraction

    @property
    def video(self) -> str:
        return self.vision_path or self.path


# ---- the CSV ------------------------------------------------------------------------------------
def read_clips(path: Path, text_required: bool = True) -> list[Clip]:
    """The rows of an MMSA-style label CSV, checked: DataError naming the line and column. Without
    `text_required` (speech recognition fills transcripts in) the text column may be absent."""
    clips: list[Clip] = []
    required = REQUIRED if text_required else tuple(c for c in REQUIRED if c != "text")
    expected = f"at least columns {list(required)} (optional: label, mode, start, end, file)"
    for line, row, sid in label_rows(path, required, expected):

        def get(name: str) -> str:
            return row.get(name, "").strip()

        split = "test"  # no mode column: everything is input to predict
        if "mode" in row:
            split = MODE_ALIASES.get(get("mode").lower(), "")
            if not split:
                raise DataError(
                    f"{path}: line {line}: column 'mode' is {get('mode')!r}; expected one of {sorted(MODE_ALIASES)}"
                )
        start, end = _seconds(get("start"), path, line, "start"), _seconds(get("end"), path, line, "end")
        if start is not None and end is not None and end <= start:
            raise DataError(f"{path}: line {line}: end {end} is not after start {start}; expected start < end")
        if not get("file") and not (get("video_id") and get("clip_id")):
            raise DataError(f"{path}: line {line}: no 'file' and no video_id/clip_id to find the clip by")
        clips.append(
            Clip(
                line,
                sid,
                get("video_id"),
                get("clip_id"),
                row.get("text", ""),
                get("label"),
                split,
                start,
                end,
                get("file"),
            )
        )
    if not clips:
        raise DataError(f"{path}: no data rows; expected one row per clip")
    return clips


def _seconds(value: str, path: Path, line: int, name: str) -> float | None:
    if not value:
        return None
    try:
        t = float(value)
    except ValueError:
        t = math.nan
    if not (math.isfinite(t) and t >= 0):
        raise DataError(f"{path}: line {line}: column {name!r} is {value!r}; expected seconds >= 0 or empty")
    return t


def clip_labels(clips: list[Clip], path: Path) -> tuple[str, list[str] | None, np.ndarray, tuple | None]:
    """(task, class names, labels, label range): numbers -> regression; anything else -> classes
    (sorted names, int64 indices). No label at all -> regression with 0 (input to predict only)."""
    filled = [c for c in clips if c.label]
    if not filled:
        return "regression", None, np.zeros(len(clips), np.float32), None
    if len(filled) < len(clips):
        empty = next(c for c in clips if not c.label)
        raise DataError(
            f"{path}: line {empty.line}: column 'label' is empty, but other rows have labels; "
            "expected a label on every row or on none"
        )
    try:
        values = np.array([float(c.label) for c in clips], dtype=np.float32)
    except ValueError:
        names = sorted({c.label for c in clips})
        index = {n: i for i, n in enumerate(names)}
        return "classification", names, np.array([index[c.label] for c in clips], np.int64), None
    if not np.isfinite(values).all():
        bad = clips[int(np.argmin(np.isfinite(values)))]
        raise DataError(f"{path}: line {bad.line}: column 'label' is {bad.label!r}; expected a finite number")
    lo, hi = float(values.min()), float(values.max())
    in_msa = MSA_RANGE[0] <= lo and hi <= MSA_RANGE[1]
    return "regression", None, values, MSA_RANGE if in_msa else (lo, hi)


def locate(media_dir: Path, clip: Clip) -> tuple[Path | None, bool, list[str]]:
    """(the clip's file or None, whether start/end apply to it, what was looked for)."""
    if clip.file:
        p = media_dir / clip.file
        return (p if p.exists() else None), True, [clip.file]
    tried = []
    for pattern in (f"{clip.video_id}/{clip.clip_id}", f"{clip.video_id}_{clip.clip_id}"):
        for ext in MEDIA_EXTENSIONS:
            tried.append(pattern + ext)
            if (media_dir / tried[-1]).is_file():
                return media_dir / tried[-1], False, tried
    if clip.start is not None or clip.end is not None:
        for ext in MEDIA_EXTENSIONS:
            tried.append(clip.video_id + ext)
            if (media_dir / tried[-1]).is_file():
                return media_dir / tried[-1], True, tried
    return None, False, tried


def not_found(clip: Clip, tried: list[str]) -> str:
    """Why `locate` found no file for `clip`, as the report and predict's error column say it."""
    return f"file not found: {clip.file}" if clip.file else f"no media file; looked for {', '.join(tried[:3])} ..."


# ---- one clip (in a worker) -----------------------------------------------------------------------
def vision_module():
    """data/extractors/vision.py, imported only when vision is asked for."""
    try:
        module = importlib.import_module(VISION_MODULE)
    except ModuleNotFoundError as e:
        if e.name == VISION_MODULE:
            raise ConfigError(
                f"vision extractor not available: {VISION_MODULE} is not part of this installation; "
                "leave --vision out (audio and text only)"
            ) from None
        raise ConfigError(f"vision needs the optional package {e.name!r}: pip install 'sentangle[extract]'") from None
    if not all(hasattr(module, f) for f in ("extract_faces", "cache_identity", "without_video")):
        raise ConfigError(f"vision extractor not available: {VISION_MODULE} lacks extract_faces or its helpers")
    return module


def _cache_file(cache_dir: str, kind: str, identity: dict, suffix: str = ".npz") -> Path:
    key = hashlib.sha256(json.dumps({"cache": CACHE_VERSION, "kind": kind, **identity}, sort_keys=True).encode())
    return Path(cache_dir) / f"{kind}-{key.hexdigest()}{suffix}"


def _transcript(job: Job, identity: dict) -> tuple[str, bool]:
    """(the clip's transcript by `job.asr`, whether it came from the cache)."""
    assert job.asr is not None
    recogniser = transcriber(job.asr)
    file = _cache_file(job.cache_dir, "asr", {**identity, "spec": recogniser.spec}, ".json")
    try:
        return str(json.loads(file.read_text(encoding="utf-8"))["text"]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    text = recogniser(decode_audio(job.path, SAMPLE_RATE, job.start, job.end), SAMPLE_RATE)
    write_json(file, {"text": text})
    return text, False


def load_entry(file: Path) -> dict | None:
    """A cached clip entry, or None when it is absent or unreadable (then it is computed again)."""
    try:
        with np.load(file, allow_pickle=False) as z:
            entry = {k: z[k] for k in z.files}
        entry["spec"] = json.loads(str(entry["spec"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    x, mask = entry.get("features"), entry.get("mask")
    if x is None or mask is None or x.ndim != 2 or mask.shape != x.shape[:1] or len(entry["names"]) != x.shape[1]:
        return None
    return entry


def _save_entry(file: Path, features, mask, names, spec: dict, seconds: float) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                features=features,
                mask=mask,
                names=np.array(names, dtype=str),
                spec=np.array(json.dumps(spec)),
                seconds=np.float64(seconds),
            )

    atomic_write(file, write)


def _audio_entry(job: Job, identity: dict) -> dict:
    extractor = audio_extractor(job.audio)
    if job.perturb:  # only then, so that the keys of clean clips stay what they were
        identity = {**identity, "perturb": job.perturb}
    file = _cache_file(job.cache_dir, "audio", {**identity, "spec": extractor.spec})
    entry = load_entry(file)
    if entry is not None:
        return {**entry, "cached": True, "file": file}
    signal = decode_audio(job.path, SAMPLE_RATE, job.start, job.end)
    if job.perturb:
        signal = perturb(signal, job.perturb, SAMPLE_RATE, Path(job.path).name)
    x, names, fps = extractor(signal, SAMPLE_RATE)
    spec = {**extractor.spec, "frames_per_second": fps}
    mask = np.ones(len(x), bool)
    _save_entry(file, x, mask, names, spec, signal.size / SAMPLE_RATE)
    return {
        "features": x,
        "mask": mask,
        "spec": spec,
        "seconds": signal.size / SAMPLE_RATE,
        "cached": False,
        "file": file,
    }


def _vision_entry(job: Job, identity: dict) -> dict:
    module = vision_module()
    detector = module.cache_identity(job.video, job.vision)
    file = _cache_file(job.cache_dir, "vision", {**identity, "detector": job.vision, "fps": job.fps, **detector})
    entry = load_entry(file)
    if entry is not None:
        return {**entry, "cached": True, "file": file}
    if probe(job.video)["has_video"]:
        x, mask, names, spec = module.extract_faces(job.video, job.fps, job.start, job.end, detector=job.vision)
    else:  # an audio file among the videos: its vision is missing, its audio and text are kept
        x, mask, names, spec = module.without_video(job.vision, job.fps)
    x, mask = np.asarray(x, np.float32), np.asarray(mask, bool)
    if x.ndim != 2 or mask.shape != x.shape[:1] or len(names) != x.shape[1]:
        raise DataError(f"{job.video}: vision extractor gave features {x.shape}, mask {mask.shape}, {len(names)} names")
    spec = {**spec, "frames_per_second": job.fps}
    _save_entry(file, x, mask, names, spec, len(mask) / job.fps)
    return {"features": x, "mask": mask, "spec": spec, "cached": False, "file": file}


def extract_clip(job: Job) -> dict:
    """Features of one clip into the cache: {index, frames, seconds, faces, cached} or {index, error}."""
    try:
        out: dict[str, Any] = {"index": job.index, "frames": {}, "cached": {}, "files": {}, "nonfinite": 0}
        entries = {}
        if job.audio:
            entries["audio"] = _audio_entry(job, _file_identity(job.path, job))
        if job.vision:
            entries["vision"] = _vision_entry(job, _file_identity(job.video, job))
        if job.asr:
            out["text"], out["cached"]["asr"] = _transcript(job, _file_identity(job.path, job))
            out["asr"] = job.asr
        for m, e in entries.items():
            finite = np.isfinite(e["features"]).all(axis=1)
            if not (finite & e["mask"]).any() and m == "audio":
                raise DataError(f"{job.path}: too short for {e['spec']['name']}: no complete audio feature frame")
            out["frames"][m] = int(len(e["mask"]))
            out["cached"][m] = bool(e["cached"])
            out["files"][m] = str(e["file"])
            out["nonfinite"] += int((~np.isfinite(e["features"])).sum())
        out["seconds"] = float(entries["audio"]["seconds"] if "audio" in entries else _seconds_of(job))
        if "vision" in entries:
            out["faces"] = int(entries["vision"]["mask"].sum())
        return out
    except Exception as e:  # a bad clip is a line in the report, never the end of the run
        return {"index": job.index, "error": str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"}


def _file_identity(path: str, job: Job) -> dict:
    """A media file as a cache key: where it is, its size and time of change, and the cut."""
    st = os.stat(path)
    return {
        "path": os.path.abspath(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "start": job.start,
        "end": job.end,
    }


def _seconds_of(job: Job) -> float:
    if job.start is not None and job.end is not None:
        return job.end - job.start
    return float(probe(job.video)["duration_s"] or 0.0)


def _run(jobs: list[Job], workers: int, progress: bool) -> Iterator[dict]:
    from tqdm.auto import tqdm

    with tqdm(total=len(jobs), desc="extracting", unit="clip", disable=not progress or None) as bar:
        if workers == 1 or len(jobs) < 2:
            for job in jobs:
                yield extract_clip(job)
                bar.update(1)
            return
        pool = cf.ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),)
        )
        try:
            for f in cf.as_completed([pool.submit(extract_clip, job) for job in jobs]):
                yield f.result()
                bar.update(1)
        finally:  # on an interrupt, the clips not started are dropped rather than run to the end
            pool.shutdown(wait=True, cancel_futures=True)


# ---- frames -------------------------------------------------------------------------------------
def window_average(x: np.ndarray, mask: np.ndarray, max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Average real frames in windows of ceil(T / max_frames) so at most `max_frames` remain; a window
    without a real frame is padding. The windows of models.layers.masked_downsample, so a clip
    capped here and one capped inside a model agree."""
    t, d = x.shape
    if max_frames is None or t <= max_frames:
        return x, mask
    stride = math.ceil(t / max_frames)
    pad = (-t) % stride
    w = np.concatenate([mask, np.zeros(pad, bool)]).astype(np.float64).reshape(-1, stride)
    xs = np.concatenate([np.where(mask[:, None], x, 0.0), np.zeros((pad, d))]).reshape(-1, stride, d)
    count = w.sum(1)
    y = (xs * w[..., None]).sum(1) / np.maximum(count, 1.0)[:, None]
    return y.astype(np.float32), count > 0


def capped_length(t: int, max_frames: int | None) -> int:
    return t if max_frames is None or t <= max_frames else math.ceil(t / math.ceil(t / max_frames))


# ---- the whole run --------------------------------------------------------------------------------
def _check_arguments(media_dir: Path, audio, vision, fps, max_frames, workers) -> None:
    if not media_dir.is_dir():
        what = "does not exist" if not media_dir.exists() else "is not a folder"
        raise MissingFileError(f"media folder {media_dir} {what}; expected the folder that holds the clips")
    if audio is None and vision is None:
        raise ConfigError("nothing to extract: audio is 'none' and no vision extractor is given")
    if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps={fps!r}; expected a positive number of video frames per second")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ConfigError(f"max_frames={max_frames!r}; expected a positive number of frames, or none")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}; expected a positive number of processes")


def extract(
    media_dir: str | os.PathLike,
    transcripts: str | os.PathLike,
    out: str | os.PathLike,
    audio: str | None = "egemaps",
    vision: str | None = None,
    fps: float = 5.0,
    max_frames: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    mmsa_pickle: str | os.PathLike | None = None,
    name: str | None = None,
    asr: str | None = None,
) -> dict:
    """Extract features of the clips listed in `transcripts` (an MMSA label.csv) from the media files
    under `media_dir` into the feature folder `out` (`sentangle train -d OUT` reads it); returns the
    report (also written as OUT/report.json and report.md).

    audio: a registered audio extractor ("egemaps", "compare", "librosa", "egemaps_functionals",
    "compare_functionals") or None / "none".
    vision: a face detector name for data/extractors/vision.py, or None (audio + text only).
    fps: video frames per second for vision. max_frames: cap on frames per clip (window averages of
    real frames). workers: processes. cache_dir: per-clip cache (default $SENTANGLE_CACHE/extract).
    mmsa_pickle: also write the folder as an MMSA unaligned pickle (to_mmsa_pickle).
    asr: a speech recogniser ("pocketsphinx") that transcribes clips whose text is empty (the text
    column may then be left out); None: transcripts come from the CSV only.
    """
    began = time.perf_counter()
    media_dir, transcripts, out = Path(media_dir), Path(transcripts), Path(out)
    audio = None if audio in (None, "none") else audio
    _check_arguments(media_dir, audio, vision, fps, max_frames, workers)
    check_output(out, "folder")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if mmsa_pickle is not None:
        check_output(mmsa_pickle)
    if audio:
        audio_extractor(audio)  # an unknown name or a missing package fails here, before any clip
    if vision:
        vision_module()
    if asr:
        transcriber(asr)  # an unknown name or a missing package fails here, before any clip
    clips = read_clips(transcripts, text_required=not asr)
    task, class_names, labels, label_range = clip_labels(clips, transcripts)
    cache = str(Path(cache_dir) if cache_dir is not None else default_cache_dir() / "extract")

    failures: dict[int, str] = {}
    jobs, cut = [], {}
    for i, clip in enumerate(clips):
        path, applies, tried = locate(media_dir, clip)
        if path is None:
            failures[i] = not_found(clip, tried)
            continue
        cut[i] = applies and (clip.start is not None or clip.end is not None)
        start, end = (clip.start, clip.end) if applies else (None, None)
        needs_text = asr if asr and not clip.text.strip() else None
        jobs.append(Job(i, str(path), start, end, audio, vision, float(fps), cache, asr=needs_text))

    results, failed = run_jobs(jobs, workers, progress, media_dir)
    failures.update(failed)
    for i, r in results.items():
        if "text" in r:
            clips[i].text = r["text"]
    if not results:
        first = "; ".join(f"line {clips[i].line}: {failures[i]}" for i in sorted(failures)[:3])
        raise DataError(f"{transcripts}: no clip could be extracted ({len(failures)} failed; first: {first})")

    report = _report(transcripts.name, clips, results, failures, cut, workers, max_frames)
    header = {"name": name or out.name, "task": task, "class_names": class_names, "label_range": label_range}
    with new_output(out), output_errors(out, "folder"):
        folder = _write_folder(out, header, labels, clips, results, max_frames, overwrite, report, began)
    if mmsa_pickle is not None:
        report["mmsa_pickle"] = str(to_mmsa_pickle(folder, mmsa_pickle))
    report["folder"] = str(folder)
    return report


def run_jobs(
    jobs: list[Job], workers: int = 1, progress: bool = True, media_dir: Path | None = None
) -> tuple[dict[int, dict], dict[int, str]]:
    """Run `jobs` (in `workers` processes): ({index: result}, {index: why it failed}); the features
    stay in the cache, each result names its entries. Paths in reasons are relative to `media_dir`."""
    results, failures = {}, {}
    for r in _run(jobs, workers, progress):
        if "error" in r:
            failures[r["index"]] = r["error"] if media_dir is None else _relative(r["error"], media_dir)
        else:
            results[r["index"]] = r
    return results, failures


def clip_arrays(
    results: dict[int, dict], rows: list[int], max_frames: int | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, dict]]:
    """The extracted clips `rows` in memory, as a feature folder holds them: per modality features
    (N, T, d) and masks (N, T) padded to the longest, and the cache entry of the first clip (its
    feature names and extractor spec)."""
    first = results[rows[0]]
    entries = {m: _reload(first, m) for m in sorted(first["frames"])}
    feats, masks = {}, {}
    for m in entries:
        t = max(capped_length(results[i]["frames"][m], max_frames) for i in rows)
        padded = [padded_row(_reload(results[i], m), t, max_frames) for i in rows]
        feats[m] = np.concatenate([x for x, _ in padded])
        masks[m] = np.concatenate([k for _, k in padded])
    return feats, masks, entries


def extraction_info(entries: dict[str, dict], max_frames: int | None) -> dict:
    """What a feature folder records of how its media became features: extractor specs, feature
    names, frame rates, the frame cap and the decoder (preprocessing.json carries it on)."""
    return {
        "extracted_by": "sentangle extract",
        "text": "raw",
        "text_note": TEXT_NOTE,
        "extractors": {m: e["spec"] for m, e in entries.items()},
        "decoder": {"package": "av", "version": package_version("av")},
        "feature_names": {m: [str(n) for n in e["names"]] for m, e in entries.items()},
        "frame_rates": {m: float(e["spec"]["frames_per_second"]) for m, e in entries.items()},
        "max_frames": max_frames,
    }


def _relative(text: str, media_dir: Path) -> str:
    """Paths in a message relative to the media folder: nothing machine-specific in the report."""
    for prefix in {str(media_dir.resolve()), str(media_dir.absolute()), str(media_dir)}:
        text = text.replace(prefix.rstrip("/") + "/", "")
    return text


def _report(source: str, clips, results, failures, cut, workers, max_frames) -> dict:
    per_split = {s: sum(1 for i in results if clips[i].split == s) for s in SPLITS}
    report: dict[str, Any] = {
        "source": source,
        "clips": {
            "rows": len(clips),
            "extracted": len(results),
            "failed": len(failures),
            "cut_by_start_end": sum(1 for i in results if cut.get(i)),
            "per_split": {s: n for s, n in per_split.items() if n},
        },
        "seconds": round(sum(r["seconds"] for r in results.values()), 3),
        "frames": {m: sum(r["frames"][m] for r in results.values()) for m in results[min(results)]["frames"]},
        "cache": {
            "reused": sum(all(r["cached"].values()) for r in results.values()),
            "extracted": sum(not all(r["cached"].values()) for r in results.values()),
        },
        "nonfinite_values_set_to_0": sum(r["nonfinite"] for r in results.values()),
        "workers": workers,
        "max_frames": max_frames,
        "failures": [
            {"line": clips[i].line, "id": clips[i].id, "file": clips[i].file, "reason": failures[i]}
            for i in sorted(failures)
        ],
    }
    transcribed = sum(1 for r in results.values() if "text" in r)
    if transcribed:
        report["clips"]["transcribed"] = transcribed
    if any("vision" in r["frames"] for r in results.values()):
        report["faces"] = {
            "frames_with_face": sum(r.get("faces", 0) for r in results.values()),
            "clips_without_face": sum(r.get("faces", 0) == 0 for r in results.values()),
        }
    wanted = {clips[i].split for i in range(len(clips))}
    lost = sorted(s for s in wanted if not per_split[s])
    if lost:
        report["warnings"] = [f"no clip of split {s!r} could be extracted; the folder has no {s} split" for s in lost]
    return report


def _write_folder(out: Path, header: dict, labels, clips, results, max_frames, overwrite, report, began) -> Path:
    first = results[min(results)]
    modalities = sorted(first["frames"])
    entries = {m: _reload(first, m) for m in modalities}  # names and spec of what was extracted
    info = extraction_info(entries, max_frames)
    if report["clips"].get("transcribed"):
        info["asr"] = transcriber(next(r["asr"] for r in results.values() if "asr" in r)).spec
    feature_names = info["feature_names"]
    info["labels"] = "none" if header["task"] == "regression" and header["label_range"] is None else header["task"]
    info["clips"] = report["clips"]
    writer = LazyWriter(
        out,
        header["name"],
        header["task"],
        header["class_names"],
        header["label_range"],
        source=report["source"],
        info=info,
        overwrite=overwrite,
    )
    try:
        for split in SPLITS:
            rows = [i for i in sorted(results) if clips[i].split == split]
            if not rows:
                continue
            shapes = {
                m: (max(capped_length(results[i]["frames"][m], max_frames) for i in rows), len(feature_names[m]))
                for m in modalities
            }
            writer.add_split(split, len(rows), shapes, labels.dtype)
            for k, i in enumerate(rows):
                padded = {m: padded_row(_reload(results[i], m), shapes[m][0], max_frames) for m in modalities}
                feats = {m: x for m, (x, _) in padded.items()}
                masks = {m: mask for m, (_, mask) in padded.items()}
                writer.write(split, k, Split(feats, masks, labels[[i]], [clips[i].id], [clips[i].text]))
        report["elapsed_s"] = round(time.perf_counter() - began, 3)
        write_json(writer.tmp / "report.json", report)
        write_text_file(writer.tmp / "report.md", report_markdown(report))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def padded_row(entry: dict, t: int, max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One clip's (1, t, d) features and (1, t) mask: non-finite values and padding set to 0."""
    clean = np.nan_to_num(entry["features"], nan=0.0, posinf=0.0, neginf=0.0)
    x, mask = window_average(clean, entry["mask"], max_frames)
    out, out_mask = np.zeros((1, t, x.shape[1]), np.float32), np.zeros((1, t), bool)
    out[0, : len(x)] = np.where(mask[:, None], x, 0.0)
    out_mask[0, : len(mask)] = mask
    return out, out_mask


def _reload(result: dict, m: str) -> dict:
    """The cached entry behind a worker's result (read again here: features never travel back)."""
    entry = load_entry(Path(result["files"][m]))
    if entry is None:
        raise DataError(f"cache entry {result['files'][m]} vanished or broke while the folder was written")
    return entry


def report_markdown(report: dict) -> str:
    c = report["clips"]
    lines = [
        "# Feature extraction report",
        "",
        f"- clips: {c['extracted']} extracted of {c['rows']} ({c['failed']} failed); "
        + ", ".join(f"{s} {n}" for s, n in c["per_split"].items()),
        f"- media: {report['seconds']:.1f} s; real frames: "
        + ", ".join(f"{m} {n}" for m, n in report["frames"].items()),
        f"- cache: {report['cache']['reused']} clips reused, {report['cache']['extracted']} extracted",
        *([f"- transcribed by speech recognition: {c['transcribed']} clips"] if c.get("transcribed") else []),
        f"- wall time: {report.get('elapsed_s', 0):.1f} s with {report['workers']} worker(s)",
    ]
    if "faces" in report:
        f = report["faces"]
        lines.append(f"- faces: {f['frames_with_face']} frames with a face; {f['clips_without_face']} clips without")
    if report["nonfinite_values_set_to_0"]:
        lines.append(f"- non-finite feature values set to 0: {report['nonfinite_values_set_to_0']}")
    lines += [f"- warning: {w}" for w in report.get("warnings", [])]
    if report["failures"]:
        lines += ["", "## Failures", "", "| line | id | reason |", "| --- | --- | --- |"]
        lines += [f"| {f['line']} | {f['id']} | {f['reason'].replace('|', '/')} |" for f in report["failures"]]
    return "\n".join(lines) + "\n"


# ---- MMSA export --------------------------------------------------------------------------------
def to_mmsa_pickle(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write a feature folder as an MMSA unaligned pickle (readers/mmsa.py reads it back): per split
    id, raw_text, audio/vision (N, T, d) with *_lengths, regression_labels (class indices for a
    classification folder, also as classification_labels). MMSA lengths count real frames from the
    start, so frames missing inside a sequence (no face) become zero frames."""
    ds = read_lazy(folder)
    missing = [s for s in SPLITS if s not in ds.splits]
    if missing:
        raise DataError(f"{folder}: an MMSA pickle holds train, valid and test; the folder lacks {missing}")
    data = {}
    for s in SPLITS:
        sp = ds.splits[s]
        d: dict[str, Any] = {"id": np.array(sp.ids, dtype=str), "regression_labels": sp.labels.astype(np.float32)}
        if ds.task == "classification":
            d["classification_labels"] = sp.labels.astype(np.int64)
        if sp.texts is not None:
            d["raw_text"] = np.array(sp.texts, dtype=str)
        for m, x in sp.features.items():
            mask = np.asarray(sp.masks[m])
            last = through_last_real(mask)
            d[m] = np.where(mask[..., None], np.asarray(x), 0.0).astype(np.float32)
            d[f"{m}_lengths"] = last.astype(np.int64)
        data[s] = d

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=4)

    return atomic_write(path, write)


# ---- clips to predict on ------------------------------------------------------------------------
@dataclass
class MediaClip:
    """One clip to predict on: its text and where its audio and face video are (either may be None;
    the same file can be both)."""

    id: str
    text: str | None  # None: no transcript (the text modality is missing)
    audio: str | None = None
    video: str | None = None
    start: float | None = None
    end: float | None = None


def media_dataset(
    clips: list[MediaClip],
    audio: str | None,
    vision: str | None,
    fps: float = 5.0,
    max_frames: int | None = None,
    task: str = "regression",
    class_names: list[str] | None = None,
    workers: int = 1,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    asr: str | None = None,
) -> tuple[MSADataset, dict[str, str]]:
    """Unlabelled clips as a dataset with one split, "test", extracted with `audio` / `vision`
    (None: that modality is not extracted) as `extract` would: the same cache, frame cap and
    padding, so a clip reads the same here as in a feature folder. Texts stay raw; `asr` transcribes
    the audio of clips without one (text None). Returns the
    dataset of the clips that could be read and {id: why it failed} for the others; DataError when
    none could be read."""
    cache = str(Path(cache_dir) if cache_dir is not None else default_cache_dir() / "extract")
    jobs, failures = [], {}
    for i, c in enumerate(clips):
        a = c.audio or c.video if audio else None
        v = c.video if vision else None
        if audio and a is None or vision and v is None:
            failures[c.id] = f"no {'audio' if audio and a is None else 'video'} file given"
            continue
        heard = c.audio or c.video if asr and c.text is None else None
        if asr and c.text is None and heard is None:
            failures[c.id] = "no transcript and no audio to transcribe"
            continue
        if a or v or heard:
            path = str(a or v or heard)
            jobs.append(
                Job(i, path, c.start, c.end, audio, vision, float(fps), cache, str(v) if v else None, heard and asr)
            )
    results, failed = run_jobs(jobs, workers, progress)
    failures.update({clips[i].id: why for i, why in failed.items()})
    heard_texts = {i: r["text"] for i, r in results.items() if "text" in r}
    rows = [i for i, c in enumerate(clips) if c.id not in failures]
    if not rows:
        first = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:3])
        raise DataError(f"no clip could be read ({len(failures)} failed; first: {first})")
    feats: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"labels": "none"}
    if audio or vision:  # then every clip that was read has a result
        feats, masks, entries = clip_arrays(results, rows, max_frames)
        info.update(extraction_info(entries, max_frames))
    if heard_texts:
        info["asr"] = transcriber(str(asr)).spec
    labels = np.zeros(len(rows), np.float32 if task == "regression" else np.int64)
    given = [heard_texts.get(i, clips[i].text) for i in rows]
    texts = None if all(t is None for t in given) else [t or "" for t in given]
    split = Split(feats, masks, labels, [clips[i].id for i in rows], texts)
    ds = MSADataset("input", {"test": split}, task, class_names, None, source="input clips", info=info)
    return ds, failures


def media_clips(
    media_dir: str | os.PathLike, transcripts: str | os.PathLike, asr: bool = False
) -> tuple[list[MediaClip], dict[str, str]]:
    """The clips of a CSV (video_id, clip_id, text; optional start, end, file) found under
    `media_dir` as `extract` finds them, and {id: why} for rows whose file is not there. `asr`: the
    text column may be absent, and an empty text is no transcript (None: to be transcribed)."""
    media_dir, transcripts = Path(media_dir), Path(transcripts)
    if not media_dir.is_dir():
        raise MissingFileError(f"--media {media_dir} is not a folder; expected the folder that holds the clips")
    clips, missing = [], {}
    for c in read_clips(transcripts, text_required=not asr):
        path, applies, tried = locate(media_dir, c)
        if path is None:
            missing[c.id] = not_found(c, tried)
            continue
        start, end = (c.start, c.end) if applies else (None, None)
        text = None if asr and not c.text.strip() else c.text
        clips.append(MediaClip(c.id, text, str(path), str(path), start, end))
    return clips, missing
