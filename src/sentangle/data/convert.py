"""`sentangle data convert`: any readable dataset written as a memory-mapped feature folder."""

from __future__ import annotations

import os
from pathlib import Path

from sentangle.core.io import check_output
from sentangle.data.lazy import save_lazy
from sentangle.data.named import load_dataset


def convert(source: str, folder: str | os.PathLike, overwrite: bool = False, **kwargs) -> Path:
    """Read a dataset name or feature file (MMSA/MulT pickle, .npz, ...) and write it as a lazy folder.

    The features are stored as read (after the reader's own fixes such as -inf -> 0), not normalised:
    training statistics are computed when the folder is loaded."""
    check_output(folder, "folder")  # a device, link or file given as OUT: refused before reading
    if Path(folder).exists() and not overwrite:  # before reading a file that may take minutes
        raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) to replace it")
    ds = load_dataset(source, normalize=(), **kwargs)
    return save_lazy(ds, folder, overwrite=overwrite)
