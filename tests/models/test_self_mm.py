"""Self-MM: unimodal label generation (ULGM) by hand, its weighted losses, and how the one trainer drives it."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sentangle import create_model
from sentangle.config import TrainConfig
from sentangle.data.synthetic import make_synthetic
from sentangle.models.self_mm import UnimodalLabels
from sentangle.training.trainer import fit

SMALL = dict(audio_lstm_hidden=8, vision_lstm_hidden=8, audio_out=8, vision_out=8, post_fusion_dim=32)


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(
        seed=0, scale=0.2, lengths={"text": 8, "audio": 12, "vision": 12}, dims={"text": 16, "audio": 5, "vision": 8}
    )


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def hand_store() -> UnimodalLabels:
    """Four samples, y_m = 2, 1, -1, -2, with 2-d stored features chosen so the centres are round.

    fusion features (1,0) (3,0) (-1,0) (-3,0) -> C_f^p = (2,0), C_f^n = (-2,0)
    text   features (0,1) (0,3) (0,-2) (0,-2) -> C_t^p = (0,2), C_t^n = (0,-2)  (text labels = y_m at first)
    """
    store = UnimodalLabels(("text",), bound=3.0)
    rows = store.register(["s0", "s1", "s2", "s3"], t([2, 1, -1, -2]))
    store.store(rows, {"fusion": t([[1, 0], [3, 0], [-1, 0], [-3, 0]]), "text": t([[0, 1], [0, 3], [0, -2], [0, -2]])})
    return store


def test_centres_are_means_of_stored_features_by_label_sign():
    store = hand_store()
    for name, pos, neg in (("fusion", [2, 0], [-2, 0]), ("text", [0, 2], [0, -2])):
        got_pos, got_neg = store.centres(name)
        torch.testing.assert_close(got_pos, t(pos))
        torch.testing.assert_close(got_neg, t(neg))


def test_label_update_against_a_hand_worked_example():
    store = hand_store()
    # Sample s0 (y_m = 2) now has fusion feature (1,0) and text feature (0,-1): its text looks negative.
    #   fusion: d_p = |(1,0)-(2,0)| = 1, d_n = |(1,0)-(-2,0)| = 3        -> delta_f = (3 - 1) / 1 = 2
    #   text:   d_p = |(0,-1)-(0,2)| = 3, d_n = |(0,-1)-(0,-2)| = 1      -> delta_t = (1 - 3) / 3 = -2/3
    #   new y_t = 0.5 * (delta_t / delta_f) * y_m + 0.5 * (y_m + delta_t - delta_f)
    #           = 0.5 * (-1/3) * 2 + 0.5 * (2 - 2/3 - 2) = -1/3 - 1/3 = -2/3      (inside [-3, 3])
    #   epoch n = 2: y_t = (n-1)/(n+1) * 2 + 2/(n+1) * (-2/3) = 2/3 - 4/9 = 2/9
    store.update(torch.tensor([0]), {"fusion": t([[1, 0]]), "text": t([[0, -1]])}, n=2)
    assert store.labels["text"][0].item() == pytest.approx(2 / 9, abs=1e-6)
    assert store.labels["fusion"][0].item() == 2.0  # the dataset label never moves
    assert store.labels["text"][1:4].tolist() == [1.0, -1.0, -2.0]  # other samples untouched
    # Sample s1 (y_m = 1), features fusion (2.5,0), text (0,2.2), epoch n = 3 (centres unchanged:
    # s0's text label 2/9 is still positive):
    #   fusion: d_p = 0.5, d_n = 4.5 -> delta_f = 8;   text: d_p = 0.2, d_n = 4.2 -> delta_t = 20
    #   new y_t = 0.5 * (20/8) * 1 + 0.5 * (1 + 20 - 8) = 1.25 + 6.5 = 7.75 -> clipped to H = 3
    #   y_t = (2/4) * 1 + (2/4) * 3 = 2
    store.update(torch.tensor([1]), {"fusion": t([[2.5, 0]]), "text": t([[0, 2.2]])}, n=3)
    assert store.labels["text"][1].item() == pytest.approx(2.0, abs=1e-5)


def test_no_update_while_a_class_centre_is_missing():
    store = UnimodalLabels(("text",))
    rows = store.register(["a", "b"], t([1, 2]))  # no negative sample yet
    store.store(rows, {"fusion": t([[1, 0], [2, 0]]), "text": t([[0, 1], [0, 2]])})
    store.update(rows, {"fusion": t([[5, 0], [5, 0]]), "text": t([[0, -5], [0, -5]])}, n=2)
    assert store.labels["text"][:2].tolist() == [1.0, 2.0]


def test_register_grows_the_stores_and_keeps_rows_stable():
    store = UnimodalLabels(("audio",))
    first = store.register([f"id{i}" for i in range(50)], torch.arange(50.0) / 25 - 1)
    store.store(first, {"fusion": torch.ones(50, 3), "audio": torch.ones(50, 2)})
    again = store.register(["id3", "new", "id49"] + [f"more{i}" for i in range(100)], torch.zeros(103))
    assert again[:3].tolist() == [3, 50, 49] and len(store) == 151
    assert store.labels["audio"][3].item() == pytest.approx(3 / 25 - 1)  # kept through the growth
    assert store.features["fusion"][:50].eq(1).all() and not store.stored[50:151].any()


def model_for(ds, **kw):
    torch.manual_seed(0)
    return create_model("self_mm", ds.input_dims, 1, **{**SMALL, **kw})


def test_unimodal_loss_weighs_by_disagreement_with_the_multimodal_label(tiny):
    model = model_for(tiny).train()
    batch = next(tiny.batches("train", 16))
    out = model(batch)
    # first sight: every unimodal label equals y_m, tanh(0) = 0, nothing to learn from yet
    assert set(out.aux_losses) == {"unimodal_text", "unimodal_audio", "unimodal_vision"}
    assert all(v.item() == 0.0 for v in out.aux_losses.values())
    rows = model.label_store.register(batch.ids, batch.labels)
    model.label_store.labels["text"][rows] += 1.0  # text label one unit above y_m
    model.label_store.labels["audio"][rows] -= 2.0
    out = model(batch)  # still epoch 1: no regeneration, the labels stay as set
    want_t = (torch.tanh(torch.tensor(1.0)) * (out.extras["prediction_text"] - (batch.labels + 1)).abs()).mean()
    want_a = (torch.tanh(torch.tensor(2.0)) * (out.extras["prediction_audio"] - (batch.labels - 2)).abs()).mean()
    torch.testing.assert_close(out.aux_losses["unimodal_text"], want_t)
    torch.testing.assert_close(out.aux_losses["unimodal_audio"], want_a)
    assert out.aux_losses["unimodal_vision"].item() == 0.0


def test_step_update_regenerates_a_batch_from_its_features_from_epoch_two(tiny):
    model = model_for(tiny).train()
    batch = next(tiny.batches("train", 32))
    model(batch)
    store = model.label_store
    before = {m: store.labels[m][: len(store)].clone() for m in store.names}
    model(batch)  # epoch 1: features stored, labels untouched
    assert all(torch.equal(before[m], store.labels[m][: len(store)]) for m in store.names)
    model.on_epoch_end(0)  # the trainer's hook: epoch 2 begins
    assert model.epoch == 2
    pre = copy.deepcopy(store)
    as_seen = copy.deepcopy(store)  # pre is updated below; this copy keeps the state the forward saw
    model(batch)
    rows = store.register(batch.ids, batch.labels)
    # the same rule, applied by hand to the features this forward stored and the centres before it
    pre.update(rows, {name: store.features[name][rows] for name in store.names}, n=2)
    for m in ("text", "audio", "vision"):
        torch.testing.assert_close(store.labels[m][rows], pre.labels[m][rows])
        assert not torch.equal(store.labels[m][rows], batch.labels)
    torch.testing.assert_close(store.labels["fusion"][rows], batch.labels)
    # ULGM written out in numpy from the stores as they were before this forward: class centres of
    # the stored features by label sign (0 excluded), relative distances, the averaged ratio and
    # difference estimates clipped to [-3, 3], blended (n-1)/(n+1) old + 2/(n+1) new at n = 2
    n_rows, r = len(as_seen), rows.numpy()

    def delta(name, f):
        lab, fs = as_seen.labels[name][:n_rows].numpy(), as_seen.features[name][:n_rows].double().numpy()
        seen = as_seen.stored[:n_rows].numpy()
        pos, neg = fs[seen & (lab > 0)].mean(0), fs[seen & (lab < 0)].mean(0)
        d_p, d_n = np.linalg.norm(f - pos, axis=1), np.linalg.norm(f - neg, axis=1)
        return (d_n - d_p) / d_p

    new_feats = {name: store.features[name][r].double().numpy() for name in store.names}
    y_m = batch.labels.double().numpy()
    delta_f = delta("fusion", new_feats["fusion"])
    for m in ("text", "audio", "vision"):
        delta_s = delta(m, new_feats[m])
        generated = np.clip(0.5 * delta_s / delta_f * y_m + 0.5 * (y_m + delta_s - delta_f), -3, 3)
        want = 1 / 3 * as_seen.labels[m][r].double().numpy() + 2 / 3 * generated
        np.testing.assert_allclose(store.labels[m][rows].numpy(), want, rtol=1e-4, atol=1e-5)


def test_epoch_update_runs_in_the_hook_only(tiny):
    model = model_for(tiny, label_update="epoch").train()
    batch = next(tiny.batches("train", 32))
    model(batch)
    store = model.label_store
    model.on_epoch_end(0)
    rows = store.register(batch.ids, batch.labels)
    moved = store.labels["text"][rows].clone()
    assert not torch.equal(moved, batch.labels)
    model(batch)  # epoch 2, per-epoch mode: forward stores features but regenerates nothing
    torch.testing.assert_close(store.labels["text"][rows], moved)


def test_trainer_drives_the_stores_and_they_stay_out_of_the_weights(tiny):
    model = model_for(tiny)
    result = fit(model, tiny, TrainConfig(epochs=3, batch_size=16, lr=3e-3, patience=10, progress=False), seed=1111)
    store = model.label_store
    n = len(tiny.splits["train"])
    assert len(store) == n  # training samples only: validation runs in eval mode
    assert not torch.equal(store.labels["text"][:n], store.labels["fusion"][:n])
    assert store.labels["audio"][:n].abs().max() <= 3.0
    assert result.history[-1]["train_unimodal_text"] > 0
    assert not any("label" in k for k in model.state_dict())
    fresh = model_for(tiny)
    fresh.load_state_dict(model.state_dict())  # checkpoints reload without the stores


def test_switches_remove_heads_and_generation(tiny):
    batch = next(tiny.batches("train", 16))
    off = model_for(tiny, unimodal_heads=False).train()
    assert off.unimodal is None and off.label_store is None and off(batch).aux_losses == {}
    plain = model_for(tiny, label_generation=False).train()
    assert plain.label_store is None
    out = plain(batch)
    torch.testing.assert_close(out.aux_losses["unimodal_text"], F.l1_loss(out.extras["prediction_text"], batch.labels))
    both = sum(p.numel() for p in model_for(tiny).parameters())
    assert sum(p.numel() for p in off.parameters()) < both


def test_classification_trains_unimodal_heads_on_the_class(tiny):
    model = create_model("self_mm", tiny.input_dims, 3, **SMALL).train()
    batch = next(tiny.batches("train", 16))
    batch.labels = (batch.labels > 0).long() + (batch.labels > 1).long()
    out = model(batch)
    assert out.prediction.shape == (16, 3) and model.label_store is None
    torch.testing.assert_close(
        out.aux_losses["unimodal_audio"], F.cross_entropy(out.extras["prediction_audio"], batch.labels)
    )


def test_first_token_pooling_reads_only_the_first_token(tiny):
    model = model_for(tiny, text_pooling="first").eval()
    batch = next(tiny.batches("test", 8))
    changed = next(tiny.batches("test", 8))
    changed.features["text"][:, 1:] += 5.0
    torch.testing.assert_close(model(batch).prediction, model(changed).prediction)
    assert model_for(tiny).text_pooling == "mean"  # frozen token features: mean over real tokens


def test_bad_options_are_named(tiny):
    with pytest.raises(ValueError, match="label_update must be 'step' or 'epoch', got 'batch'"):
        model_for(tiny, label_update="batch")
    with pytest.raises(ValueError, match="text_pooling"):
        model_for(tiny, text_pooling="cls")
    with pytest.raises(ValueError, match="H"):
        model_for(tiny, H=0)
