"""The server's tests use the tiny audio+text models of `own_models` (tests/conftest.py) and a
`sentangle report` over their run folders (the results browser's input)."""

from __future__ import annotations

import pytest

from sentangle.cli import main


@pytest.fixture(scope="session")
def served(own_models, media):
    """`own_models` with a report over its run folders, and a WAV writer for longer clips."""
    runs = [own_models["runs"] / f"{name}-feat" for name in own_models["models"]]
    report = own_models["runs"] / "report"
    if not report.exists():
        assert main(["report", *map(str, runs), "--out", str(report), "--no-gates"]) == 0

    def write_wav(path, seconds: float, hz: float):
        return media.wav(path, media.vibrato(seconds, hz))

    return {**own_models, "write_wav": write_wav}
