"""benchmarks/rtil_checks.py: the noisy test copies and the noise criterion's arithmetic (the script
itself trains for an hour; these are the parts whose mistakes would silently change its verdicts).

The noise comes from the package (`sentangle.recipes.robust.noisy_copy`); the script's own functions
run in a separate interpreter beside it, as the script runs, so that nothing under benchmarks/ is
imported into the test process."""

from __future__ import annotations

import numpy as np
import pytest

import sentangle
from sentangle.recipes.robust import noisy_copy


@pytest.fixture(scope="module")
def ds():
    return sentangle.load_dataset("synthetic", scale=0.1)


def test_noisy_copy_touches_only_real_audio_vision_test_frames(ds):
    noisy = noisy_copy(ds, 1.0)
    for split in ("train", "valid"):
        assert noisy.splits[split] is ds.splits[split]
    clean, dirty = ds.splits["test"], noisy.splits["test"]
    np.testing.assert_array_equal(dirty.labels, clean.labels)
    for m in clean.features:
        diff = dirty.features[m] - clean.features[m]
        if m == "text":
            assert not diff.any()
            continue
        mask = clean.masks[m]
        assert not diff[~mask].any(), f"{m}: padded frames changed"
        # per-feature noise std against sigma x the training std of that feature, computed here with a loop
        train = ds.splits["train"]
        for j in range(0, clean.features[m].shape[-1], 7):
            want = np.std(
                np.concatenate([train.features[m][i, train.masks[m][i], j] for i in range(len(train.labels))])
            )
            got = diff[mask][:, j].std()
            assert got == pytest.approx(want, rel=0.15), (m, j)
    # one fixed draw: the same copy twice, a different one for another seed
    again = noisy_copy(ds, 1.0)
    np.testing.assert_array_equal(again.splits["test"].features["audio"], dirty.features["audio"])
    other = noisy_copy(ds, 1.0, seed=1)
    assert not np.array_equal(other.splits["test"].features["audio"], dirty.features["audio"])
    assert noisy_copy(ds, 0.0) is ds


def test_criterion_margin_and_verdict(beside_scripts):
    got = beside_scripts(
        """
        import json
        import numpy as np
        import rtil_checks as rc

        top = max(rc.SIGMAS)
        on = {0.0: [0.40, 0.42, 0.39], top: [0.45, 0.47, 0.44]}
        off = {0.0: [0.41, 0.40, 0.40], top: [0.48, 0.47, 0.47]}
        margin, se = rc.criterion_margin(on, off)
        spread = np.array([-1.0, 0.0, 1.0])
        verdicts = [rc.margin_verdict(m + 0.01 * spread) for m in (-0.03, 0.03, -0.01, 0.01)]
        print(json.dumps({"margin": margin.tolist(), "se": se, "verdicts": verdicts + [rc.margin_verdict(np.zeros(3))]}))
        """
    )
    # clean cost (on - off, clean) minus noise gain (off - on, noisy), seed by seed
    want = [(0.40 - 0.41) - (0.48 - 0.45), (0.42 - 0.40) - (0.47 - 0.47), (0.39 - 0.40) - (0.47 - 0.44)]
    np.testing.assert_allclose(got["margin"], want)
    mean = sum(want) / 3
    assert got["se"] == pytest.approx((sum((w - mean) ** 2 for w in want) / 2 / 3) ** 0.5)
    # m + (-d, 0, d): sample std d, standard error d / sqrt(3), so ± 2 SE is ± 1.155 d
    assert got["verdicts"] == [
        "met on the mean, clear of seed noise: yes",
        "NOT met on the mean, clear of seed noise: yes",
        "met on the mean, clear of seed noise: no",
        "NOT met on the mean, clear of seed noise: no",
        "met on the mean, clear of seed noise: no",  # <= 0 is what is asked
    ]


def test_full_seeds_confirm_the_picked_weight_with_more_seeds(beside_scripts, tmp_path):
    """--full-seeds: the weight the validation split picks, and 'off', train on to more seeds and the
    criterion is read again on all of them; everything else keeps the first seeds (a folder holding more
    checkpoints than a result's seeds must not leak them into that result's noisy MAEs). Six: more
    than the five standard seeds a seed count can name."""
    got = beside_scripts(
        f"""
        import json
        import sentangle
        import rtil_checks as rc

        rc.FULL_TRAIN["epochs"] = 1
        out = {str(tmp_path)!r}
        text = rc.full_training_noise(out, seeds=2, scale=0.05, confirm_seeds=6)
        # run again (nothing trains): the 2-seed tables must not read the later checkpoints now in two folders
        again = rc.full_training_noise(out, seeds=2, scale=0.05, confirm_seeds=6)
        # the first confirmation, recomputed from all six seeds of both folders
        first = next(line for line in text.splitlines() if line.startswith("  The same weight with 6 seeds"))
        datasets = {{s: d for s, d in rc.noisy_datasets(0.05).items() if s in (0.0, *rc.SIGMAS)}}
        sub = out + "/full_epochs"
        maes = lambda name: rc.noise_maes(
            sentangle.train(
                config=f"{{sub}}/{{name}}/config.yaml", out=sub, name=name, seeds=list(range(1111, 1117))
            ),
            datasets,
        )
        margin, se = rc.criterion_margin(maes(first.split("`")[1]), maes("rtil_no_temporal-synthetic"))
        print(json.dumps({{"text": text, "again": again, "margin": margin.tolist(), "se": se}}))
        """
    )
    text = got["text"]
    sub = tmp_path / "full_epochs"
    count = lambda name: len(list((sub / name).glob("seed_*/checkpoint.pt")))
    confirmations = [line for line in text.splitlines() if line.startswith("  The same weight with 6 seeds")]
    assert len(confirmations) == 2  # one per preset
    picked = [line.split("`")[1] for line in confirmations]
    assert count("rtil_no_temporal-synthetic") == 6 and all(count(name) == 6 for name in picked)
    others = [f.name for f in sub.iterdir() if f.name not in picked and f.name != "rtil_no_temporal-synthetic"]
    assert others and all(count(name) == 2 for name in others)
    assert got["again"] == text
    margin, se = np.array(got["margin"]), got["se"]
    assert len(margin) == 6
    assert confirmations[0].split("margin per seed ")[1].startswith(", ".join(f"{d:+.3f}" for d in margin))
    assert f"[{margin.mean() - 2 * se:+.3f}, {margin.mean() + 2 * se:+.3f}]" in confirmations[0]


def test_time_line_sums_the_reported_seeds_only(beside_scripts, tmp_path):
    """The check docs' closing line: recorded training time of the seeds a doc reports, not of every seed
    the folder holds (a folder may have more seeds than the doc reads), and each folder counted once."""
    for seed, seconds in ((1111, 60.0), (1112, 90.0), (1113, 600.0)):
        (tmp_path / "a" / f"seed_{seed}").mkdir(parents=True)
        (tmp_path / "a" / f"seed_{seed}" / "metrics.json").write_text(f'{{"train_seconds": {seconds}}}')
    got = beside_scripts(
        f"""
        import json
        import common

        res = {{"folder": {str(tmp_path / "a")!r}, "per_seed": {{1111: {{}}, 1112: {{}}}}}}
        common.record(res)
        common.record(res)  # the same run reused by two sections
        print(json.dumps({{"line": common.time_line(start=0.0)}}))
        """
    )
    assert "all seeds: 2.5 min on one thread" in got["line"]  # (60 + 90) / 60
