"""benchmarks/precision.py: trains each setting over seeds and renders its section of the performance page."""

from __future__ import annotations

import pytest


def test_quick_run_summarises_the_seeds_and_renders_its_section(side_section, tmp_path):
    argv = ["--quick", "--settings", "fp32,bf16", "--threads", "1"]
    got = side_section("precision", argv, tmp_path / "precision.json")
    assert got["code"] == 0
    rows = got["numbers"]["results"]
    assert [(r["model"], r["setting"], r["seeds"]) for r in rows] == [("lf_dnn", "fp32", 2), ("lf_dnn", "bf16", 2)]
    for r in rows:
        runs = r["raw"]["runs"]
        assert [len(x["epoch_seconds"]) for x in runs] == [2, 2]  # fixed epochs: every setting does the same work
        maes = [x["metrics"]["test_mae"] for x in runs]
        assert r["test_mae"]["mean"] == pytest.approx(sum(maes) / 2) and r["test_mae"]["std"] > 0
        assert r["first_two_epochs_s"] > 0 and r["epoch_s"] is None  # no epoch after the first two
    page, plain = got["page"], got["plain"]
    section = page[page.index("## Precision and compilation") : page.index("## What was slow")]
    assert "## Precision and compilation" not in plain and page.replace(section, "") == plain
    assert section.count("| `lf_dnn` |") == 2
