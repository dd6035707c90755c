"""Test-time perturbations (what each does, determinism) and `sentangle robust` end to end."""

import json

import numpy as np
import pytest
import torch

import sentangle
from sentangle.cli import main
from sentangle.data.dataset import MSADataset, Split
from sentangle.evaluation.perturb import drop_frames, feature_scale, gaussian_noise, generator_for, shuffle_frames
from sentangle.recipes.robust import noisy_copy, perturb_split, robust, robust_conditions

TINY = [
    "dataset.scale=0.06",
    "dataset.lengths={text: 8, audio: 12, vision: 12}",
    "dataset.dims={text: 16, audio: 5, vision: 6}",
    "train.epochs=2",
    "model.hidden=16",
    "train.progress=false",
]


def padded(n=64, t=30, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    lengths[0], lengths[1] = 1, t  # one single-frame sample, one full one
    mask = torch.arange(t)[None] < lengths[:, None]
    x = torch.randn(n, t, d, generator=g) * torch.linspace(0.5, 3, d) * mask[..., None]
    return x, mask


def test_noise_std_matches_level_and_spares_padding():
    x, mask = padded(n=200)
    scale = feature_scale(x, mask)
    for sigma in (0.25, 1.0, 2.0):
        y = gaussian_noise(x, mask, sigma, scale, generator_for(0, "noise"))
        diff = (y - x)[mask]  # (frames, d)
        ratio = diff.std(0) / (sigma * scale)
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.08), ratio
        assert torch.equal(y[~mask], x[~mask])  # padding untouched
    assert torch.equal(gaussian_noise(x, mask, 0.0, scale, generator_for(0, "n")), x)
    # a column constant on train (scale 0) gets no noise
    y = gaussian_noise(x, mask, 1.0, torch.cat([torch.zeros(1), scale[1:]]), generator_for(0, "n"))
    assert torch.equal(y[..., 0], x[..., 0])


def test_frame_drop_rate_and_never_all_frames():
    x, mask = padded(n=300, t=40)
    for rate in (0.1, 0.3, 0.5, 0.7):
        y, keep = drop_frames(x, mask, rate, generator_for(1, "drop"))
        assert keep.shape == mask.shape and not (keep & ~mask).any()  # only real frames are dropped
        observed = 1 - keep.sum() / mask.sum()
        assert abs(float(observed) - rate) < 0.03, (rate, float(observed))
        assert keep.any(1).all()  # every sample keeps at least one real frame (incl. the 1-frame one)
        assert torch.equal(y[keep], x[keep]) and (y[mask & ~keep] == 0).all()
        assert y.shape == x.shape  # masked out in place, not deleted
    # levels share draws: what is dropped at 0.3 is dropped at 0.5 too
    _, k3 = drop_frames(x, mask, 0.3, generator_for(1, "drop"))
    _, k5 = drop_frames(x, mask, 0.5, generator_for(1, "drop"))
    assert not (k5 & ~k3 & (mask.sum(1, keepdim=True) > 3)).any()


def test_shuffle_permutes_valid_frames_and_leaves_padding():
    x, mask = padded(n=50, t=20)
    y = shuffle_frames(x, mask, generator_for(2, "shuffle"))
    assert torch.equal(y[~mask], x[~mask])
    moved = 0
    for i in range(len(x)):
        a, b = x[i][mask[i]], y[i][mask[i]]
        # the same multiset of frames: sort rows lexicographically by their first column
        assert torch.equal(a[a[:, 0].argsort()], b[b[:, 0].argsort()])
        moved += int(not torch.equal(a, b))
    assert moved >= 45  # nearly every multi-frame sample changes order


def test_perturbations_are_deterministic_from_the_seed():
    x, mask = padded()
    s = feature_scale(x, mask)
    a = gaussian_noise(x, mask, 1.0, s, generator_for(5, "noise:audio"))
    assert torch.equal(a, gaussian_noise(x, mask, 1.0, s, generator_for(5, "noise:audio")))
    assert not torch.equal(a, gaussian_noise(x, mask, 1.0, s, generator_for(6, "noise:audio")))
    assert torch.equal(shuffle_frames(x, mask, generator_for(5, "s")), shuffle_frames(x, mask, generator_for(5, "s")))
    assert torch.equal(
        drop_frames(x, mask, 0.5, generator_for(5, "d"))[1], drop_frames(x, mask, 0.5, generator_for(5, "d"))[1]
    )


def test_bad_levels_are_refused():
    x, mask = padded()
    with pytest.raises(ValueError, match="rate"):
        drop_frames(x, mask, 1.0, generator_for(0, "d"))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(x, mask, -1, 1.0, generator_for(0, "n"))
    with pytest.raises(ValueError, match="bool mask"):
        shuffle_frames(x, mask.float(), generator_for(0, "s"))


def _token_dataset():
    def split(n):
        rng = np.random.default_rng(n)
        return Split(
            features={"audio": rng.normal(size=(n, 1, 4)).astype(np.float32)},
            masks={"audio": np.ones((n, 1), bool)},
            labels=rng.uniform(-3, 3, n).astype(np.float32),
            ids=[str(i) for i in range(n)],
            tokens={"input_ids": np.ones((n, 5), np.int64), "attention_mask": np.ones((n, 5), np.int64)},
        )

    return MSADataset("tok", {"train": split(8), "valid": split(4), "test": split(6)}, text_encoder="x")


def test_conditions_skip_what_does_not_apply_and_say_why():
    conds, skipped = robust_conditions(_token_dataset())
    names = {c["name"] for c in conds}
    why = {s["name"]: s["reason"] for s in skipped}
    assert "noise:audio@0.5" in names and "missing:text" in names and "missing:audio" in names
    assert "token ids" in why["noise:text"] and "token ids" in why["shuffle:text"]
    assert "one frame" in why["shuffle:audio"] and "frame_drop" in why
    x = _token_dataset()
    x.splits["test"].features["audio"] = np.zeros((6, 3, 4), np.float32)
    x.splits["test"].masks["audio"] = np.ones((6, 3), bool)
    conds, skipped = robust_conditions(x)
    drop = [c for c in conds if c["kind"] == "frame_drop"]
    assert drop and all(c["modalities"] == ["audio"] for c in drop)
    assert "token ids" in {s["name"]: s["reason"] for s in skipped}["frame_drop:text"]
    sp = perturb_split(_token_dataset().splits["test"], {"kind": "missing", "modality": "text"}, 0)
    assert sp.tokens is None and "audio" in sp.features


def test_perturb_split_does_not_touch_its_input(small_synthetic):
    sp = small_synthetic.splits["test"]
    before = {m: x.copy() for m, x in sp.features.items()}
    for c in robust_conditions(small_synthetic)[0]:
        perturb_split(sp, c, 0, {m: np.ones(x.shape[-1], np.float32) for m, x in sp.features.items()})
    assert all(np.array_equal(before[m], sp.features[m]) for m in before)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust_runs")
    for model in ("lf_dnn", "dbr"):
        assert (
            main(["train", "-m", model, "--out", str(out), "--name", model, "--seeds", "2", "--no-progress", *TINY])
            == 0
        )
    return out


def test_robust_cli_end_to_end(two_runs, capsys):
    out = two_runs / "report_robust"
    code = main(
        [
            "robust",
            str(two_runs / "lf_dnn"),
            str(two_runs / "dbr"),
            "--out",
            str(out),
            "--seed",
            "3",
            "--noise-levels",
            "0.5,2",
            "--drop-rates",
            "0.3,0.7",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| noise:audio@2 |" in printed and "| missing:vision |" in printed
    res = json.loads((two_runs / "dbr" / "robust.json").read_text())
    assert res["seeds"] == [1111, 1112] and res["perturbation_seed"] == 3 and res["main_metric"] == "mae"
    cond = {c["name"]: c for c in res["conditions"]}
    assert {"clean", "noise:text@0.5", "frame_drop@0.7", "shuffle:vision", "missing:audio"} <= set(cond)
    # clean is the run's own test score; heavy noise moves it; std is over the two seeds
    summary = json.loads((two_runs / "dbr" / "summary.json").read_text())
    assert cond["clean"]["metrics"]["mae"]["mean"] == pytest.approx(summary["splits"]["test"]["mae"]["mean"], abs=1e-5)
    assert cond["noise:audio@2"]["metrics"]["mae"]["n"] == 2
    assert cond["noise:vision@2"]["metrics"]["mae"]["mean"] != cond["clean"]["metrics"]["mae"]["mean"]
    per = cond["missing:audio"]["per_seed"]
    assert set(per) == {"1111", "1112"}
    for png in ("robust_noise_audio.png", "robust_frame_drop.png", "robust_conditions.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    import matplotlib.image

    assert matplotlib.image.imread(out / "robust_noise_text.png").ndim == 3
    assert "**" in (out / "robust.md").read_text()  # best per row marked with two runs


def test_robust_is_reproducible(two_runs, tmp_path):
    a = robust([two_runs / "lf_dnn"], out=tmp_path / "a", seed=7, noise_levels=(1.0,), drop_rates=(0.5,), plots=False)
    b = robust([two_runs / "lf_dnn"], out=tmp_path / "b", seed=7, noise_levels=(1.0,), drop_rates=(0.5,), plots=False)
    c = robust([two_runs / "lf_dnn"], out=tmp_path / "c", seed=8, noise_levels=(1.0,), drop_rates=(0.5,), plots=False)
    get = lambda r: {x["name"]: x["metrics"]["mae"]["mean"] for x in r["results"]["lf_dnn"]["conditions"]}
    assert get(a) == get(b)
    assert get(a)["clean"] == get(c)["clean"] and get(a)["noise:audio@1"] != get(c)["noise:audio@1"]


def test_robust_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["robust", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_memory_mapped_data_are_perturbed_after_normalisation(tmp_path):
    # A lazy folder keeps raw values and normalises per batch; noise units and corrupted splits must
    # be those of the normalised data, exactly as for the same data loaded in memory.
    from sentangle.data.lazy import save_lazy
    from sentangle.data.named import load_dataset
    from sentangle.recipes.robust import as_seen, perturb_split, train_scales

    small = dict(scale=0.05, lengths={"text": 8, "audio": 12, "vision": 10}, dims={"text": 6, "audio": 5, "vision": 7})
    raw = load_dataset("synthetic", normalize=(), **small)
    path = save_lazy(raw, tmp_path / "lazy")
    lazy = load_dataset(str(path))
    eager = load_dataset("synthetic", **small)
    assert lazy.splits["test"].transforms  # really the per-batch path
    s_lazy, s_eager = train_scales(lazy), train_scales(eager)
    for m in s_eager:
        np.testing.assert_allclose(s_lazy[m], s_eager[m], rtol=1e-4, atol=1e-6)
    cond = {"kind": "noise", "modality": "audio", "level": 1.0, "name": "noise:audio@1"}
    a = perturb_split(as_seen(lazy.splits["test"]), cond, 0, s_lazy)
    b = perturb_split(as_seen(eager.splits["test"]), cond, 0, s_eager)
    for m in b.features:
        np.testing.assert_allclose(a.features[m], b.features[m], rtol=1e-4, atol=1e-5)
    assert not a.transforms


@pytest.fixture(scope="module")
def small_synthetic():
    return sentangle.load_dataset("synthetic", scale=0.1)


def test_noisy_copy_touches_only_real_audio_vision_test_frames(small_synthetic):
    noisy = noisy_copy(small_synthetic, 1.0)
    for split in ("train", "valid"):
        assert noisy.splits[split] is small_synthetic.splits[split]
    clean, dirty = small_synthetic.splits["test"], noisy.splits["test"]
    np.testing.assert_array_equal(dirty.labels, clean.labels)
    for m in clean.features:
        diff = dirty.features[m] - clean.features[m]
        if m == "text":
            assert not diff.any()
            continue
        mask = clean.masks[m]
        assert not diff[~mask].any(), f"{m}: padded frames changed"
        # per-feature noise std against sigma x the training std of that feature, computed here with a loop
        train = small_synthetic.splits["train"]
        for j in range(0, clean.features[m].shape[-1], 7):
            want = np.std(
                np.concatenate([train.features[m][i, train.masks[m][i], j] for i in range(len(train.labels))])
            )
            got = diff[mask][:, j].std()
            assert got == pytest.approx(want, rel=0.15), (m, j)
    # one fixed draw: the same copy twice, a different one for another seed
    again = noisy_copy(small_synthetic, 1.0)
    np.testing.assert_array_equal(again.splits["test"].features["audio"], dirty.features["audio"])
    other = noisy_copy(small_synthetic, 1.0, seed=1)
    assert not np.array_equal(other.splits["test"].features["audio"], dirty.features["audio"])
    assert noisy_copy(small_synthetic, 0.0) is small_synthetic
