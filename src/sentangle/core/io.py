"""Files are written whole or not at all: temp file in the same folder, then an atomic rename."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sentangle.core.version import __version__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes 0600)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """`write(tmp)` fills a temp file beside `path`, which then replaces `path` in one rename, after
    its bytes reached the disk: a crash leaves the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, w)


def _jsonable(o: Any):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json(path: str | Path, data: Any) -> Path:
    # NaN is written as null: strict JSON readers (jq, browsers) reject the bare NaN token.
    return write_text(path, json.dumps(_nan_to_none(data), indent=2, default=_jsonable) + "\n")


def _nan_to_none(o: Any):
    if isinstance(o, float) and o != o:
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def versions() -> dict[str, str]:
    import torch

    # str(): torch.__version__ is a str subclass that weights-only checkpoint loading refuses.
    out = {
        "sentangle": __version__,
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "platform": platform.platform(),
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """For worker processes (a pool initializer): end this process soon after process `parent` is
    gone, so that killing a job that trains in workers does not leave them training on unseen."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
