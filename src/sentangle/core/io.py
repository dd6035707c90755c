"""Files are written whole or not at all: temp file in the same folder, then an atomic rename."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sentangle.core.errors import OutputError
from sentangle.core.version import __version__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes 0600)


def _reason(e: OSError) -> str:
    # "no space left on device", "permission denied", ... (strerror, in the style of the messages)
    text = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
    return text[:1].lower() + text[1:]


@contextlib.contextmanager
def output_errors(path: str | os.PathLike, what: str = "output"):
    """Turn an OSError while writing `path` (a full disk, a read-only folder ...) into one
    OutputError naming the path and the reason."""
    try:
        yield
    except OSError as e:
        if isinstance(e, OutputError) or e.errno is None:  # ours (FileExistsError "pass --overwrite" ...)
            raise
        raise OutputError(f"cannot write {what} {path}: {_reason(e)}") from None


def _missing(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, innermost first (what writing it creates)."""
    out = []
    while not os.path.lexists(path) and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _first_existing(path: Path) -> Path:
    missing = _missing(path)
    return missing[-1].parent if missing else path


def check_output(path: str | os.PathLike, kind: str = "file") -> Path:
    """Refuse, before any work, an output path that cannot be written as a `kind` ("file" or
    "folder"): a symlink or device given as the output (writes never follow or replace those), a
    folder where a file is expected or the reverse, a parent that is a file, a folder we may not write."""
    path = Path(path)
    # A link to a folder given as an output folder is written into (runs/ -> /scratch/runs is
    # common) and never replaced; any other link given as output is refused.
    if path.is_symlink() and not (kind == "folder" and path.is_dir()):
        raise OutputError(
            f"output {path} is a symbolic link; expected a path to a new or regular {kind} (links are not followed)"
        )
    if path.exists():
        if kind == "file" and path.is_dir():
            raise OutputError(f"output {path} is a directory; expected a file path")
        if kind == "folder" and path.is_file():
            raise OutputError(f"output {path} is a file; expected a folder")
        if not (path.is_file() or path.is_dir()):
            raise OutputError(f"output {path} is a device or special file; expected a regular {kind}")
    base = _first_existing(path.parent)
    if not base.is_dir():
        raise OutputError(f"cannot write output {path}: {base} is not a folder (expected a folder there)")
    # (root passes os.access everywhere; the write itself is then checked by output_errors)
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write output {path}: folder {base} is not writable (permission denied)")
    return path


@contextlib.contextmanager
def new_output(folder: str | os.PathLike, keep: Callable[[], bool] = lambda: False):
    """Check `folder` as an output folder; if the block then fails to write (OutputError), remove
    the folders it created, unless `keep()` says that what was written is worth keeping."""
    folder = check_output(folder, "folder")
    missing = _missing(folder)
    top = missing[-1] if missing else None  # the outermost folder this block creates
    try:
        yield folder
    except OutputError:
        if top is not None and not keep():
            shutil.rmtree(top, ignore_errors=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """`write(tmp)` fills a temp file beside `path`, which then replaces `path` in one rename, after
    its bytes reached the disk: a crash leaves the old file or the new one, never a torn one.
    Any OSError (a full disk, a read-only folder) becomes an OutputError naming `path`, and leaves
    neither the temp file nor the folders this call created."""
    path = Path(path)
    check_output(path)
    new_dirs = _missing(path.parent)
    tmp = None
    try:
        with output_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            write(tmp)
            os.chmod(tmp, _MODE)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if path.is_symlink():  # appeared since the check: never replace a link
                raise OutputError(f"output {path} is a symbolic link; expected a path to a new or regular file")
            os.replace(tmp, path)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        for d in new_dirs:  # innermost first; a folder something else wrote into stays
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return path


def check_new_folder(
    path: str | os.PathLike, what: str = "folder", replaces: Callable[[Path], bool] | None = None
) -> Path:
    """Refuse an output folder that exists already or is a link (also to a folder), or cannot be
    written. `replaces`: an existing folder it accepts may be replaced (overwrite), nothing else."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"output {path} is a symbolic link; expected a path to a new {what} (links are not followed)")
    if path.exists():
        if replaces is None:
            raise OutputError(f"output {path} already exists; expected a path to a new {what} (or pass --overwrite)")
        if not (path.is_dir() and replaces(path)):
            raise OutputError(f"output {path} exists and is not a {what}; not replaced")
    return check_output(path, "folder")


def atomic_folder(
    path: str | os.PathLike,
    fill: Callable[[Path], None],
    what: str = "folder",
    replaces: Callable[[Path], bool] | None = None,
) -> Path:
    """`fill(tmp)` writes a new folder beside `path`, which is then renamed to `path`: nothing
    appears there unless all of it was written. `path` must be new, or an existing folder that
    `replaces` accepts, which is swapped out only once the new one is whole (check_new_folder): an
    OutputError says so, as it does for any OSError on the way."""
    path = check_new_folder(path, what, replaces)
    new_dirs = _missing(path.parent)
    tmp = None
    try:
        with output_errors(path, what):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.chmod(tmp, 0o777 & ~_umask())
            fill(tmp)
            if replaces is not None and path.is_dir() and not path.is_symlink() and replaces(path):
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            elif os.path.lexists(path):  # appeared meanwhile: never replace what someone else wrote
                raise OutputError(f"output {path} already exists; expected a path to a new {what}")
            else:
                os.rename(tmp, path)
    except BaseException:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        for d in new_dirs:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
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


def write_json(path: str | os.PathLike, data: Any) -> Path:
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
