"""The synthetic benchmark: a MOSI-shaped dataset whose hidden factors are known.

Real MOSI/MOSEI sequence features cannot be shipped, and the claims of the models here are about
structure (temporal versus static evidence, shared versus private cues, label-irrelevant nuisance).
This generator plants each kind of structure on purpose, so a test can check that a model uses it and
`info["oracle"]` says how well a predictor that knew the factors would do. docs/synthetic.md gives
the story and the equations; keep the two in step.

Run `python -m sentangle.data.synthetic` to print the oracle table of the default dataset.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from sentangle.core.errors import ConfigError
from sentangle.data.batch import MODALITIES
from sentangle.data.dataset import SPLITS, MSADataset, Split

# MOSI unaligned as distributed by MMSA: max frames x feature dims per modality.
UNALIGNED_LENGTHS = {"text": 50, "audio": 375, "vision": 500}
ALIGNED_LENGTH = 50
DEFAULT_DIMS = {"text": 768, "audio": 5, "vision": 20}
# Frame noise std per feature. Text has 7-10x fewer frames to average over, so it gets less noise:
# per utterance it stays the best witness of the shared polarity s, as on the real data.
DEFAULT_NOISE = {"text": 1.0, "audio": 4.0, "vision": 4.0}
# Which private cue each modality carries, if any (b: audio burst, c: vision static cue).
PRIVATE = {"audio": "b", "vision": "c"}
BURST_WIDTH = 0.05  # std of the audio burst in normalised time: a short event
LABEL_CLIP = 3.0
_CHUNK = 128  # samples per block while writing features; keeps temporaries to a few MB


def make_synthetic(
    seed: int = 0,
    n_train: int = 1284,
    n_valid: int = 229,
    n_test: int = 686,
    aligned: bool = False,
    lengths: int | dict[str, int] | None = None,
    dims: int | dict[str, int] | None = None,
    *,
    scale: float = 1.0,
    w_s: float = 1.2,
    w_a: float = 0.8,
    w_b: float = 0.5,
    w_c: float = 0.5,
    sigma_y: float = 0.2,
    noise: float | dict[str, float] | None = None,
    nuisance_std: float = 2.0,
    nuisance_dims: int = 3,
    drop_rate: float = 0.1,
    min_length_frac: float = 0.4,
    world_seed: int = 0,
    return_factors: bool = False,
) -> MSADataset | tuple[MSADataset, dict]:
    """Generate the three splits; deterministic in (`seed`, `world_seed`, knobs).

    `seed` draws the samples; `world_seed` draws the fixed projections (the "world"), which are
    shared by all splits and by every sample seed, so seeds give new draws of one and the same task.
    `lengths`/`dims`/`noise` take one value for all modalities or a dict that overrides the defaults
    per modality. `scale` multiplies the three split sizes (quick runs). `min_length_frac` is the
    shortest real length as a fraction of the maximum.

    With `return_factors` it returns `(dataset, factors)`: per split the hidden factors s, a, b, c,
    the label noise e, the noiseless score f, burst_time, and per modality the nuisance u and the
    real lengths. They stay out of `dataset.info`, which is small and goes into run folders as JSON.
    """
    max_lengths = {m: ALIGNED_LENGTH for m in MODALITIES} if aligned else UNALIGNED_LENGTHS
    lengths = _per_modality(lengths, max_lengths, "lengths")
    dims = _per_modality(dims, DEFAULT_DIMS, "dims")
    noise = _per_modality(noise, DEFAULT_NOISE, "noise")
    if aligned and len(set(lengths.values())) != 1:
        raise ConfigError(f"aligned data needs one length for all modalities, got {lengths}")
    if min(lengths.values()) < 2 or min(dims.values()) < 1:
        raise ConfigError(f"lengths must be >= 2 and dims >= 1, got lengths={lengths}, dims={dims}")
    if not 0.0 <= drop_rate < 1.0 or not 0.0 < min_length_frac <= 1.0 or scale <= 0:
        raise ConfigError(
            f"need 0 <= drop_rate < 1, 0 < min_length_frac <= 1, scale > 0; got {drop_rate}, {min_length_frac}, {scale}"
        )
    sizes = {s: max(2, round(n * scale)) for s, n in zip(SPLITS, (n_train, n_valid, n_test))}
    weights = {"s": w_s, "a": w_a, "b": w_b, "c": w_c}

    config = {
        "seed": seed,
        "world_seed": world_seed,
        "aligned": aligned,
        "scale": scale,
        "sizes": sizes,
        "lengths": lengths,
        "dims": dims,
        "weights": weights,
        "sigma_y": sigma_y,
        "noise": noise,
        "nuisance_std": nuisance_std,
        "nuisance_dims": nuisance_dims,
        "drop_rate": drop_rate,
        "min_length_frac": min_length_frac,
    }

    world = {m: _world(world_seed, i, dims[m], nuisance_dims, m in PRIVATE) for i, m in enumerate(MODALITIES)}
    # One child stream per split, so the test split does not change when n_train does.
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    splits, factors = {}, {}
    for (split, n), stream in zip(sizes.items(), streams):
        splits[split], factors[split] = _make_split(np.random.default_rng(stream), split, n, world, config)
    info = {"config": config, "oracle": oracle_errors(factors, weights, sigma_y)}
    name = "synthetic_aligned" if aligned else "synthetic"
    ds = MSADataset(
        name=name,
        splits=splits,
        task="regression",
        label_range=(-LABEL_CLIP, LABEL_CLIP),
        source=f"make_synthetic(seed={seed}, aligned={aligned})",
        info=info,
    )
    ds.validate(required=SPLITS)
    return (ds, factors) if return_factors else ds


def _per_modality(value, default: dict, what: str) -> dict:
    if value is None:
        return dict(default)
    if isinstance(value, dict):
        unknown = set(value) - set(MODALITIES)
        if unknown:
            raise ConfigError(f"{what}: unknown modalities {sorted(unknown)}; expected {MODALITIES}")
        return {**default, **value}
    return {m: value for m in MODALITIES}


def _world(world_seed: int, index: int, d: int, k: int, has_private: bool) -> dict[str, np.ndarray]:
    """Fixed unit directions of one modality: polarity p, private cue r, nuisance U (k), trend q.

    The static directions come first and are orthonormal while they fit in d, so a time-average can
    always tell them apart; the trend direction only has to be told apart by order.
    """
    # Own stream per modality: changing one modality's dims leaves the others' directions alone.
    rng = np.random.default_rng([world_seed, index])
    n = 1 + int(has_private) + k + 1
    g = rng.standard_normal((d, n))
    cols = g / np.linalg.norm(g, axis=0)
    fit = min(d, n)
    q, r = np.linalg.qr(g[:, :fit])
    cols[:, :fit] = q * np.sign(np.diag(r))
    cols = cols.T.astype(np.float32)  # (n, d)
    out = {"p": cols[0], "U": cols[1 + int(has_private) : 1 + int(has_private) + k], "q": cols[-1]}
    if has_private:
        out["r"] = cols[1]
    return out


def _make_split(rng, split, n, world, c):
    f = {k: rng.standard_normal(n) for k in ("s", "a", "b", "c")}
    f["e"] = c["sigma_y"] * rng.standard_normal(n)
    f["f"] = sum(w * f[k] for k, w in c["weights"].items())  # the noiseless score
    labels = np.clip(f["f"] + f["e"], -LABEL_CLIP, LABEL_CLIP).astype(np.float32)
    # One utterance duration per sample; each modality sees it at its own frame rate.
    duration = rng.uniform(c["min_length_frac"], 1.0, n)
    f["burst_time"] = rng.uniform(3 * BURST_WIDTH, 1 - 3 * BURST_WIDTH, n)
    features, masks, f["u"], f["lengths"] = {}, {}, {}, {}
    for m in MODALITIES:
        t_max = c["lengths"][m]
        # Aligned data has one t_max for all, so every modality gets the same real length.
        n_real = np.maximum(2, np.rint(duration * t_max)).astype(np.int64)
        f["lengths"][m] = n_real
        f["u"][m] = c["nuisance_std"] * rng.standard_normal((n, world[m]["U"].shape[0]))
        features[m], masks[m] = _modality(
            rng, m, f, n_real, t_max, c["dims"][m], world[m], c["noise"][m], c["drop_rate"]
        )
    ids = [f"synthetic-{split}-{i:05d}" for i in range(n)]
    return Split(features=features, masks=masks, labels=labels, ids=ids), f


def _modality(rng, m, f, n_real, t_max, d, w, sigma, drop_rate):
    """x(t) = s p + z(tau_t) q + U u + [b h(tau_t) r | c r] + sigma eps(t), real frames only."""
    n = n_real.shape[0]
    t = np.arange(t_max)
    real = t[None, :] < n_real[:, None]
    tau = (t[None, :] / (n_real[:, None] - 1)).astype(np.float32)  # 0 at the first frame, 1 at the last
    # Unit time-RMS ramp with zero time-mean: time-averages see none of a, its sign is in the order.
    traj = (math.sqrt(3.0) * f["a"][:, None] * (2.0 * tau - 1.0)).astype(np.float32)
    static = f["s"][:, None] * w["p"] + f["u"][m] @ w["U"]
    if m == "vision":
        static = static + f["c"][:, None] * w["r"]
    static = static.astype(np.float32)
    if m == "audio":
        burst = np.exp(-0.5 * ((tau - f["burst_time"][:, None]) / BURST_WIDTH) ** 2) * real
        # Scaled to time-mean 1 over the real frames: b reaches the time-average as strongly as s.
        burst = (f["b"][:, None] * burst / burst.sum(1, keepdims=True) * n_real[:, None]).astype(np.float32)
    # Interior frames go missing; the first and last real frames stay, so the length shows in the mask.
    interior = real & (t[None, :] > 0) & (t[None, :] < n_real[:, None] - 1)
    mask = real & ~(interior & (rng.random((n, t_max)) < drop_rate))

    x = np.empty((n, t_max, d), dtype=np.float32)
    for i in range(0, n, _CHUNK):
        j = slice(i, i + _CHUNK)
        block = x[j]
        rng.standard_normal(out=block, dtype=np.float32)
        block *= np.float32(sigma)
        block += static[j, None, :]
        block += traj[j, :, None] * w["q"]
        if m == "audio":
            block += burst[j, :, None] * w["r"]
        block *= mask[j, :, None]
    return x, mask


def oracle_errors(factors: dict, weights: dict[str, float], sigma_y: float) -> dict[str, float]:
    """Reference MAEs on the test split from the true factors (float64; only (N,) arrays)."""
    test, train = factors["test"], factors["train"]
    y = np.clip(test["f"] + test["e"], -LABEL_CLIP, LABEL_CLIP)
    y_train = np.clip(train["f"] + train["e"], -LABEL_CLIP, LABEL_CLIP)
    # Median of y given the factors: clip is monotone and e symmetric, so it is clip(f).
    bayes = np.clip(test["f"], -LABEL_CLIP, LABEL_CLIP)
    # Reversing time with a -> -a leaves the law of every order-blind view unchanged (docs/synthetic.md),
    # so given such a view a is symmetric, w_a a + e has median 0 and the conditional median drops it.
    static = np.clip(test["f"] - weights["a"] * test["a"], -LABEL_CLIP, LABEL_CLIP)
    sd_static = math.hypot(weights["a"], sigma_y)
    return {
        "n_test": int(y.shape[0]),
        "oracle_mae": float(np.abs(y - bayes).mean()),
        "oracle_mae_unclipped": sigma_y * math.sqrt(2 / math.pi),
        "static_floor_mae": float(np.abs(y - static).mean()),
        "static_floor_mae_unclipped": sd_static * math.sqrt(2 / math.pi),
        "median_mae": float(np.abs(y - np.median(y_train)).mean()),
        "mean_mae": float(np.abs(y - y_train.mean()).mean()),
    }


def oracle_table(dataset: MSADataset) -> str:
    """Markdown table of `dataset.info["oracle"]`: what knowing the factors is worth on test."""
    o, c = dataset.info["oracle"], dataset.info["config"]
    rows = [
        ("Bayes oracle", "s, a, b, c", o["oracle_mae"], o["oracle_mae_unclipped"]),
        ("static floor (order-blind)", "s, b, c", o["static_floor_mae"], o["static_floor_mae_unclipped"]),
        ("constant: train median", "nothing", o["median_mae"], None),
        ("constant: train mean", "nothing", o["mean_mae"], None),
    ]
    lines = [
        f"{dataset.name} (seed={c['seed']}, world_seed={c['world_seed']}, test n={o['n_test']})",
        "",
        "| predictor | knows | test MAE | MAE before clipping (analytic) |",
        "|---|---|---:|---:|",
    ]
    for name, knows, mae, analytic in rows:
        lines.append(f"| {name} | {knows} | {mae:.4f} | {'-' if analytic is None else f'{analytic:.4f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print the oracle table of the synthetic benchmark.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aligned", action="store_true")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    ds = make_synthetic(seed=args.seed, aligned=args.aligned, scale=args.scale)
    assert isinstance(ds, MSADataset)  # without return_factors
    print(oracle_table(ds))


if __name__ == "__main__":
    main()
