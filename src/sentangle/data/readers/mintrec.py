"""MIntRec (multimodal intent recognition) text splits: train.tsv, dev.tsv, test.tsv.

Columns season, episode, clip, text, label; ids are "season_episode_clip".

Class order (fixed, so class indices mean the same thing in every run): the MIntRec paper's
taxonomy, first the 11 intents that express emotions or attitudes, then the 9 that achieve goals.
Spellings are exactly those in the released files ("Apologise", "Criticize", "Ask for help").
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.data.dataset import MSADataset
from sentangle.data.readers.labelcsv import read_text_file
from sentangle.data.text import text_order, text_splits

EXPRESS_EMOTIONS_OR_ATTITUDES = (
    "Complain",
    "Praise",
    "Apologise",
    "Thank",
    "Criticize",
    "Agree",
    "Taunt",
    "Flaunt",
    "Joke",
    "Oppose",
    "Care",
)
ACHIEVE_GOALS = ("Inform", "Advise", "Arrange", "Introduce", "Comfort", "Leave", "Prevent", "Greet", "Ask for help")
INTENTS = EXPRESS_EMOTIONS_OR_ATTITUDES + ACHIEVE_GOALS
COARSE = ("express_emotions_or_attitudes", "achieve_goals")

COLUMNS = ("season", "episode", "clip", "text", "label")
FILES = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}


def _read_tsv(path: Path) -> list[tuple[int, dict[str, str]]]:
    text = read_text_file(path)
    # A quote character in a text is part of the utterance, so quoting is off; then each
    # physical line is one row, and a mismatch means the file is not the plain TSV we expect.
    numbered = [(i + 1, ln) for i, ln in enumerate(re.split(r"\r\n|\r|\n", text)) if ln.strip()]
    lines = [ln for _, ln in numbered]
    rows = [r for r in csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    if len(rows) != len(lines):
        raise DataError(f"{path}: parsed {len(rows)} rows from {len(lines)} lines; expected one row per line")
    if not rows:
        raise DataError(f"{path}: file is empty; expected a header with columns {list(COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found columns {header}; "
            f"expected tab-separated columns {list(COLUMNS)}"
        )
    out = []
    for (number, _), row in zip(numbered[1:], rows[1:]):
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {number}: {len(row)} tab-separated fields; expected {len(header)} "
                f"as in the header {header} (a tab inside the text?)"
            )
        out.append((number, dict(zip(header, row))))
    if not out:
        raise DataError(f"{path}: no data rows; expected at least one utterance")
    return out


def read_mintrec(
    folder,
    name: str = "mintrec",
    labels: str = "intent20",
) -> MSADataset:
    """Read MIntRec's text splits as a classification dataset.

    labels="intent20": the 20 intents in the order of `INTENTS`; labels="binary": the 2 coarse
    classes of `COARSE` (index 0 = the first 11 intents, 1 = the last 9). dev.tsv becomes "valid";
    test.tsv may be absent.
    """
    if labels not in ("intent20", "binary"):
        raise ConfigError(f"labels={labels!r}; expected 'intent20' or 'binary'")
    folder = Path(folder)
    split_of, texts, targets, ids = [], [], [], []
    for split, fname in FILES.items():
        path = folder / fname
        if split == "test" and not path.exists():
            continue
        for number, row in _read_tsv(path):
            intent = row["label"].strip()
            if intent not in INTENTS:
                raise DataError(
                    f"{path}: line {number}: column 'label' is {intent!r}; "
                    f"expected one of the MIntRec intents {list(INTENTS)}"
                )
            k = INTENTS.index(intent)
            split_of.append(split)
            texts.append(row["text"])
            targets.append(k if labels == "intent20" else int(k >= len(EXPRESS_EMOTIONS_OR_ATTITUDES)))
            ids.append("_".join(row[c].strip() for c in ("season", "episode", "clip")))

    dup = len(ids) - len(set(ids))
    if dup:
        raise DataError(
            f"{folder}: {dup} duplicate ids (season_episode_clip) across the split files; expected each clip once"
        )
    dataset = MSADataset(
        name=name,
        splits=text_splits(split_of, texts, np.asarray(targets, dtype=np.int64), ids),
        task="classification",
        class_names=list(INTENTS if labels == "intent20" else COARSE),
        label_range=None,
        source=str(folder),
        text_order=text_order(split_of),
        info={"labels": labels},
    )
    return dataset.validate(required=("train", "valid"))
