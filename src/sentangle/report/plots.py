"""PNG figures for reports (matplotlib, Agg backend: no display needed). Every file is written whole.

robust_curves(results, out)        main metric vs perturbation level, one line per run
prediction_scatter(pred, label)    predicted vs true (regression)
confusion_matrix(pred, label, names)   row-normalised confusion (classification)
distributions(values, title)       box plots of gate / branch-weight values
metric_bars(series, ylabel, title) mean ± std per row (model), one colour per series
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentangle.core.io import atomic_write

__all__ = ["robust_curves", "prediction_scatter", "confusion_matrix", "distributions", "metric_bars", "save"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: figures are files, never windows
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> Path:
    plt = _plt()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def robust_curves(results: dict[str, dict], out: str | Path, metric: str | None = None) -> list[Path]:
    """One PNG per perturbation with levels (noise per modality, frame drop): the metric's mean over
    seeds (error bars: sample std) against the level, level 0 being the clean score; one line per
    run. One more PNG for the conditions without levels (missing, shuffle), next to clean."""
    plt = _plt()
    out = Path(out)
    first = next(iter(results.values()))
    metric = metric or first["main_metric"]
    scale = 1.0 if metric in ("mae", "corr") else 100.0
    families = list(
        dict.fromkeys(c["family"] for r in results.values() for c in r["conditions"] if c["level"] is not None)
    )
    paths = []
    for fam in families:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        wave = fam.startswith("wave:")
        for lab, r in results.items():
            clean = next(c for c in r["conditions"] if c["name"] == "clean")
            # a waveform level (an SNR in dB, a fraction) has no "0 = clean": clean is a dashed line
            pts = ([] if wave else [(0.0, clean)]) + [(c["level"], c) for c in r["conditions"] if c["family"] == fam]
            if len(pts) < (1 if wave else 2):
                continue
            x = [p[0] for p in pts]
            y = np.array([p[1]["metrics"][metric]["mean"] for p in pts], dtype=float) * scale
            e = np.array([p[1]["metrics"][metric]["std"] for p in pts], dtype=float) * scale
            line = ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=lab)
            if wave:
                ax.axhline(clean["metrics"][metric]["mean"] * scale, ls="--", lw=1, color=line[0].get_color())
        unit = {
            "wave:noise": "SNR (dB; dashed: clean)",
            "wave:clip": "clipped at (fraction of the peak; dashed: clean)",
            "wave:drop": "fraction of 50 ms chunks dropped (dashed: clean)",
        }.get(fam, "noise sigma (x train std)" if fam.startswith("noise") else "frame drop rate")
        if fam == "wave:noise":
            ax.invert_xaxis()  # from mild (high SNR) to severe
        ax.set_xlabel(unit)
        ax.set_ylabel(f"test {metric}" + (" (%)" if scale != 1 else ""))
        ax.set_title(fam)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(save(fig, out / f"robust_{fam.replace(':', '_')}.png"))
    single = list(dict.fromkeys(c["name"] for r in results.values() for c in r["conditions"] if c["level"] is None))
    if len(single) > 1:
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(single) * max(1, len(results)) ** 0.5), 3.6))
        width = 0.8 / len(results)
        for k, (lab, r) in enumerate(results.items()):
            by = {c["name"]: c["metrics"][metric] for c in r["conditions"]}
            means = [by[n]["mean"] * scale if n in by else np.nan for n in single]
            stds = [by[n]["std"] * scale if n in by else 0 for n in single]
            # points, not bars: a bar from 0 hides differences of a few hundredths
            ax.errorbar(np.arange(len(single)) + k * width, means, yerr=stds, fmt="o", capsize=3, label=lab)
        ax.axvline(0.9 - width / 2, color="grey", lw=0.5)  # clean | perturbed
        ax.set_xticks(np.arange(len(single)) + 0.4 - width / 2, single, rotation=30, ha="right")
        ax.set_ylabel(f"test {metric}" + (" (%)" if scale != 1 else ""))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        paths.append(save(fig, out / "robust_conditions.png"))
    return paths


def prediction_scatter(pred: dict[str, np.ndarray], label: dict[str, np.ndarray], title: str, label_range=(-3.0, 3.0)):
    """pred/label: seed -> (N,) arrays; one colour per seed, the diagonal for reference."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    for seed in pred:
        ax.scatter(label[seed], pred[seed], s=6, alpha=0.35, label=f"seed {seed}")
    lo, hi = label_range if label_range else (min(map(np.min, label.values())), max(map(np.max, label.values())))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, markerscale=2)
    return fig


def confusion_matrix(pred: np.ndarray, label: np.ndarray, names: list[str], title: str):
    """pred/label: class indices (pooled over seeds); rows = true class, normalised to sum to 1."""
    m = np.zeros((len(names), len(names)))
    np.add.at(m, (label.astype(int), pred.astype(int)), 1)
    return confusion_plot(m, names, title)


def confusion_plot(m: np.ndarray, names: list[str], title: str):
    """A confusion matrix of counts (rows = true class), each row normalised to sum to 1."""
    plt = _plt()
    k = len(names)
    m = np.asarray(m, dtype=float)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.35 * k + 2), max(3.2, 0.35 * k + 1.8)))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=7 if k > 6 else 9)
    ax.set_yticks(range(k), names, fontsize=7 if k > 6 else 9)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def distributions(groups: dict[str, dict[str, np.ndarray]], title: str):
    """groups: extra name -> column name -> values; one panel per extra, one box per column."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), squeeze=False)
    for ax, (name, cols) in zip(axes[0], groups.items()):
        ax.boxplot(list(cols.values()), showfliers=False)
        ax.set_xticks(range(1, len(cols) + 1), list(cols), rotation=30, fontsize=8)
        ax.set_title(name, fontsize=9)
        lo, hi = min(float(np.min(v)) for v in cols.values()), max(float(np.max(v)) for v in cols.values())
        if lo >= 0 and hi <= 1:  # gates and weights: show them on their whole range
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    return fig


def metric_bars(series: dict[str, dict[str, tuple[float, float]]], ylabel: str, title: str):
    """series: series name -> row label -> (mean, std); points with error bars, one colour per
    series, rows side by side (e.g. models' test MAE, or train / valid / test per model)."""
    plt = _plt()
    rows = list(dict.fromkeys(r for s in series.values() for r in s))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(rows) * max(1, len(series)) ** 0.5 + 1.5), 3.6))
    width = 0.8 / max(1, len(series))
    for k, (name, vals) in enumerate(series.items()):
        y = [vals[r][0] if r in vals else np.nan for r in rows]
        e = [vals[r][1] if r in vals else 0.0 for r in rows]
        # points, not bars: a bar from 0 hides differences of a few hundredths
        ax.errorbar(np.arange(len(rows)) + k * width, y, yerr=e, fmt="o", capsize=3, label=name)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, rows, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return fig
