"""Every route of the server through FastAPI's TestClient: answers that agree with `sentangle
predict`, and a clear 4xx for each kind of bad request."""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="FastAPI not installed (pip install 'sentangle[serve]')")

from fastapi.testclient import TestClient

from sentangle.runs.inference import load_trained, predict_input
from sentangle.runs.predictions import polarity
from sentangle.serve import browse
from sentangle.serve.app import create_app
from sentangle.serve.models import Batcher, Item, Limits, ServedModel, card_tables

TEXTS = ["what a wonderful film", "i hated it", "fine", "superb acting", "boring", "lovely", "awful"]


@pytest.fixture(scope="module")
def app(served):
    return create_app([served["models"]["rtil"], served["models"]["mult"]], runs=served["runs"])


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


@pytest.fixture(scope="module")
def strict(served):
    """A server with small limits, to reach each of them cheaply."""
    limits = Limits(
        max_body_bytes=200_000, max_text_chars=40, max_media_seconds=1.0, max_batch_items=3, extraction_wait_s=0.2
    )
    return TestClient(create_app([served["models"]["rtil"]], limits=limits))


def wav(served, i=2) -> Path:
    return served["clips"] / f"v{i}" / "0.wav"


def upload(path: Path, field="audio", mime="audio/wav", name=None):
    return {field: (name or path.name, path.read_bytes(), mime)}


# ---- what is served -------------------------------------------------------------------------------
def test_health_names_the_models(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["models"] == ["rtil", "mult"]


def test_models_give_each_card(client):
    data = client.get("/v1/models").json()
    assert data["default"] == "rtil"
    card = {c["name"]: c for c in data["models"]}["rtil"]
    assert card["model"] == "rtil" and card["task"] == "regression"
    assert card["modalities"] == ["text", "audio"] and card["dataset"]["name"] == "feat"
    assert card["text_encoder"]["name"] == "minilm" and card["extractors"]["audio"]["name"] == "egemaps"
    seeds = [t["seeds"] for t in card["metrics"]]
    assert seeds == [[1111], [1111]]  # this seed, then the run over its seeds
    assert {r["split"] for r in card["metrics"][0]["rows"]} == {"train", "valid", "test"}
    assert "MAE" in card["metrics"][0]["rows"][0]
    assert card["card"].startswith("# rtil on feat")


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/v1/models", "/v1/predict", "/v1/predict/batch", "/v1/runs"} <= set(paths)
    content = paths["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert client.get("/docs").status_code == 200


def test_the_demo_page_and_its_files_are_served_and_fetch_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="text"' in page.text and 'id="predict"' in page.text
    static = Path(__import__("sentangle.serve", fromlist=["x"]).__file__).parent / "static"
    for f in sorted(static.iterdir()):
        r = client.get(f"/static/{f.name}")
        assert r.status_code == 200 and r.content == f.read_bytes()
        assert "http://" not in r.text and "https://" not in r.text  # works offline: no CDN
    assert client.get("/static/../app.py").status_code == 404


# ---- predictions ----------------------------------------------------------------------------------
def test_a_text_is_predicted_as_sentangle_predict_does(served, client):
    r = client.post("/v1/predict", json={"text": TEXTS[0]})
    assert r.status_code == 200
    got = r.json()
    want = predict_input(load_trained(served["models"]["rtil"]), text=TEXTS[0], allow_missing=("audio",))[0]
    assert got["model"] == "rtil" and got["score"] == pytest.approx(want["prediction"], abs=1e-5)
    assert got["polarity"] == polarity(got["score"])
    assert got["missing"] == ["audio"] and list(got["contributions"]) == ["text"]
    assert 0.0 <= got["diagnostics"]["gate_audio"] <= 1.0  # rtil's gate, per clip
    assert "id" not in got and "probabilities" not in got


def test_text_and_audio_are_extracted_with_the_models_own_spec(served, client):
    r = client.post("/v1/predict", data={"text": TEXTS[2]}, files=upload(wav(served)))
    assert r.status_code == 200, r.text
    got = r.json()
    trained = load_trained(served["models"]["rtil"])
    want = predict_input(trained, text=TEXTS[2], audio=wav(served))[0]
    assert got["score"] == pytest.approx(want["prediction"], abs=1e-5)
    assert got["missing"] == [] and set(got["contributions"]) == {"text", "audio"}
    # the audio's contribution is the score minus the score of the text alone (audio missing)
    text_only = client.post("/v1/predict", json={"text": TEXTS[2]}).json()["score"]
    assert got["contributions"]["audio"] == pytest.approx(got["score"] - text_only, abs=1e-5)
    # a text in a form without files is the JSON request
    form = client.post("/v1/predict", data={"text": TEXTS[2]}).json()
    assert form["score"] == pytest.approx(text_only, abs=1e-6)


def test_audio_alone_and_given_features_are_predicted(served, client):
    r = client.post("/v1/predict", data={"text": ""}, files=upload(wav(served)))  # a blank text field: no text
    assert r.status_code == 200 and r.json()["missing"] == ["text"]
    frames = np.random.default_rng(0).normal(size=(30, 25)).tolist()
    r = client.post("/v1/predict", json={"text": TEXTS[1], "features": {"audio": frames}})
    assert r.status_code == 200 and set(r.json()["contributions"]) == {"text", "audio"}


def test_another_model_is_asked_by_name(client):
    r = client.post("/v1/predict", json={"text": TEXTS[0], "model": "mult"})
    assert r.status_code == 200 and r.json()["model"] == "mult" and r.json()["diagnostics"] == {}


def test_batch_of_texts_and_a_csv_of_clips(served, client):
    texts = [TEXTS[0], TEXTS[3], TEXTS[6]]
    r = client.post("/v1/predict/batch", json=texts)
    assert r.status_code == 200
    batch = r.json()
    assert [p["id"] for p in batch["predictions"]] == ["0", "1", "2"] and batch["errors"] == []
    for text, p in zip(texts, batch["predictions"]):
        alone = client.post("/v1/predict", json={"text": text}).json()["score"]
        assert p["score"] == pytest.approx(alone, abs=1e-5)
    r = client.post("/v1/predict/batch", json={"texts": ["good", "  "], "model": "mult"})
    assert r.json()["model"] == "mult" and [p["id"] for p in r.json()["predictions"]] == ["0"]
    assert r.json()["errors"][0]["id"] == "1" and "empty" in r.json()["errors"][0]["error"]
    table = "video_id,clip_id,text\nv1,0,i hated it\nv2,0,fine\n"
    r = client.post("/v1/predict/batch", files={"file": ("clips.csv", table, "text/csv")})
    assert r.status_code == 200, r.text
    assert [p["id"] for p in r.json()["predictions"]] == ["v1$_$0", "v2$_$0"]


def test_a_classifiers_answer_gives_its_class_and_probabilities():
    row = {
        "id": "input-0",
        "prediction": "pos",
        "logit_neg": -1.0,
        "logit_pos": 1.0,
        "prob_neg": 0.12,
        "prob_pos": 0.88,
    }
    row.update({"gate_text": 0.7, "contribution_text": 0.3})
    model = SimpleNamespace(name="m", task="classification", modalities=["text", "audio"])
    answer = ServedModel.answer(model, row)  # type: ignore[arg-type]
    assert answer == {
        "model": "m",
        "label": "pos",
        "probabilities": {"neg": 0.12, "pos": 0.88},
        "contributions": {"text": 0.3},
        "diagnostics": {"gate_text": 0.7},
        "missing": ["audio"],
    }


def test_a_prediction_does_not_depend_on_the_requests_it_is_batched_with(app):
    for name in ("rtil", "mult"):  # mult averages frames in windows of the padded length
        model = app.state.models[name]
        alone = model.predict_items([Item("fine")])[0]["prediction"]
        others = [Item(TEXTS[0] + " and then some more words to make it long"), Item("fine"), Item("ok")]
        batched = model.predict_items(others)
        assert batched[1]["prediction"] == pytest.approx(alone, abs=1e-5)
        assert batched[0]["prediction"] != pytest.approx(alone, abs=1e-5)
        # items with other modalities are predicted apart, each as it would be alone
        with_audio = Item("fine", {"audio": np.ones((7, 25), np.float32)})
        mixed = model.predict_items([with_audio, Item("fine")])
        assert mixed[1]["prediction"] == pytest.approx(alone, abs=1e-5)
        assert mixed[0]["prediction"] == pytest.approx(model.predict_items([with_audio])[0]["prediction"], abs=1e-5)


def test_requests_waiting_while_a_batch_runs_form_the_next_batch():
    started, release, sizes = threading.Event(), threading.Event(), []

    def run(items):
        sizes.append(len(items))
        started.set()
        release.wait(10)
        return [f"answer {i}" for i in items]

    batcher = Batcher(run, window=0.0, max_size=4)
    first = batcher.submit(0)
    assert started.wait(10)
    waiting = [batcher.submit(i) for i in range(1, 7)]  # queued while the first batch runs
    release.set()
    assert first.result(10) == "answer 0" and [f.result(10) for f in waiting] == [f"answer {i}" for i in range(1, 7)]
    assert sizes == [1, 4, 2]  # then at most max_size at a time


def test_an_error_in_a_batch_reaches_its_requests_and_the_batcher_goes_on():
    def run(items):
        if "bad" in items:
            raise ValueError("broken")
        return items

    batcher = Batcher(run, window=0.0, max_size=4)
    with pytest.raises(ValueError, match="broken"):
        batcher.submit("bad").result(10)
    assert batcher.submit("good").result(10) == "good"


def test_concurrent_requests_each_get_their_own_answer(client):
    texts = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(12)]
    alone = [client.post("/v1/predict", json={"text": t}).json()["score"] for t in texts]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda t: client.post("/v1/predict", json={"text": t}).json()["score"], texts))
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(alone)) > 1  # different texts, different answers: a mix-up would show


def test_media_waits_for_a_free_extraction_slot_then_is_told_busy(served, strict):
    slot = strict.app.state.extraction
    assert slot.acquire(timeout=1)  # every slot (one) taken
    try:
        r = strict.post("/v1/predict", data={"text": "hi"}, files=upload(wav(served, 0)))
    finally:
        slot.release()
    assert r.status_code == 503 and r.json()["detail"].startswith("busy")
    assert strict.post("/v1/predict", data={"text": "hi"}, files=upload(wav(served, 0))).status_code == 200


def test_no_text_cache_file_and_no_upload_outlive_a_request(served, client, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTANGLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert client.post("/v1/predict", json={"text": "a brand new sentence"}).status_code == 200
    assert client.post("/v1/predict", data={"text": "another"}, files=upload(wav(served, 4))).status_code == 200
    bad = client.post("/v1/predict", data={"text": "x"}, files={"audio": ("a.wav", b"not audio", "audio/wav")})
    assert bad.status_code == 415
    assert not (tmp_path / "cache").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


# ---- refusals -------------------------------------------------------------------------------------
BAD_JSON = {
    "empty body": (b"", 422, "empty body"),
    "not JSON": (b"{text: hi", 422, "JSON"),
    "a number as text": (b'{"text": 5}', 422, "text: Input should be a valid string"),
    "an unknown field": (b'{"txt": "hi"}', 422, "txt: Extra inputs"),
    "nothing to predict on": (b"{}", 422, "no input"),
    "a blank text": (b'{"text": "   "}', 422, "text: empty"),
    "an unknown model": (b'{"text": "hi", "model": "bert"}', 404, "no model 'bert'; this server has rtil, mult"),
    "features of a modality the model does not read": (
        b'{"text": "hi", "features": {"vision": [[1, 2]]}}',
        422,
        "features.vision: model 'rtil' reads no vision; it reads text, audio",
    ),
    "features of the wrong size": (b'{"features": {"audio": [[1, 2, 3]]}}', 422, "each a list of 25 numbers"),
    "features that are not numbers": (b'{"features": {"audio": [["a"]]}}', 422, "features.audio"),
    "frames of different sizes": (b'{"features": {"audio": [[1, 2], [1]]}}', 422, "each a list of 25 numbers"),
    "no frame": (b'{"features": {"audio": []}}', 422, "(at least one frame)"),
}


@pytest.mark.parametrize("case", BAD_JSON)
def test_a_bad_json_request_is_a_4xx_naming_the_problem(client, case):
    body, status, message = BAD_JSON[case]
    r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_bad_uploads_are_refused_with_their_reason(served, client, media):
    def ask(files, data=None):
        r = client.post("/v1/predict", data=data or {"text": "hi"}, files=files)
        return r.status_code, r.json().get("detail")

    video = media.write(served["root"] / "clip.mp4", media.tone(220, 0.5), frames=media.astronaut(5))
    status, detail = ask(upload(video, "video", "video/mp4"))
    assert status == 422 and "video: model 'rtil' reads no vision" in detail
    status, detail = ask({"audio": ("notes.txt", b"hello", "text/plain")})
    assert status == 415 and detail.startswith("audio: notes.txt (text/plain) is not a supported media file")
    assert ".wav" in detail and ".webm" in detail
    status, detail = ask({"audio": ("a.wav", b"RIFF not really", "audio/wav")})
    assert status == 415 and detail.startswith("audio: audio.wav: not a readable audio or video file")
    assert str(served["root"]) not in detail and tempfile.gettempdir() not in detail  # no path of the server
    assert ask({"audio": ("a.wav", b"", "audio/wav")}) == (422, "audio: the uploaded file is empty")
    assert ask(upload(video, "audio", "video/mp4"))[0] == 200  # a video's sound is audio
    status, detail = ask({"extra": ("a.wav", b"x", "audio/wav")})
    assert status == 422 and "unknown form field(s) ['extra']" in detail
    assert ask(upload(wav(served)), {"text": "hi", "model": "nope"})[0] == 404
    r = client.post("/v1/predict", content=b"hi", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "expected application/json or multipart/form-data" in r.json()["detail"]


def test_limits_on_size_length_duration_and_batch(served, strict):
    write_wav = served["write_wav"]
    r = strict.post("/v1/predict", json={"text": "x" * 41})
    assert r.status_code == 413 and r.json()["detail"] == "text: 41 characters; at most 40 are accepted"
    long = write_wav(served["root"] / "long.wav", 1.5, 200)
    r = strict.post("/v1/predict", data={"text": "hi"}, files=upload(long))
    assert r.status_code == 413 and r.json()["detail"] == "audio: 1.5 s long; at most 1 s per file are accepted"
    r = strict.post("/v1/predict", data={"text": "hi"}, files={"audio": ("big.wav", b"\0" * 300_000, "audio/wav")})
    assert r.status_code == 413 and "request body over 200000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: refused once the stream passes the limit
        for _ in range(10):
            yield b"x" * 50_000

    r = strict.post("/v1/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = strict.post("/v1/predict/batch", json=["a", "b", "c", "d"])
    assert r.status_code == 413 and r.json()["detail"] == "4 texts; at most 3 per batch request"


BAD_BATCH = {
    "an empty list": (b"[]", 422, "no texts"),
    "not a list of strings": (b"[1, 2]", 422, "texts.0: Input should be a valid string"),
    "texts not a list": (b'{"texts": "abc"}', 422, "texts: Input should be a valid array"),
    "empty body": (b" ", 422, "empty body"),
}


@pytest.mark.parametrize("case", BAD_BATCH)
def test_a_bad_batch_is_a_4xx_naming_the_problem(client, case):
    body, status, message = BAD_BATCH[case]
    r = client.post("/v1/predict/batch", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and message in r.json()["detail"]


def test_a_bad_csv_is_refused_naming_the_column(client):
    r = client.post("/v1/predict/batch", files={"file": ("c.csv", "video_id,text\nv1,hi\n", "text/csv")})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("file: missing column(s) ['clip_id']")
    r = client.post("/v1/predict/batch", files={"file": ("c.xlsx", b"PK", "application/octet-stream")})
    assert r.status_code == 415
    r = client.post("/v1/predict/batch", data={"model": "rtil"})
    assert r.status_code == 422 and r.json()["detail"].startswith("file: expected a CSV upload")


def test_a_server_error_is_a_500_that_leaks_nothing(app, monkeypatch):
    model = app.state.models["rtil"]

    def broken(items):
        raise RuntimeError(f"secret state in {model.folder}")

    monkeypatch.setattr(model.batcher, "run", broken)
    r = TestClient(app, raise_server_exceptions=False).post("/v1/predict", json={"text": "hi"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error; the server's log has the details"}
    assert "secret" not in r.text and "Traceback" not in r.text


# ---- the results browser --------------------------------------------------------------------------
def test_runs_show_summaries_comparisons_and_report_files(client):
    assert client.get("/runs").status_code == 200
    data = client.get("/v1/runs").json()
    assert sorted(r["name"] for r in data["runs"]) == ["mult-feat", "rtil-feat"]
    run = next(r for r in data["runs"] if r["name"] == "rtil-feat")
    assert run["model"] == "rtil" and run["dataset"] == "feat" and run["seeds"] == [1111]
    assert set(run["splits"]) == {"train", "valid", "test"} and run["splits"]["test"]["mae"]["text"]
    assert run["table"]["columns"][:2] == ["MAE", "Corr"]  # as summary.md orders and names them
    assert [row[0] for row in run["table"]["rows"]] == list(run["splits"])
    assert run["table"]["rows"][-1][1] == run["splits"]["test"]["mae"]["text"]
    tables = {t["split"]: t for t in data["comparisons"]}
    assert set(tables) == {"test", "valid"} and len(tables["test"]["rows"]) == 2
    mae = tables["test"]["columns"].index("MAE")
    cells = [row["cells"][mae] for row in tables["test"]["rows"]]
    best = min(cells, key=lambda c: float(c["text"]))
    assert best["best"] and sum(c["best"] for c in cells) == 1  # lower MAE is better
    paths = {f["path"] for f in data["files"]}
    assert "report/report.md" in paths and any(p.endswith(".png") for p in paths)
    png = next(p for p in paths if p.endswith(".png"))
    r = client.get(f"/runs/files/{png}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    assert client.get(f"/runs/files/{run['summary_md']}").text.startswith("# rtil-feat")


@pytest.mark.parametrize(
    "path", ["%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fetc%2fpasswd", "%2fetc%2fpasswd", "rtil-feat/summary.json"]
)
def test_runs_files_outside_the_folder_or_of_other_kinds_are_not_served(client, path):
    r = client.get(f"/runs/files/{path}")
    assert r.status_code == 404 and "no such report file" in r.json()["detail"]


def test_safe_file_refuses_a_link_leading_out(served, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (tmp_path / "secret.md").write_text("no")
    (root / "link.md").symlink_to(tmp_path / "secret.md")
    (root / "ok.md").write_text("yes")
    assert browse.safe_file(root.resolve(), "ok.md") == (root / "ok.md").resolve()
    assert browse.safe_file(root.resolve(), "link.md") is None
    assert browse.safe_file(root.resolve(), "../secret.md") is None
    assert browse.safe_file(root.resolve(), str(tmp_path / "secret.md")) is None


def test_without_runs_the_browser_says_how_to_get_one(served):
    client = TestClient(create_app([served["models"]["mult"]]))
    r = client.get("/runs")
    assert r.status_code == 404 and "--runs DIR" in r.json()["detail"]
    assert client.post("/v1/predict", json={"text": "hi"}).json()["model"] == "mult"


def test_summary_tables_are_read_from_what_runs_write(tmp_path):
    run = tmp_path / "g" / "a"
    run.mkdir(parents=True)
    stat = {"mean": 0.5, "std": 0.1, "n": 3}
    (run / "summary.json").write_text(
        '{"model": "tfn", "dataset": "synthetic", "task": "regression", "seeds": [1, 2, 3], '
        f'"splits": {{"test": {{"mae": {stat}, "corr": {stat}}}}}}}'.replace("'", '"')
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{")
    data = browse.overview(tmp_path)
    assert [r["name"] for r in data["runs"]] == ["g/a"]
    assert data["runs"][0]["splits"]["test"]["mae"]["text"] == "0.500 ± 0.100"
    assert data["comparisons"][0]["rows"][0]["cells"][0] == {"text": "0.500 ± 0.100", "best": True}


def test_card_tables_read_a_cards_metric_section():
    card = (
        "# m\n\n## Metrics\n\nThis model (seed 7), selected on valid:\n\n| split | MAE |\n|---|---|\n| test | 1.0 |\n\n"
        "The run, mean ± sample std over seeds [7, 8]:\n\n| split | MAE |\n|---|---|\n| test | **0.9 ± 0.1** |\n\n"
        "## Intended use\n\n| not | metrics |\n|---|---|\n"
    )
    tables = card_tables(card)
    assert [t["seeds"] for t in tables] == [[7], [7, 8]]
    assert tables[1]["rows"] == [{"split": "test", "MAE": "0.9 ± 0.1"}]
    assert card_tables("# no metrics\n") == []
