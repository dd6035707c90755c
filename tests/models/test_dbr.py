"""DBR: its pieces against independent computations, every switch, learning, and the diagnostics."""

import itertools

import numpy as np
import pytest
import torch

from sentangle import create_model
from sentangle.config import TrainConfig
from sentangle.data.dataset import MSADataset, Split
from sentangle.models import losses as L
from sentangle.models.dbr import TemporalStructuralFactorization, difference_loss, route_to_anchors, similarity_loss
from sentangle.models.layers import masked_mean
from sentangle.report.diagnostics import branch_diagnostics, linear_cka, run_diagnostics, summarize_diagnostics
from sentangle.training.trainer import evaluate, fit

SMALL = dict(hidden=32, heads=2, dropout=0.0)
# For the learning tests: the temporal path brings its own Transformer layer, and 10 windowed
# frames keep the trend (tests stay fast on 2 shared cores).
LEARN = dict(SMALL, encoder_layers=0, max_frames=10)
FIT = TrainConfig(epochs=6, batch_size=32, lr=1e-3, patience=4, progress=False)
rng = np.random.default_rng(0)


def first_batch(ds, n=16):
    return next(ds.batches("train", n))


def names(model):
    return [n for n, _ in model.named_parameters()]


# ---- pieces against independent computations ----------------------------------------------------
def test_route_to_anchors_against_loop():
    x = rng.normal(size=(2, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], bool)
    anchors = rng.normal(size=(3, 4))
    tau = 0.7
    slots, load = route_to_anchors(torch.tensor(x), torch.tensor(mask), torch.tensor(anchors), tau)
    for b in range(2):
        r = np.zeros((5, 3))
        for t in range(5):
            if mask[b, t]:
                z = np.array([x[b, t] @ anchors[k] for k in range(3)]) / (2.0 * tau)  # sqrt(D) = 2
                r[t] = np.exp(z) / np.exp(z).sum()
        for k in range(3):
            want = sum(r[t, k] * x[b, t] for t in range(5)) / r[:, k].sum()
            np.testing.assert_allclose(slots[b, k].numpy(), want, rtol=1e-10)
        np.testing.assert_allclose(load[b].numpy(), r.sum(0) / mask[b].sum(), rtol=1e-10)
    assert torch.allclose(load.sum(-1), torch.ones(2, dtype=load.dtype))
    x2 = x.copy()
    x2[0, 3:] = 99.0  # padded frames route nowhere
    slots2, _ = route_to_anchors(torch.tensor(x2), torch.tensor(mask), torch.tensor(anchors), tau)
    torch.testing.assert_close(slots, slots2)


def _cka_kernel_form(x, y):
    # HSIC form with linear Gram matrices: an independent route to the same number.
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l_ = x @ x.T, y @ y.T
    hs = lambda a, b: np.trace(a @ h @ b @ h)
    return hs(k, l_) / np.sqrt(hs(k, k) * hs(l_, l_))


def test_linear_cka_against_numpy_and_invariances():
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 3))
    y = y + x[:, :3]  # partly related
    assert linear_cka(x, y) == pytest.approx(_cka_kernel_form(x, y), rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert linear_cka(x, 3.0 * x @ q + 2.0) == pytest.approx(1.0, rel=1e-10)  # rotation, scale, shift
    big = rng.normal(size=(2000, 4))
    assert linear_cka(big, rng.normal(size=(2000, 4))) < 0.01
    assert np.isnan(linear_cka(np.ones((10, 2)), x[:10]))
    with pytest.raises(ValueError, match="same N"):
        linear_cka(x, y[:5])


def test_decoupling_losses_are_the_shared_losses(numpy_losses):
    s = [torch.randn(8, 4) for _ in range(3)]
    p = [torch.randn(8, 4) for _ in range(3)]
    want = np.mean([L.cmd(s[i], s[j], 3).item() for i, j in ((0, 1), (0, 2), (1, 2))])
    assert similarity_loss(s, 3).item() == pytest.approx(want, rel=1e-6)
    terms = [L.orthogonality(a, b).item() for a, b in zip(s, p)]
    terms += [L.orthogonality(p[i], p[j]).item() for i, j in itertools.combinations(range(3), 2)]
    assert difference_loss(s, p).item() == pytest.approx(np.mean(terms), rel=1e-6)
    # and against the formulas written out in numpy
    sn, pn = [a.numpy() for a in s], [a.numpy() for a in p]
    pairs = list(itertools.combinations(range(3), 2))
    want_sim = np.mean([numpy_losses.cmd(sn[i], sn[j], 3) for i, j in pairs])
    want_diff = np.mean(
        [numpy_losses.orthogonality(a, b) for a, b in zip(sn, pn)]
        + [numpy_losses.orthogonality(pn[i], pn[j]) for i, j in pairs]
    )
    assert similarity_loss(s, 3).item() == pytest.approx(want_sim, rel=1e-5)
    assert difference_loss(s, p).item() == pytest.approx(want_diff, rel=1e-5)


def test_structural_path_is_order_blind_and_temporal_path_is_not():
    torch.manual_seed(0)
    tsf = TemporalStructuralFactorization(("text", "audio"), 16, 2, 0.0, 1, 2, 4, "hsic").eval()
    x = {m: torch.randn(6, 7, 16) for m in ("text", "audio")}
    masks = {m: torch.ones(6, 7, dtype=torch.bool) for m in x}
    masks["audio"][:, 5:] = False
    present = torch.ones(6, 2, dtype=torch.bool)
    perm = torch.tensor([4, 2, 0, 3, 1, 5, 6])  # shuffles the real audio frames, keeps padding last
    y = dict(x, audio=x["audio"][:, perm])
    sm = lambda d: torch.stack([masked_mean(d[m], masks[m]) for m in d], 1)
    torch.testing.assert_close(tsf.structural_path(sm(x), present), tsf.structural_path(sm(y), present))
    assert not torch.allclose(
        tsf.temporal_path(x["audio"], masks["audio"]), tsf.temporal_path(y["audio"], masks["audio"]), atol=1e-4
    )
    c, gate, red = tsf(x, masks, present)
    assert c.shape == (6, 2, 16) and gate.shape == (6, 2) and ((gate > 0) & (gate < 1)).all() and red >= 0


# ---- switches ------------------------------------------------------------------------------------
SWITCHES = [
    # option, parameter-name prefixes that must disappear, aux losses and extras that must disappear
    ({"tsf": False}, ["tsf."], ["tsf_redundancy"], ["tsf_gate"]),
    ({"agpr": False}, ["agpr."], ["agpr_sparsity"], ["agpr_gate", "agpr_load"]),
    ({"agpr_borrow": False}, ["agpr.gate.", "agpr.borrow."], ["agpr_sparsity"], ["agpr_gate"]),
    ({"brf": False}, ["brf."], [], ["branch_weights"]),
    ({"reconstruction": False}, ["decouple.decoder."], ["recon"], []),
    ({"similarity": False}, [], ["sim"], []),
    ({"difference": False}, [], ["diff"], []),
    ({"encoder_norm": False}, ["encoders.text.encoder.norm."], [], []),
]


@pytest.mark.parametrize("option,params,aux,extras", SWITCHES, ids=[str(s[0]) for s in SWITCHES])
def test_each_switch_removes_what_it_names(option, params, aux, extras, small_synthetic):
    torch.manual_seed(0)
    batch = first_batch(small_synthetic)
    full = create_model("dbr", small_synthetic.input_dims, 1, **SMALL).eval()
    off = create_model("dbr", small_synthetic.input_dims, 1, **SMALL, **option).eval()
    full.aux_losses_in_eval = off.aux_losses_in_eval = True
    o_full, o_off = full(batch), off(batch)
    for prefix in params:
        assert any(n.startswith(prefix) for n in names(full))
        assert not any(n.startswith(prefix) for n in names(off))
    for name in aux:
        assert name in o_full.aux_losses and name not in o_off.aux_losses
    for name in extras:
        assert name in o_full.extras and name not in o_off.extras
    assert sum(p.numel() for p in off.parameters()) <= sum(p.numel() for p in full.parameters())
    assert o_off.prediction.shape == (16,) and torch.isfinite(o_off.prediction).all()


def test_plain_versions_are_time_means_and_concatenation(small_synthetic):
    torch.manual_seed(0)
    batch = first_batch(small_synthetic)
    model = create_model("dbr", small_synthetic.input_dims, 1, tsf=False, agpr=False, brf=False, **SMALL).eval()
    out = model(batch)
    h = {m: model.encoders[m](batch.features[m], batch.masks[m]) for m in model.modalities}
    shared, private = model.decouple(h)
    s = torch.stack([masked_mean(shared[m], batch.masks[m]) for m in model.modalities]).mean(0)
    p = torch.stack([masked_mean(private[m], batch.masks[m]) for m in model.modalities]).mean(0)
    torch.testing.assert_close(out.extras["shared_summary"], s)
    torch.testing.assert_close(out.extras["private_summary"], p)
    fused = torch.cat([model.norm_shared(s), model.norm_private(p)], -1)  # plain concatenation
    torch.testing.assert_close(out.prediction, model.head(fused).squeeze(-1))


def test_borrowing_gate_penalty_is_the_mean_gate_and_needs_two_modalities(small_synthetic):
    torch.manual_seed(0)
    model = create_model("dbr", small_synthetic.input_dims, 1, **SMALL).eval()
    model.aux_losses_in_eval = True
    out = model(first_batch(small_synthetic))
    torch.testing.assert_close(out.aux_losses["agpr_sparsity"], out.extras["agpr_gate"].mean())
    assert 0.05 < out.extras["agpr_gate"].mean() < 0.25  # starts nearly closed (bias -2)
    text = create_model("dbr", {"text": small_synthetic.input_dims["text"]}, 1, **SMALL).eval()
    text.aux_losses_in_eval = True
    o = text(first_batch(small_synthetic).without("audio", "vision"))
    assert "sim" not in o.aux_losses and "agpr_sparsity" not in o.aux_losses
    assert not any(n.startswith("agpr.gate") for n in names(text))
    assert {"diff", "recon", "tsf_redundancy"} <= set(o.aux_losses)


def test_max_frames_caps_long_sequences(small_synthetic):
    batch = first_batch(small_synthetic, 64)
    full = batch.features["audio"].shape[1]
    assert full > 8
    for cap, want in ((8, 8), (0, full)):
        seen = {}
        model = create_model("dbr", small_synthetic.input_dims, 1, max_frames=cap, **SMALL).eval()
        model.encoders["audio"].register_forward_hook(lambda mod, inp, out: seen.update(t=inp[0].shape[1]))
        model(batch)
        assert seen["t"] == want


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="tsf_groups=5"):
        create_model("dbr", {"text": 4}, 1, hidden=32, tsf_groups=5)
    with pytest.raises(ValueError, match="tsf_redundancy='mi'"):
        create_model("dbr", {"text": 4}, 1, hidden=32, tsf_redundancy="mi")
    with pytest.raises(ValueError, match="code_activation"):
        create_model("dbr", {"text": 4}, 1, hidden=32, code_activation="gelu")


# ---- learning ------------------------------------------------------------------------------------
def _mean_mae(ds):
    return float(np.abs(ds.splits["test"].labels - ds.splits["train"].labels.mean()).mean())


def test_dbr_learns_on_synthetic(small_synthetic):
    ds = small_synthetic
    model = create_model("dbr", ds.input_dims, 1, **LEARN)
    fit(model, ds, FIT, seed=1111)
    mae = evaluate(model, ds, "test")["mae"]
    assert mae < 0.7 * _mean_mae(ds), (mae, _mean_mae(ds))


def _three_class(ds):
    cut = np.quantile(ds.splits["train"].labels, [1 / 3, 2 / 3])
    splits = {
        s: Split(sp.features, sp.masks, np.digitize(sp.labels, cut).astype(np.int64), sp.ids)
        for s, sp in ds.splits.items()
    }
    return MSADataset("toy3", splits, task="classification", class_names=["neg", "neu", "pos"], label_range=None)


def test_dbr_learns_a_classification_toy_set(small_synthetic):
    ds = _three_class(small_synthetic).validate()
    model = create_model("dbr", ds.input_dims, 3, **LEARN)
    fit(model, ds, FIT, seed=1111)
    m = evaluate(model, ds, "test")
    majority = np.bincount(ds.splits["test"].labels).max() / len(ds.splits["test"])
    assert m["accuracy"] > majority + 0.2, (m, majority)
    assert m["f1_macro"] > 0.5
    # diagnostics on a classification model: shares of class-probability changes
    d = branch_diagnostics(model, ds, "test")
    assert d["metrics"]["accuracy"] == pytest.approx(m["accuracy"])
    assert d["prediction_share"]["shared"] + d["prediction_share"]["private"] == pytest.approx(1.0)


# ---- diagnostics ---------------------------------------------------------------------------------
def test_branch_diagnostics_contents(small_synthetic):
    torch.manual_seed(0)
    model = create_model("dbr", small_synthetic.input_dims, 1, **SMALL)
    d = branch_diagnostics(model, small_synthetic, "valid")
    assert d["samples"] == len(small_synthetic.splits["valid"])
    assert d["branch_weights"]["shared"] + d["branch_weights"]["private"] == pytest.approx(1.0)
    assert 0 <= d["redundancy"]["linear_cka"] <= 1 and d["redundancy"]["hsic"] >= 0
    assert "redundancy_before_fusion" in d and set(d["gates"]) == {"tsf_gate", "agpr_gate"}
    assert set(d["gates"]["tsf_gate"]) == {"text", "audio", "vision"}
    assert d["prediction_share"]["shared"] + d["prediction_share"]["private"] == pytest.approx(1.0)
    assert set(d["metrics_without"]["shared"]) == set(d["metrics"])
    # the branch weights' and gates' values, not only their range: means of the model's own extras
    model.eval()
    ex = {}
    with torch.no_grad():
        for batch in small_synthetic.batches("valid", 256):
            for k, v in model(batch).extras.items():
                ex.setdefault(k, []).append(v.double())
    assert d["branch_weights"]["shared"] == pytest.approx(torch.cat(ex["branch_weights"])[:, 0].mean().item(), rel=1e-5)
    for i, m in enumerate(("text", "audio", "vision")):
        assert d["gates"]["tsf_gate"][m] == pytest.approx(torch.cat(ex["tsf_gate"])[:, i].mean().item(), rel=1e-5)
    # the same extras, gathered by hand: CKA of the summaries over the split
    model.eval()
    with torch.no_grad():
        outs = [model(b) for b in small_synthetic.batches("valid", 50)]
    s = torch.cat([o.extras["shared_summary"] for o in outs]).numpy()
    p = torch.cat([o.extras["private_summary"] for o in outs]).numpy()
    assert d["redundancy"]["linear_cka"] == pytest.approx(_cka_kernel_form(s, p), rel=1e-4)


def test_prediction_share_is_zero_for_a_branch_the_head_ignores(small_synthetic):
    torch.manual_seed(0)
    model = create_model("dbr", small_synthetic.input_dims, 1, brf=False, **SMALL)
    with torch.no_grad():
        model.head[0].weight[:, 32:] = 0.0  # the head reads [shared; private]: silence private
    d = branch_diagnostics(model, small_synthetic, "test")
    assert "branch_weights" not in d
    assert d["prediction_share"] == {"shared": 1.0, "private": 0.0}
    assert d["metrics_without"]["private"] == d["metrics"]


def test_run_diagnostics_and_summary(small_synthetic):
    torch.manual_seed(0)
    assert run_diagnostics(create_model("lf_dnn", small_synthetic.input_dims, 1), small_synthetic) is None
    model = create_model("dbr", small_synthetic.input_dims, 1, **SMALL)
    r = run_diagnostics(model, small_synthetic)
    assert set(r) == {"valid", "test"}
    s = summarize_diagnostics([r["test"], r["test"]])
    assert s["redundancy.linear_cka"]["mean"] == pytest.approx(r["test"]["redundancy"]["linear_cka"])
    assert s["redundancy.linear_cka"]["std"] == 0.0 and s["redundancy.linear_cka"]["n"] == 2


def test_downsampled_frames_ignore_padding(small_synthetic, garbage_padding):
    # 9 frames: below every modality's length (text 20, audio and vision 40)
    model = create_model("dbr", small_synthetic.input_dims, 1, max_frames=9, **SMALL).eval()
    batch = first_batch(small_synthetic)
    padded = garbage_padding(first_batch(small_synthetic), 9)
    assert padded.features["audio"].shape[1] == 45
    out, out2 = model(batch), model(padded)
    torch.testing.assert_close(out.prediction, out2.prediction, rtol=1e-4, atol=1e-5)
    for k in out.aux_losses:
        torch.testing.assert_close(out.aux_losses[k], out2.aux_losses[k], rtol=1e-4, atol=1e-5)
