"""Test confusion matrices of a classification run, from its stored predictions:

seed_<s>/confusion.csv|md    that seed's test predictions (rows: true class, columns: predicted;
                             a row sums to the class's number of test samples)
confusion.csv|md|png         the seeds' counts summed (every seed's test predictions pooled);
                             the PNG is row-normalised (report/plots.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentangle.core.io import write_text
from sentangle.report import plots
from sentangle.report.confusion import confusion_counts, confusion_csv, confusion_markdown
from sentangle.runs.predictions import read_seed_predictions

FILES = ("confusion.csv", "confusion.md", "confusion.png")


def write_run_confusion(folder: Path, seeds, split: str = "test") -> list[Path]:
    """Write the files above for the seeds whose folder holds predictions (none for a run folder
    from git, which keeps no predictions); returns the run folder's files written."""
    folder = Path(folder)
    pooled, labels, names = [], [], None
    for seed in seeds:
        seed_dir = folder / f"seed_{seed}"
        read = read_seed_predictions(seed_dir, split)
        if read is None or read[2] is None:
            continue
        pred, label, names = read[0], read[1], list(read[2])
        counts = confusion_counts(pred, label, len(names))
        write_text(seed_dir / "confusion.csv", confusion_csv(counts, names))
        write_text(
            seed_dir / "confusion.md",
            f"Seed {seed}, {split} split ({len(label)} samples):\n\n" + confusion_markdown(counts, names) + "\n",
        )
        pooled.append(pred)
        labels.append(label)
    if names is None:
        return []
    pred, label = np.concatenate(pooled), np.concatenate(labels)
    counts = confusion_counts(pred, label, len(names))
    note = f"{split} split, {len(pooled)} seed(s) pooled (counts summed over seeds; {len(label)} predictions)"
    title = f"{folder.name}: {split}, {len(pooled)} seed(s)"
    return [
        write_text(folder / FILES[0], confusion_csv(counts, names)),
        write_text(folder / FILES[1], f"{note}:\n\n" + confusion_markdown(counts, names) + "\n"),
        plots.save(plots.confusion_matrix(pred, label, names, title), folder / FILES[2]),
    ]
