"""sentangle.recipes.verdicts: each verdict kind on small hand-made run summaries, whose verdicts and
paired intervals are worked out by hand in the comments, and the checks of a check's spec."""

from __future__ import annotations

import pytest

from sentangle.core.errors import ConfigError
from sentangle.recipes.verdicts import VERDICTS, VerdictContext, check_spec, judge, margin_within, spec_groups


def _run(maes: list[float], seeds=(1, 2, 3), **others: list[float]) -> dict:
    """A load_result-shaped summary of a regression run with these per-seed test values."""
    values = {"mae": maes, **others}
    return {
        "splits": {"test": {k: {"mean": sum(v) / len(v)} for k, v in values.items()}},
        "planned_seeds": len(maes),
        "per_seed": {s: {"test": {k: v[i] for k, v in values.items()}} for i, s in enumerate(seeds)},
    }


def _check(kind: str, **keys) -> dict:
    return {"id": f"{kind}_check", "kind": kind, "text": f"a {kind} check", **keys}


def test_every_kind_is_registered():
    assert VERDICTS.names() == sorted(
        [
            "best_model",
            "beats_all",
            "beats_every_baseline",
            "beats_reference",
            "shortcut",
            "pairwise",
            "ablation",
            "branch_share",
            "below_reference",
            "robust_margin",
        ]
    )


def test_best_model_meets_each_requirement_and_says_which_clear_the_noise():
    # a: MAE 0.70, 0.72, 0.74 (mean 0.72); Acc-2 0.80, 0.84, 0.82 (mean 0.82); b is worse on MAE
    runs = {
        "a": _run([0.70, 0.72, 0.74], acc2_non0=[0.80, 0.84, 0.82]),
        "b": _run([0.9, 0.9, 0.9], acc2_non0=[0.9] * 3),
    }
    ctx = VerdictContext({"g": runs})
    # MAE minus 0.80 per seed: -0.10, -0.08, -0.06: mean -0.08, std 0.02, 2 SE 0.0231: wholly below 0;
    # Acc-2 minus 0.81: -0.01, +0.03, +0.01: mean +0.01, 2 SE 0.0231: not wholly above 0 -> PASS, not clear
    spec = _check("best_model", groups=["g"], require={"mae": "<= 0.80", "acc2_non0": ">= 0.81"})
    verdict, detail, clear = judge(spec, ctx)
    assert (verdict, clear) == ("PASS", "no")
    assert detail.startswith("best by test MAE: `a` (g, 3 seeds): MAE 0.720 (needs <= 0.800")
    assert "Acc-2 non0 82.00% (needs >= 81.00%" in detail
    # MAE alone: clear of noise
    assert judge(_check("best_model", groups=["g"], require={"mae": "<= 0.80"}), ctx)[::2] == ("PASS", "yes")
    # Acc-2 >= 0.83 fails; its margin -0.03, +0.01, -0.01 (mean -0.01, 2 SE 0.0231) is not wholly below 0
    spec["require"]["acc2_non0"] = ">= 0.83"
    assert judge(spec, ctx)[::2] == ("FAIL", "no")
    # MAE <= 0.60 fails by 0.12 +- 0.023: beyond noise
    assert judge(_check("best_model", groups=["g"], require={"mae": "<= 0.60"}), ctx)[::2] == ("FAIL", "yes")
    # five seeds asked for, three finished: pending, the detail still shows the numbers so far
    verdict, detail, clear = judge(_check("best_model", groups=["g"], require={"mae": "<= 0.8"}, min_seeds=5), ctx)
    assert (verdict, clear) == ("PENDING", "n/a") and "not every run of ['g'] has 5 seeds yet" in detail
    assert judge(_check("best_model", groups=["empty"], require={"mae": "<= 0.8"}), ctx) == (
        "PENDING",
        "no finished run",
        "n/a",
    )


def test_claim_checks_report_the_paired_interval():
    res = {"g": {"lf_dnn": _run([0.80, 0.82, 0.79]), "tsda": _run([0.70, 0.75, 0.69]), "dbr": _run([0.81, 0.80, 0.80])}}
    ctx = VerdictContext(res, proposed=["tsda", "dbr"], baselines=["lf_dnn"])
    # tsda minus lf_dnn per seed: -0.10, -0.07, -0.10 -> mean -0.090, 2 SE 0.020 (worked in test_report)
    verdict, detail, clear = judge(_check("beats_all", groups=["g"], metric="mae"), ctx)
    assert (verdict, clear) == ("PASS", "yes")
    assert "paired difference -0.090, ± 2 SE [-0.110, -0.070] over 3 seeds" in detail
    verdict, detail, clear = judge(_check("pairwise", model="dbr", against="lf_dnn", groups=["g"], metric="mae"), ctx)
    # dbr minus lf_dnn: +0.01, -0.02, +0.01 -> mean 0, the means tie: not better, and not clear of noise
    assert (verdict, clear) == ("FAIL", "no")
    # seeds only one run finished are left out of the pairing
    res["g"]["tsda"] = _run([0.70, 0.75], seeds=(1, 4))
    _, detail, clear = judge(_check("pairwise", model="tsda", against="lf_dnn", groups=["g"], metric="mae"), ctx)
    assert "paired difference -0.100" in detail and "over 1 seeds" in detail and clear == "n/a"


def test_beats_every_baseline_needs_each_paired_difference_clear_of_noise():
    # p vs b1: -0.10, -0.12, -0.08 (mean -0.10, std 0.02, 2 SE 0.0231): wholly below 0.
    # p vs b2: -0.02, +0.01, -0.05 (mean -0.02, std 0.03, 2 SE 0.0346): straddles 0.
    runs = {"p": _run([0.70, 0.70, 0.70]), "b1": _run([0.80, 0.82, 0.78]), "b2": _run([0.72, 0.69, 0.75])}
    ctx = VerdictContext({"g": runs}, proposed=["p"], baselines=["b1", "b2"])
    verdict, detail, clear = judge(_check("beats_every_baseline", group="g"), ctx)
    # p beats both on the mean (0.70 < 0.72) but not b2 beyond noise
    assert (verdict, clear) == ("FAIL", "no")
    assert "`b2` paired difference -0.020, ± 2 SE [-0.055, +0.015] over 3 seeds" in detail
    # without b2, p clears every baseline
    ctx2 = VerdictContext({"g": {k: runs[k] for k in ("p", "b1")}}, proposed=["p"], baselines=["b1"])
    assert judge(_check("beats_every_baseline", group="g"), ctx2)[::2] == ("PASS", "yes")
    # a run with one seed only: pending (min_seeds 2 by default)
    ctx3 = VerdictContext({"g": {"p": _run([0.7], seeds=(1,)), "b1": _run([0.8], seeds=(1,))}}, ["p"], ["b1"])
    assert judge(_check("beats_every_baseline", group="g"), ctx3)[0] == "PENDING"


def test_beats_reference_takes_the_best_proposed_model_against_a_floor_elsewhere():
    # test MAE per seed; proposed p (0.60) and q (0.80), baseline b in the same group, floor f elsewhere
    runs = {"p": _run([0.6, 0.6, 0.6]), "q": _run([0.8, 0.82, 0.78]), "b": _run([0.9, 0.9, 0.9])}
    ctx = VerdictContext({"g": runs, "h": {"f": _run([0.70, 0.70, 0.70])}}, proposed=["p", "q"], baselines=["b", "f"])
    spec = _check("beats_reference", groups=["g"], reference_group="h", reference="f", metric="mae")
    # with MAE (lower is better) the best proposed is p (0.60), below the floor's 0.70 by 0.10 each seed
    verdict, detail, clear = judge(spec, ctx)
    assert (verdict, clear) == ("PASS", "yes") and detail.startswith("best proposed `p` (g) 0.600 vs `f` (h) 0.700")
    # a floor that is better than every proposed model fails, beyond noise
    ctx.results["h"]["f"] = _run([0.5, 0.5, 0.5])
    assert judge(spec, ctx)[::2] == ("FAIL", "yes")
    # a deterministic floor trained with one seed is compared with each of p's seeds
    ctx.results["h"]["f"] = _run([0.65], seeds=(9,))
    assert judge(spec, ctx)[::2] == ("PASS", "yes")  # 0.60 - 0.65 on every seed
    del ctx.results["h"]["f"]
    assert judge(spec, ctx)[0] == "PENDING"


def test_beats_all_fails_only_when_every_group_is_decided():
    # proposed p loses to baseline b in g1 (p minus b: +0.10, +0.10, +0.13: mean +0.11, wholly above 0)
    g1 = {"b": _run([0.50, 0.50, 0.50]), "p": _run([0.60, 0.60, 0.63])}
    ctx = VerdictContext({"g1": g1, "g2": {"b": _run([0.5] * 3), "p": None}}, proposed=["p"], baselines=["b"])
    verdict, detail, clear = judge(_check("beats_all", groups=["g1", "g2"]), ctx)
    assert (verdict, clear) == ("PENDING", "n/a") and "g2: pending" in detail
    verdict, detail, clear = judge(_check("beats_all", groups=["g1"]), ctx)
    assert (verdict, clear) == ("FAIL", "yes")
    assert "best proposed `p` 0.610 does not beat it" in detail and "paired difference +0.110" in detail
    # accuracy is maximised: the same numbers read as accuracies make p the winner
    acc = {"b": _run([0.5] * 3, accuracy=[0.50] * 3), "p": _run([0.5] * 3, accuracy=[0.60, 0.60, 0.63])}
    ctx = VerdictContext({"g": acc}, proposed=["p"], baselines=["b"])
    assert judge(_check("beats_all", groups=["g"], metric="accuracy"), ctx)[::2] == ("PASS", "yes")


def test_shortcut_check_pairs_seeds_across_models():
    # harm per seed (shortcut minus clean): proposed p: 0.1, 0.2, 0.3; baselines a: 0.3, 0.3, 0.3 and
    # b: 0.5, 0.5, 0.5 -> proposed minus baselines' mean harm: -0.3, -0.2, -0.1: mean -0.2, std 0.1,
    # 2 SE = 0.2 / sqrt(3) = 0.1155 -> [-0.315, -0.085]
    clean = {"p": _run([0.5, 0.5, 0.5]), "a": _run([0.5, 0.5, 0.5]), "b": _run([0.4, 0.4, 0.4])}
    sc = {"p": _run([0.6, 0.7, 0.8]), "a": _run([0.8, 0.8, 0.8]), "b": _run([0.9, 0.9, 0.9])}
    ctx = VerdictContext({"clean": clean, "sc": sc}, proposed=["p"], baselines=["a", "b"])
    verdict, detail, clear = judge(_check("shortcut", group="sc", clean_group="clean"), ctx)
    assert (verdict, clear) == ("PASS", "yes")
    assert "proposed +0.200, baselines +0.400" in detail and "[-0.315, -0.085]" in detail
    # with a (harm 0.3) a control, b's 0.5 is the baselines' mean; with b one, a's 0.3 against p's 0.2
    _, detail, _ = judge(_check("shortcut", group="sc", clean_group="clean", controls=["a"]), ctx)
    assert "baselines +0.500 (b)" in detail
    # p minus a: -0.2, -0.1, 0.0 -> mean -0.1, std 0.1, 2 SE 0.1155: not wholly below 0
    assert judge(_check("shortcut", group="sc", clean_group="clean", controls=["b"]), ctx)[::2] == ("PASS", "no")
    del clean["p"]
    assert judge(_check("shortcut", group="sc", clean_group="clean"), ctx)[0] == "PENDING"


def test_ablation_check_wants_the_variant_worse_than_the_reference():
    # no-t minus full: +0.10, +0.12, +0.11 -> mean +0.110, std 0.01, 2 SE 0.0115 -> [+0.098, +0.122]
    done = {"full": _run([0.50, 0.50, 0.50]), "no-t": _run([0.60, 0.62, 0.61])}
    ctx = VerdictContext(ablations={"abl": ({"reference": "full"}, done)})
    verdict, detail, clear = judge(_check("ablation", ablation="abl", variant="no-t"), ctx)
    assert (verdict, clear) == ("PASS", "yes")
    assert detail == "no-t minus full, test MAE: paired difference +0.110, ± 2 SE [+0.098, +0.122] over 3 seeds"
    # the reference worse than the variant: the claim fails, clearly
    done["full"], done["no-t"] = done["no-t"], done["full"]
    assert judge(_check("ablation", ablation="abl", variant="no-t"), ctx)[::2] == ("FAIL", "yes")
    del done["no-t"]
    assert judge(_check("ablation", ablation="abl", variant="no-t"), ctx) == (
        "PENDING",
        "abl: reference or no-t not finished",
        "n/a",
    )
    assert judge(_check("ablation", ablation="other", variant="no-t"), ctx)[0] == "PENDING"


def test_branch_share_needs_both_branches_above_the_floor():
    def ctx(shared: dict, private: dict) -> VerdictContext:
        diag = {"test.prediction_share.shared": shared, "test.prediction_share.private": private}
        return VerdictContext({"g": {"dbr": {"diagnostics": diag}}})

    spec = _check("branch_share", group="g", model="dbr", min_share=0.2)
    # 0.30 - 0.20 = 0.10 with 2 SE = 2 * 0.05 / sqrt(4) = 0.05: wholly above; 0.70 likewise
    verdict, detail, clear = judge(spec, ctx({"mean": 0.3, "std": 0.05, "n": 4}, {"mean": 0.7, "std": 0.05, "n": 4}))
    assert (verdict, clear) == ("PASS", "yes")
    assert detail.startswith("shared 30.0% (± 2 SE [25.00, 35.00]), private 70.0%")
    assert detail.endswith("of the test prediction change (4 seeds)")
    # 0.15 - 0.20 = -0.05 with 2 SE 0.10: below the floor on the mean, not beyond noise
    verdict, _, clear = judge(spec, ctx({"mean": 0.15, "std": 0.1, "n": 4}, {"mean": 0.85, "std": 0.1, "n": 4}))
    assert (verdict, clear) == ("FAIL", "no")
    assert judge(spec, VerdictContext({"g": {"dbr": None}}))[0] == "PENDING"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1], "expected a mapping"),
        (_check("nope"), "key 'kind' is 'nope'; expected one of ablation, beats_all"),
        ({"id": "x", "text": "t", "kind": "pairwise", "model": "a", "groups": ["g"]}, r"needs key\(s\) \['against'\]"),
        ({"id": "x", "kind": "ablation", "ablation": "a", "variant": "v"}, r"needs key\(s\) \['text'\]"),
        (_check("ablation", ablation="a", variant="v", metrc="mae"), r"unknown key\(s\) \['metrc'\]"),
        (_check("beats_all", groups="g"), "key 'groups' must be a non-empty list"),
        (_check("best_model", groups=["g"], require={"mae": "0.8"}), r"key 'require.mae': '0.8'; expected '<= 0.8'"),
        (_check("best_model", groups=["g"], require={"mae": "<= x"}), "key 'require.mae': '<= x'; expected a number"),
        (
            _check("best_model", groups=["g"], require={"mae": "<= 1"}, models=[]),
            "key 'models' must be a non-empty list",
        ),
        (
            _check("pairwise", model="a", against="a", groups=["g", "h"], against_groups=["x"]),
            "key 'against_groups' must pair one group with each of 'groups'",
        ),
        (_check("below_reference", group="g"), r"needs key\(s\) \['reference'\]"),
        (
            _check("robust_margin", ablation="a", against="off", condition="c", variant="on", select=["on"]),
            "give 'variant' or 'select'",
        ),
    ],
)
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        check_spec(spec, "plan.yaml: checks[0]")
    with pytest.raises(ConfigError, match=message):
        judge(spec, VerdictContext())


def test_spec_groups_lists_every_group_a_check_reads():
    assert spec_groups(_check("shortcut", group="sc", clean_group="clean")) == ["sc", "clean"]
    assert spec_groups(_check("beats_all", groups=["a", "b"])) == ["a", "b"]
    assert spec_groups(_check("ablation", ablation="x", variant="v")) == []
    assert spec_groups(_check("pairwise", model="m", against="m", groups=["a"], against_groups=["b"])) == ["a", "b"]


def test_margin_within_reads_the_mean_and_its_interval():
    # m + (-d, 0, d): sample std d, standard error d / sqrt(3), so ± 2 SE is ± 1.155 d
    spread = [-0.01, 0.0, 0.01]
    assert margin_within([-0.03 + x for x in spread]) == (True, "yes")
    assert margin_within([0.03 + x for x in spread]) == (False, "yes")
    assert margin_within([-0.01 + x for x in spread]) == (True, "no")
    assert margin_within([0.01 + x for x in spread]) == (False, "no")
    assert margin_within([0.0, 0.0, 0.0]) == (True, "no")  # at most 0: met; nothing clears itself
    assert margin_within([0.5, 0.5, 0.5], at_most=0.6) == (True, "yes")
    assert margin_within([-0.1]) == (True, "n/a") and margin_within([0.1]) == (False, "n/a")  # one seed


def test_best_model_can_be_restricted_to_named_models():
    # b is the better run of the group, but the check is about a alone (MAE mean 0.72 <= 0.75)
    ctx = VerdictContext({"g": {"a": _run([0.70, 0.72, 0.74]), "b": _run([0.5] * 3), "c": None}})
    verdict, detail, _ = judge(_check("best_model", groups=["g"], models=["a"], require={"mae": "<= 0.75"}), ctx)
    assert verdict == "PASS" and "`a` (g, 3 seeds): MAE 0.720" in detail
    # c has not finished, but the check does not read it
    assert (
        judge(_check("best_model", groups=["g"], models=["a"], require={"mae": "<= 0.75"}, min_seeds=3), ctx)[0]
        == "PASS"
    )
    assert judge(_check("best_model", groups=["g"], models=["c"], require={"mae": "<= 0.75"}), ctx)[0] == "PENDING"


def test_pairwise_compares_a_model_across_two_groups():
    # with audio minus text alone, per seed: 0.80 - 0.85, 0.82 - 0.84, 0.79 - 0.83 = -0.05, -0.02, -0.04
    # mean -0.0367, std 0.01528, 2 SE 0.01764: wholly below 0
    ctx = VerdictContext({"av": {"m": _run([0.80, 0.82, 0.79])}, "t": {"m": _run([0.85, 0.84, 0.83])}})
    spec = _check("pairwise", model="m", against="m", groups=["av"], against_groups=["t"])
    verdict, detail, clear = judge(spec, ctx)
    assert (verdict, clear) == ("PASS", "yes")
    assert "av: `m` 0.803 vs `m` (t) 0.840" in detail and "paired difference -0.037" in detail
    spec["groups"], spec["against_groups"] = ["t"], ["av"]
    assert judge(spec, ctx)[::2] == ("FAIL", "yes")


def test_pairwise_beyond_noise_fails_a_win_on_the_mean_alone():
    # m minus n per seed: -0.05, +0.01, -0.02 -> mean -0.0200, std 0.0300, 2 SE 0.0346: straddles 0
    ctx = VerdictContext({"a": {"m": _run([0.75, 0.81, 0.78])}, "b": {"m": _run([0.80, 0.80, 0.80])}})
    spec = _check("pairwise", model="m", against="m", groups=["a"], against_groups=["b"])
    assert judge(spec, ctx)[::2] == ("PASS", "no")
    assert judge({**spec, "beyond_noise": True}, ctx)[::2] == ("FAIL", "no")
    # a clear win stays a PASS: -0.05, -0.04, -0.06 (mean -0.05, 2 SE 0.0115)
    ctx.results["a"]["m"] = _run([0.75, 0.76, 0.74])
    assert judge({**spec, "beyond_noise": True}, ctx)[::2] == ("PASS", "yes")
    with pytest.raises(ConfigError, match="key 'beyond_noise' must be true or false, got 'yes'"):
        check_spec({**spec, "beyond_noise": "yes"})


def _with_oracle(run: dict, **oracle) -> dict:
    return {**run, "oracle": oracle}


def test_below_reference_reads_the_synthetic_reference_predictors():
    runs = {"a": _with_oracle(_run([0.70, 0.72, 0.74]), mean_mae=1.0), "b": _with_oracle(_run([0.5] * 3), mean_mae=1.0)}
    ctx = VerdictContext({"g": runs})
    # bound 0.8 x 1.0: a's margins -0.10, -0.08, -0.06 (mean -0.08, 2 SE 0.0231) and b's -0.3: both wholly below
    verdict, detail, clear = judge(_check("below_reference", group="g", reference="mean_mae", factor=0.8), ctx)
    assert (verdict, clear) == ("PASS", "yes")
    assert detail == "bound 0.8 x mean_mae = 0.800; `a` 0.720, `b` 0.500"
    # bound 0.7: a misses it on the mean (0.72), by 0.02 +- 0.0231: not beyond noise
    verdict, detail, clear = judge(_check("below_reference", group="g", reference="mean_mae", factor=0.7), ctx)
    assert (verdict, clear) == ("FAIL", "no") and "`a` 0.720 (not below)" in detail
    # only b asked for
    assert judge(_check("below_reference", group="g", models=["b"], reference="mean_mae", factor=0.7), ctx)[0] == "PASS"
    with pytest.raises(ConfigError, match="no reference 'static_floor_mae'; they have \\['mean_mae'\\]"):
        judge(_check("below_reference", group="g", reference="static_floor_mae"), ctx)
    runs["c"] = None
    assert judge(_check("below_reference", group="g", reference="mean_mae"), ctx)[0] == "PENDING"


def _robust_run(valid_mae: float, clean: list[float], noisy: list[float]) -> dict:
    """A load_result-shaped ablation variant with robust.json conditions (seeds as robust.json keys them)."""
    per = lambda values: {str(s): {"mae": v} for s, v in zip((1, 2, 3), values)}  # noqa: E731
    return {
        "splits": {"valid": {"mae": {"mean": valid_mae}}, "test": {"mae": {"mean": sum(clean) / 3}}},
        "per_seed": {},
        "robust": {
            "conditions": [
                {"name": "clean", "per_seed": per(clean)},
                {"name": "noise:vision@1", "per_seed": per(noisy)},
            ]
        },
    }


def test_robust_margin_weighs_the_clean_cost_against_the_gain_under_noise():
    done = {
        "full": _robust_run(0.35, [0.40, 0.42, 0.39], [0.45, 0.47, 0.44]),
        "off": _robust_run(0.36, [0.41, 0.40, 0.40], [0.48, 0.47, 0.47]),
        "w10": _robust_run(0.30, [0.38, 0.38, 0.38], [0.40, 0.40, 0.41]),
        "w100": _robust_run(0.50, [0.1] * 3, [0.1] * 3),
    }
    ctx = VerdictContext(ablations={"abl": ({"reference": "full"}, done)})
    # (on clean + on noisy) - (off clean + off noisy) per seed: 0.85 - 0.89, 0.89 - 0.87, 0.83 - 0.87
    # = -0.04, +0.02, -0.04: mean -0.02, std 0.03464, SE 0.02: interval [-0.06, +0.02] holds 0
    spec = _check("robust_margin", ablation="abl", variant="full", against="off", condition="noise:vision@1")
    verdict, detail, clear = judge(spec, ctx)
    assert (verdict, clear) == ("PASS", "no")
    # clean cost 0.40333 - 0.40333 = 0; gain off noisy - on noisy = 0.47333 - 0.45333 = 0.02
    assert "clean cost +0.000, gain under noise:vision@1 +0.020 (full against off)" in detail
    assert detail.endswith("-0.040, +0.020, -0.040 over seeds 1, 2, 3")
    # the variant left out defaults to the ablation's reference
    del spec["variant"]
    assert judge(spec, ctx)[0] == "PASS"
    # picked on validation among full, w10 and w100: w10 (0.30; w100's test numbers would win but its
    # validation MAE is worst). Margins 0.78 - 0.89, 0.78 - 0.87, 0.79 - 0.87 = -0.11, -0.09, -0.08:
    # mean -0.0933, 2 SE 0.0176: wholly below 0
    spec = _check(
        "robust_margin", ablation="abl", select=["full", "w10", "w100"], against="off", condition="noise:vision@1"
    )
    verdict, detail, clear = judge(spec, ctx)
    assert (verdict, clear) == ("PASS", "yes") and detail.startswith(
        "`w10` (best validation MAE among full, w10, w100)"
    )
    # reversed: the component costs more than it gains, beyond noise
    spec = _check("robust_margin", ablation="abl", variant="off", against="w10", condition="noise:vision@1")
    assert judge(spec, ctx)[::2] == ("FAIL", "yes")
    # a condition the evaluation did not run, or a variant not finished: pending
    spec = _check("robust_margin", ablation="abl", variant="full", against="off", condition="noise:audio@1")
    assert judge(spec, ctx)[0] == "PENDING"
    spec = _check("robust_margin", ablation="abl", variant="nope", against="off", condition="noise:vision@1")
    assert judge(spec, ctx)[0] == "PENDING"
