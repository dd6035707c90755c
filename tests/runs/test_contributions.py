"""runs.inference.modality_contributions: the change in a prediction when a modality is missing,
missing as the robustness suite makes it (recipes/robust.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sentangle.data.dataset import MSADataset
from sentangle.models.base import create_model
from sentangle.recipes.robust import perturb_split
from sentangle.runs.inference import modality_contributions, predict_clips, without


def _one_split(ds: MSADataset, split, name="test") -> MSADataset:
    return MSADataset(ds.name, {name: split}, ds.task, ds.class_names, ds.label_range)


@pytest.fixture(scope="module")
def model_and_data(small_synthetic_module):
    ds = small_synthetic_module
    return create_model("lf_dnn", ds.input_dims, ds.output_dim, hidden=16).eval(), ds


@pytest.fixture(scope="module")
def small_synthetic_module():
    from sentangle.data.synthetic import make_synthetic

    return make_synthetic(seed=0, scale=0.1, lengths=8, dims={"text": 8, "audio": 5, "vision": 6})


def test_a_contribution_is_the_prediction_minus_the_robustness_suites_missing_condition(model_and_data):
    model, ds = model_and_data
    full = predict_clips(model, ds, "test")[0]
    got = modality_contributions(model, ds, "test")
    assert sorted(got) == ["audio", "text", "vision"]
    for m, delta in got.items():
        missing = perturb_split(ds.splits["test"], {"kind": "missing", "modality": m}, seed=0)
        want = full - predict_clips(model, _one_split(ds, missing), "test")[0]
        np.testing.assert_allclose(delta, want, atol=1e-6)
        assert np.abs(delta).max() > 0  # the untrained model reads every modality


def test_the_only_modality_left_is_masked_in_the_form_the_model_gives_a_missing_one(model_and_data):
    model, ds = model_and_data
    sp = ds.splits["test"]
    text_only = _one_split(ds, without(without(sp, "audio", ds.input_dims), "vision", ds.input_dims))
    assert text_only.modalities == ("text",)
    got = modality_contributions(model, text_only, "test")["text"]
    # with nothing left, the batch keeps text as zeros with no real frame: what MSAModel.inputs
    # builds for a modality a batch lacks, so every clip falls to the same prediction
    nothing = predict_clips(model, text_only, "test")[0] - got
    assert np.allclose(nothing, nothing[0], atol=1e-6)
    # and that form is the same as the modality being absent from the batch
    absent = predict_clips(model, _one_split(ds, without(sp, "audio", ds.input_dims)), "test")[0]
    zeros = sp.subset(np.arange(len(sp)))
    zeros.features["audio"] = np.zeros((len(sp), 1, ds.input_dims["audio"]), np.float32)
    zeros.masks["audio"] = np.zeros((len(sp), 1), bool)
    np.testing.assert_allclose(predict_clips(model, _one_split(ds, zeros), "test")[0], absent, atol=1e-6)


def test_a_classifiers_contribution_is_a_change_of_probability(small_synthetic_module):
    ds = small_synthetic_module
    names = ["neg", "neu", "pos"]
    sp = ds.splits["test"].subset(np.arange(len(ds.splits["test"])))  # a copy: the fixture is shared
    sp.labels = (np.arange(len(sp)) % 3).astype(np.int64)
    cls = MSADataset(ds.name, {"test": sp}, "classification", names, None)
    model = create_model("lf_dnn", ds.input_dims, 3, hidden=16).eval()
    got = modality_contributions(model, cls, "test")
    assert all(np.all(np.abs(d) <= 1) for d in got.values())
    logits = predict_clips(model, cls, "test")[0]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    chosen = probs.argmax(1)
    masked = predict_clips(model, _one_split(cls, without(sp, "audio", ds.input_dims)), "test")[0]
    masked_probs = np.exp(masked) / np.exp(masked).sum(1, keepdims=True)
    want = probs[np.arange(len(sp)), chosen] - masked_probs[np.arange(len(sp)), chosen]
    np.testing.assert_allclose(got["audio"], want, atol=1e-5)
