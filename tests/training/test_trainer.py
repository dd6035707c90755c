"""The one training loop: weighted auxiliary losses, selection on validation, determinism, errors."""

import numpy as np
import pytest
import torch
from torch import nn

from sentangle.config import TrainConfig
from sentangle.core.errors import TrainingError
from sentangle.data import MSADataset, Split, full_masks
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import masked_mean
from sentangle.training.trainer import evaluate, fit, set_seed, train_step


class AuxModel(MSAModel):
    """A linear model plus a parameter that only an auxiliary loss touches."""

    default_aux_weights = {"pull": 1.0}

    def __init__(self, input_dims, output_dim=1, text_encoder=None, produce_nan=False):
        super().__init__(input_dims, output_dim, text_encoder)
        self.lin = nn.Linear(input_dims["text"], output_dim)
        self.extra = nn.Parameter(torch.ones(3))
        self.produce_nan = produce_nan

    def forward(self, batch):
        feats, masks = self.inputs(batch)
        y = self.head_output(self.lin(masked_mean(feats["text"], masks["text"])))
        if self.produce_nan:
            y = y * float("nan")
        return ModelOutput(y, aux_losses={"pull": (self.extra**2).sum()})


def linear_dataset(n=120, d=4, seed=0, task="regression"):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    splits = {}
    for _i, s in enumerate(("train", "valid", "test")):
        x = rng.normal(size=(n, 3, d)).astype(np.float32)
        score = x.mean(1) @ w
        labels = np.clip(score, -3, 3).astype(np.float32) if task == "regression" else (score > 0).astype(np.int64)
        splits[s] = Split({"text": x}, {"text": full_masks(x)}, labels, [f"{s}{j}" for j in range(n)])
    names = None if task == "regression" else ["neg", "pos"]
    return MSADataset("lin", splits, task=task, class_names=names, label_range=None if names else (-3, 3)).validate()


def cfg(**kw):
    base = dict(epochs=6, batch_size=16, lr=0.05, patience=10, progress=False)
    return TrainConfig(**{**base, **kw})


def test_aux_weight_zero_removes_the_loss_and_nonzero_applies_it():
    ds = linear_dataset()
    off = AuxModel(ds.input_dims)
    fit(off, ds, cfg(aux_weights={"pull": 0.0}), seed=1)
    torch.testing.assert_close(off.extra.detach(), torch.ones(3))  # never received a gradient
    on = AuxModel(ds.input_dims)
    fit(on, ds, cfg(), seed=1)  # default weight 1.0 from the model
    assert on.extra.detach().abs().max() < 0.5


def test_aux_scale_multiplies_every_auxiliary_weight():
    ds = linear_dataset()
    runs = {}
    for key, kw in {
        "1x1": {},
        "0.25x4": {"aux_weights": {"pull": 0.25}, "aux_scale": 4.0},
        "0": {"aux_scale": 0.0},
    }.items():
        torch.manual_seed(0)  # the same initial weights for each
        model = AuxModel(ds.input_dims)
        fit(model, ds, cfg(**kw), seed=1)
        runs[key] = model.extra.detach().clone()
    torch.testing.assert_close(runs["0.25x4"], runs["1x1"])  # the same effective weight, 1.0
    torch.testing.assert_close(runs["0"], torch.ones(3))  # scaled to 0: no gradient at all
    assert runs["1x1"].abs().max() < 0.5


def test_unknown_aux_weight_is_an_error():
    ds = linear_dataset()
    with pytest.raises(TrainingError, match=r"\['pul'\].*\['pull'\]"):
        fit(AuxModel(ds.input_dims), ds, cfg(aux_weights={"pul": 1.0}), seed=1)


def test_selection_on_validation_and_best_weights_restored():
    ds = linear_dataset()
    model = AuxModel(ds.input_dims)
    res = fit(model, ds, cfg(epochs=8, lr=0.3), seed=3)
    valid = [h["valid_mae"] for h in res.history]
    assert res.best_epoch == int(np.argmin(valid)) + 1
    assert res.best_score == pytest.approx(min(valid))
    assert evaluate(model, ds, "valid")["mae"] == pytest.approx(min(valid), rel=1e-6)
    assert all(not k.startswith("test") for h in res.history for k in h)  # test never looked at


def test_early_stopping_respects_patience():
    ds = linear_dataset()
    res = fit(AuxModel(ds.input_dims), ds, cfg(epochs=50, lr=1.0, patience=2), seed=1)
    assert len(res.history) <= res.best_epoch + 2


def test_same_seed_same_result_different_seed_different():
    ds = linear_dataset()

    def run(seed):
        set_seed(seed)  # the run seeds model initialisation too
        return fit(AuxModel(ds.input_dims), ds, cfg(), seed=seed).metrics

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c


def test_nan_loss_stops_with_a_clear_error():
    ds = linear_dataset()
    with pytest.raises(TrainingError, match="loss is nan.*lower train.lr"):
        fit(AuxModel(ds.input_dims, produce_nan=True), ds, cfg(), seed=1)


def test_classification_uses_cross_entropy_and_accuracy():
    ds = linear_dataset(task="classification")
    model = AuxModel(ds.input_dims, output_dim=2)
    res = fit(model, ds, cfg(epochs=20, lr=0.05, aux_weights={"pull": 0.0}), seed=1)
    assert res.select_metric == "accuracy"
    assert res.metrics["test"]["accuracy"] > 0.85  # labels are a linear function of the inputs
    with pytest.raises(TrainingError, match="does not fit"):
        fit(AuxModel(ds.input_dims, output_dim=2), ds, cfg(loss="l1"), seed=1)


def test_unknown_select_metric():
    ds = linear_dataset()
    with pytest.raises(TrainingError, match="select_metric 'acc'"):
        fit(AuxModel(ds.input_dims), ds, cfg(select_metric="acc"), seed=1)


def test_lr_decay_trials_reload_best_and_shrink_the_step():
    ds = linear_dataset()
    torch.manual_seed(0)
    model = AuxModel(ds.input_dims)
    seen_lrs = []
    orig = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen_lrs.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        res = fit(model, ds, cfg(epochs=60, lr=1.0, patience=1, lr_decay_trials=2, lr_decay=0.1), seed=1)
    finally:
        torch.optim.AdamW.step = orig
    assert sorted(set(seen_lrs), reverse=True)[:3] == pytest.approx([1.0, 0.1, 0.01])
    assert len(res.history) < 60


def test_select_from_epoch_skips_early_epochs():
    ds = linear_dataset()
    res = fit(AuxModel(ds.input_dims), ds, cfg(epochs=6, lr=0.05, select_from_epoch=4, patience=1), seed=1)
    assert res.best_epoch >= 4
    assert len(res.history) >= 5  # patience only counts from epoch 4 on


class Drifting(AuxModel):
    """Gets worse every epoch: its output is shifted by a constant that grows after each epoch, so
    the best validation epoch is the first one and any later choice is due to select_from_epoch."""

    def __init__(self, input_dims):
        super().__init__(input_dims)
        self.register_buffer("shift", torch.zeros(()))

    def forward(self, batch):
        out = super().forward(batch)
        return ModelOutput(out.prediction + self.shift, aux_losses=out.aux_losses)

    def on_epoch_end(self, epoch):
        self.shift.fill_(2.0 * (epoch + 1))


@pytest.mark.parametrize("start", [1, 4])
def test_select_from_epoch_picks_the_best_eligible_epoch_of_the_history(start):
    ds = linear_dataset()
    torch.manual_seed(0)
    # lr=0: the weights stay put and the validation score is a function of the shift alone
    res = fit(Drifting(ds.input_dims), ds, cfg(epochs=8, lr=0.0, select_from_epoch=start, patience=2), seed=1)
    valid = {h["epoch"]: h["valid_mae"] for h in res.history}
    assert min(valid, key=valid.get) == 1  # the overall best is the first epoch...
    eligible = {e: v for e, v in valid.items() if e >= start}
    assert res.best_epoch == min(eligible, key=eligible.get) == start  # ...but only eligible ones count
    assert res.best_score == valid[start]
    # patience counts only eligible epochs: two stale ones after `start`, then the run stops
    assert len(res.history) == start + 2


def test_aux_weight_for_a_loss_absent_on_this_data_warns():
    ds = linear_dataset()

    class Sometimes(AuxModel):
        default_aux_weights = {"pull": 1.0, "cmd": 1.0}  # cmd exists only with several modalities

    with pytest.warns(UserWarning, match="cmd"):
        fit(Sometimes(ds.input_dims), ds, cfg(epochs=1, aux_weights={"cmd": 0.5}), seed=1)


def test_warmup_linear_schedule_by_hand():
    from sentangle.training.trainer import warmup_linear

    f = warmup_linear(total=10, warmup=0.2)  # 2 warm-up steps, then 8 steps down to 0
    assert [f(s) for s in range(11)] == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    )


def test_linear_scheduler_trains_and_bad_warmup_is_refused(small_synthetic):
    from sentangle.config import build_config
    from sentangle.core.errors import ConfigError
    from sentangle.models import create_model

    with pytest.raises(ConfigError, match="train.warmup"):
        build_config("lf_dnn", "synthetic", None, ["train.scheduler=linear", "train.warmup=1.5"])
    cfg = build_config(
        "lf_dnn", "synthetic", None, ["train.scheduler=linear", "train.epochs=2", "train.progress=false"]
    ).train
    model = create_model("lf_dnn", small_synthetic.input_dims, small_synthetic.output_dim, hidden=16)
    res = fit(model, small_synthetic, cfg, seed=0)
    assert len(res.history) == 2 and np.isfinite(res.best_score)


def test_group_by_length_reaches_the_batches(monkeypatch):
    ds = linear_dataset()
    seen = []
    real = ds.batches

    def recording(*args, **kw):
        seen.append(kw.get("group_by_length", False))
        return real(*args, **kw)

    monkeypatch.setattr(ds, "batches", recording)
    res = fit(AuxModel(ds.input_dims), ds, cfg(epochs=2, group_by_length=True), seed=0)
    assert np.isfinite(res.best_score) and seen.count(True) == 2  # the two training epochs


def test_train_step_by_hand():
    """One step on the auxiliary parameter alone: the loss pull = sum(extra^2) = 3 with extra = 1 has
    gradient 2 * w per entry, so plain SGD with lr 0.1 moves each entry to 1 - 0.1 * 2w, or to
    1 - 0.1 * 0.5 when gradient values are clipped at 0.5 (no norm clipping)."""
    ds = linear_dataset(n=8)
    batch = next(iter(ds.batches("train", 8)))
    for weight, clip, want in ((1.0, 0.0, 0.8), (2.0, 0.0, 0.6), (1.0, 0.5, 0.95), (0.0, 0.0, 1.0)):
        model = AuxModel(ds.input_dims)
        opt = torch.optim.SGD([model.extra], lr=0.1)
        loss, parts = train_step(model, batch, opt, cfg(grad_clip=0.0, grad_clip_value=clip), {"pull": weight}, ds.task)
        torch.testing.assert_close(model.extra.detach(), torch.full((3,), want))
        assert float(parts["pull"]) == 3.0
        assert loss.item() == pytest.approx(float(parts["task"]) + 3.0 * weight)
    # a refused step changes nothing
    model = AuxModel(ds.input_dims)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def refuse(out, loss, parts):
        raise TrainingError("no")

    with pytest.raises(TrainingError):
        train_step(model, batch, opt, cfg(), {}, ds.task, before_backward=refuse)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
