"""Memory-mapped feature folders (data/lazy.py): same batches as the in-memory dataset, never loaded whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentangle.cli import main
from sentangle.core.errors import DataError
from sentangle.data.dataset import Split
from sentangle.data.lazy import META, LazyWriter, is_lazy_folder, read_lazy, save_lazy
from sentangle.data.named import load_dataset

SMALL = dict(scale=0.05, lengths={"text": 12, "audio": 30, "vision": 40}, dims={"text": 16, "audio": 5, "vision": 7})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    ds = load_dataset("synthetic", normalize=(), **SMALL)
    # a heavy outlier so that clipping has something to count, and a constant column to drop
    ds.splits["train"].features["audio"][0, 1, 2] = 500.0
    ds.splits["train"].features["vision"][..., 3] = 0.25 * ds.splits["train"].masks["vision"]
    return save_lazy(ds, tmp_path_factory.mktemp("lazy") / "synthetic_lazy"), ds


def eager_twin(ds):
    """The same raw arrays, in memory, through the usual validate + normalise."""
    splits = {
        s: Split({m: np.array(x) for m, x in sp.features.items()}, dict(sp.masks), sp.labels, sp.ids)
        for s, sp in ds.splits.items()
    }
    twin = type(ds)(name=ds.name, splits=splits, task=ds.task, label_range=ds.label_range, source="eager")
    return twin.validate().normalize()


def test_lazy_batches_equal_the_eager_ones_and_features_stay_mapped(folder):
    path, raw = folder
    with pytest.warns(UserWarning, match="clipped"):
        lazy = load_dataset(str(path))
    with pytest.warns(UserWarning, match="clipped"):
        eager = eager_twin(raw)
    for sp in lazy.splits.values():
        for m, x in sp.features.items():
            assert isinstance(x, np.memmap), m  # never read into memory
        assert set(sp.transforms) == {"audio", "vision"}  # normalised per batch, not rewritten
    assert lazy.info["normalization"] == eager.info["normalization"]
    assert lazy.info["normalization"]["vision"]["dropped_columns"] == [3]
    assert lazy.info["normalization"]["audio"]["clipped_values"]["train"] >= 1
    for split in ("train", "valid", "test"):
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        pairs = list(
            zip(
                lazy.batches(split, 7, shuffle=True, generator=g1),
                eager.batches(split, 7, shuffle=True, generator=g2),
                strict=True,
            )
        )
        assert len(pairs) == -(-len(lazy.splits[split]) // 7)
        for a, b in pairs:
            assert a.ids == b.ids
            assert torch.equal(a.labels, b.labels)
            for m in ("text", "audio", "vision"):
                assert a.features[m].dtype == torch.float32
                assert torch.equal(a.masks[m], b.masks[m])
                assert torch.equal(a.features[m], b.features[m]), (split, m)
    # the normalised batch really is normalised, and the file still holds the raw values
    x = next(lazy.batches("train", 64)).features["audio"]
    assert x.abs().max() <= 10.0
    assert float(lazy.splits["train"].features["audio"][0, 1, 2]) == 500.0


def test_folder_round_trips_metadata_and_subsets(folder):
    path, raw = folder
    assert is_lazy_folder(path) and not is_lazy_folder(path.parent)
    ds = read_lazy(path)
    assert ds.input_dims == raw.input_dims and ds.task == raw.task and ds.label_range == raw.label_range
    for s, sp in raw.splits.items():
        assert ds.splits[s].ids == sp.ids
        np.testing.assert_array_equal(ds.splits[s].labels, sp.labels)
        np.testing.assert_array_equal(ds.splits[s].masks["vision"], sp.masks["vision"])
        np.testing.assert_array_equal(ds.splits[s].features["vision"], sp.features["vision"])
    part = ds.splits["valid"].subset(np.array([2, 0]))
    assert part.ids == [raw.splits["valid"].ids[2], raw.splits["valid"].ids[0]]
    np.testing.assert_array_equal(part.features["text"], raw.splits["valid"].features["text"][[2, 0]])


def test_a_model_trains_on_a_lazy_folder(folder):
    from sentangle.config import TrainConfig
    from sentangle.models import create_model
    from sentangle.training.trainer import fit

    with pytest.warns(UserWarning):
        ds = load_dataset(str(folder[0]))
    torch.manual_seed(0)
    model = create_model("lf_dnn", ds.input_dims, ds.output_dim, hidden=16, fusion_hidden=16)
    res = fit(model, ds, TrainConfig(epochs=2, batch_size=16, progress=False), seed=1)
    assert np.isfinite(res.metrics["test"]["mae"])


def test_nothing_is_left_behind_when_writing_fails(tmp_path):
    w = LazyWriter(tmp_path / "out", name="x")
    w.add_split("train", 4, {"audio": (3, 2)})
    part = Split(
        {"audio": np.ones((2, 3, 2), np.float32)}, {"audio": np.ones((2, 3), bool)}, np.zeros(2, np.float32), ["a", "b"]
    )
    w.write("train", 0, part)
    with pytest.raises(DataError, match="2 rows written of 4"):
        w.close()
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="frames x dims"):
        w2 = LazyWriter(tmp_path / "out2", name="x")
        w2.add_split("train", 2, {"audio": (4, 2)})
        w2.write("train", 0, part)


def test_broken_folders_are_named(tmp_path, folder):
    with pytest.raises(DataError, match=META):
        read_lazy(tmp_path)
    (tmp_path / META).write_text('{"format": "other"}')
    with pytest.raises(DataError, match="expected 'sentangle-features-1'"):
        read_lazy(tmp_path)


def test_cli_convert_writes_a_folder_that_loads(tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["data", "convert", "synthetic", str(out), "dataset.scale=0.02", "dataset.lengths=8", "dataset.dims=4"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    ds = load_dataset(str(out))
    assert ds.input_dims == {"text": 4, "audio": 4, "vision": 4}
    assert main(args) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
