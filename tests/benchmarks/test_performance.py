"""The performance benchmark runs on a tiny configuration, and the speed fixes keep the models' numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentangle.data.named import load_dataset
from sentangle.models import create_model
from sentangle.models.layers import RealFrameLSTM

TINY = {
    "sizes": (12, 2, 6),
    "aligned": False,
    "lengths": {"text": 6, "audio": 9, "vision": 11},
    "dims": {"text": 8, "audio": 5, "vision": 4},
}


@pytest.mark.parametrize("model", ["lf_dnn", "misa"])
def test_benchmark_measures_a_tiny_configuration(beside_scripts, model):
    got = beside_scripts(
        f"""
        import json
        import performance as perf

        r = perf.measure_model({model!r}, {TINY!r}, threads=1, batches=2, seconds=5.0, overrides=["train.batch_size=4"])
        res = {{
            "date": "today",
            "threads": 1,
            "machine": perf.machine() | {{"load_average_end": [0, 0, 0]}},
            "settings": {{"batches": 2, "seconds": 5.0, "note": "tiny"}},
            "matmul_gflops": [10.0],
            "results": [r | {{"shape": "mosi_unaligned"}}],
            "lazy": None,
        }}
        page = perf.render(res)
        slow = res["results"][0] | {{"train_epoch_s": 100.0, "flops_fwd_bwd_per_sample": 1e9}}
        slow = perf.render(res | {{"results": [slow]}})
        print(json.dumps({{"r": r, "page": page, "slow": slow}}))
        """
    )
    r, page = got["r"], got["page"]
    # a missed epoch target says what the counted work allows: 1284 x 1 GFLOP at 10 GFLOP/s is 128 s
    assert "1.3 TFLOP as counted above" in got["slow"] and "128 s at 100% of the matmul rate" in got["slow"]
    assert "asks for 214% of it" in got["slow"] and "TFLOP as counted" not in page
    assert r["params"] > 0 and r["batch_size"] == 4 and r["epoch_batches"] == 3
    assert r["measured_batches"] == 2 and r["train_epoch_s"] > 0
    assert r["infer_utt_s"] > 0 and r["infer_samples"] == 6
    assert r["flops_fwd_bwd_per_sample"] > r["flops_fwd_per_sample"] > 0
    assert r["peak_rss_mb"] >= r["rss_before_mb"] * 0.5 > 0
    assert f"`{model}`" in page and "## Targets" in page


def test_merge_replaces_only_the_measured_rows(beside_scripts):
    got = beside_scripts(
        """
        import json
        import performance as perf

        row = lambda m, s, utt: {"model": m, "shape": s, "infer_utt_s": utt, "train_utt_s": 1.0,
                                 "flops_fwd_bwd_per_sample": 1e9}
        old = {"date": "d0", "matmul_gflops": [100.0], "machine": {}, "settings": {"note": ""}, "lazy": {"old": 1},
               "results": [row("a", "x", 1), row("b", "x", 2), row("a", "y", 3)]}
        new = {"date": "d1", "matmul_gflops": [40.0, 50.0], "machine": {"load_average_start": [0.5], "load_average_end": [0.7]},
               "settings": {"note": "quiet"}, "lazy": None, "results": [row("b", "x", 20), row("c", "x", 30)]}
        m = perf.merge(old, new, "python benchmarks/performance.py --models b,c --merge")
        print(json.dumps(m))
        """
    )
    assert [(r["model"], r["shape"], r["infer_utt_s"]) for r in got["results"]] == [
        ("a", "x", 1),
        ("b", "x", 20),
        ("a", "y", 3),
        ("c", "x", 30),
    ]
    # a merged row keeps its own run's matmul rate for the achieved fraction; the others the page's
    assert got["results"][1]["matmul_gflops"] == 50.0 and "matmul_gflops" not in got["results"][0]
    assert got["lazy"] == {"old": 1} and got["date"] == "d0"
    assert got["merges"] == [
        {
            "date": "d1",
            "command": "python benchmarks/performance.py --models b,c --merge",
            "rows": ["b:x", "c:x"],
            "matmul_gflops": [40.0, 50.0],
            "load_average": [0.5, 0.7],
            "note": "quiet",
        }
    ]


def test_benchmark_lazy_run_keeps_features_mapped(beside_scripts, tmp_path):
    r = beside_scripts(
        f"""
        import json
        import performance as perf

        from pathlib import Path

        folder = perf.write_mosei_lazy(Path({str(tmp_path / "mosei")!r}), scale=0.0006)
        print(json.dumps(perf.measure_lazy(str(folder), threads=1)))
        """
    )
    assert r["mapped"] and r["train_samples"] == 10 and r["folder_mb"] > 0.5


def test_matmul_reference_is_positive(beside_scripts):
    got = beside_scripts("import json, performance; print(json.dumps(performance.matmul_gflops(1, n=256, reps=2)))")
    assert got > 0


@pytest.mark.parametrize("bidirectional,layers", [(True, 2), (False, 2), (True, 1)])
def test_real_frame_lstm_gradients_match_each_sample_run_alone(bidirectional, layers):
    # The unpacked implementation must give the outputs and gradients of an LSTM run on each
    # sample's real frames alone (what the packed version gave), stacked layers included.
    torch.manual_seed(0)
    enc = RealFrameLSTM(3, 4, layers=layers, bidirectional=bidirectional).eval()
    x = torch.randn(3, 7, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1, 0], [1] * 7, [0, 0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    out, out_mask, final = enc(x, mask)
    (out.pow(2).sum() + final.sum()).backward()
    grad = x.grad.clone()
    x.grad = None
    total = 0
    for i in range(3):
        n = int(mask[i].sum())
        alone, (h, _) = enc.lstm(x[i, mask[i]].unsqueeze(0))
        torch.testing.assert_close(out[i, :n], alone[0])
        torch.testing.assert_close(final[i], h[-enc.dirs :].transpose(0, 1).reshape(-1))
        total = total + alone.pow(2).sum() + h[-enc.dirs :].sum()
        assert out_mask[i].sum() == n and not out[i, n:].any()
    total.backward()
    torch.testing.assert_close(grad, x.grad)


def test_mult_windows_only_the_modalities_it_is_told_to():
    ds = load_dataset(
        "synthetic",
        scale=0.01,
        lengths={"text": 20, "audio": 60, "vision": 80},
        dims={"text": 8, "audio": 5, "vision": 4},
    )
    batch = next(ds.batches("train", 4))
    torch.manual_seed(0)
    model = create_model("mult", ds.input_dims, dim=10, heads=2, layers=1, max_len={"audio": 10, "vision": 10}).eval()
    seen = {}
    orig = model.embed

    def spy(m, x, mask):
        h, mk = orig(m, x, mask)
        seen[m] = h.shape[1]
        return h, mk

    model.embed = spy
    model(batch)
    assert seen["text"] == batch.features["text"].shape[1] and seen["audio"] <= 10 and seen["vision"] <= 10
    with pytest.raises(ValueError, match="unknown modalities"):
        create_model("mult", ds.input_dims, dim=10, heads=2, max_len={"speech": 10})
    same = create_model("mult", ds.input_dims, dim=10, heads=2, layers=1, max_len=10)
    assert same.max_len == {"text": 10, "audio": 10, "vision": 10}
    assert np.isfinite(model(batch).prediction.detach().numpy()).all()


def test_real_frame_lstm_with_end_padding_only_needs_no_reordering():
    torch.manual_seed(0)
    enc = RealFrameLSTM(3, 4, bidirectional=True).eval()
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out, _, final = enc(x, mask)
    for i in range(2):
        alone, (h, _) = enc.lstm(x[i, mask[i]].unsqueeze(0))
        torch.testing.assert_close(out[i, : int(mask[i].sum())], alone[0])
        torch.testing.assert_close(final[i], h.transpose(0, 1).reshape(-1))
