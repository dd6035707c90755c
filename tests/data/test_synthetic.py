"""The synthetic benchmark plants what docs/synthetic.md says it plants, and its oracle is right."""

import json
import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from sentangle.data.synthetic import main, make_synthetic, oracle_table

MODS = ("text", "audio", "vision")
ALPHAS = np.logspace(-2, 4, 7)
# Small enough to be quick, long and wide enough for the planted structure to show.
SMALL = dict(lengths={"text": 20, "audio": 60, "vision": 80}, dims={"text": 16})


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    # The machine is shared: threaded BLAS under oversubscription spins and runs 5x slower.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def generated():
    return make_synthetic(return_factors=True)  # the full default: ~440 MB, a few seconds, once


@pytest.fixture(scope="module")
def default(generated):
    return generated[0]


@pytest.fixture(scope="module")
def factors(generated):
    return generated[1]


def real_length(mask):
    """Frames up to the last real one; drops are interior, so this is the real length."""
    return mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)


def time_mean(sp, mods=MODS):
    return np.concatenate([sp.features[m].sum(1) / sp.masks[m].sum(1, keepdims=True) for m in mods], 1)


def half_difference(sp, mods=MODS):
    """Mean of the second half minus mean of the first half of each sample's real frames."""
    out = []
    for m in mods:
        x, k = sp.features[m], sp.masks[m]
        late = k & (np.arange(k.shape[1])[None, :] >= real_length(k)[:, None] / 2)
        early = k & ~late
        out.append(
            np.einsum("nt,ntd->nd", late, x) / late.sum(1, keepdims=True)
            - np.einsum("nt,ntd->nd", early, x) / early.sum(1, keepdims=True)
        )
    return np.concatenate(out, 1)


def probe_r2(ds, f, featurize, target, mods=MODS):
    """R^2 on test of a ridge from featurize(split, mods) to latent factor f[split][target]."""
    tr, te = ds.splits["train"], ds.splits["test"]
    model = RidgeCV(alphas=ALPHAS).fit(featurize(tr, mods), f["train"][target])
    return r2_score(f["test"][target], model.predict(featurize(te, mods)))


# ---- shapes, determinism, masks, labels ----------------------------------------------------------


def test_default_is_mosi_unaligned_shaped(default):
    assert {s: len(sp) for s, sp in default.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    for m, (t, d) in {"text": (50, 768), "audio": (375, 5), "vision": (500, 20)}.items():
        for sp in default.splits.values():
            assert sp.features[m].shape == (len(sp), t, d) and sp.features[m].dtype == np.float32
            assert sp.masks[m].shape == (len(sp), t) and sp.masks[m].dtype == bool
    assert default.splits["train"].labels.dtype == np.float32
    assert default.input_dims == {"text": 768, "audio": 5, "vision": 20}


def test_aligned_has_one_length_and_the_same_real_length_per_sample():
    ds = make_synthetic(aligned=True, scale=0.1)
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 128, "valid": 23, "test": 69}
    sp = ds.splits["train"]
    shapes = {m: sp.features[m].shape[1:] for m in MODS}
    assert shapes == {"text": (50, 768), "audio": (50, 5), "vision": (50, 20)}
    lengths = [real_length(sp.masks[m]) for m in MODS]
    assert np.array_equal(lengths[0], lengths[1]) and np.array_equal(lengths[0], lengths[2])
    assert lengths[0].min() < lengths[0].max()  # variable, not all padded to the same point


def test_aligned_and_unaligned_of_one_seed_share_factors_and_labels():
    al, f_al = make_synthetic(seed=5, aligned=True, scale=0.05, return_factors=True)
    un, f_un = make_synthetic(seed=5, scale=0.05, return_factors=True, **SMALL)
    assert np.array_equal(al.splits["test"].labels, un.splits["test"].labels)
    for k in "sabc":
        assert np.array_equal(f_al["valid"][k], f_un["valid"][k])


def test_unaligned_modalities_share_one_duration_at_their_own_rates():
    sp = make_synthetic(scale=0.1, **SMALL).splits["train"]
    t_max = {m: sp.masks[m].shape[1] for m in MODS}
    frac = {m: real_length(sp.masks[m]) / t_max[m] for m in MODS}
    # Rounding to whole frames is the only difference between the modalities' durations.
    assert np.abs(frac["text"] - frac["vision"]).max() <= 1 / t_max["text"]
    assert np.abs(frac["audio"] - frac["vision"]).max() <= 1 / t_max["audio"]


def test_same_seed_is_bit_identical_and_another_seed_is_not():
    kw = dict(scale=0.05, **SMALL)
    a, b, c = make_synthetic(seed=3, **kw), make_synthetic(seed=3, **kw), make_synthetic(seed=4, **kw)
    for s in a.splits:
        assert np.array_equal(a.splits[s].labels, b.splits[s].labels)
        assert not np.array_equal(a.splits[s].labels, c.splits[s].labels)
        for m in MODS:
            assert np.array_equal(a.splits[s].features[m], b.splits[s].features[m])
            assert np.array_equal(a.splits[s].masks[m], b.splits[s].masks[m])
            assert not np.array_equal(a.splits[s].features[m], c.splits[s].features[m])
    assert a.info["oracle"] == b.info["oracle"]


def test_test_split_does_not_depend_on_the_train_size():
    small = make_synthetic(n_train=10, scale=0.1, **SMALL)
    large = make_synthetic(n_train=500, scale=0.1, **SMALL)
    assert len(small.splits["train"]) != len(large.splits["train"])
    assert np.array_equal(small.splits["test"].labels, large.splits["test"].labels)
    assert np.array_equal(small.splits["test"].features["audio"], large.splits["test"].features["audio"])


def test_masks_pad_at_the_end_and_drop_interior_frames_at_the_drop_rate():
    ds, f = make_synthetic(scale=0.5, drop_rate=0.2, min_length_frac=0.4, return_factors=True, **SMALL)
    for m in MODS:
        sp = ds.splits["train"]
        x, k = sp.features[m], sp.masks[m]
        n_real = f["train"]["lengths"][m]
        t = np.arange(k.shape[1])[None, :]
        assert np.array_equal(real_length(k), n_real)
        assert k[:, 0].all()
        assert n_real.min() >= math.floor(0.4 * k.shape[1]) and n_real.max() <= k.shape[1]
        assert not k[t >= n_real[:, None]].any()  # padding only after the real frames
        interior = (t > 0) & (t < n_real[:, None] - 1)
        dropped = 1 - k[interior].mean()
        assert abs(dropped - 0.2) < 0.02, (m, dropped)
        assert not x[~k].any()  # padded and dropped frames are zeros
        assert (np.abs(x[k]).sum(-1) > 0).all()


def test_labels_are_clipped_to_the_sentiment_range(default):
    y = np.concatenate([sp.labels for sp in default.splits.values()])
    assert y.min() >= -3 and y.max() <= 3
    assert (np.abs(y) == 3).any() and (np.abs(y) < 3).mean() > 0.8  # clipping happens, but rarely


def test_info_is_small_plain_json_and_factors_come_only_on_request():
    ds = make_synthetic(scale=0.05, **SMALL)
    text = json.dumps(ds.info)  # no numpy inside: run folders write it as it is
    assert len(text) < 4000
    assert ds.info["config"]["sizes"] == {"train": 64, "valid": 11, "test": 34}
    assert ds.info["oracle"]["n_test"] == 34


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="aligned"):
        make_synthetic(aligned=True, lengths={"audio": 40}, scale=0.05)
    with pytest.raises(ValueError, match="unknown modalities"):
        make_synthetic(dims={"video": 4}, scale=0.05)


# ---- the planted structure ------------------------------------------------------------------------


def test_the_trend_needs_order(default, factors):
    # Time-averages of every modality carry no linear trace of a; the late-minus-early contrast does.
    assert abs(probe_r2(default, factors, time_mean, "a")) < 0.05
    assert probe_r2(default, factors, half_difference, "a") > 0.5
    # And the contrast is blind to the static factors, which cancel between the halves.
    assert abs(probe_r2(default, factors, half_difference, "s")) < 0.05


@pytest.mark.parametrize("cue, owner", [("b", "audio"), ("c", "vision")])
def test_private_cues_are_known_to_one_modality_only(default, factors, cue, owner):
    for m in MODS:
        r2 = probe_r2(default, factors, time_mean, cue, (m,))
        assert r2 > 0.5 if m == owner else abs(r2) < 0.05, (cue, m, r2)


@pytest.mark.parametrize("m", MODS)
def test_polarity_is_shared_by_every_modality(default, factors, m):
    assert probe_r2(default, factors, time_mean, "s", (m,)) > 0.8


def test_nuisance_outweighs_the_signal(default, factors):
    # The largest directions of variance of the time-averaged text are speaker/channel, not s.
    x = time_mean(default.splits["train"], ("text",))
    x = x - x.mean(0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    top = x @ vt[0]
    s = factors["train"]["s"]
    assert abs(np.corrcoef(top, s)[0, 1]) < 0.3
    assert sv[0] ** 2 > 2 * np.var(s) * len(s)


def test_projections_belong_to_the_world_seed_not_the_sample_seed():
    kw = dict(scale=0.2, **SMALL)
    fit, f_fit = make_synthetic(seed=0, return_factors=True, **kw)
    model = Ridge(alpha=1.0).fit(time_mean(fit.splits["train"]), f_fit["train"]["s"])
    r2 = {}
    for name, world_seed in (("same", 0), ("other", 1)):
        ds, f = make_synthetic(seed=1, world_seed=world_seed, return_factors=True, **kw)
        r2[name] = r2_score(f["test"]["s"], model.predict(time_mean(ds.splits["test"])))
    assert r2["same"] > 0.8 and r2["other"] < 0.3, r2


# ---- the oracle ----------------------------------------------------------------------------------


def test_oracle_errors_are_ordered(default):
    o = default.info["oracle"]
    assert o["oracle_mae"] < o["static_floor_mae"] < o["median_mae"] <= o["mean_mae"] + 0.01
    # The default is tuned so that order-blindness costs about half of what knowing nothing costs.
    assert 0.35 < o["static_floor_mae"] / o["mean_mae"] < 0.6


def test_oracle_matches_the_analytic_value_when_clipping_is_rare():
    # Small weights keep |f| far from 3, so the empirical errors must match the unclipped formulas.
    ds = make_synthetic(
        n_test=20000, scale=1.0, lengths=2, dims=1, w_s=0.4, w_a=0.3, w_b=0.2, w_c=0.2, n_train=50, n_valid=2
    )
    o = ds.info["oracle"]
    se = 0.2 * math.sqrt(1 - 2 / math.pi) / math.sqrt(o["n_test"])
    assert o["oracle_mae_unclipped"] == pytest.approx(0.2 * math.sqrt(2 / math.pi))
    assert abs(o["oracle_mae"] - o["oracle_mae_unclipped"]) < 4 * se
    assert o["static_floor_mae"] == pytest.approx(o["static_floor_mae_unclipped"], rel=0.03)


def test_clipping_only_lowers_the_oracle_error(default):
    o = default.info["oracle"]
    se = 0.2 * math.sqrt(1 - 2 / math.pi) / math.sqrt(o["n_test"])
    assert o["oracle_mae"] < o["oracle_mae_unclipped"] + 3 * se
    assert o["oracle_mae"] > 0.8 * o["oracle_mae_unclipped"]


def test_a_time_average_regression_learns_but_stays_above_the_static_floor(default):
    tr, te = default.splits["train"], default.splits["test"]
    model = RidgeCV(alphas=ALPHAS).fit(time_mean(tr), tr.labels)
    mae = np.abs(np.clip(model.predict(time_mean(te)), -3, 3) - te.labels).mean()
    o = default.info["oracle"]
    assert mae < 0.7 * o["mean_mae"]
    assert mae > o["static_floor_mae"]


def test_oracle_table_prints_the_numbers_in_info(capsys):
    ds = make_synthetic(scale=0.05, **SMALL)
    table = oracle_table(ds)
    o = ds.info["oracle"]
    assert table.count("\n|") == 6  # header, rule, four predictors
    for key in ("oracle_mae", "static_floor_mae", "median_mae", "mean_mae", "oracle_mae_unclipped"):
        assert f"{o[key]:.4f}" in table
    main(["--scale", "0.05", "--seed", "2"])
    printed = capsys.readouterr().out
    assert "seed=2" in printed and printed.strip().startswith("synthetic")


def test_the_reference_table_in_the_docs_is_the_commands_output():
    # docs/synthetic.md pastes the output of `python -m sentangle.data.synthetic`; keep it true.
    from pathlib import Path

    from sentangle.data.synthetic import make_synthetic, oracle_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "synthetic.md").read_text()
    assert oracle_table(make_synthetic()).strip() in doc
