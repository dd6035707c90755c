"""The baselines (TFN, LMF, MulT, MISA, Self-MM), the real-frame LSTM they share, their widths, and compare().

Fusion arithmetic is checked against numpy (TFN's outer product, LMF's full-rank tensor); every
auxiliary loss is checked to be non-negative and to move with what it measures; every model has to
beat the mean predictor on small synthetic data. Self-MM's label generation: tests/test_self_mm.py.
"""

import json

import numpy as np
import pytest
import torch

from sentangle import create_model
from sentangle.config import TrainConfig
from sentangle.data.synthetic import make_synthetic
from sentangle.models import losses as L
from sentangle.models.layers import RealFrameLSTM
from sentangle.models.mult import MulTLayer
from sentangle.models.tfn import tensor_fusion
from sentangle.training.trainer import autocast, evaluate, fit

BASELINES = ("tfn", "lmf", "mult", "misa", "self_mm")
# Small versions of each model, so the tests stay fast on a shared 2-core machine.
SMALL = {
    "tfn": dict(text_hidden=16, audio_hidden=6, vision_hidden=6, text_out=6, post_fusion_dim=16),
    "lmf": dict(text_hidden=16, audio_hidden=8, vision_hidden=8, text_out=8, rank=4),
    "mult": dict(dim=16, heads=2, layers=1, memory_layers=1, embed_dropout=0.1, text_dropout=0.1, output_dropout=0.1),
    "misa": dict(hidden=64, rnn_hidden=8),
    "self_mm": dict(audio_lstm_hidden=8, vision_lstm_hidden=8, audio_out=8, vision_out=8, post_fusion_dim=32),
}


@pytest.fixture(scope="module")
def tiny():
    """Unaligned, short, low-dimensional: enough to learn from in a few seconds."""
    return make_synthetic(
        seed=0, scale=0.3, lengths={"text": 10, "audio": 16, "vision": 16}, dims={"text": 16, "audio": 5, "vision": 8}
    )


def batch_of(ds, n=8, split="train"):
    return next(ds.batches(split, n))


def small(name, ds, output_dim=1, **kw):
    torch.manual_seed(0)
    return create_model(name, ds.input_dims, output_dim, **{**SMALL[name], **kw})


# ---- the shared recurrent encoder --------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True])
def test_real_frame_lstm_matches_an_lstm_run_on_each_sample_alone(bidirectional):
    torch.manual_seed(0)
    enc = RealFrameLSTM(3, 4, bidirectional=bidirectional)
    x = torch.randn(3, 6, 3)
    mask = torch.tensor(
        [
            [1, 1, 0, 1, 0, 0],  # an interior dropped frame and end padding
            [1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )  # no real frame at all
    out, out_mask, final = enc(x, mask)
    for i in range(2):
        alone, (h, _) = enc.lstm(x[i, mask[i]].unsqueeze(0))  # only its real frames, in order
        want = h.transpose(0, 1).reshape(-1)
        torch.testing.assert_close(final[i], want)
        torch.testing.assert_close(out[i, : int(mask[i].sum())], alone[0])
        assert out_mask[i].sum() == mask[i].sum()
    assert torch.all(final[2] == 0) and not out_mask[2].any()


def test_real_frame_lstm_trains_the_weights_of_its_lstm_like_each_sample_run_alone():
    # The layers run on the weights of `enc.lstm`: their gradients must reach those parameters and
    # equal the ones of an nn.LSTM run on each sample's real frames alone.
    torch.manual_seed(0)
    enc = RealFrameLSTM(3, 4, layers=2, bidirectional=True).train()
    x = torch.randn(3, 6, 3)
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [1] * 6, [0] * 6], dtype=torch.bool)
    out, _, final = enc(x, mask)
    (out.pow(2).sum() + final.sum()).backward()
    got = {n: p.grad.clone() for n, p in enc.lstm.named_parameters()}
    enc.zero_grad()
    total = torch.zeros(())
    for i in range(2):  # the sample without real frames contributes nothing
        alone, (h, _) = enc.lstm(x[i, mask[i]].unsqueeze(0))
        total = total + alone.pow(2).sum() + h[-2:].sum()
    total.backward()
    assert set(got) == {n for n, _ in enc.lstm.named_parameters()}
    for n, p in enc.lstm.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)


@pytest.mark.parametrize(
    "bidirectional,layers,hidden,d_in", [(True, 2, 4, 7), (False, 1, 6, 7), (True, 1, 5, 7), (True, 2, 8, 70)]
)
@pytest.mark.parametrize("no_grad", [torch.no_grad, torch.inference_mode])
def test_real_frame_lstm_inference_kernel_matches_an_lstm_run_on_each_sample_alone(
    bidirectional, layers, hidden, d_in, no_grad, monkeypatch
):
    # Without gradients the recurrence runs in kernels.lstm_cpu: the outputs of torch's nn.LSTM on
    # each sample's real frames alone, within float32 rounding. Widths 5 and 6 and the input's 7
    # leave remainders in the kernel's four-rows-at-a-time product; an input 70 wide is projected
    # before the kernel (kernels._PROJECT_IN_KERNEL), the second layer's 16 inside it.
    from sentangle.models import kernels

    assert 7 < kernels._PROJECT_IN_KERNEL < 70

    calls, real = [], kernels.lstm_cpu
    monkeypatch.setattr(kernels, "lstm_cpu", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.manual_seed(0)
    enc = RealFrameLSTM(d_in, hidden, layers=layers, bidirectional=bidirectional).eval()
    x = torch.randn(4, 9, d_in)
    mask = torch.tensor(
        [[1, 0, 1, 1, 0, 1, 1, 1, 0], [1] * 8 + [0], [0] * 9, [1, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool
    )
    with no_grad():
        out, out_mask, final = enc(x, mask)
        assert len(calls) == layers
        for i in (0, 1, 3):
            n = int(mask[i].sum())
            alone, (h, _) = enc.lstm(x[i, mask[i]].unsqueeze(0))
            torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(final[i], h[-enc.dirs :].transpose(0, 1).reshape(-1), atol=1e-5, rtol=1e-4)
            assert out_mask[i].sum() == n and not out[i, n:].any()
    assert out.shape == (4, 8, enc.dirs * hidden) and not out[2].any() and not final[2].any()
    # where a gradient is wanted, or for float64 and autocast, torch's LSTM runs as before
    calls.clear()
    enc(x, mask)
    enc.lstm.weight_hh_l0.requires_grad_(False)  # partly frozen: the other weights still train
    assert enc(x, mask)[2].requires_grad
    enc.lstm.weight_hh_l0.requires_grad_(True)
    with torch.no_grad():
        enc.double()(x.double(), mask)
        with autocast("bf16", "cpu"):  # the trainer's, which keeps LSTMs off oneDNN where it lacks bf16
            enc.float()(x, mask)
    assert calls == []


def test_lstm_kernel_is_a_well_formed_op_and_gives_the_same_numbers_from_several_threads():
    # the server predicts from several threads at once, each splitting its samples over the pool
    from concurrent.futures import ThreadPoolExecutor

    from sentangle.models import kernels

    torch.manual_seed(0)
    lstm = RealFrameLSTM(6, 5, bidirectional=True).lstm.requires_grad_(False)
    w_ih, w_hh = (
        torch.stack([getattr(lstm, f"{w}_l0{s}") for s in ("", "_reverse")]) for w in ("weight_ih", "weight_hh")
    )
    bias = torch.stack([lstm.bias_ih_l0 + lstm.bias_hh_l0, lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse])

    def inputs(seed):
        g = torch.Generator().manual_seed(seed)
        order = torch.stack([torch.randperm(30, generator=g) for _ in range(8)])
        return torch.randn(8, 30, 6, generator=g), w_ih, w_hh, bias, order, torch.randint(0, 31, (8,), generator=g)

    torch.library.opcheck(kernels.lstm_cpu, inputs(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        serial = [kernels.lstm_cpu(*inputs(s)) for s in range(8)]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(lambda s: kernels.lstm_cpu(*inputs(s)), range(8)))
    finally:
        torch.set_num_threads(threads)
    for one, other in zip(serial, parallel):
        torch.testing.assert_close(one, other, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["tfn", "lmf", "misa", "self_mm"])
def test_baselines_predict_the_same_with_the_inference_kernel(name, tiny):
    # eval under no_grad (the kernel) against eval with gradients on (torch's LSTM): the same outputs
    model = small(name, tiny).eval()
    batch = batch_of(tiny, 6, "test")
    with torch.no_grad():
        fast = model(batch).prediction
    torch.testing.assert_close(fast, model(batch).prediction.detach(), atol=1e-5, rtol=1e-4)


# ---- TFN ---------------------------------------------------------------------------------------
def test_tensor_fusion_is_the_outer_product_of_codes_with_a_one_appended():
    rng = np.random.default_rng(0)
    t, a, v = rng.normal(size=(2, 3)), rng.normal(size=(2, 2)), rng.normal(size=(2, 4))
    got = tensor_fusion([torch.tensor(t), torch.tensor(a), torch.tensor(v)]).numpy()
    one = lambda h: np.append(h, 1.0)
    for i in range(2):
        want = np.multiply.outer(np.multiply.outer(one(t[i]), one(a[i])), one(v[i])).ravel()
        np.testing.assert_allclose(got[i], want, rtol=1e-12)
    assert got.shape == (2, 4 * 3 * 5)
    # the entry that meets every appended 1 is 1; those meeting two 1s are the unimodal codes
    np.testing.assert_allclose(got[:, -1], 1.0)
    np.testing.assert_allclose(got.reshape(2, 4, 3, 5)[:, :3, -1, -1], t)


def test_tfn_fuses_its_codes_and_a_missing_modality_leaves_only_the_others_terms(tiny):
    model = small("tfn", tiny).eval()
    seen = {}

    def keep_input(module, inputs, output):  # returns None: the output stays as it was
        seen["z"] = inputs[0]

    model.post_fusion.register_forward_hook(keep_input)
    batch = batch_of(tiny)
    out = model(batch)
    t, a, v = (out.extras[f"code_{m}"].detach().double().numpy() for m in ("text", "audio", "vision"))
    want = np.stack(
        [
            np.multiply.outer(np.multiply.outer(np.append(t[i], 1), np.append(a[i], 1)), np.append(v[i], 1)).ravel()
            for i in range(len(batch))
        ]
    )
    np.testing.assert_allclose(seen["z"].detach().double().numpy(), want, rtol=1e-5, atol=1e-6)
    assert out.prediction.shape == (8,) and out.prediction.abs().max() < 3.0  # bounded to (-3, 3)
    out = model(batch.without("audio"))  # built with audio, none at test time
    assert torch.all(out.extras["code_audio"] == 0)
    z = seen["z"].reshape(len(batch), 7, 7, 7)  # (text_out+1, audio_hidden+1, vision_hidden+1)
    assert torch.all(z[:, :, :-1, :] == 0)  # every term with an audio factor vanished


def test_tfn_and_lmf_on_text_only_data_have_a_single_factor(tiny):
    text_only = {"text": tiny.input_dims["text"]}
    tfn = create_model("tfn", text_only, 1, **SMALL["tfn"])
    assert tfn.post_fusion[1].in_features == SMALL["tfn"]["text_out"] + 1
    lmf = create_model("lmf", text_only, 1, **SMALL["lmf"])
    assert list(lmf.factors) == ["text"]
    assert lmf(batch_of(tiny).without("audio", "vision")).prediction.shape == (8,)


# ---- LMF ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_dim", [1, 3])
def test_lmf_equals_its_full_rank_tensor_built_from_the_factors(tiny, output_dim):
    model = small("lmf", tiny, output_dim).eval()
    with torch.no_grad():
        model.bias.normal_()  # a non-zero bias so it is checked too
    out = model(batch_of(tiny))
    f = {m: p.detach().double().numpy() for m, p in model.factors.items()}  # (R, d_m + 1, out)
    w = model.rank_weights.detach().double().numpy()[0]  # (R,)
    # W[i, j, k, o] = sum_r w_r A_t[r, i, o] A_a[r, j, o] A_v[r, k, o]: the tensor TFN would learn
    full = np.einsum("r,rio,rjo,rko->ijko", w, f["text"], f["audio"], f["vision"])
    codes = {
        m: np.append(out.extras[f"code_{m}"].detach().double().numpy(), np.ones((8, 1)), axis=1)
        for m in ("text", "audio", "vision")
    }
    z = np.einsum("bi,bj,bk->bijk", codes["text"], codes["audio"], codes["vision"])
    want = np.einsum("bijk,ijko->bo", z, full) + model.bias.detach().double().numpy()
    got = out.prediction.detach().double().numpy().reshape(8, output_dim)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_lmf_rejects_a_bad_rank(tiny):
    with pytest.raises(ValueError, match="rank must be >= 1, got 0"):
        create_model("lmf", tiny.input_dims, rank=0)


# ---- MulT --------------------------------------------------------------------------------------
def test_mult_is_built_from_directional_crossmodal_blocks(tiny):
    model = small("mult", tiny)
    assert sorted(model.crossmodal) == sorted(
        f"{m}_from_{s}" for m in tiny.modalities for s in tiny.modalities if s != m
    )
    assert all(isinstance(b, MulTLayer) for stack in model.crossmodal.values() for b in stack.layers)
    assert model.memory["text"].norm.normalized_shape == (2 * 16,)  # two sources concatenated
    out = model(batch_of(tiny))
    assert out.prediction.shape == (8,) and set(out.extras) == {f"summary_{m}" for m in tiny.modalities}
    # unimodal data: no crossmodal block, the sequence goes straight to self-attention
    one = create_model("mult", {"text": 16}, 1, **SMALL["mult"])
    assert len(one.crossmodal) == 0
    assert one(batch_of(tiny).without("audio", "vision")).prediction.shape == (8,)


def test_mult_downsampling_bounds_the_sequence_and_checks_its_options(tiny):
    model = small("mult", tiny, max_len=4).eval()
    seen = []

    def key_length(module, inputs, output):
        seen.append(inputs[2].shape[1])  # (q, q_mask, kv, kv_mask): the audio frames attended to

    model.crossmodal["text_from_audio"].register_forward_hook(key_length)
    model(batch_of(tiny))
    assert seen and seen[0] <= 4  # audio keys: at most 4 windows of frames
    with pytest.raises(ValueError, match="divisible"):
        create_model("mult", tiny.input_dims, dim=10, heads=3)
    with pytest.raises(ValueError, match="kernel_sizes must be odd"):
        create_model("mult", tiny.input_dims, kernel_sizes={"audio": 4})


# ---- every baseline ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINES)
def test_padding_frames_change_nothing(name, tiny):
    """Extra padded frames full of garbage, masked out, leave every prediction as it was."""
    model = small(name, tiny).eval()
    batch = batch_of(tiny)
    padded = batch_of(tiny)
    for m in padded.features:
        x, mask = padded.features[m], padded.masks[m]
        padded.features[m] = torch.cat([x, 50 * torch.randn(x.shape[0], 3, x.shape[2])], dim=1)
        padded.masks[m] = torch.cat([mask, torch.zeros(mask.shape[0], 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(batch).prediction, model(padded).prediction, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
def test_classification_head_and_parameter_free_of_absent_modalities(name, tiny):
    model = small(name, tiny, 4)
    out = model(batch_of(tiny))
    assert out.prediction.shape == (8, 4)
    two = create_model(name, {m: tiny.input_dims[m] for m in ("text", "audio")}, 1, **SMALL[name])
    assert not any("vision" in n for n, _ in two.named_parameters())


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_learns_on_synthetic(name, tiny):
    """Beats predicting the training mean on held-out test data by a clear margin."""
    model = small(name, tiny)
    lr = {"misa": 1e-3, "mult": 1e-3}.get(name, 3e-3)  # the attention models want smaller steps
    fit(model, tiny, TrainConfig(epochs=12, batch_size=32, lr=lr, patience=4, progress=False), seed=1111)
    mae = evaluate(model, tiny, "test")["mae"]
    mean_mae = float(np.abs(tiny.splits["test"].labels - tiny.splits["train"].labels.mean()).mean())
    assert mae < 0.8 * mean_mae, (name, mae, mean_mae)


# ---- MISA --------------------------------------------------------------------------------------
def test_misa_losses_are_the_named_measures_of_its_codes(tiny, numpy_losses):
    model = small("misa", tiny).eval()
    model.aux_losses_in_eval = True  # eval for no dropout; the losses are what is checked
    out = model(batch_of(tiny, 16))
    aux, ex = out.aux_losses, out.extras
    assert set(aux) == {"similarity", "difference", "reconstruction"} and all(v >= 0 for v in aux.values())
    mods = ("text", "audio", "vision")
    pairs = [("text", "audio"), ("text", "vision"), ("audio", "vision")]
    sim = sum(L.cmd(ex[f"shared_{a}"], ex[f"shared_{b}"]) for a, b in pairs) / 3
    diff = sum(L.orthogonality(ex[f"private_{m}"], ex[f"shared_{m}"]) for m in mods) + sum(
        L.orthogonality(ex[f"private_{a}"], ex[f"private_{b}"]) for a, b in pairs
    )
    torch.testing.assert_close(aux["similarity"], sim)
    torch.testing.assert_close(aux["difference"], diff)
    # the same written out in numpy, so a fault shared by the model and models/losses.py shows
    np_ex = {k: v.detach().numpy() for k, v in ex.items()}
    want_sim = np.mean([numpy_losses.cmd(np_ex[f"shared_{a}"], np_ex[f"shared_{b}"], 5) for a, b in pairs])
    want_diff = sum(numpy_losses.orthogonality(np_ex[f"private_{m}"], np_ex[f"shared_{m}"]) for m in mods) + sum(
        numpy_losses.orthogonality(np_ex[f"private_{a}"], np_ex[f"private_{b}"]) for a, b in pairs
    )
    assert aux["similarity"].item() == pytest.approx(want_sim, rel=1e-4)
    assert aux["difference"].item() == pytest.approx(want_diff, rel=1e-4)


def test_misa_similarity_vanishes_when_the_shared_codes_agree(tiny):
    model = small("misa", tiny).eval()
    model.aux_losses_in_eval = True
    batch = batch_of(tiny, 16)
    assert model(batch).aux_losses["similarity"] > 1e-3
    with torch.no_grad():
        model.shared[0].weight.zero_()  # shared code = sigmoid(bias) for every modality and sample
    assert model(batch).aux_losses["similarity"] < 1e-6


@pytest.mark.parametrize("loss,part", [("difference", "private"), ("reconstruction", "recon")])
def test_misa_loss_falls_when_optimised_alone(tiny, loss, part):
    """Only the modules the loss should steer are trained, on that loss alone: it must fall."""
    model = small("misa", tiny).eval()
    model.aux_losses_in_eval = True
    batch = batch_of(tiny, 32)
    opt = torch.optim.Adam(getattr(model, part).parameters(), lr=1e-2)
    values = []
    for _ in range(40):
        value = model(batch).aux_losses[loss]
        values.append(value.item())
        opt.zero_grad()
        value.backward()
        opt.step()
    assert values[-1] < 0.5 * values[0], values[::10]


def test_misa_switches_remove_losses_and_parameters(tiny):
    model = small("misa", tiny, similarity=False, difference=False, reconstruction=False)
    assert model(batch_of(tiny)).aux_losses == {}
    assert model.recon is None and not any(n.startswith("recon") for n, _ in model.named_parameters())
    one = create_model("misa", {"text": 16}, 1, **SMALL["misa"])
    assert "similarity" not in one(batch_of(tiny).without("audio", "vision")).aux_losses  # no pair


# ---- widths: MMSA's MOSI architectures --------------------------------------------------------
# MOSI's unaligned feature sizes. MMSA's counts below come from instantiating the model classes of
# thuiar/MMSA at commit a94e65d with their config_regression.json MOSI settings (commonParams +
# datasetParams.mosi, feature_dims [768, 5, 20], train_mode regression, need_data_aligned false,
# use_bert false where the model allows it) and summing p.numel() over model.parameters(), as
# docs/baselines.md tells. MISA and Self-MM always build a BERT text encoder: it is counted out (ours
# is separate: model.text_encoder, None here).
MOSI_DIMS = {"text": 768, "audio": 5, "vision": 20}


def n_params(name, **kw):
    model = create_model(name, MOSI_DIMS, 1, **kw)
    assert model.text_encoder is None
    return sum(p.numel() for p in model.parameters())


def test_tfn_default_is_mmsa_mosi_architecture():
    # MMSA a94e65d's TFN: 9,497,045 parameters, two of which are the constants 6 and -3 of its
    # bounded output, stored as frozen parameters (requires_grad false); here they are numbers in
    # forward(), so the trained weights are the same 9,497,043.
    assert n_params("tfn") == 9_497_045 - 2
    assert n_params("tfn", bounded_output=False) == n_params("tfn")  # the bound has no weights
    # the fused vector (32+1)(32+1)(128+1) feeds the first post-fusion layer
    assert create_model("tfn", MOSI_DIMS).post_fusion[1].in_features == 33 * 33 * 129


def test_lmf_default_is_mmsa_mosi_architecture():
    # MMSA a94e65d's LMF with its MOSI config, counted by instantiating it: 505,071.
    assert n_params("lmf") == 505_071
    model = create_model("lmf", MOSI_DIMS)
    assert {m: f.shape[:2] for m, f in model.factors.items()} == {"text": (3, 65), "audio": (3, 17), "vision": (3, 129)}


def test_misa_default_is_mmsa_mosi_architecture():
    # MMSA a94e65d's MISA with its MOSI config (use_cmd_sim true), counted by instantiating it with
    # the BERT encoder left out: 1,138,033. Two of its modules never train: a LayerNorm over a text
    # LSTM's 2 x 768 outputs (3,072), built although with BERT no text LSTM exists, and the
    # shared/private discriminator Linear(128, 4) (516), whose output no loss reads. Neither is here.
    assert n_params("misa") == 1_138_033 - 2 * 2 * 768 - (128 * 4 + 4)


def test_self_mm_default_is_mmsa_mosi_architecture():
    # MMSA a94e65d's SELF_MM with its MOSI config, counted by instantiating it with the BERT encoder
    # left out (its [CLS] output, 768 wide, is the text code, as the 768-wide features are here): 159,332.
    assert n_params("self_mm") == 159_332


def test_lf_dnn_keeps_its_order_blind_architecture():
    """LF-DNN is not MMSA's LF_DNN (597,171 parameters with its MOSI config: TFN's subnetworks,
    text through an LSTM, concatenated; docs/baselines.md says why): every modality is time-averaged,
    LayerNorm, Linear + ReLU to 128 twice; the 3 x 128 codes go through Linear + ReLU to 128 and out."""
    hidden = 128
    subnets = sum(2 * d + (d + 1) * hidden + (hidden + 1) * hidden for d in MOSI_DIMS.values())
    head = (3 * hidden + 1) * hidden + hidden + 1
    assert n_params("lf_dnn") == subnets + head


# ---- compare() ---------------------------------------------------------------------------------
def test_compare_writes_one_table_and_reuses_finished_runs(tmp_path):
    from sentangle.recipes.compare import compare

    over = [
        "dataset.scale=0.08",
        "dataset.lengths={text: 6, audio: 8, vision: 8}",
        "dataset.dims={text: 8, audio: 5, vision: 4}",
        "train.epochs=2",
        "train.progress=false",
    ]
    models = ["lf_dnn", {"name": "lmf", **SMALL["lmf"]}]
    res = compare(models, "synthetic", seeds=2, out=str(tmp_path), name="tiny", overrides=over)
    md = (tmp_path / "tiny" / "comparison.md").read_text()
    rows = (tmp_path / "tiny" / "comparison.csv").read_text().splitlines()
    assert "## test" in md and "## valid" in md and "`lmf`" in md and "Bayes oracle" in md
    assert md.count("**") >= 2 * 8  # a bold best in each of the 8 metric columns of each table
    assert rows[0].startswith("model,split,seeds,mae_mean,mae_std") and len(rows) == 1 + 2 * 2
    test_mae = {m: r["splits"]["test"]["mae"]["mean"] for m, r in res["results"].items()}
    best = min(test_mae, key=test_mae.get)
    assert f"**{test_mae[best]:.3f} ±" in md.split("## valid")[0]
    metrics = tmp_path / "lmf-tiny" / "seed_1111" / "metrics.json"
    stamp = json.loads(metrics.read_text())["train_seconds"], metrics.stat().st_mtime_ns
    compare(models, "synthetic", seeds=2, out=str(tmp_path), name="tiny", overrides=over)
    assert (json.loads(metrics.read_text())["train_seconds"], metrics.stat().st_mtime_ns) == stamp
    with pytest.raises(ValueError, match="given twice"):
        compare(["lf_dnn", "lf_dnn"], "synthetic", out=str(tmp_path))
    # an option the second model lacks fails before the first one trains
    from sentangle.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"compare: model 'lmf' has no option\(s\) \['fcca'\]"):
        compare(["tsda", "lmf"], "synthetic", out=str(tmp_path / "late"), overrides=[*over, "model.fcca=none"])
    assert not (tmp_path / "late").exists()


def test_mult_downsampling_ignores_padding_frames(tiny, garbage_padding):
    """Garbage in padded frames, and padded frames appended within the last window, leave MulT's
    windowed predictions as they were: the windows average real frames only."""
    max_len = 5  # below every modality's length (text 10, audio and vision 16): all are windowed
    model = small("mult", tiny, max_len=max_len).eval()
    batch = batch_of(tiny)
    padded = garbage_padding(batch_of(tiny), max_len)
    assert padded.features["audio"].shape[1] > batch.features["audio"].shape[1]
    torch.testing.assert_close(model(batch).prediction, model(padded).prediction, rtol=1e-4, atol=1e-5)
    # the check can fail: garbage in a real frame does change the prediction
    spoiled = batch_of(tiny)
    spoiled.features["audio"][spoiled.masks["audio"]] += 50.0
    assert not torch.allclose(model(batch).prediction, model(spoiled).prediction, rtol=1e-4, atol=1e-5)
