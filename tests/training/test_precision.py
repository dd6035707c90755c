"""Where and how the one trainer runs: train.device, train.precision, train.compile, and no host
sync per training step."""

import contextlib
import statistics
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sentangle import cli
from sentangle.config import TrainConfig, build_config
from sentangle.core.errors import ConfigError
from sentangle.data.synthetic import make_synthetic
from sentangle.models import create_model
from sentangle.models.base import ModelOutput, MSAModel, load_model
from sentangle.models.layers import masked_mean
from sentangle.training import distributed, trainer
from sentangle.training.distributed import resolve_device
from sentangle.training.trainer import evaluate, fit, set_seed

SEEDS = (1111, 1112, 1113, 1114, 1115)


def cfg(**kw):
    return TrainConfig(**{"epochs": 4, "batch_size": 16, "lr": 3e-3, "patience": 10, "progress": False, **kw})


@pytest.fixture(scope="module")
def data():
    """A small synthetic benchmark: its label depends on all three modalities."""
    return make_synthetic(
        seed=0, scale=0.15, lengths={"text": 10, "audio": 16, "vision": 16}, dims={"text": 16, "audio": 5, "vision": 8}
    )


class Recorder(MSAModel):
    """A linear model that notes, per forward, whether autocast was on and the dtype its layer computed in."""

    def __init__(self, input_dims, output_dim=1, text_encoder=None):
        super().__init__(input_dims, output_dim, text_encoder)
        self.lin = nn.Linear(input_dims["text"], output_dim)
        self.seen: list[tuple[bool, bool, torch.dtype]] = []

    def forward(self, batch):
        feats, masks = self.inputs(batch)
        y = self.lin(masked_mean(feats["text"], masks["text"]))
        self.seen.append((self.training, torch.is_autocast_enabled("cpu"), y.dtype))
        return ModelOutput(self.head_output(y))


# ---- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override,message",
    [
        ("train.device=gpu", r"train.device must be auto, cpu, cuda or cuda:N.*'gpu'"),
        ("train.device=cuda:x", r"train.device must be .*'cuda:x'"),
        ("train.precision=fp8", r"train.precision must be fp32, bf16, fp16.*'fp8'"),
        ("train.precision=16", r"train.precision must be a string"),
        ("train.compile=maybe", r"train.compile must be true or false.*'maybe'"),
    ],
)
def test_bad_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config("lf_dnn", "synthetic", None, [override])


def test_defaults_are_the_plain_cpu_float32_eager_trainer():
    t = build_config("lf_dnn", "synthetic").train
    assert (t.device, t.precision, t.compile) == ("cpu", "fp32", False)
    assert isinstance(trainer.autocast("fp32", "cpu"), contextlib.nullcontext)  # not even a disabled autocast
    assert trainer.grad_scaler("fp32", torch.device("cpu")) is None
    assert trainer.forward_for(nn.Linear(1, 1), compile=False).__class__ is nn.Linear


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_cuda_is_a_config_error_and_exit_2(tmp_path, capsys):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(
            ConfigError, match=rf"train.device='{name}', but CUDA is not available.*expected cpu or auto"
        ):
            resolve_device(name)
    ds = make_synthetic(seed=0, scale=0.02, lengths=6, dims={"text": 8, "audio": 3, "vision": 3})
    with pytest.raises(ConfigError, match="train.device"):
        fit(create_model("lf_dnn", ds.input_dims), ds, cfg(device="cuda"), seed=1)
    argv = ["train", "-m", "lf_dnn", "-d", "synthetic", "--seeds", "1111", "--no-progress", "--out", str(tmp_path)]
    assert cli.main([*argv, "dataset.scale=0.02", "train.epochs=1", "train.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "train.device='cuda'" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_device_auto_trains_on_the_cpu_here(data):
    assert resolve_device("auto") == torch.device("cpu")
    set_seed(1)
    model = create_model("lf_dnn", data.input_dims, hidden=16)
    res = fit(model, data, cfg(epochs=2, device="auto"), seed=1)
    assert np.isfinite(res.best_score) and all(p.device.type == "cpu" for p in model.parameters())


# ---- precision ---------------------------------------------------------------------------------
def test_fp32_runs_without_autocast_and_reduced_precision_with_it_in_training_and_evaluation(data):
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model = Recorder(data.input_dims)
        fit(model, data, cfg(epochs=1, precision=precision), seed=1)
        modes = {training for training, _, _ in model.seen}
        assert modes == {True, False}  # both training steps and validation were seen ...
        assert all(on == (precision != "fp32") and dt == dtype for _, on, dt in model.seen), precision  # ... alike
        assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32


def test_fp32_is_the_computation_written_out_by_hand(data):
    """fit at fp32 takes exactly the steps of a plain loop (no autocast, no scaling anywhere)."""
    c = cfg(epochs=2, batch_size=32, grad_clip=0.5, weight_decay=1e-3)
    set_seed(7)
    model = create_model("lf_dnn", data.input_dims, hidden=16)
    hand = create_model("lf_dnn", data.input_dims, hidden=16)
    hand.load_state_dict(model.state_dict())
    res = fit(model, data, c, seed=7)

    gen = set_seed(7)
    opt = torch.optim.AdamW(hand.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    best, best_state = float("inf"), None
    for _ in range(c.epochs):
        hand.train()
        for batch in data.batches("train", c.batch_size, shuffle=True, generator=gen):
            loss = nn.functional.l1_loss(hand(batch).prediction, batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(hand.parameters(), c.grad_clip)
            opt.step()
        score = evaluate(hand, data, "valid")["mae"]
        if score < best:
            best, best_state = score, {k: v.clone() for k, v in hand.state_dict().items()}
    assert res.best_score == best
    for k, v in model.state_dict().items():
        assert torch.equal(v, best_state[k]), k


def _valid_mae(data, name, seeds=SEEDS, **train):
    scores = []
    for seed in seeds:
        set_seed(seed)
        model = (
            create_model(name, data.input_dims, hidden=32) if name == "lf_dnn" else create_model(name, data.input_dims)
        )
        scores.append(fit(model, data, cfg(epochs=6, **train), seed=seed).best_score)
    return scores


def _within_seed_noise(got, ref, data):
    """`got` (valid MAEs, one per seed) is as good as `ref` within the seeds' own spread, and learned."""
    constant = float(np.abs(data.splits["valid"].labels - data.splits["train"].labels.mean()).mean())
    noise = statistics.stdev(ref) + statistics.stdev(got)
    assert abs(statistics.mean(got) - statistics.mean(ref)) <= noise, (got, ref)
    assert max(got) < 0.9 * constant, (got, constant)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_within_seed_noise_of_fp32(data, precision):
    _within_seed_noise(_valid_mae(data, "lf_dnn", precision=precision), _valid_mae(data, "lf_dnn"), data)


def test_fp16_scales_the_loss_on_every_step(data, monkeypatch):
    steps = []
    real = torch.amp.GradScaler.step

    def counting(self, opt, *a, **kw):
        steps.append(self.get_scale())
        return real(self, opt, *a, **kw)

    monkeypatch.setattr(torch.amp.GradScaler, "step", counting)
    set_seed(1)
    model = create_model("lf_dnn", data.input_dims, hidden=16)
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, data, cfg(epochs=2, precision="fp16"), seed=1)
    batches = 2 * -(-len(data.splits["train"]) // 16)
    assert len(steps) == batches and all(s > 1 for s in steps)  # a scaled loss, every step
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    steps.clear()
    fit(create_model("lf_dnn", data.input_dims, hidden=16), data, cfg(epochs=1, precision="bf16"), seed=1)
    assert steps == []  # bf16 has float32's range: no scaler


@pytest.mark.parametrize("name", ["misa", "self_mm", "mult", "tsda"])
def test_models_with_recurrent_and_attention_layers_train_in_bf16(name):
    """LSTMs (misa, self_mm), convolutions (mult), attention and stores kept in float32 (self_mm's
    label store) all run under CPU autocast."""
    ds = make_synthetic(seed=0, scale=0.02, lengths=6, dims={"text": 8, "audio": 3, "vision": 3})
    set_seed(1)
    res = fit(create_model(name, ds.input_dims), ds, cfg(epochs=1, batch_size=8, precision="bf16"), seed=1)
    assert np.isfinite(res.best_score) and np.isfinite(res.history[0]["train_task"])


# ---- compilation -----------------------------------------------------------------------------------
def test_compile_that_fails_warns_once_and_trains_eagerly_as_without_it(data, monkeypatch):
    def eager():
        set_seed(3)
        model = create_model("lf_dnn", data.input_dims, hidden=16)
        return model, fit(model, data, cfg(epochs=2), seed=3)

    plain, want = eager()
    for failure in ("at compile", "at the first call"):

        def broken(module, *a, **kw):
            if failure == "at compile":
                raise RuntimeError("no backend for this platform")

            def call(*args, **kwargs):
                raise RuntimeError("inductor failed: no C++ compiler")

            return call

        monkeypatch.setattr(torch, "compile", broken)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            set_seed(3)
            model = create_model("lf_dnn", data.input_dims, hidden=16)
            got = fit(model, data, cfg(epochs=2, compile=True), seed=3)
        messages = [str(w.message) for w in caught if "train.compile" in str(w.message)]
        assert len(messages) == 1, messages  # training and evaluation share the one compiled forward
        assert "RuntimeError" in messages[0] and ("no backend" in messages[0] or "no C++ compiler" in messages[0])
        assert "eagerly" in messages[0]
        assert got.history == want.history and got.metrics == want.metrics, failure
        assert model.state_dict().keys() == plain.state_dict().keys()


def test_compiled_training_matches_eager_within_seed_noise_and_saves_plain_weights(data, tmp_path):
    torch._dynamo.reset()
    got = _valid_mae(data, "lf_dnn", seeds=SEEDS[:3], compile=True)
    _within_seed_noise(got, _valid_mae(data, "lf_dnn", seeds=SEEDS[:3]), data)
    set_seed(1)
    model = create_model("lf_dnn", data.input_dims, hidden=32)
    fit(model, data, cfg(epochs=1, compile=True), seed=1)
    assert not any("_orig_mod" in k for k in model.state_dict())
    loaded = load_model(model.save_pretrained(tmp_path / "model"))  # strict loading into a plain model
    batch = next(data.batches("test", 16))
    torch.testing.assert_close(loaded(batch).prediction, model.eval()(batch).prediction)


# ---- the hot loop ------------------------------------------------------------------------------------
def test_the_training_loop_reads_device_values_once_per_epoch_not_per_step(data, monkeypatch):
    """Reading a tensor's value (item, float, tolist, bool) makes the host wait for the device; the
    trainer may do it a few times per epoch, never per batch."""
    reads = []
    here = {trainer.__file__, distributed.__file__}

    def spy(name):
        real = getattr(torch.Tensor, name)

        def read(self, *a, **kw):
            if sys._getframe(1).f_code.co_filename in here:
                reads.append(name)
            return real(self, *a, **kw)

        return read

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    epochs, batch_size = 3, 8
    set_seed(1)
    fit(create_model("lf_dnn", data.input_dims, hidden=16), data, cfg(epochs=epochs, batch_size=batch_size), seed=1)
    steps = epochs * -(-len(data.splits["train"]) // batch_size)
    assert steps >= 30 and 0 < len(reads) <= 3 * epochs, reads
