"""MMSA-style `label.csv`: video_id, clip_id, text, label, mode (one row per clip).

Only text comes from this file: raw transcripts go through a pretrained encoder, either frozen
(token features) or fine-tuned inside the model (tokens). Ids are "videoid$_$clipid" as in MMSA.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sentangle.core.errors import DataError
from sentangle.data.dataset import SPLITS, MSADataset
from sentangle.data.text import text_order, text_splits

COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
# Older MMSA-style files call the validation split "dev".
MODE_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
LABEL_RANGE = (-3.0, 3.0)


def read_text_file(path: Path) -> str:
    """The whole file as text, or a DataError naming the file and where the bad bytes are."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig", errors="strict")  # -sig: a BOM would otherwise rename column 1
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: byte {data[e.start : e.start + 1]!r} is not valid UTF-8; "
            "expected a UTF-8 encoded text file"
        ) from None


def label_rows(path: Path, required: Sequence[str], expected: str) -> Iterator[tuple[int, dict[str, str], str]]:
    """(line number, {column: raw value}, id "videoid$_$clipid") per data row of an MMSA-style CSV,
    checked on the way: a header holding `required` (`expected` says what the file should be),
    as many fields as the header on every row, each id once. Blank lines are skipped."""
    reader = csv.reader(io.StringIO(read_text_file(path), newline=""))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty; expected {expected}")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found columns {header}; expected {expected}")
    seen: dict[str, int] = {}
    for fields in reader:
        line = reader.line_num
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataError(
                f"{path}: line {line}: {len(fields)} fields; expected {len(header)} as in the header {header}"
            )
        row = dict(zip(header, fields))
        sid = f"{row.get('video_id', '').strip()}$_${row.get('clip_id', '').strip()}"
        if sid in seen:
            raise DataError(
                f"{path}: line {line}: id {sid!r} (video_id$_$clip_id) already on line {seen[sid]}; "
                "expected each clip once"
            )
        seen[sid] = line
        yield line, row, sid


def _split_names(splits: Sequence[str] | None, path: Path) -> tuple[str, ...] | None:
    if splits is None:
        return None
    if isinstance(splits, str):
        splits = [splits]
    names = []
    for s in splits:
        if s not in MODE_ALIASES:
            raise DataError(f"{path}: splits={list(splits)} asks for {s!r}; expected names from {list(SPLITS)}")
        names.append(MODE_ALIASES[s])
    return tuple(dict.fromkeys(names))


def read_label_csv(
    path,
    name: str,
    splits: Sequence[str] | None = None,
) -> MSADataset:
    """Read an MMSA label.csv into a text-only regression dataset with the splits the file holds.

    `splits` restricts which modes are loaded (and then requires each of them to be present).
    Every row is checked (even rows of splits not loaded) so a broken file fails early.
    """
    path = Path(path)
    wanted = _split_names(splits, path)
    modes, texts, labels, ids = [], [], [], []
    for line, row, sid in label_rows(path, COLUMNS, f"an MMSA label.csv with columns {list(COLUMNS)}"):
        raw_mode = row["mode"].strip()
        mode = MODE_ALIASES.get(raw_mode.lower())
        if mode is None:
            raise DataError(
                f"{path}: line {line}: column 'mode' is {raw_mode!r}; expected one of {sorted(MODE_ALIASES)}"
            )
        raw_label = row["label"].strip()
        try:
            label = float(raw_label)
        except ValueError:
            raise DataError(
                f"{path}: line {line}: column 'label' is {raw_label!r}, not a number; "
                f"expected a sentiment score in [{LABEL_RANGE[0]}, {LABEL_RANGE[1]}]"
            ) from None
        if not (math.isfinite(label) and LABEL_RANGE[0] <= label <= LABEL_RANGE[1]):
            raise DataError(
                f"{path}: line {line}: column 'label' is {raw_label!r}; "
                f"expected a sentiment score in [{LABEL_RANGE[0]}, {LABEL_RANGE[1]}]"
            )
        if wanted is not None and mode not in wanted:
            continue
        modes.append(mode)
        texts.append(row["text"])  # empty text is fine: the encoder still sees [CLS] [SEP]
        labels.append(label)
        ids.append(sid)

    if not ids:
        what = "no data rows" if wanted is None else f"no rows with mode in {list(wanted)}"
        raise DataError(f"{path}: {what}; expected at least one clip")

    dataset = MSADataset(
        name=name,
        splits=text_splits(modes, texts, np.asarray(labels, dtype=np.float32), ids),
        task="regression",
        label_range=LABEL_RANGE,
        source=str(path),
        text_order=text_order(modes),
        info={
            "rows": {s: modes.count(s) for s in SPLITS if s in modes},
        },
    )
    return dataset.validate(required=wanted or ())
