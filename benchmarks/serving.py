"""A bounded load test of `sentangle serve` on loopback: text requests, with and without the
short-window batching.

    python benchmarks/serving.py                      # the bundled text model (frozen MiniLM), 2,000 requests, 8 clients
    python benchmarks/serving.py --tiny               # a tiny audio+text rtil model made here (tones + texts, 1 epoch)
    python benchmarks/serving.py MODEL_DIR --requests 200 --concurrency 1,4,16,64 --no-doc

A server process (one worker) is started per setting on a free loopback port; at each concurrency
level as many client threads send POST /v1/predict with distinct texts over keep-alive connections,
each its share of `--requests`, and stop. Reported per level: requests per second, the 50th / 95th /
99th percentile latency and the error count (any answer but 200, or a broken connection). "batched"
is the server's default (texts arriving within 5 ms, or while a batch runs, share one forward pass, at
most 64); "one by one" sets the batch size to 1. The numbers go to docs/serving.json, which
benchmarks/performance.py renders as the Serving section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

SERVER = """
import sys, uvicorn
from sentangle.serve.app import create_app
from sentangle.serve.models import Limits
from sentangle.serve.server import quiet_missing_modalities
quiet_missing_modalities()
app = create_app([sys.argv[1]], limits=Limits(max_batch_size=int(sys.argv[3])))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""
ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "serving.json"
WORDS = "good bad film acting boring lovely awful superb plot music scene ending story slow fast".split()


def tiny_model(folder: Path) -> Path:
    """An audio+text rtil model trained for one epoch on ten generated clips (as tests/serve make it)."""
    from sentangle.cli import main

    rows = [["video_id", "clip_id", "text", "label", "mode"]]
    for i in range(10):
        t = np.arange(16000) / 16000
        path = folder / "clips" / f"v{i}" / "0.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(np.round(9000 * np.sin(2 * np.pi * (120 + 25 * i) * t)).astype("<i2").tobytes())
        mode = "train" if i < 6 else "valid" if i < 8 else "test"
        rows.append([f"v{i}", "0", " ".join(WORDS[i : i + 3]), f"{(-1) ** i * 1.5:.1f}", mode])
    with open(folder / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    run = [str(folder / "clips"), str(folder / "label.csv"), str(folder / "feat"), "--no-progress"]
    assert main(["extract", *run]) == 0
    train = ["train", "-d", str(folder / "feat"), "-m", "rtil", "--seeds", "1", "--out", str(folder / "runs")]
    assert main([*train, "--no-progress", "train.epochs=1", "model.hidden=16"]) == 0
    assert main(["export", str(folder / "runs" / "rtil-feat" / "seed_1111"), str(folder / "model")]) == 0
    return folder / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, batch: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model), str(port), str(batch)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start")


def load(port: int, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 15)))) for _ in range(requests)]

    errors = [0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for text in texts[k::clients]:
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", json.dumps({"text": text}), {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                latencies.append(time.perf_counter() - t)
                errors[0] += not ok

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    ms = sorted(x * 1000 for x in latencies)
    return {
        "clients": clients,
        "requests": len(ms),
        "errors": errors[0],
        "requests_per_s": round(len(ms) / seconds, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
    }


def render_section(numbers: dict) -> list[str]:
    """The Serving section of docs/PERFORMANCE.md (benchmarks/performance.py places it)."""
    lines = [
        "## Serving",
        "",
        f"Measured by `python benchmarks/serving.py` on {numbers['date']} ({numbers['cpus']} logical cores; "
        f"load average after the run {numbers['load_average_after'][0]:.2f}): `sentangle serve` with one worker "
        f"on loopback, model `{numbers['model']}`, text requests (POST /v1/predict, distinct sentences of 3 "
        "to 14 words) from client threads over keep-alive connections, each thread sending its share and "
        'stopping. Latency is per request as the client sees it. "batched" is the server as shipped (texts '
        'arriving within 5 ms, or while a batch runs, share one forward pass); "one by one" is the same '
        "server with batches of 1. The client threads run on the same 2 cores as the server.",
        "",
        "| server | clients | requests | errors | requests/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in numbers["results"].items():
        for r in rows:
            lines.append(
                f"| {name} | {r['clients']} | {r['requests']:,} | {r['errors']} | {r['requests_per_s']:.1f} | "
                f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |"
            )
    return [*lines, "", "Raw numbers: [serving.json](serving.json).", ""]


def main(argv=None) -> int:
    from sentangle.runs.inference import default_model_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="a model folder that reads raw text (default: the bundled text model)")
    ap.add_argument("--tiny", action="store_true", help="a tiny audio+text rtil model made here instead")
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level (default 2000)")
    ap.add_argument("--concurrency", default="8", help="client threads, a comma list (default 8)")
    ap.add_argument("--json", default=str(JSON), help=f"where the numbers go (default {JSON.relative_to(ROOT)})")
    ap.add_argument("--no-doc", action="store_true", help="print only; write no JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SENTANGLE_CACHE", str(Path(tmp) / "cache"))
        model = Path(args.model) if args.model else tiny_model(Path(tmp)) if args.tiny else default_model_dir()
        results = {}
        for name, batch in (("batched", 64), ("one by one", 1)):
            proc, port = start(model, batch)
            try:
                load(port, 4, 20)  # warm-up
                results[name] = [load(port, int(c), args.requests) for c in args.concurrency.split(",")]
            finally:
                proc.terminate()
                proc.wait(30)
    load_avg = os.getloadavg()
    print(f"model: {model.name}; cpus: {os.cpu_count()}; load average after: {load_avg[0]:.2f}")
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": model.name if args.model or args.tiny else f"{model.name} (bundled)",
        "cpus": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in load_avg],
        "results": results,
    }
    print("\n".join(render_section(record)))
    if not args.no_doc:
        import performance

        performance.publish(record, args.json, JSON)
    return 0


if __name__ == "__main__":
    sys.exit(main())
