"""utils/io.atomic_write: whole files with ordinary permissions, and nothing half-written."""
import stat

import pytest

from sentangle.utils.io import atomic_write, write_text


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
