"""Every model: output contract, any subset of modalities, switches, and that it learns."""

import numpy as np
import pytest
import torch

from sentangle import create_model, list_models
from sentangle.config import TrainConfig
from sentangle.core.errors import ConfigError, UnknownNameError
from sentangle.models.base import ModelOutput
from sentangle.training.trainer import evaluate, fit


def first_batch(ds, n=8):
    return next(ds.batches("train", n))


@pytest.mark.parametrize("name", list_models())
def test_output_contract_and_modality_subsets(name, small_synthetic):
    torch.manual_seed(0)
    ds = small_synthetic
    for mods in (("text", "audio", "vision"), ("text",), ("text", "vision")):
        dims = {m: ds.input_dims[m] for m in mods}
        model = create_model(name, dims, 1).eval()
        out = model(first_batch(ds).without(*[m for m in ds.modalities if m not in mods]))
        assert isinstance(out, ModelOutput)
        assert out.prediction.shape == (8,)
        assert all(v.ndim == 0 for v in out.aux_losses.values())
    model = create_model(name, ds.input_dims, 5)
    batch = first_batch(ds)
    batch.labels = torch.arange(8) % 5  # a classification batch: models may use labels for aux heads
    assert model(batch).prediction.shape == (8, 5)


@pytest.mark.parametrize("name", list_models())
def test_modality_missing_at_test_time_is_not_an_error(name, small_synthetic):
    torch.manual_seed(0)
    model = create_model(name, small_synthetic.input_dims, 1).eval()
    out = model(first_batch(small_synthetic).without("audio"))
    assert torch.isfinite(out.prediction).all()


@pytest.mark.parametrize("name", list_models())
def test_evaluation_skips_the_auxiliary_losses_and_predicts_what_it_did_with_them(name, small_synthetic):
    """Only training reads the auxiliary losses, so eval mode does not compute them (they cost
    inference time); the prediction and extras are exactly those computed alongside the losses."""
    torch.manual_seed(0)
    model = create_model(name, small_synthetic.input_dims, 1)
    batch = first_batch(small_synthetic, 16)
    trained = model(batch)
    assert bool(trained.aux_losses) == bool(model.default_aux_weights)  # training computes them
    model.eval()
    out = model(batch)
    assert out.aux_losses == {}
    model.aux_losses_in_eval = True
    with_losses = model(batch)
    assert bool(with_losses.aux_losses) == bool(model.default_aux_weights)
    assert torch.equal(out.prediction, with_losses.prediction)
    assert out.extras.keys() == with_losses.extras.keys()
    for k, v in out.extras.items():
        assert torch.equal(v, with_losses.extras[k]), k


def test_unknown_model_and_option_are_named():
    with pytest.raises(UnknownNameError, match="lf_dnn"):
        create_model("lf_dn", {"text": 4})
    with pytest.raises(ConfigError, match="hiden.*options are: hidden"):
        create_model("lf_dnn", {"text": 4}, hiden=3)


def test_lf_dnn_modalities_switch_removes_the_modality(small_synthetic):
    torch.manual_seed(0)
    model = create_model("lf_dnn", small_synthetic.input_dims, 1, modalities=["text", "vision"]).eval()
    assert "audio" not in model.subnets and not any("audio" in n for n, _ in model.named_parameters())
    batch = first_batch(small_synthetic)
    batch2 = first_batch(small_synthetic)
    batch2.features["audio"] = torch.randn_like(batch2.features["audio"]) * 10
    torch.testing.assert_close(model(batch).prediction, model(batch2).prediction)


def test_lf_dnn_is_blind_to_frame_order(small_synthetic):
    torch.manual_seed(0)
    model = create_model("lf_dnn", small_synthetic.input_dims, 1).eval()
    b = first_batch(small_synthetic)
    flipped = first_batch(small_synthetic)
    for m in flipped.features:
        flipped.features[m] = flipped.features[m].flip(1)
        flipped.masks[m] = flipped.masks[m].flip(1)
    torch.testing.assert_close(model(b).prediction, model(flipped).prediction, rtol=1e-5, atol=1e-5)


def _mean_mae(ds):
    y_train = ds.splits["train"].labels
    return float(np.abs(ds.splits["test"].labels - y_train.mean()).mean())


@pytest.mark.parametrize("name,lr", [("lf_dnn", 1e-3), ("text_only", 5e-4)])
def test_model_learns_on_synthetic(name, lr, small_synthetic):
    """Beats predicting the training mean on held-out test data by a clear margin."""
    ds = small_synthetic
    model = create_model(name, ds.input_dims, 1)
    cfg = TrainConfig(epochs=15, batch_size=32, lr=lr, patience=5, progress=False)
    fit(model, ds, cfg, seed=1111)
    mae = evaluate(model, ds, "test")["mae"]
    assert mae < 0.8 * _mean_mae(ds), (mae, _mean_mae(ds))


@pytest.mark.parametrize("name", list_models())
def test_a_sample_depends_on_its_batch_padding_only_where_the_model_says_so(name, small_synthetic):
    """`windows_padding` is what runs.inference.predict_clips reads to batch clips by length: a model
    without it must give a sample the same output however far its batch is padded."""
    torch.manual_seed(0)
    model = create_model(name, small_synthetic.input_dims, 1).eval()
    batch = first_batch(small_synthetic, 2)  # two samples: full attention over 2,000 frames is the cost
    padded = first_batch(small_synthetic, 2)
    for m in ("audio", "vision"):  # as if a clip of 2,000 frames shared the batch
        x, mask = padded.features[m], padded.masks[m]
        padded.features[m] = torch.cat([x, torch.zeros(x.shape[0], 2000 - x.shape[1], x.shape[2])], 1)
        padded.masks[m] = torch.cat([mask, torch.zeros(mask.shape[0], 2000 - mask.shape[1], dtype=torch.bool)], 1)
    with torch.no_grad():
        a, b = model(batch).prediction, model(padded).prediction
    if model.windows_padding:
        assert not torch.allclose(a, b, atol=1e-5)  # the flag is needed: padding changes the windows
    else:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
