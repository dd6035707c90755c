"""The FastAPI application: `create_app(model_dirs, runs=None)`.

    GET  /                  the demo page (static/)
    GET  /health            {status, version, models}
    GET  /v1/models         each model's card
    POST /v1/predict        one clip: JSON {text, model?, features?}, or multipart/form-data with
                            fields text, model and files audio / video
    POST /v1/predict/batch  JSON ["text", ...] or {texts, model?}, or a CSV upload (field file:
                            video_id, clip_id, text; field model)
    GET  /runs              the results browser (with --runs DIR), /v1/runs its data, /runs/files/...
    GET  /docs              the OpenAPI documentation (/openapi.json)

Every refusal is a 4xx with {"detail": "<what is wrong, naming the field>"}; an error of the server
is a 500 whose body says only that (the traceback goes to the log). Uploads are written to a
temporary folder that is removed when the request ends, together with their extraction cache.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from sentangle.core.errors import ConfigError, DataError, UserError
from sentangle.core.version import __version__
from sentangle.data.media import MEDIA_EXTENSIONS, optional_import, probe
from sentangle.data.readers.labelcsv import label_rows
from sentangle.serve import browse
from sentangle.serve.models import Item, Limits, RequestError, ServedModel, load_models
from sentangle.serve.schemas import BatchRequest, BatchResponse, Health, Models, Prediction, PredictRequest, Problem

log = logging.getLogger("sentangle.serve")
STATIC = Path(__file__).parent / "static"
TMP_PREFIX = "sentangle-serve-"
# Browsers record webm or ogg; PyAV reads what FFmpeg reads, whatever the name says.
UPLOAD_EXTENSIONS = (*MEDIA_EXTENSIONS, ".ogg", ".oga", ".opus")
CONTENT_TYPES = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/webm": ".webm",
    "video/webm": ".webm",
    "audio/ogg": ".ogg",
    "video/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "audio/flac": ".flac",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
}
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # the latter: a form without files
FORM_FIELDS = {"text", "model", "audio", "video"}
CSV_REQUIRED = ("video_id", "clip_id", "text")
ERRORS: dict[int | str, dict] = {code: {"model": Problem} for code in (404, 413, 415, 422, 503)}


class BodyLimit:
    """413 for a request body over `limit` bytes: at once when Content-Length says so, else as
    soon as the streamed body passes it (the rest is not read)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        too_large = f"request body over {self.limit} bytes; send smaller files (at most {self.limit // 2**20} MiB)"
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, too_large)
            return message

        return await self.app(scope, limited, send)


def _public(message: str, hide: dict[str, str]) -> str:
    """An error message without this machine's paths: temporary folders, model folders."""
    for path, name in hide.items():
        message = message.replace(path, name)
    return re.sub(re.escape(tempfile.gettempdir()) + r"/" + TMP_PREFIX + r"[^/\s]*/(cache/)?", "", message)


def _validation_message(e: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)


def create_app(
    model_dirs: list[str | os.PathLike], runs: str | os.PathLike | None = None, limits: Limits | None = None
) -> FastAPI:
    """The application serving `model_dirs` (each loaded once, here), and with `runs` the results
    browser over that folder."""
    limits = limits or Limits()
    if not model_dirs:
        raise ConfigError("no model folder to serve; give at least one MODEL_DIR (sentangle export writes them)")
    models = load_models([Path(d) for d in model_dirs], limits)
    default = next(iter(models))
    runs_root = None if runs is None else browse.check_root(runs)
    hide = {str(m.folder.resolve()): name for name, m in models.items()}
    hide.update({str(m.folder): name for name, m in models.items()})
    if runs_root is not None:
        hide[str(runs_root)] = runs_root.name
    extraction = threading.BoundedSemaphore(limits.extractions)

    app = FastAPI(
        title="sentangle",
        version=__version__,
        summary="Multimodal sentiment analysis: predictions of trained sentangle models.",
    )
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.state.models, app.state.limits, app.state.extraction = models, limits, extraction

    # ---- errors ----------------------------------------------------------------------------------
    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError):
        return JSONResponse({"detail": _public(str(e), hide)}, e.status)

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        return JSONResponse({"detail": _public(str(e), hide)}, 422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return JSONResponse({"detail": _validation_message(e)}, 422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):
        log.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error; the server's log has the details"}, 500)

    # ---- helpers ---------------------------------------------------------------------------------
    def pick(name: str | None) -> ServedModel:
        if name is None or name == "":
            return models[default]
        if name not in models:
            raise RequestError(404, f"model: no model {name!r}; this server has {', '.join(models)}")
        return models[name]

    async def json_body(request: Request):
        body = await request.body()
        if not body.strip():
            raise RequestError(422, "empty body; expected JSON (see /docs)")
        return body

    def content_type(request: Request) -> str:
        """ "form" or "json" (415 for any other body type)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in FORMS:
            return "form"
        if kind != "application/json":
            raise RequestError(415, f"content type {kind or 'none'}; expected application/json or multipart/form-data")
        return "json"

    async def save_upload(upload: UploadFile, field: str, folder: Path) -> Path:
        name = upload.filename or ""
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_EXTENSIONS:
            suffix = CONTENT_TYPES.get((upload.content_type or "").split(";")[0].strip().lower(), "")
        if not suffix:
            raise RequestError(
                415,
                f"{field}: {name or 'the upload'} ({upload.content_type or 'no content type'}) is not a supported "
                f"media file; expected one of {', '.join(UPLOAD_EXTENSIONS)}",
            )
        path = folder / f"{field}{suffix}"
        with open(path, "wb") as f:
            await run_in_threadpool(shutil.copyfileobj, upload.file, f)
        if path.stat().st_size == 0:
            raise RequestError(422, f"{field}: the uploaded file is empty")
        return path

    def check_media(path: Path, field: str) -> None:
        """A readable file with the stream the field needs, no longer than the limit."""
        if importlib.util.find_spec("av") is None:
            raise RequestError(501, f"{field}: this server cannot read media files: pip install 'sentangle[extract]'")
        try:
            info = probe(path)
        except DataError as e:
            raise RequestError(415, f"{field}: {_public(str(e), {str(path.parent) + '/': ''})}") from None
        stream = "audio" if field == "audio" else "video"
        if not info[f"has_{stream}"]:
            raise RequestError(415, f"{field}: the file has no {stream} stream")
        try:
            seconds = info["duration_s"] or _demuxed_seconds(path)
        except Exception as e:  # FFmpeg's errors: a file whose header reads but whose packets do not
            raise RequestError(415, f"{field}: cannot read the file to the end ({type(e).__name__})") from None
        if seconds > limits.max_media_seconds:
            raise RequestError(
                413, f"{field}: {seconds:.1f} s long; at most {limits.max_media_seconds:g} s per file are accepted"
            )

    def predict_media(model: ServedModel, text, files: dict[str, Path], workdir: Path) -> dict:
        if not extraction.acquire(timeout=limits.extraction_wait_s):
            raise RequestError(503, "busy: every media extraction slot is taken; try again shortly")
        try:
            return model.predict_media(text, files.get("audio"), files.get("video"), workdir)
        finally:
            extraction.release()

    async def predicted(model: ServedModel, items: list[Item]) -> list[dict | Exception]:
        futures = [asyncio.wrap_future(model.batcher.submit(it)) for it in items]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def answer_one(model: ServedModel, item: Item) -> dict:
        (row,) = await predicted(model, [item])
        if isinstance(row, Exception):
            raise row
        return model.answer(row)

    # ---- routes ----------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def demo():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", response_model=Health)
    async def health():
        return {"status": "ok", "version": __version__, "models": list(models)}

    @app.get("/v1/models", response_model=Models)
    async def list_models():
        return {"default": default, "models": [m.card for m in models.values()]}

    body_doc = {
        "requestBody": {
            "content": {
                "application/json": {"schema": PredictRequest.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "text": {"type": "string"},
                            "model": {"type": "string"},
                            "audio": {"type": "string", "format": "binary"},
                            "video": {"type": "string", "format": "binary"},
                        },
                    }
                },
            },
            "required": True,
        }
    }

    @app.post(
        "/v1/predict",
        response_model=Prediction,
        response_model_exclude_none=True,
        responses=ERRORS,
        openapi_extra=body_doc,
    )
    async def predict(request: Request):
        """One clip: its text, and audio / video files (multipart) or features (JSON)."""
        if content_type(request) == "form":
            return await predict_form(request)
        try:
            req = PredictRequest.model_validate_json(await json_body(request))
        except ValidationError as e:
            raise RequestError(422, _validation_message(e)) from None
        model = pick(req.model)
        return await answer_one(model, model.item(req.text, req.features))

    async def predict_form(request: Request):
        form = await request.form(max_files=4, max_fields=8)
        try:
            keys = list(form.keys())
            unknown = sorted(set(keys) - FORM_FIELDS)
            if unknown:
                raise RequestError(422, f"unknown form field(s) {unknown}; expected {sorted(FORM_FIELDS)}")
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            if repeated:
                raise RequestError(422, f"form field(s) {repeated} given more than once")
            for k in ("text", "model"):
                if isinstance(form.get(k), UploadFile):
                    raise RequestError(422, f"{k}: expected a form field, got a file")
            text = form.get("text")
            text = text if isinstance(text, str) and text.strip() else None  # a blank form field: no text
            model = pick(form.get("model"))  # type: ignore[arg-type]
            uploads = {}
            for k in ("audio", "video"):
                v = form.get(k)
                if isinstance(v, str) and v:
                    raise RequestError(422, f"{k}: expected a file upload, got a text field")
                if isinstance(v, UploadFile) and (v.filename or v.size):
                    uploads[k] = v
            model.check_text(text)
            for k in uploads:
                model.reads("audio" if k == "audio" else "vision", k)
            if not uploads:
                if text is None:
                    raise RequestError(422, "no input: give text, an audio file or a video file")
                return await answer_one(model, model.item(text, None))
            with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
                workdir = Path(tmp)
                files = {k: await save_upload(v, k, workdir) for k, v in uploads.items()}
                for k, path in files.items():
                    await run_in_threadpool(check_media, path, k)
                row = await run_in_threadpool(predict_media, model, text, files, workdir)
            return model.answer(row)
        finally:
            await form.close()

    batch_doc = {
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [{"type": "array", "items": {"type": "string"}}, BatchRequest.model_json_schema()]
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}, "model": {"type": "string"}},
                    }
                },
            },
            "required": True,
        }
    }

    @app.post(
        "/v1/predict/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        responses=ERRORS,
        openapi_extra=batch_doc,
    )
    async def predict_batch(request: Request):
        """Several texts: a JSON list, or a CSV (video_id, clip_id, text) uploaded as field `file`."""
        if content_type(request) == "form":
            name, rows = await batch_csv(request)
        else:
            body = await json_body(request)
            try:
                req = BatchRequest.model_validate_json(body if body.lstrip()[:1] != b"[" else b'{"texts": %s}' % body)
            except ValidationError as e:
                raise RequestError(422, _validation_message(e)) from None
            name, rows = req.model, [(str(i), t) for i, t in enumerate(req.texts)]
        if not rows:
            raise RequestError(422, "no texts; expected at least one")
        if len(rows) > limits.max_batch_items:
            raise RequestError(413, f"{len(rows)} texts; at most {limits.max_batch_items} per batch request")
        model = pick(name)
        items, errors, ids = [], [], []
        for i, text in rows:
            try:
                items.append(model.item(text, None))
                ids.append(i)
            except RequestError as e:
                errors.append({"id": i, "error": str(e)})
        predictions = []
        for i, row in zip(ids, await predicted(model, items)):
            if isinstance(row, UserError):
                errors.append({"id": i, "error": _public(str(row), hide)})
            elif isinstance(row, Exception):
                raise row
            else:
                predictions.append({**model.answer(row), "id": i})
        return {"model": model.name, "predictions": predictions, "errors": errors}

    async def batch_csv(request: Request) -> tuple[str | None, list[tuple[str, str]]]:
        form = await request.form(max_files=2, max_fields=4)
        try:
            unknown = sorted(set(form.keys()) - {"file", "model"})
            if unknown:
                raise RequestError(422, f"unknown form field(s) {unknown}; expected file (a CSV) and model")
            upload, name = form.get("file"), form.get("model")
            if not isinstance(upload, UploadFile):
                raise RequestError(422, "file: expected a CSV upload (columns video_id, clip_id, text)")
            if isinstance(name, UploadFile):
                raise RequestError(422, "model: expected a form field, got a file")
            if Path(upload.filename or "x.csv").suffix.lower() not in (".csv", ".txt", ""):
                raise RequestError(415, f"file: {upload.filename} is not a CSV file; expected .csv")
            with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
                path = Path(tmp) / "clips.csv"
                with open(path, "wb") as f:
                    await run_in_threadpool(shutil.copyfileobj, upload.file, f)
                expected = "a CSV of clips with columns video_id, clip_id, text"
                try:
                    rows = [(sid, row["text"]) for _, row, sid in label_rows(path, CSV_REQUIRED, expected)]
                except DataError as e:
                    raise RequestError(422, str(e).replace(str(path), "file")) from None
            return name or None, rows
        finally:
            await form.close()

    # ---- the results browser ---------------------------------------------------------------------
    def runs_folder() -> Path:
        if runs_root is None:
            raise RequestError(404, "no results browser: start the server with --runs DIR (a folder of run folders)")
        return runs_root

    @app.get("/runs", include_in_schema=False)
    async def runs_page():
        runs_folder()
        return FileResponse(STATIC / "runs.html")

    @app.get("/v1/runs", responses=ERRORS)
    async def runs_data():
        """The run folders under --runs: summaries, comparison tables per dataset and split, report files."""
        return await run_in_threadpool(browse.overview, runs_folder())

    @app.get("/runs/files/{path:path}", include_in_schema=False)
    async def runs_file(path: str):
        file = browse.safe_file(runs_folder(), path)
        if file is None:
            raise RequestError(404, f"{path}: no such report file (Markdown, CSV or image) under the runs folder")
        return FileResponse(file, media_type=browse.MEDIA_TYPES[file.suffix.lower()])

    return app


def _demuxed_seconds(path: Path) -> float:
    """The length of a file whose container states none (what browsers record): its last packet's end."""
    av = optional_import("av")
    end = 0.0
    with av.open(str(path)) as c:
        for packet in c.demux():
            if packet.pts is not None and packet.time_base is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end
