import numpy as np
import pytest
import torch

from sentangle.core.errors import DataError
from sentangle.data import MSADataset, Split, collate, full_masks
from sentangle.data import dataset as dataset_module
from sentangle.data.dataset import feature_stats


def make_split(n=6, t=5, d=3, seed=0, lengths=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, d)).astype(np.float32)
    lengths = np.full(n, t) if lengths is None else np.asarray(lengths)
    m = full_masks(x, lengths)
    x[~m] = 0
    return Split(
        features={"audio": x},
        masks={"audio": m},
        labels=rng.uniform(-3, 3, n).astype(np.float32),
        ids=[f"s{seed}_{i}" for i in range(n)],
    )


def make_ds(**splits):
    splits = splits or {"train": make_split(seed=0), "valid": make_split(seed=1), "test": make_split(seed=2)}
    return MSADataset("toy", splits, source="toy.pkl")


def test_full_masks():
    x = np.zeros((3, 4, 2))
    assert full_masks(x).all()
    np.testing.assert_array_equal(full_masks(x, [0, 2, 9]), [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])


def test_validate_names_file_split_and_expectation():
    ds = make_ds()
    ds.splits["valid"].features["audio"][1, 2, 0] = np.nan
    with pytest.raises(DataError, match=r"toy.pkl.*valid\.audio.*NaN/inf.*s1_1"):
        ds.validate()
    ds = make_ds()
    ds.splits["test"].labels[3] = 3.5
    with pytest.raises(DataError, match=r"toy.pkl.*test\.labels.*outside \[-3.0, 3.0\]"):
        ds.validate()
    ds = make_ds()
    ds.splits["train"] = ds.splits["train"].subset(np.arange(0))
    with pytest.raises(DataError, match="'train' is empty"):
        ds.validate()
    ds = make_ds()
    del ds.splits["valid"]
    with pytest.raises(DataError, match="missing split 'valid'"):
        ds.validate()
    ds = make_ds()
    ds.splits["test"].masks["audio"] = ds.splits["test"].masks["audio"][:, :3]
    with pytest.raises(DataError, match="test.audio mask"):
        ds.validate()
    ds = make_ds()
    ds.splits["valid"].features["audio"] = np.zeros((6, 5, 4), np.float32)
    with pytest.raises(DataError, match="feature dims"):
        ds.validate()


def test_classification_labels_checked():
    sp = make_split()
    sp.labels = np.array([0, 1, 2, 1, 0, 3])
    ds = MSADataset(
        "c",
        {"train": sp, "valid": make_split(seed=1)},
        task="classification",
        class_names=["a", "b", "c"],
        label_range=None,
        source="c.tsv",
    )
    with pytest.raises(DataError, match=r"c.tsv.*integer class indices in \[0, 3\)"):
        ds.validate()


def test_collate_trims_padding_and_keeps_order():
    sp = make_split(n=4, t=6, lengths=[2, 3, 1, 2])
    b = collate(sp, np.array([2, 0]))
    assert b.features["audio"].shape == (2, 2, 3)  # longest real sequence in the batch is 2
    assert b.masks["audio"].tolist() == [[True, False], [True, True]]
    assert b.ids == ["s0_2", "s0_0"]
    torch.testing.assert_close(b.labels, torch.from_numpy(sp.labels[[2, 0]]))


def test_batches_cover_split_and_shuffle_is_seeded():
    ds = make_ds()
    ids = lambda g: [i for b in ds.batches("train", 4, shuffle=True, generator=g) for i in b.ids]
    a, b = ids(torch.Generator().manual_seed(1)), ids(torch.Generator().manual_seed(1))
    assert a == b and sorted(a) == sorted(ds.splits["train"].ids)
    assert [i for bt in ds.batches("train", 4) for i in bt.ids] == ds.splits["train"].ids
    with pytest.raises(DataError, match="no split 'dev'"):
        next(ds.batches("dev", 2))


def test_group_by_length_covers_the_split_with_less_padding():
    rng = np.random.default_rng(0)
    n, bs = 500, 8
    train = make_split(n=n, t=40, d=2, lengths=rng.integers(1, 41, n))
    ds = make_ds(train=train, valid=make_split(seed=1), test=make_split(seed=2))
    real = train.masks["audio"].sum(1)

    def epoch(grouped, seed=3):
        g = torch.Generator().manual_seed(seed)
        return list(ds.batches("train", bs, shuffle=True, generator=g, group_by_length=grouped))

    grouped, plain = epoch(True), epoch(False)
    ids = [i for b in grouped for i in b.ids]
    assert sorted(ids) == sorted(train.ids) and len(ids) == n  # every sample once
    assert [b.ids for b in epoch(True)] == [b.ids for b in grouped]  # seeded
    assert [b.ids for b in epoch(True, seed=4)] != [b.ids for b in grouped]
    # padded frames a batch carries (its width times its size) against the real frames
    padded = lambda batches: sum(b.masks["audio"].numel() for b in batches)
    assert padded(plain) > 1.5 * real.sum() and padded(grouped) < 1.1 * real.sum()
    # within a chunk of 50 batches the lengths are sorted: a batch spans a narrow range of lengths
    index = {sid: k for k, sid in enumerate(train.ids)}
    spans = [np.ptp(real[[index[i] for i in b.ids]]) for b in grouped]
    assert np.mean(spans) <= 2
    # the length of a sample is its token count when tokens are given
    from sentangle.data.dataset import lengths

    tok = Split(
        features={},
        masks={},
        labels=np.zeros(3, np.float32),
        ids=["a", "b", "c"],
        tokens={
            "input_ids": np.ones((3, 4), np.int64),
            "attention_mask": np.array([[1, 1, 0, 0], [1] * 4, [1, 0, 0, 0]]),
        },
    )
    assert lengths(tok).tolist() == [2, 4, 1]
    assert lengths(train).tolist() == real.tolist()


def test_normalize_uses_train_statistics_floor_and_clip():
    rng = np.random.default_rng(0)
    n, d = 200, 4

    def split(scale_const):
        x = rng.normal(5.0, 2.0, size=(n, 1, d)).astype(np.float32)
        x[:, 0, 2] = 7.0 + scale_const * rng.normal(size=n)  # constant on train, varies elsewhere
        x[:, 0, 3] = rng.normal(0, 0.02, size=n)  # small but real variance: floored, not dropped
        return Split(
            {"audio": x}, {"audio": np.ones((n, 1), bool)}, np.zeros(n, np.float32), [str(i) for i in range(n)]
        )

    ds = MSADataset("n", {"train": split(0.0), "valid": split(1.0), "test": split(50.0)}, source="n.npz")
    raw_train = ds.splits["train"].features["audio"].copy()
    ds.splits["test"].features["audio"][0, 0, 0] = 1e6  # an outlier must not blow up
    with pytest.warns(UserWarning, match="constant"):
        ds.normalize(("audio",), clip=10.0, drop_tol=1e-2, std_floor=0.05)
    z = ds.splits["train"].features["audio"][:, 0]
    mu, sd = raw_train[:, 0].mean(0), raw_train[:, 0].std(0)
    np.testing.assert_allclose(z[:, 0], (raw_train[:, 0, 0] - mu[0]) / sd[0], rtol=1e-4, atol=1e-5)
    assert np.abs(z[:, 0].mean()) < 1e-5 and abs(z[:, 0].std() - 1) < 1e-4
    rep = ds.info["normalization"]["audio"]
    assert rep["dropped_columns"] == [2]
    for s in ("train", "valid", "test"):
        assert np.all(ds.splits[s].features["audio"][..., 2] == 0)
        assert np.abs(ds.splits[s].features["audio"]).max() <= 10.0
    assert ds.splits["test"].features["audio"][0, 0, 0] == 10.0
    assert rep["clipped_values"]["test"] >= 1
    # column 3 has a tiny real std: it is divided by max(std, 0.05 * median column std)
    floor = 0.05 * np.median(sd)
    assert sd[3] < floor
    np.testing.assert_allclose(z[:, 3], (raw_train[:, 0, 3] - mu[3]) / floor, rtol=1e-4, atol=1e-5)


def test_normalize_ignores_padding_frames():
    sp = make_split(n=50, t=8, lengths=np.random.default_rng(0).integers(1, 9, 50))
    real = sp.features["audio"][sp.masks["audio"]]
    ds = MSADataset("p", {"train": sp, "valid": make_split(seed=1)})
    ds.normalize(("audio",))
    z = ds.splits["train"].features["audio"]
    np.testing.assert_allclose(z[sp.masks["audio"]].mean(0), 0, atol=1e-5)
    assert np.all(z[~sp.masks["audio"]] == 0)
    assert real.shape[0] == sp.masks["audio"].sum()


def test_select_modalities():
    ds = make_ds()
    with pytest.raises(DataError, match="vision"):
        ds.select_modalities(["vision"])


def small_chunks(monkeypatch, rows: int) -> list[slice]:
    """Make every chunked pass over an (N, T, d) array use `rows` rows per chunk; returns the
    slices handed out, so a test can check that several chunks were really merged."""
    real = dataset_module.row_chunks
    seen: list[slice] = []

    def chunks(x, budget=None):
        per_row = int(np.prod(x.shape[1:])) * x.itemsize
        for s in real(x, budget=rows * per_row):
            seen.append(s)
            yield s

    monkeypatch.setattr(dataset_module, "row_chunks", chunks)
    return seen


def drifting_frames(n=40, t=6, d=3, seed=0):
    # Each row has its own offset, so chunk means differ and dropping the merge term shows.
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, t, d)) + np.arange(n)[:, None, None] * np.array([0.5, -2.0, 10.0])).astype(np.float32)
    lengths = rng.integers(0, t + 1, n)
    lengths[3:9] = 0  # a whole chunk without a real frame
    mask = full_masks(x, lengths)
    x[~mask] = 1e3  # padding values, which must not count
    return x, mask


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("rows", [1, 3, 7])
def test_feature_stats_over_several_chunks_matches_one_numpy_pass(monkeypatch, tmp_path, rows, ddof):
    x, mask = drifting_frames()
    real = x[mask].astype(np.float64)
    want_mean, want_std = real.mean(0), real.std(0, ddof=ddof)
    seen = small_chunks(monkeypatch, rows)
    mean, std = feature_stats(x, mask, ddof=ddof)
    assert len(seen) == -(-len(x) // rows) > 1
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(std, want_std, rtol=1e-10)
    # the same through a memory-mapped copy of the file
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    seen.clear()
    mean_m, std_m = feature_stats(mapped, mask, ddof=ddof)
    assert len(seen) > 1
    np.testing.assert_allclose(mean_m, want_mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(std_m, want_std, rtol=1e-10)


def test_normalize_over_several_chunks_standardises_the_real_train_frames(monkeypatch):
    x, mask = drifting_frames(n=60, t=5, d=3, seed=1)
    real = x[mask].astype(np.float64)
    mu, sd = real.mean(0), real.std(0)
    sp = Split({"audio": x.copy()}, {"audio": mask}, np.zeros(len(x), np.float32), [str(i) for i in range(len(x))])
    ds = MSADataset("c", {"train": sp, "valid": make_split(seed=1)})
    seen = small_chunks(monkeypatch, 4)
    ds.normalize(("audio",), clip=1e9)
    assert len(seen) > 2
    z = ds.splits["train"].features["audio"]
    np.testing.assert_allclose(z[mask], (real - mu) / sd, rtol=1e-4, atol=1e-4)
    assert np.all(z[~mask] == 0)


def test_through_last_real_counts_up_to_the_last_real_frame():
    from sentangle.data.dataset import through_last_real

    mask = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    assert through_last_real(mask).tolist() == [2, 4, 0, 4]  # a gap inside counts; none real: 0
