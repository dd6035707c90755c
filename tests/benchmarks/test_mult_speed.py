"""benchmarks/mult_speed.py: exact MulT against its reference, side by side; its section of the page."""

from __future__ import annotations


def test_side_by_side_measures_every_model_and_renders_its_section(beside_scripts, tmp_path):
    got = beside_scripts(
        f"""
        import json
        from pathlib import Path

        import torch
        import mult_speed as ms
        from sentangle.models.base import create_model

        res = ms.measure(None, ms.QUICK, steps=1, threads=1)
        # the plain reference computes what the fused path computes
        batch, _, _ = ms.make_batch(ms.QUICK)
        model = create_model("mult", ms.QUICK["dims"]).eval()
        with torch.no_grad():
            fused = model(batch).prediction
            with ms.plain_attention():
                plain = model(batch).prediction
        try:
            ms.load_mmsa(Path({str(tmp_path)!r}), ms.QUICK["dims"])
            error = None
        except SystemExit as e:
            error = str(e)
        print(json.dumps({{"res": res, "section": ms.render_section(res), "gap": (fused - plain).abs().max().item(),
                           "error": error}}))
        """
    )
    res, section = got["res"], got["section"]
    rows = {r["model"]: r for r in res["rows"]}
    assert list(rows) == ["sentangle exact", "sentangle windowed", "plain reference"]
    assert res["reference"]["kind"] == "plain" and rows["plain reference"]["ratio_to_reference"] == 1.0
    assert len({r["params"] for r in rows.values()}) == 1  # one architecture, three ways to run it
    assert all(r["step_s"] > 0 and r["gflop_per_step"] > 0 and r["inference_utt_s"] > 0 for r in rows.values())
    # windows of at most 50 frames: no fewer FLOPs than full length only if nothing was longer than 50
    assert rows["sentangle windowed"]["gflop_per_step"] <= rows["sentangle exact"]["gflop_per_step"]
    assert got["gap"] < 1e-5
    assert "expected a checkout of thuiar/MMSA" in got["error"]
    assert section[0] == "## MulT side by side" and sum(line.startswith("| sentangle") for line in section) == 2
