"""benchmarks/extraction.py measures a real `sentangle extract` run, and its section lands in the
performance page beside the model tables."""

from __future__ import annotations

import pytest


def test_extraction_benchmark_measures_a_run_and_renders_its_section(beside_scripts, tmp_path):
    for module in ("av", "cv2", "skimage", "opensmile"):
        pytest.importorskip(module)
    got = beside_scripts(
        f"""
        import json
        from pathlib import Path

        import extraction
        import performance

        folder = Path({str(tmp_path)!r})
        csv = extraction.face_folder(folder, clips=2, size=(160, 120), video_fps=10)
        run = extraction.measure("audio_faces", folder, csv, "two faces", vision="haar", fps=5, workers=1)
        ex = {{"date": "today", "machine": extraction.machine() | {{"load_average_end": [0, 0, 0]}}, "runs": [run]}}
        res = json.loads((Path(performance.DOC).with_name("performance.json")).read_text())
        print(json.dumps({{"run": run, "page": performance.render(res, extraction=ex), "plain": performance.render(res)}}))
        """
    )
    run, page, plain = got["run"], got["page"], got["plain"]
    assert run["clips"] == 2 and run["failed"] == 0 and run["workers"] == 1
    assert run["faces"]["frames_with_face"] > 0 and run["frames"]["vision"] > 0 and run["cpu_s"] > 0
    # two sentences of 2-4 s each; the rates are the media seconds over the two clocks
    assert 4 < run["media_s"] < 8
    assert run["realtime"] == pytest.approx(run["media_s"] / run["wall_s"])
    assert run["realtime_extract_only"] == pytest.approx(run["media_s"] / run["extract_s"])
    assert run["extract_s"] < run["wall_s"]  # the command's clock includes the interpreter's start-up
    assert "## Extraction" in page and "## Extraction" not in plain
    # the model tables are kept: the page with the section is the page without it, plus the section
    section = page[page.index("## Extraction") : page.index("## What was slow")]
    assert page.replace(section, "") == plain
    assert "| audio (eGeMAPS) + faces (Haar, 5 fps) | two faces | 2 (0) |" in section
