"""`sentangle serve` as a user starts it: a process on a free loopback port, asked over HTTP, and
the demo page driven by a headless Chromium (skipped without chromium and chromedriver).

SENTANGLE_DEMO_SCREENSHOT=docs/serving-demo.png python -m pytest tests/serve/test_live.py
writes the demo's screenshot where the documentation shows it (by default into the test's folder).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sentangle.cli import main

pytest.importorskip("fastapi", reason="FastAPI not installed (pip install 'sentangle[serve]')")
pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install 'sentangle[serve]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def start(models, tmp: Path, *extra) -> tuple[subprocess.Popen, str]:
    """`sentangle serve` on a free loopback port, once it answers /health."""
    port = free_port()
    env = {**os.environ, "SENTANGLE_CACHE": str(tmp / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentangle", "serve", *map(str, models), "--port", str(port), *map(str, extra)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            get(url + "/health")
            return proc, url
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sentangle serve did not start: {proc.communicate()[0][-2000:]}")
            time.sleep(0.3)


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    return proc.communicate(timeout=60)[0]


def predict(url: str, text: str) -> dict:
    request = urllib.request.Request(
        url + "/v1/predict", json.dumps({"text": text}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    models = [served["models"]["rtil"], served["models"]["mult"]]
    proc, url = start(models, tmp_path_factory.mktemp("live"), "--runs", served["runs"])
    yield url
    stop(proc)


def test_the_command_serves_on_loopback(server):
    status, body = get(server + "/health")
    assert status == 200 and json.loads(body)["models"] == ["rtil", "mult"]
    assert -3 <= predict(server, "lovely")["score"] <= 3
    assert get(server + "/runs")[0] == 200


def test_workers_each_load_the_models_and_answer_alike(server, served, tmp_path):
    proc, url = start([served["models"]["rtil"]], tmp_path, "--workers", "2")
    try:
        answers = [predict(url, "lovely")["score"] for _ in range(6)]  # whichever worker takes each
    finally:
        log = stop(proc)
    assert answers == pytest.approx([predict(server, "lovely")["score"]] * 6, abs=1e-6)
    assert log.count("Application startup complete") == 2 and "died" not in log


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}"], "expected a folder written by sentangle export"),
        (["{model}", "--workers", "0"], "--workers 0; expected a positive number"),
        (["{model}", "--port", "70000"], "--port 70000; expected a TCP port"),
        (["{model}", "--runs", "{tmp}/none"], "--runs"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(served, tmp_path, capsys, args, message):
    fill = {"tmp": tmp_path, "model": served["models"]["mult"]}
    assert main(["serve", *[a.format(**fill) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_a_port_in_use_is_refused_before_anything_loads(served, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(served["models"]["mult"]), "--port", str(port)]) == 2
    assert f"--port {port}: cannot listen there" in capsys.readouterr().err


# ---- the demo page in a browser -------------------------------------------------------------------
def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(arg)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(options=options, service=Service(driver))


def test_the_demo_page_predicts_a_typed_sentence_and_a_clip(server, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(server + "/")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#model option"))  # the models are listed
        assert "rtil on feat" in browser.find_element(By.ID, "facts").text  # the model card
        browser.find_element(By.ID, "text").send_keys("what a wonderful film, I loved every minute")
        browser.find_element(By.ID, "predict").click()
        wait.until(lambda b: b.find_element(By.ID, "score").text)
        score = float(browser.find_element(By.ID, "score").text)
        assert -3 <= score <= 3
        assert browser.find_element(By.ID, "polarity").text in ("negative", "neutral", "positive")
        assert browser.find_element(By.ID, "contributions").text.startswith("text")
        # then with the clip's audio: a contribution per modality, and rtil's gate
        browser.find_element(By.ID, "media").send_keys(str(served["clips"] / "v0" / "0.wav"))
        browser.find_element(By.ID, "predict").click()
        wait.until(lambda b: "audio" in b.find_element(By.ID, "contributions").text)
        assert browser.find_element(By.ID, "error").is_displayed() is False
        assert "gate_audio" in browser.find_element(By.ID, "diagnostics").text
        shot = Path(os.environ.get("SENTANGLE_DEMO_SCREENSHOT") or tmp_path / "demo.png")
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()


def test_without_a_model_folder_the_bundled_model_is_served():
    from sentangle.runs.inference import default_model_dir
    from sentangle.serve.server import check_models

    assert check_models([]) == [str(default_model_dir().resolve())]
