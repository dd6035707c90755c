"""runs/record.py: a run folder packed into one record and unpacked again loses nothing a resume
or a reader needs, and a resume from an unpacked folder trains only the seeds the record lacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import sentangle.runs.runner as runner
from sentangle.config import make_config
from sentangle.core.errors import DataError
from sentangle.runs.record import (
    STAMP,
    load_record,
    pack,
    read_record,
    record_path,
    save_record,
    seed_entries,
    unpack,
)

TINY = [
    "dataset.scale=0.05",
    "dataset.lengths={text: 6, audio: 8, vision: 8}",
    "dataset.dims={text: 8, audio: 4, vision: 4}",
    "train.epochs=2",
    "train.threads=1",
    "train.progress=false",
]


def config(out: Path, seeds: int):
    return make_config("lf_dnn", "synthetic", seeds=seeds, out=str(out), name="r", overrides=TINY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real two-seed run folder, with the optional files a run folder can hold."""
    out = tmp_path_factory.mktemp("trained")
    runner.run(config(out, 2))
    folder = out / "r"
    (folder / "seed_1111" / "diagnostics.json").write_text(json.dumps({"share": [0.25, 0.75]}))
    (folder / "replays.json").write_text(json.dumps([{"seed": "seed_1112", "identical": True}]))
    (folder / "confusion.csv").write_text("true \\ predicted,a,b\na,3,1\nb,0,4\n")  # a classification run's
    return folder


def copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to / folder.name)
    return to / folder.name


def test_pack_keeps_every_file_but_the_history(trained):
    record = pack(trained)
    assert record["config"]["model"]["name"] == "lf_dnn"
    assert record["summary"] == json.loads((trained / "summary.json").read_text())
    assert record["summary_md"] == (trained / "summary.md").read_text()
    assert record["replays"] == [{"seed": "seed_1112", "identical": True}] and "robust" not in record
    assert record["confusion"] == (trained / "confusion.csv").read_text()
    entries = seed_entries(record)
    assert sorted(entries) == ["seed_1111", "seed_1112"]
    for seed, entry in entries.items():
        on_disk = json.loads((trained / seed / "metrics.json").read_text())
        assert on_disk["history"]  # the folder keeps it ...
        del on_disk["history"]
        assert entry["metrics"] == on_disk  # ... the record holds everything else
    assert entries["seed_1111"]["diagnostics"] == {"share": [0.25, 0.75]}
    assert "diagnostics" not in entries["seed_1112"]
    # both seeds ran the same code: its hashes are recorded once
    assert len(record["code_versions"]) == 1
    assert all("code" not in e["metrics"] for e in record["seeds"].values())


def test_pack_unpack_pack_is_identity(trained, tmp_path):
    record = pack(trained)
    unpack(json.loads(json.dumps(record)), tmp_path / "again")
    assert pack(tmp_path / "again") == record
    assert not list((tmp_path / "again").glob("seed_*/predictions.npz"))
    # and through the file git tracks
    save_record(trained)
    assert read_record(record_path(trained)) == record


def test_resume_from_an_unpacked_folder_trains_only_new_seeds(tmp_path, monkeypatch):
    runner.run(config(tmp_path, 2))
    folder = tmp_path / "r"
    before = {s: json.loads((folder / f"seed_{s}" / "metrics.json").read_text())["metrics"] for s in (1111, 1112)}
    record = pack(folder)
    shutil.rmtree(folder)  # as on a fresh clone: the record alone
    unpack(record, folder)
    calls = []
    fit = runner.fit
    monkeypatch.setattr(
        runner, "fit", lambda model, ds, train, seed, **kw: calls.append(seed) or fit(model, ds, train, seed, **kw)
    )
    again = runner.run(config(tmp_path, 2))
    assert calls == []
    assert again["per_seed"] == before
    runner.run(config(tmp_path, 3))
    assert calls == [1113]


def test_the_record_wins_where_it_changed(trained, tmp_path):
    folder = copy(trained, tmp_path)
    save_record(folder)
    (folder / "seed_1111" / "checkpoint.pt").write_bytes(b"old weights")
    (folder / "seed_1112" / "checkpoint.pt").write_bytes(b"kept weights")
    # untouched record: the folder's own later changes stand
    (folder / "seed_1112" / "metrics.json").unlink()
    assert load_record(folder) is None and not (folder / "seed_1112" / "metrics.json").exists()
    # a record changed from outside (seed_1111 trained again elsewhere, seed_1112 back)
    record = pack(trained)
    record["seeds"]["seed_1111"]["metrics"]["best_epoch"] = 99
    path = record_path(folder)
    path.write_text(json.dumps(record))
    assert load_record(folder) == ["seed_1111", "seed_1112"]
    assert json.loads((folder / "seed_1111" / "metrics.json").read_text())["best_epoch"] == 99
    assert not (folder / "seed_1111" / "checkpoint.pt").exists()  # it belonged to the other training
    assert load_record(folder) is None  # now in step
    # a seed whose metrics equal the record's keeps its checkpoint and history
    path.write_text(json.dumps(pack(trained)))
    (folder / STAMP).unlink()
    shutil.copy(trained / "seed_1111" / "metrics.json", folder / "seed_1111" / "metrics.json")
    (folder / "seed_1111" / "checkpoint.pt").write_bytes(b"weights")
    assert load_record(folder) is None
    assert (folder / "seed_1111" / "checkpoint.pt").read_bytes() == b"weights"
    assert "history" in json.loads((folder / "seed_1111" / "metrics.json").read_text())


def test_bad_records_and_folders_are_named(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"format": 99}))
    with pytest.raises(DataError, match=r"r\.json: not a run record"):
        read_record(bad)
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"r\.json: not valid JSON"):
        read_record(bad)
    with pytest.raises(DataError, match="not a run folder"):
        pack(tmp_path)
