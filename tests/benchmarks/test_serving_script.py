"""benchmarks/serving.py: a bounded load test that stops by itself, counts errors and renders its
section of the performance page."""

from __future__ import annotations

import pytest


def test_load_test_sends_every_request_and_renders_its_section(beside_scripts, tmp_path):
    for module in ("fastapi", "uvicorn"):
        pytest.importorskip(module)
    out = tmp_path / "serving.json"
    got = beside_scripts(
        f"""
        import contextlib, io, json
        import serving

        with contextlib.redirect_stdout(io.StringIO()):
            serving.main(["--requests", "12", "--concurrency", "1,3", "--json", {str(out)!r}])
        numbers = json.load(open({str(out)!r}))
        print(json.dumps({{"numbers": numbers, "section": serving.render_section(numbers)}}))
        """
    )
    numbers, section = got["numbers"], got["section"]
    assert numbers["model"] == "text-mosei (bundled)" and set(numbers["results"]) == {"batched", "one by one"}
    for rows in numbers["results"].values():
        assert [r["clients"] for r in rows] == [1, 3]
        assert all(r["requests"] == 12 and r["errors"] == 0 for r in rows)
        assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in rows)
    assert section[0] == "## Serving" and sum(line.startswith("| batched |") for line in section) == 2
