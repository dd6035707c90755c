"""Acceptance checks over finished runs: one function per verdict kind, looked up by name.

A check is a mapping, as a results plan writes it (`kind`, `id`, `text` and the kind's own keys);
`judge(spec, ctx)` checks its keys and returns the verdict triple

    (PASS | FAIL | PENDING, what was compared, clear of seed noise)

computed from the run summaries in `ctx` alone. The verdict compares means, as the checks are worded;
the third value says whether the paired difference behind it, mean +- 2 standard errors over seeds,
lies wholly on the verdict's side of 0 ('yes' / 'no'; 'n/a' with one seed or while pending).

A run summary (`VerdictContext.results[group][model]`, None while unfinished) holds `splits`
(split -> metric -> {"mean", ...}), `per_seed` (seed -> split -> metric -> value), `planned_seeds`
and, for branch diagnostics, `diagnostics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sentangle.core.errors import ConfigError, UnknownNameError
from sentangle.core.registry import Registry
from sentangle.evaluation.metrics import METRIC_DIRECTIONS
from sentangle.report.tables import LABELS, RAW_SCALE, aggregate, beyond_noise, interval_text

__all__ = [
    "VERDICTS",
    "Verdict",
    "VerdictContext",
    "check_spec",
    "judge",
    "margin_within",
    "spec_groups",
    "verdict",
]

Verdict = tuple[str, str, str]
COMMON_KEYS = ("id", "kind", "text")


@dataclass
class VerdictContext:
    """What the checks read: run summaries per group and model, which models are proposed and which
    are baselines, and the ablations (name -> (spec, finished variant summaries))."""

    results: dict[str, dict[str, dict | None]] = field(default_factory=dict)
    proposed: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    ablations: dict[str, tuple[dict, dict[str, dict]]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Kind:
    judge: Callable[[dict, VerdictContext], Verdict]
    required: tuple[str, ...]
    optional: tuple[str, ...]


VERDICTS: Registry[_Kind] = Registry("verdict kind")


def verdict(name: str, required: Iterable[str] = (), optional: Iterable[str] = ()):
    """Register `fn(spec, ctx) -> Verdict` as verdict kind `name`, with the spec keys it needs and
    those it may take (besides id, kind and text)."""

    def deco(fn):
        VERDICTS.register(name)(_Kind(fn, tuple(required), tuple(optional)))
        return fn

    return deco


def check_spec(spec: object, where: str = "check") -> None:
    """Raise ConfigError naming the key when `spec` is not a usable check: not a mapping, an unknown
    kind, a missing or unknown key, a requirement that cannot be read."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {list(COMMON_KEYS)}, got {spec!r}")
    where = f"{where} ({spec['id']})" if isinstance(spec.get("id"), str) else where
    try:
        kind = VERDICTS.get(str(spec.get("kind")))  # None -> "None": an unknown kind, named below
    except (UnknownNameError, TypeError):
        raise ConfigError(
            f"{where}: key 'kind' is {spec.get('kind')!r}; expected one of {', '.join(VERDICTS.names())}"
        ) from None
    missing = [k for k in (*COMMON_KEYS, *kind.required) if k not in spec]
    if missing:
        raise ConfigError(f"{where}: kind {spec['kind']!r} needs key(s) {missing}")
    allowed = (*COMMON_KEYS, *kind.required, *kind.optional)
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for kind {spec['kind']!r}; expected {sorted(allowed)}")
    for key in ("groups", "against_groups", "models", "select"):
        if key in spec and (not isinstance(spec[key], list) or not spec[key]):
            raise ConfigError(f"{where}: key {key!r} must be a non-empty list, got {spec[key]!r}")
    if "against_groups" in spec and len(spec["against_groups"]) != len(spec["groups"]):
        raise ConfigError(f"{where}: key 'against_groups' must pair one group with each of 'groups' {spec['groups']}")
    if "beyond_noise" in spec and not isinstance(spec["beyond_noise"], bool):
        raise ConfigError(f"{where}: key 'beyond_noise' must be true or false, got {spec['beyond_noise']!r}")
    if "variant" in spec and "select" in spec:
        raise ConfigError(f"{where}: give 'variant' or 'select' (variants to choose among on validation), not both")
    if "require" in spec:
        if not isinstance(spec["require"], dict) or not spec["require"]:
            raise ConfigError(f"{where}: key 'require' must map metrics to requirements like '<= 0.8'")
        for metric, text in spec["require"].items():
            _requirement(text, f"{where}: key 'require.{metric}'")


def spec_groups(spec: dict) -> list[str]:
    """The groups of runs a check reads, in the order it names them."""
    named = [
        *(spec.get("groups") or []),
        *(spec.get("against_groups") or []),
        spec.get("group"),
        spec.get("clean_group"),
    ]
    return list(dict.fromkeys(g for g in named if g))


def judge(spec: dict, ctx: VerdictContext) -> Verdict:
    """The verdict of one check (its spec checked first)."""
    check_spec(spec)
    return VERDICTS.get(spec["kind"]).judge(spec, ctx)


def margin_within(margins: Sequence[float], at_most: float = 0.0) -> tuple[bool, str]:
    """A claim that asks a per-seed margin to be at most `at_most`: (met on the mean, as the checks are
    worded; clear of seed noise: whether mean +- 2 standard errors lies wholly on the verdict's side,
    'yes' / 'no', 'n/a' with one seed)."""
    st = aggregate([float(m) - at_most for m in margins])
    met = st["mean"] <= 0
    return met, beyond_noise(st, "below" if met else "above")


# ---- arithmetic shared by the kinds ----------------------------------------------------------------


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if METRIC_DIRECTIONS.get(metric, "max") == "min" else a > b


def _requirement(text: object, where: str = "requirement") -> tuple[str, float]:
    parts = text.split() if isinstance(text, str) else []
    if len(parts) != 2 or parts[0] not in ("<=", ">=", "<", ">"):
        raise ConfigError(f"{where}: {text!r}; expected '<= 0.8' style")
    try:
        return parts[0], float(parts[1])
    except ValueError:
        raise ConfigError(f"{where}: {text!r}; expected a number after {parts[0]!r}") from None


def _meets(value: float, req: str) -> bool:
    op, v = _requirement(req)
    return {"<=": value <= v, ">=": value >= v, "<": value < v, ">": value > v}[op]


def _scale(metric: str) -> float:
    return 1.0 if metric in RAW_SCALE else 100.0


def _show(metric: str, value: float) -> str:
    return f"{value:.3f}" if metric in RAW_SCALE else f"{100 * value:.2f}%"


def _paired(a: dict, b: dict, value) -> dict | None:
    """value(a's seed) - value(b's seed) over the seeds both finished, aggregated (same seed: same data
    order and initialiser seed, so seed-to-seed variation common to both cancels)."""
    common = sorted(s for s in a if s in b)
    return aggregate([value(a[s]) - value(b[s]) for s in common]) if common else None


def _clear(stats: Sequence[dict | None], side: str, quantifier) -> str:
    """'yes' / 'no' by `quantifier` (all / any) over the stats' beyond_noise on `side`; 'n/a' when none
    has two seeds."""
    marks = [beyond_noise(st, side) for st in stats if st is not None]
    marks = [m for m in marks if m != "n/a"]
    return ("yes" if quantifier(m == "yes" for m in marks) else "no") if marks else "n/a"


def _flip(side: str) -> str:
    return "below" if side == "above" else "above"


def _claimed_side(metric: str) -> str:
    """The side of 0 on which 'first minus second' lies when the first is better."""
    return "below" if METRIC_DIRECTIONS.get(metric, "max") == "min" else "above"


def _diff_text(metric: str, st: dict | None) -> str:
    if st is None:
        return "no seed in common"
    return (
        f"paired difference {st['mean'] * _scale(metric):+.{3 if metric in RAW_SCALE else 2}f}, ± 2 SE "
        f"{interval_text(metric, st)} over {st['n']} seeds"
    )


def _complete(ctx: VerdictContext, group: str, need: int) -> bool:
    """Every run of `group` has finished `need` seeds (or all it plans, when it plans fewer)."""
    rs = ctx.results.get(group) or {}
    return bool(rs) and all(r and len(r["per_seed"]) >= min(need, r["planned_seeds"]) for r in rs.values())


def _mean(r: dict, metric: str, split: str = "test") -> float:
    return r["splits"][split][metric]["mean"]


def _test_value(metric: str):
    return lambda per_seed_metrics: per_seed_metrics["test"][metric]


# ---- the kinds ------------------------------------------------------------------------------------


@verdict("best_model", required=("groups", "require"), optional=("rank_by", "min_seeds", "models"))
def best_model(c: dict, ctx: VerdictContext) -> Verdict:
    """The best run of the groups (by test `rank_by`; among `models` when given) meets every
    requirement on its test means."""
    res, need, rank = ctx.results, c.get("min_seeds", 1), c.get("rank_by", "mae")
    cands = [
        (g, m, r)
        for g in c["groups"]
        for m, r in (res.get(g) or {}).items()
        if r and ("models" not in c or m in c["models"])
    ]
    if not cands:
        return "PENDING", "no finished run", "n/a"
    pick = min if METRIC_DIRECTIONS.get(rank, "max") == "min" else max
    g, m, r = pick(cands, key=lambda x: _mean(x[2], rank))
    n = len(r["per_seed"])
    ok = {k: _meets(_mean(r, k), req) for k, req in c["require"].items()}
    # each requirement as "seed value minus threshold", on the side the requirement asks for
    margins = {
        k: (
            aggregate([v["test"][k] - _requirement(req)[1] for v in r["per_seed"].values()]),
            "below" if _requirement(req)[0].startswith("<") else "above",
        )
        for k, req in c["require"].items()
    }
    detail = f"best by test {LABELS.get(rank, rank)}: `{m}` ({g}, {n} seeds): " + ", ".join(
        f"{LABELS.get(k, k)} {_show(k, _mean(r, k))} (needs {_requirement(req)[0]} "
        f"{_show(k, _requirement(req)[1])}; ± 2 SE of the mean "
        f"{interval_text(k, aggregate([v['test'][k] for v in r['per_seed'].values()]), signed=False)})"
        for k, req in c["require"].items()
    )
    if (not all(_complete(ctx, x, need) for x in c["groups"]) and "models" not in c) or n < need:
        return "PENDING", detail + f"; not every run of {c['groups']} has {need} seeds yet", "n/a"
    passed = all(ok.values())
    # PASS: every requirement clears its threshold; FAIL: some failed requirement misses it beyond noise
    marks = [
        beyond_noise(st, side if passed else _flip(side)) for k, (st, side) in margins.items() if passed or not ok[k]
    ]
    clear = "n/a" if n < 2 else "yes" if (all if passed else any)(m == "yes" for m in marks) else "no"
    return ("PASS" if passed else "FAIL"), detail, clear


@verdict("beats_all", required=("groups",), optional=("metric", "min_seeds"))
def beats_all(c: dict, ctx: VerdictContext) -> Verdict:
    """In at least one group some proposed model beats the best baseline on the test mean."""
    metric, need = c.get("metric", "mae"), c.get("min_seeds", 1)
    verdicts, details, diffs = [], [], []
    for g in c["groups"]:
        rs = {m: r for m, r in (ctx.results.get(g) or {}).items() if r}
        base = {m: _mean(r, metric) for m, r in rs.items() if m in ctx.baselines}
        prop = {m: _mean(r, metric) for m, r in rs.items() if m in ctx.proposed}
        if not _complete(ctx, g, need) or not base or not prop:
            details.append(f"{g}: pending")
            continue
        best = min if METRIC_DIRECTIONS.get(metric) == "min" else max
        best_b, best_p = best(base, key=lambda m: base[m]), best(prop, key=lambda m: prop[m])
        winners = [m for m, v in prop.items() if _better(metric, v, base[best_b])]
        st = _paired(rs[best_p]["per_seed"], rs[best_b]["per_seed"], _test_value(metric))
        verdicts.append(bool(winners))
        diffs.append(st)
        details.append(
            f"{g}: best baseline `{best_b}` {_show(metric, base[best_b])}; "
            + (
                f"beaten by {', '.join(f'`{m}` {_show(metric, prop[m])}' for m in winners)}"
                if winners
                else f"best proposed `{best_p}` {_show(metric, prop[best_p])} does not beat it"
            )
            + f" (`{best_p}` minus `{best_b}`: {_diff_text(metric, st)})"
        )
    side = _claimed_side(metric)
    if any(verdicts):
        return "PASS", "; ".join(details), _clear([d for d, v in zip(diffs, verdicts) if v], side, any)
    if verdicts and len(verdicts) == len(c["groups"]):
        return "FAIL", "; ".join(details), _clear(diffs, _flip(side), all)
    return "PENDING", "; ".join(details), "n/a"


@verdict("beats_every_baseline", required=("group",), optional=("metric", "min_seeds"))
def beats_every_baseline(c: dict, ctx: VerdictContext) -> Verdict:
    """Some proposed model of `group` beats every baseline of the group beyond seed noise: for each
    baseline, the paired per-seed difference (mean +- 2 SE) lies wholly on the proposed model's side.
    PASS names the models that do; FAIL names, for the best proposed model (by the test mean), the
    baselines it does not clear."""
    metric, need = c.get("metric", "mae"), c.get("min_seeds", 2)
    rs = {m: r for m, r in (ctx.results.get(c["group"]) or {}).items() if r}
    base = [m for m in rs if m in ctx.baselines]
    prop = [m for m in rs if m in ctx.proposed]
    if not _complete(ctx, c["group"], need) or not base or not prop:
        return "PENDING", f"{c['group']}: not every run has {need} seeds yet", "n/a"
    side = _claimed_side(metric)
    diffs = {(p, b): _paired(rs[p]["per_seed"], rs[b]["per_seed"], _test_value(metric)) for p in prop for b in base}
    if any(d is None or d["n"] < 2 for d in diffs.values()):
        return "PENDING", f"{c['group']}: seed noise needs at least 2 seeds in common per pair", "n/a"
    clears = {p: [b for b in base if beyond_noise(diffs[p, b] or {}, side) == "yes"] for p in prop}
    winners = [p for p in prop if len(clears[p]) == len(base)]
    best = min if METRIC_DIRECTIONS.get(metric) == "min" else max
    shown = winners[0] if winners else best(prop, key=lambda m: _mean(rs[m], metric))
    detail = (
        (f"beyond seed noise over every baseline: {', '.join(f'`{p}`' for p in winners)}; " if winners else "")
        + f"`{shown}` {_show(metric, _mean(rs[shown], metric))} minus each baseline: "
        + "; ".join(f"`{b}` {_diff_text(metric, diffs[shown, b])}" for b in base)
    )
    return ("PASS", detail, "yes") if winners else ("FAIL", detail, "no")


@verdict("beats_reference", required=("groups", "reference_group", "reference"), optional=("metric", "min_seeds"))
def beats_reference(c: dict, ctx: VerdictContext) -> Verdict:
    """The best proposed model of `groups` (by the test mean) beats model `reference` of
    `reference_group` (a floor trained elsewhere, e.g. on other features), paired by seed; a reference
    with one seed (a deterministic floor) is compared with every seed."""
    metric, need = c.get("metric", "mae"), c.get("min_seeds", 1)
    ref = (ctx.results.get(c["reference_group"]) or {}).get(c["reference"])
    cands = [(g, m, r) for g in c["groups"] for m, r in (ctx.results.get(g) or {}).items() if r and m in ctx.proposed]
    if not ref or not cands or not all(_complete(ctx, g, need) for g in c["groups"]):
        return (
            "PENDING",
            f"{c['reference_group']}/{c['reference']} or the proposed runs of {c['groups']} not finished",
            "n/a",
        )
    pick = min if METRIC_DIRECTIONS.get(metric, "max") == "min" else max
    g, m, r = pick(cands, key=lambda x: _mean(x[2], metric))
    ref_seeds = ref["per_seed"]
    if len(ref_seeds) == 1:  # a deterministic floor (one seed): every seed is compared with its value
        only = next(iter(ref_seeds.values()))
        ref_seeds = {s: only for s in r["per_seed"]}
    st = _paired(r["per_seed"], ref_seeds, _test_value(metric))
    ok = _better(metric, _mean(r, metric), _mean(ref, metric))
    detail = (
        f"best proposed `{m}` ({g}) {_show(metric, _mean(r, metric))} vs `{c['reference']}` ({c['reference_group']}) "
        f"{_show(metric, _mean(ref, metric))} ({_diff_text(metric, st)})"
    )
    side = _claimed_side(metric)
    return ("PASS" if ok else "FAIL"), detail, _clear([st], side if ok else _flip(side), all)


@verdict("shortcut", required=("group", "clean_group"), optional=("controls", "min_seeds"))
def shortcut(c: dict, ctx: VerdictContext) -> Verdict:
    """The proposed models' mean test-MAE increase from `group` over `clean_group` (the harm of a
    contaminated modality) is below the baselines' (the `controls` left out of the baselines)."""
    need = c.get("min_seeds", 1)
    sc: dict = ctx.results.get(c["group"]) or {}
    cl: dict = ctx.results.get(c["clean_group"]) or {}
    harm = {m: _mean(sc[m], "mae") - _mean(cl[m], "mae") for m in sc if sc.get(m) and cl.get(m)}
    base = {m: v for m, v in harm.items() if m in ctx.baselines and m not in c.get("controls", [])}
    prop = {m: v for m, v in harm.items() if m in ctx.proposed}
    if not (_complete(ctx, c["group"], need) and _complete(ctx, c["clean_group"], need)) or not base or not prop:
        return "PENDING", "shortcut or clean runs not finished", "n/a"
    mb, mp = sum(base.values()) / len(base), sum(prop.values()) / len(prop)
    per = ", ".join(
        f"`{m}` {v:+.3f} (below {sum(v < b for b in base.values())}/{len(base)} baselines)" for m, v in prop.items()
    )
    # per seed: mean harm of the proposed models minus mean harm of the baselines (seeds all of them finished)
    seeds = set.intersection(*(set(sc[m]["per_seed"]) & set(cl[m]["per_seed"]) for m in [*base, *prop]))

    def seed_harm(m, s):
        return sc[m]["per_seed"][s]["test"]["mae"] - cl[m]["per_seed"][s]["test"]["mae"]

    st = (
        aggregate(
            [
                sum(seed_harm(m, s) for m in prop) / len(prop) - sum(seed_harm(m, s) for m in base) / len(base)
                for s in sorted(seeds)
            ]
        )
        if seeds
        else None
    )
    passed = mp < mb
    return (
        ("PASS" if passed else "FAIL"),
        (
            f"mean test-MAE increase from vision: proposed {mp:+.3f}, baselines "
            f"{mb:+.3f} ({', '.join(sorted(base))}); {per}; proposed minus baselines: "
            f"{_diff_text('mae', st)}"
        ),
        _clear([st], "below" if passed else "above", all),
    )


@verdict("pairwise", required=("model", "against", "groups"), optional=("metric", "against_groups", "beyond_noise"))
def pairwise(c: dict, ctx: VerdictContext) -> Verdict:
    """`model` beats `against` on the test mean in every group (`against` read from the paired group of
    `against_groups` when given: the same model under two settings). With `beyond_noise: true` the claim
    is that it does so clear of seed noise: a win on the mean alone is then a FAIL."""
    metric, oks, details, diffs = c.get("metric", "mae"), [], [], []
    for g, h in zip(c["groups"], c.get("against_groups") or c["groups"]):
        a, b = (ctx.results.get(g) or {}).get(c["model"]), (ctx.results.get(h) or {}).get(c["against"])
        if not a or not b:
            details.append(f"{g}: pending")
            continue
        st = _paired(a["per_seed"], b["per_seed"], _test_value(metric))
        oks.append(_better(metric, _mean(a, metric), _mean(b, metric)))
        diffs.append(st)
        details.append(
            f"{g}: `{c['model']}` {_show(metric, _mean(a, metric))} vs `{c['against']}`"
            + (f" ({h})" if h != g else "")
            + f" {_show(metric, _mean(b, metric))} ({len(a['per_seed'])} / {len(b['per_seed'])} seeds; "
            f"{_diff_text(metric, st)})"
        )
    if len(oks) < len(c["groups"]):
        return "PENDING", "; ".join(details), "n/a"
    side = _claimed_side(metric)
    if all(oks):
        clear = _clear(diffs, side, all)
        return ("FAIL" if c.get("beyond_noise") and clear != "yes" else "PASS"), "; ".join(details), clear
    return "FAIL", "; ".join(details), _clear([d for d, ok in zip(diffs, oks) if not ok], _flip(side), any)


@verdict("ablation", required=("ablation", "variant"), optional=("metric",))
def ablation(c: dict, ctx: VerdictContext) -> Verdict:
    """Variant `variant` of ablation `ablation` is worse than its reference on the test mean."""
    spec, done = ctx.ablations.get(c["ablation"], (None, {}))
    metric = c.get("metric", "mae")
    if not spec or spec["reference"] not in done or c["variant"] not in done:
        return "PENDING", f"{c['ablation']}: reference or {c['variant']} not finished", "n/a"
    st = _paired(done[c["variant"]]["per_seed"], done[spec["reference"]]["per_seed"], _test_value(metric))
    worse = _better(metric, _mean(done[spec["reference"]], metric), _mean(done[c["variant"]], metric))
    side = _flip(_claimed_side(metric))  # the claim: the variant is worse than the reference
    return (
        ("PASS" if worse else "FAIL"),
        (f"{c['variant']} minus {spec['reference']}, test {LABELS.get(metric, metric)}: {_diff_text(metric, st)}"),
        _clear([st], side if worse else _flip(side), all),
    )


@verdict("branch_share", required=("group", "model"), optional=("min_share",))
def branch_share(c: dict, ctx: VerdictContext) -> Verdict:
    """Both branches of `model` (shared, private) carry at least `min_share` of its test prediction
    change (the run summary's diagnostics)."""
    r = (ctx.results.get(c["group"]) or {}).get(c["model"])
    diag = (r or {}).get("diagnostics") or {}
    keys = ["test.prediction_share.shared", "test.prediction_share.private"]
    if not all(k in diag for k in keys):
        return "PENDING", f"no branch diagnostics for `{c['model']}` in {c['group']} yet", "n/a"
    low = c.get("min_share", 0.2)
    shares = {k.rsplit(".", 1)[1]: diag[k] for k in keys}
    ok = all(v["mean"] >= low for v in shares.values())
    over = [{**v, "mean": v["mean"] - low} for v in shares.values()]
    clear = _clear(over, "above", all) if ok else _clear([o for o in over if o["mean"] < 0], "below", any)
    return (
        ("PASS" if ok else "FAIL"),
        ", ".join(
            f"{k} {100 * v['mean']:.1f}% (± 2 SE {interval_text('share', v, signed=False)})" for k, v in shares.items()
        )
        + f" of the test prediction change ({diag[keys[0]]['n']} seeds)",
        clear,
    )


@verdict("below_reference", required=("group", "reference"), optional=("models", "factor", "metric"))
def below_reference(c: dict, ctx: VerdictContext) -> Verdict:
    """Every model of `group` (or of `models`) has a test mean below `factor` times a reference
    predictor of its synthetic data (`reference`: a key of the dataset's oracle, e.g. mean_mae)."""
    metric, factor = c.get("metric", "mae"), float(c.get("factor", 1.0))
    runs = {m: r for m, r in (ctx.results.get(c["group"]) or {}).items() if "models" not in c or m in c["models"]}
    done = {m: r for m, r in runs.items() if r}
    if not done or len(done) < len(c.get("models", runs)):
        return "PENDING", f"{c['group']}: not every run has finished", "n/a"
    oracle = next(iter(done.values())).get("oracle") or {}
    if c["reference"] not in oracle:
        raise ConfigError(
            f"check {c['id']}: the data of {c['group']} have no reference {c['reference']!r}; "
            f"they have {sorted(oracle) or 'none (not synthetic data)'}"
        )
    bound = factor * oracle[c["reference"]]
    margins = {m: aggregate([v["test"][metric] - bound for v in r["per_seed"].values()]) for m, r in done.items()}
    ok = {m: _better(metric, _mean(r, metric), bound) for m, r in done.items()}
    side = _claimed_side(metric)
    detail = f"bound {factor:g} x {c['reference']} = {_show(metric, bound)}; " + ", ".join(
        f"`{m}` {_show(metric, _mean(r, metric))}{'' if ok[m] else ' (not below)'}" for m, r in done.items()
    )
    if all(ok.values()):
        return "PASS", detail, _clear(list(margins.values()), side, all)
    return "FAIL", detail, _clear([margins[m] for m in done if not ok[m]], _flip(side), any)


@verdict("robust_margin", required=("ablation", "against", "condition"), optional=("variant", "select", "metric"))
def robust_margin(c: dict, ctx: VerdictContext) -> Verdict:
    """A component pays for itself under a test-time perturbation: per seed, (clean + perturbed) test
    error of ablation variant `variant` minus that of `against` (the component removed) is <= 0, i.e.
    its clean cost is at most its gain under `condition` (a `sentangle robust` condition, such as
    noise:vision@1). With `select`, the variant is the one of those with the best validation mean,
    as a user would pick it without the test split."""
    spec, done = ctx.ablations.get(c["ablation"], (None, {}))
    metric = c.get("metric", "mae")
    candidates = c.get("select") or [c.get("variant") or (spec or {}).get("reference")]
    if not spec or c["against"] not in done or not all(v in done for v in candidates):
        return "PENDING", f"{c['ablation']}: {c['against']} or {candidates} not finished", "n/a"
    pick = min if METRIC_DIRECTIONS.get(metric, "max") == "min" else max
    on_name = pick(candidates, key=lambda v: _mean(done[v], metric, "valid"))
    on, off = done[on_name].get("robust"), done[c["against"]].get("robust")

    def per_seed(r: dict | None, name: str) -> dict | None:
        cond = next((x for x in (r or {}).get("conditions", []) if x["name"] == name), None)
        return {s: v[metric] for s, v in cond["per_seed"].items()} if cond else None

    wanted = [
        per_seed(on, "clean"),
        per_seed(on, c["condition"]),
        per_seed(off, "clean"),
        per_seed(off, c["condition"]),
    ]
    series = [x for x in wanted if x is not None]
    if len(series) < len(wanted):
        return (
            "PENDING",
            f"no robustness result with condition {c['condition']!r} for {on_name} and {c['against']}",
            "n/a",
        )
    seeds = sorted(set.intersection(*(set(x) for x in series)))
    sign = 1.0 if METRIC_DIRECTIONS.get(metric, "max") == "min" else -1.0
    margins = [sign * ((series[0][s] + series[1][s]) - (series[2][s] + series[3][s])) for s in seeds]
    met, clear = margin_within(margins)
    mean = lambda x: sum(x[s] for s in seeds) / len(seeds)  # noqa: E731
    chosen = (
        f"`{on_name}` (best validation {LABELS.get(metric, metric)} among {', '.join(candidates)}); "
        if "select" in c
        else ""
    )
    detail = (
        chosen + f"clean cost {sign * (mean(series[0]) - mean(series[2])):+.3f}, gain under {c['condition']} "
        f"{sign * (mean(series[3]) - mean(series[1])):+.3f} ({on_name} against {c['against']}); per-seed margin, "
        "clean cost minus gain (<= 0 asked): "
        + ", ".join(f"{m:+.3f}" for m in margins)
        + f" over seeds {', '.join(seeds)}"
    )
    return ("PASS" if met else "FAIL"), detail, clear
