"""core/io.atomic_write: whole files with ordinary permissions, and nothing half-written."""

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentangle.core.io import atomic_write, write_text


def test_written_files_get_the_permissions_of_open(tmp_path):
    path = write_text(tmp_path / "a.json", "{}")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under the same umask (a temp file alone would be 0600)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert path.read_text() == "{}"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_text(tmp_path / "m.json", "old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_worker_ends_soon_after_its_parent_is_killed():
    grandchild = (
        "import os, time; from sentangle.core.io import exit_with_parent; "
        "exit_with_parent(os.getppid(), every=0.05); print('ready', flush=True); time.sleep(120)"
    )
    child = (
        "import subprocess, sys, time; "
        f"g = subprocess.Popen([sys.executable, '-c', {grandchild!r}]); print(g.pid, flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(pid):
            assert time.monotonic() < deadline, "the worker outlived its parent"
            time.sleep(0.05)
    finally:
        proc.kill()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is missing
