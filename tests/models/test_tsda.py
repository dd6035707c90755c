"""TSDA: its pieces against independent computations, FCCA isolation, every switch, configs, learning."""

import inspect

import numpy as np
import pytest
import torch
import yaml

from sentangle import create_model
from sentangle.config import CONFIG_DIR, TrainConfig, build_config
from sentangle.data.synthetic import make_synthetic
from sentangle.models.tsda import TSDA, FactorConsistentAlignment, FactorHead, factor_attention_mask, first_difference
from sentangle.runs.folder import resolved_config
from sentangle.training.trainer import evaluate, fit

SMALL = dict(hidden=32, heads=4, max_tokens=8)


def batch_of(ds, n=8, split="train"):
    return next(ds.batches(split, n))


def model(ds, output_dim=1, **kw):
    torch.manual_seed(0)
    return create_model("tsda", ds.input_dims, output_dim, **{**SMALL, **kw})


def names(m):
    return [n for n, _ in m.named_parameters()]


def permute_real_frames(batch, seed=0):
    """The same batch with each sample's real frames shuffled among the real positions."""
    g = torch.Generator().manual_seed(seed)
    out = batch_of_copy(batch)
    for m, x in out.features.items():
        for i in range(x.shape[0]):
            idx = torch.nonzero(out.masks[m][i]).squeeze(-1)
            x[i, idx] = x[i, idx[torch.randperm(len(idx), generator=g)]]
    return out


def batch_of_copy(batch):
    from sentangle.data.batch import Batch

    return Batch(
        {k: v.clone() for k, v in batch.features.items()},
        {k: v.clone() for k, v in batch.masks.items()},
        batch.labels.clone(),
        list(batch.ids),
    )


# ---- pieces against independent computations ---------------------------------------------------
def test_first_difference_against_a_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 2)).astype(np.float32)
    mask = rng.random((3, 7)) > 0.35
    mask[2] = False
    got = first_difference(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
    want = np.zeros_like(x)
    for b in range(3):
        prev = None
        for t in range(7):
            if mask[b, t]:
                if prev is not None:
                    want[b, t] = x[b, t] - x[b, prev]
                prev = t
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_factor_attention_mask_against_a_loop():
    rng = np.random.default_rng(1)
    real = rng.random((4, 6)) > 0.4
    real[3, :3] = False  # sample 3: no real token of factor 0 -> those rows may only see themselves
    factor = np.array([0, 0, 0, 1, 1, 1])
    got = factor_attention_mask(torch.from_numpy(real), torch.from_numpy(factor)).numpy()
    plain = factor_attention_mask(torch.from_numpy(real), None).numpy()
    for b in range(4):
        for i in range(6):
            want = np.array([real[b, j] and factor[i] == factor[j] for j in range(6)])
            if not want.any():
                want[i] = True
            np.testing.assert_array_equal(got[b, i], want)
            np.testing.assert_array_equal(plain[b, i], real[b] if real[b].any() else np.eye(6, dtype=bool)[i])
    assert got.any(-1).all()


def test_factor_head_losses_and_confidence_by_hand():
    reg = FactorHead(4, 1, 0.0)
    out = {"prediction": torch.tensor([1.0, -1.0]), "error": torch.tensor([0.5, 0.0])}
    # |1-0| + |-1-1| = 1, 2 -> mean 1.5; error head |0.5-1| + |0-2| -> mean 1.25
    assert FactorHead.loss(out, torch.tensor([0.0, 1.0])).item() == pytest.approx(1.5 + 1.25)
    s = torch.randn(5, 4)
    o = reg(s)
    raw = reg.net(s)
    torch.testing.assert_close(o["confidence"].squeeze(-1), -torch.nn.functional.softplus(raw[:, 1]))
    cls = FactorHead(4, 3, 0.0)
    o = cls(s)
    logits = cls.net(s).detach().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(o["confidence"].detach().squeeze(-1).numpy(), p.max(1), rtol=1e-5)
    y = np.array([0, 2, 1, 1, 0])
    ce = -np.log(p[np.arange(5), y]).mean()
    assert FactorHead.loss(o, torch.from_numpy(y)).item() == pytest.approx(ce, rel=1e-5)


def test_purity_is_balanced_bce_over_real_tokens(small_synthetic):
    m = model(small_synthetic).eval()
    tokens = {
        ("temporal", "text"): (torch.randn(2, 3, 32), torch.tensor([[True, True, False], [True, False, False]])),
        ("spatial", "text"): (torch.randn(2, 2, 32), torch.tensor([[True, True], [False, False]])),
    }
    m.use = ("text",)
    got = m._purity(tokens).item()
    lt = m.discriminator(tokens[("temporal", "text")][0][tokens[("temporal", "text")][1]]).squeeze(-1).detach().numpy()
    ls = m.discriminator(tokens[("spatial", "text")][0][tokens[("spatial", "text")][1]]).squeeze(-1).detach().numpy()
    want = 0.5 * (np.log1p(np.exp(-lt)).mean() + np.log1p(np.exp(ls)).mean())  # -log sigmoid(l), -log(1 - sigmoid(l))
    assert got == pytest.approx(want, rel=1e-5)
    assert len(lt) == 3 and len(ls) == 2


def test_gate_recouples_the_two_projections(small_synthetic):
    m = model(small_synthetic).eval()
    b = batch_of(small_synthetic)
    out = m(b)
    for mod in ("text", "audio", "vision"):
        g = out.extras[f"gate_{mod}"]
        assert g.shape == (8, 32) and (g > 0).all() and (g < 1).all()
        rc = m.recouple[mod]
        st, ss = out.extras[f"summary_temporal_{mod}"], out.extras[f"summary_spatial_{mod}"]
        want = g * rc.proj["temporal"](st) + (1 - g) * rc.proj["spatial"](ss)
        heads = {f: m.aux_heads[mod][f](out.extras[f"summary_{f}_{mod}"]) for f in ("temporal", "spatial")}
        h, _, g2 = rc({"temporal": st, "spatial": ss}, heads)
        torch.testing.assert_close(g2, g)
        torch.testing.assert_close(h, want)
        # the gate's value, not only its range: the logistic of the gate network applied to
        # [s^T; s^S; |view^T - view^S|; c^T; c^S]
        t_head, s_head = heads["temporal"], heads["spatial"]
        parts = [st, ss, (t_head["view"] - s_head["view"]).abs(), t_head["confidence"], s_head["confidence"]]
        z = rc.gate(torch.cat(parts, dim=-1)).detach().double().numpy()
        np.testing.assert_allclose(g.detach().double().numpy(), 1 / (1 + np.exp(-z)), rtol=1e-5, atol=1e-6)


def test_heads_in_the_gate_are_detached(small_synthetic):
    """The task loss reaches the aux heads only through their own losses, never through the gate."""
    m = model(small_synthetic, cos_loss=False, hsic_loss=False, orth_loss=False, purity="none")
    out = m(batch_of(small_synthetic))
    out.prediction.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.aux_heads.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.recouple.parameters())


# ---- FCCA isolation, padding, invariances ------------------------------------------------------
def test_fcca_factor_mask_isolates_factors_and_full_mode_does_not():
    torch.manual_seed(0)
    n_t, n_s = 6, 4
    tokens = torch.randn(3, n_t + n_s, 16)
    real = torch.ones(3, n_t + n_s, dtype=torch.bool)
    real[0, 4:6] = False
    factor = torch.tensor([0] * n_t + [1] * n_s)
    for mode in (True, False):
        fcca = FactorConsistentAlignment(16, 2, 4, 0.0, factor_mask=mode).eval()
        base = fcca(tokens, real, factor)
        spatial_moved = tokens.clone()
        spatial_moved[:, n_t:] += 5 * torch.randn(3, n_s, 16)
        temporal_moved = tokens.clone()
        temporal_moved[:, :n_t] += 5 * torch.randn(3, n_t, 16)
        a, b = fcca(spatial_moved, real, factor), fcca(temporal_moved, real, factor)
        same_t = torch.allclose(a[:, :n_t][real[:, :n_t]], base[:, :n_t][real[:, :n_t]], atol=1e-5)
        same_s = torch.allclose(b[:, n_t:], base[:, n_t:], atol=1e-5)
        assert same_t == mode and same_s == mode
        # padding never reaches a real token
        padded_moved = tokens.clone()
        padded_moved[0, 4:6] = 100.0
        torch.testing.assert_close(fcca(padded_moved, real, factor)[real], base[real], atol=1e-5, rtol=1e-5)


def test_perturbing_spatial_tokens_leaves_temporal_outputs_in_the_model(small_synthetic):
    b = batch_of(small_synthetic)
    for fcca, isolated in (("factor", True), ("full", False)):
        m = model(small_synthetic, fcca=fcca).eval()
        base = m(b).extras
        handle = m.spatial["audio"].register_forward_hook(lambda mod, inp, out: out + 3 * torch.randn_like(out))
        moved = m(b).extras
        handle.remove()
        for mod in ("text", "audio", "vision"):
            same = torch.allclose(moved[f"summary_temporal_{mod}"], base[f"summary_temporal_{mod}"], atol=1e-5)
            assert same == isolated
        assert not torch.allclose(moved["summary_spatial_text"], base["summary_spatial_text"], atol=1e-5)
        handle = m.temporal["vision"].register_forward_hook(lambda mod, inp, out: out + 3 * torch.randn_like(out))
        moved = m(b).extras
        handle.remove()
        same = all(
            torch.allclose(moved[f"summary_spatial_{mod}"], base[f"summary_spatial_{mod}"], atol=1e-5)
            for mod in ("text", "audio", "vision")
        )
        assert same == isolated


def test_spatial_tokens_are_order_blind_only_when_decoupled(small_synthetic):
    b = batch_of(small_synthetic)
    shuffled = permute_real_frames(b)
    grab = {}
    for decouple in (True, False):
        m = model(small_synthetic, decouple=decouple, spatial_max_frames=0).eval()
        m.spatial["vision"].register_forward_hook(lambda mod, inp, out: grab.__setitem__("z", out))
        m(b)
        z0 = grab["z"]
        out = m(shuffled)
        assert torch.allclose(grab["z"], z0, atol=1e-5) == decouple
        assert not torch.allclose(
            out.extras["summary_temporal_vision"], m(b).extras["summary_temporal_vision"], atol=1e-4
        )
    # decoupling adds no parameter: the mixed encoder only rewires the queries onto the temporal output
    assert names(model(small_synthetic, decouple=False)) == names(model(small_synthetic))


def test_missing_modality_and_padding_stay_finite(small_synthetic):
    m = model(small_synthetic).eval()
    b = batch_of(small_synthetic)
    b.masks["audio"][:3] = False
    b.features["audio"][:3] = 0.0
    out = m(b)
    assert torch.isfinite(out.prediction).all() and all(torch.isfinite(v) for v in out.aux_losses.values())
    out = m(b.without("vision"))
    assert torch.isfinite(out.prediction).all()


# ---- switches -----------------------------------------------------------------------------------
LOSSES = {"purity", "cos", "hsic", "orth", "aux_temporal", "aux_spatial"}


def test_full_model_produces_every_loss(small_synthetic):
    out = model(small_synthetic)(batch_of(small_synthetic))
    assert set(out.aux_losses) == LOSSES
    assert set(TSDA.default_aux_weights) == LOSSES
    assert all(torch.isfinite(v) and v >= 0 for v in out.aux_losses.values())


def test_no_temporal_branch_is_gone_and_order_blind(small_synthetic):
    m = model(small_synthetic, temporal=False, spatial_max_frames=0).eval()
    m.aux_losses_in_eval = True
    assert m.temporal is None and not any(n.startswith("temporal") for n in names(m))
    assert not any(".proj.temporal" in n or ".temporal." in n for n in names(m))
    b = batch_of(small_synthetic)
    out = m(b)
    assert set(out.aux_losses) == {"aux_spatial"} and "gate_text" not in out.extras
    torch.testing.assert_close(m(permute_real_frames(b)).prediction, out.prediction, atol=1e-5, rtol=1e-5)
    full = model(small_synthetic, spatial_max_frames=0).eval()
    assert not torch.allclose(full(permute_real_frames(b)).prediction, full(b).prediction, atol=1e-4)


def test_no_spatial_branch_is_gone(small_synthetic):
    m = model(small_synthetic, spatial=False)
    assert m.spatial is None and not any("spatial" in n or "queries" in n for n in names(m))
    out = m(batch_of(small_synthetic))
    assert set(out.aux_losses) == {"aux_temporal"}


@pytest.mark.parametrize(
    "kw,gone_loss,gone_param",
    [
        ({"purity": "none"}, "purity", "discriminator"),
        ({"cos_loss": False}, "cos", None),
        ({"hsic_loss": False}, "hsic", None),
        ({"orth_loss": False}, "orth", None),
        ({"aux_heads": False}, "aux_temporal", "aux_heads"),
        ({"fcca": "none"}, None, "fcca"),
        ({"fusion": "concat"}, None, "gate"),
        ({"fusion": "average"}, None, "gate"),
    ],
)
def test_switch_removes_its_loss_and_parameters(small_synthetic, kw, gone_loss, gone_param):
    m = model(small_synthetic, **kw)
    out = m(batch_of(small_synthetic))
    if gone_loss:
        assert gone_loss not in out.aux_losses and len(out.aux_losses) >= 3
    if kw == {"aux_heads": False}:
        assert "aux_spatial" not in out.aux_losses
    if gone_param:
        assert not any(gone_param in n for n in names(m)) and any(
            gone_param in n for n in names(model(small_synthetic))
        )
    if "fusion" in kw:
        assert not any(k.startswith("gate_") for k in out.extras)
    if kw == {"fcca": "none"}:
        assert "modality_embedding" not in names(m)


def test_average_fusion_is_the_mean_of_the_projections(small_synthetic):
    m = model(small_synthetic, fusion="average").eval()
    out = m(batch_of(small_synthetic))
    rc = m.recouple["text"]
    s = {f: out.extras[f"summary_{f}_text"] for f in ("temporal", "spatial")}
    torch.testing.assert_close(
        rc(s, None)[0], 0.5 * (rc.proj["temporal"](s["temporal"]) + rc.proj["spatial"](s["spatial"]))
    )


def test_adversarial_purity_reverses_the_encoder_gradient(small_synthetic):
    b = batch_of(small_synthetic)
    grads = {}
    for mode in ("supervised", "adversarial"):
        m = model(small_synthetic, purity=mode, dropout=0.0)
        out = m(b)
        out.aux_losses["purity"].backward()
        grads[mode] = m.proj["text"].weight.grad.clone()
        assert m.discriminator[0].weight.grad.abs().sum() > 0
    torch.testing.assert_close(grads["adversarial"], -grads["supervised"])


def test_modalities_option_removes_a_modality(small_synthetic):
    m = model(small_synthetic, modalities=["text", "vision"]).eval()
    assert not any("audio" in n for n in names(m))
    b = batch_of(small_synthetic)
    b2 = batch_of_copy(b)
    b2.features["audio"] = torch.randn_like(b2.features["audio"]) * 10
    torch.testing.assert_close(m(b).prediction, m(b2).prediction)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"fcca": "blocky"}, "fcca='blocky'"),
        ({"fusion": "sum"}, "fusion='sum'"),
        ({"purity": "yes"}, "purity"),
        ({"temporal_input": "delta"}, "temporal_input"),
        ({"temporal": False, "spatial": False}, "at least one branch"),
        ({"decouple": False, "spatial": False}, "mixed encoder"),
        ({"modalities": ["smell"]}, "smell"),
        ({"hidden": 30}, "divisible"),
    ],
)
def test_bad_options_are_named(small_synthetic, kw, match):
    with pytest.raises(ValueError, match=match):
        model(small_synthetic, **kw)


def test_classification_output_and_aux_losses():
    ds = make_synthetic(seed=0, scale=0.05, lengths={"text": 6, "audio": 10, "vision": 10}, dims={"text": 8})
    torch.manual_seed(0)
    m = model(ds, output_dim=3)
    b = batch_of(ds)
    b.labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    out = m(b)
    assert out.prediction.shape == (8, 3)
    assert {"aux_temporal", "aux_spatial"} <= set(out.aux_losses) and out.extras["y_temporal_text"].shape == (8, 3)
    (torch.nn.functional.cross_entropy(out.prediction, b.labels) + sum(out.aux_losses.values())).backward()


# ---- configs ------------------------------------------------------------------------------------
def test_resolved_config_lists_every_option_with_its_default():
    # the constructor is the one source of the defaults; the run's config writes each one out
    assert "model" not in yaml.safe_load((CONFIG_DIR / "models" / "tsda.yaml").read_text())
    cfg = resolved_config(build_config("tsda", "mosi")).model
    params = {
        k: p.default
        for k, p in inspect.signature(TSDA.__init__).parameters.items()
        if k not in ("self", "input_dims", "output_dim", "text_encoder")
    }
    # besides every constructor option, the text encoder that configs/datasets/mosi.yaml names
    assert set(cfg) - {"name", "text_encoder"} == set(params)
    assert {k: v for k, v in cfg.items() if k not in ("name", "text_encoder")} == params


@pytest.mark.parametrize(
    "name,dims",
    [
        ("tsda-mosi-aligned", {"text": 768, "audio": 5, "vision": 20}),
        ("tsda-mosi-unaligned", {"text": 768, "audio": 5, "vision": 20}),
        ("tsda-mosei-aligned", {"text": 768, "audio": 74, "vision": 35}),
        ("tsda-mosei-unaligned", {"text": 768, "audio": 74, "vision": 35}),
    ],
)
def test_experiment_configs_resolve_and_build(name, dims):
    cfg = build_config(config_file=name)
    assert cfg.model["name"] == "tsda" and cfg.dataset["name"] == "mmsa"
    aligned = "-aligned" in name
    assert cfg.dataset["file"].endswith("aligned_50.pkl" if aligned else "unaligned_50.pkl")
    assert ("unaligned" in cfg.dataset["file"]) != aligned and name.split("-")[1].upper() in cfg.dataset["file"]
    lengths = 50 if aligned else {"text": 50, "audio": 375, "vision": 500}
    ds = make_synthetic(seed=0, n_train=4, n_valid=2, n_test=2, dims=dims, lengths=lengths, aligned=aligned)
    args = {k: v for k, v in cfg.model.items() if k != "name"}
    m = create_model("tsda", ds.input_dims, ds.output_dim, **args).eval()
    assert m(batch_of(ds, 4)).prediction.shape == (4,)
    assert TrainConfig(**{k: v for k, v in vars(cfg.train).items()}).batch_size == cfg.train.batch_size


# ---- learning -----------------------------------------------------------------------------------
def test_tsda_learns_on_small_synthetic(small_synthetic):
    ds = small_synthetic
    m = model(ds)
    fit(m, ds, TrainConfig(epochs=6, batch_size=64, lr=3e-3, patience=3, progress=False), seed=1111)
    mae = evaluate(m, ds, "test")["mae"]
    mean_mae = float(np.abs(ds.splits["test"].labels - ds.splits["train"].labels.mean()).mean())
    assert mae < 0.8 * mean_mae, (mae, mean_mae)
