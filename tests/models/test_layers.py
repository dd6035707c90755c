import math

import numpy as np
import pytest
import torch

from sentangle.models.layers import (
    MLP,
    FactorizedBilinearPooling,
    PositionalEncoding,
    SequenceEncoder,
    key_padding_mask,
    masked_mean,
)


def test_masked_mean_matches_numpy_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    mask = rng.random((4, 6)) > 0.4
    mask[3] = False  # a sample with no real frame gives zeros, not NaN
    got = masked_mean(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
    for i in range(4):
        want = x[i][mask[i]].mean(0) if mask[i].any() else np.zeros(3)
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-6)


def test_key_padding_mask_never_hides_a_whole_row():
    mask = torch.tensor([[True, False], [False, False]])
    pad = key_padding_mask(mask)
    assert pad.tolist() == [[False, True], [False, True]]
    assert mask.tolist() == [[True, False], [False, False]]  # input untouched


def test_positional_encoding_values():
    pe = PositionalEncoding(4, max_len=10)
    x = torch.zeros(1, 3, 4)
    out = pe(x)[0]
    for pos in range(3):
        for i in range(2):
            angle = pos / (10000 ** (2 * i / 4))
            assert out[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert out[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    with pytest.raises(ValueError, match="longer than"):
        pe(torch.zeros(1, 11, 4))


def test_sequence_encoder_ignores_padding_content():
    torch.manual_seed(0)
    enc = SequenceEncoder(5, dim=8, layers=2, heads=2, dropout=0.0).eval()
    x = torch.randn(2, 6, 5)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    y1 = enc(x, mask)
    x2 = x.clone()
    x2[0, 4:] = 100.0  # garbage in padded frames
    y2 = enc(x2, mask)
    torch.testing.assert_close(y1, y2)
    assert torch.all(y1[0, 4:] == 0)
    # an all-padding sample stays finite
    y3 = enc(x, torch.zeros(2, 6, dtype=torch.bool))
    assert torch.isfinite(y3).all()


def test_sequence_encoder_sees_order_only_with_positions():
    torch.manual_seed(0)
    x = torch.randn(1, 5, 3)
    mask = torch.ones(1, 5, dtype=torch.bool)
    perm = torch.tensor([4, 3, 2, 1, 0])
    for positional, order_matters in ((True, True), (False, False)):
        enc = SequenceEncoder(3, dim=8, layers=1, heads=2, dropout=0.0, positional=positional).eval()
        pooled = lambda z: masked_mean(enc(z, mask), mask)
        same = torch.allclose(pooled(x), pooled(x[:, perm]), atol=1e-5)
        assert same != order_matters


def test_sequence_encoder_final_norm_normalises_each_real_frame():
    torch.manual_seed(0)
    enc = SequenceEncoder(3, dim=8, layers=2, heads=2, dropout=0.0, final_norm=True).eval()
    x = 50 * torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    y = enc(x, mask)
    # Reference: the same layers by hand, then a numpy LayerNorm with the norm's (initial) affine.
    h = enc.pos(enc.proj(x))
    for layer in enc.encoder.layers:
        h = layer(h, src_key_padding_mask=key_padding_mask(mask))
    h = h.detach().numpy()
    want = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * mask.numpy()[..., None]
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    assert any(n.startswith("encoder.norm.") for n, _ in enc.named_parameters())
    assert not any(n.startswith("encoder.norm.") for n, _ in SequenceEncoder(3, 8, 2, 2).named_parameters())


def test_mlp_shapes_and_layers():
    mlp = MLP([4, 8, 2], dropout=0.5)
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert mlp(torch.zeros(3, 4)).shape == (3, 2)


def test_masked_downsample_against_loop():
    from sentangle.models.layers import masked_downsample

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 10, 3)).astype(np.float32)
    mask = np.zeros((2, 10), bool)
    mask[0, :7] = True
    mask[1, [0, 1, 5]] = True
    y, m = masked_downsample(torch.from_numpy(x), torch.from_numpy(mask), max_len=4)  # stride 3
    assert y.shape == (2, 4, 3)
    for b in range(2):
        for j in range(4):
            idx = [i for i in range(3 * j, min(3 * j + 3, 10)) if mask[b, i]]
            assert m[b, j].item() == bool(idx)
            want = x[b, idx].mean(0) if idx else np.zeros(3)
            np.testing.assert_allclose(y[b, j].numpy(), want, rtol=1e-6, atol=1e-6)
    same, same_m = masked_downsample(torch.from_numpy(x), torch.from_numpy(mask), max_len=10)
    assert same.shape == (2, 10, 3) and torch.equal(same_m, torch.from_numpy(mask))


@pytest.mark.parametrize("signed_sqrt", [True, False])
def test_factorized_bilinear_pooling_against_numpy(signed_sqrt):
    """Sum over each group of k consecutive products of the two factors, then (MFB's) signed square
    root, then L2 normalisation; the plain form skips the root."""
    torch.manual_seed(0)
    fbp = FactorizedBilinearPooling(4, 3, out=5, k=2, dropout=0.0, eps=0.0, signed_sqrt=signed_sqrt)
    x, y = torch.randn(6, 4), torch.randn(6, 3)
    u = x.numpy() @ fbp.u.weight.detach().numpy().T + fbp.u.bias.detach().numpy()
    v = y.numpy() @ fbp.v.weight.detach().numpy().T + fbp.v.bias.detach().numpy()
    z = (u * v).reshape(6, 5, 2).sum(-1)
    if signed_sqrt:
        z = np.sign(z) * np.sqrt(np.abs(z))
    want = z / np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose(fbp(x, y).detach().numpy(), want, rtol=1e-5, atol=1e-6)


def test_factorized_bilinear_pooling_without_bias():
    torch.manual_seed(0)
    fbp = FactorizedBilinearPooling(4, 3, out=5, k=2, bias=False).eval()
    assert fbp.u.bias is None and fbp.v.bias is None
    assert sum(p.numel() for p in fbp.parameters()) == (4 + 3) * 10
    # without bias the pooled code is bilinear: scaling one input only rescales it before the
    # normalisation; with bias it changes its direction
    x, y = torch.randn(2, 4), torch.randn(2, 3)
    torch.testing.assert_close(fbp(3.0 * x, y), fbp(x, y))
    biased = FactorizedBilinearPooling(4, 3, out=5, k=2).eval()
    assert not torch.allclose(biased(3.0 * x, y), biased(x, y))
