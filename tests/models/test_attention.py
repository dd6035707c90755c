"""The one attention path (layers.attend, kernels.attention_cpu) against plain computations:
outputs and gradients, with masks and with dropout."""

from __future__ import annotations

import math
import multiprocessing

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sentangle.core.registry import MODELS
from sentangle.models.kernels import attention_cpu, attention_cpu_backward, unpack_keep
from sentangle.models.layers import (
    EncoderLayer,
    MultiheadAttention,
    attend,
    attention_mask,
    keep_mask,
    real_length,
)
from sentangle.models.mult import AttentionStack, MulTLayer, fairseq_positions


def plain_attention(q, k, v, allowed, keep=None, p=0.0):
    """softmax(q k^T / sqrt(d)) over allowed keys, weights dropped where keep is False, times v."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    w = s.masked_fill(~allowed, float("-inf")).softmax(-1)
    if keep is not None:
        w = w * keep / (1 - p)
    return w @ v


def key_mask(b, t):
    m = torch.ones(b, t, dtype=torch.bool)
    m[1, t // 2 :] = False  # a shorter sample
    m[2, 1:3] = False  # frames lost inside a sequence
    m[3] = False  # nothing real
    return m


def grads(out, *inputs):
    return torch.autograd.grad(out.pow(2).sum(), inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # the CPU kernel; torch's fused kernel
@pytest.mark.parametrize("future", [False, True])
def test_attention_equals_plain_attention_in_outputs_and_gradients(future, dtype):
    torch.manual_seed(0)
    b, h, tq, tk, d = 4, 3, 7, 37, 5  # 37 keys: Philox groups and packed words with a remainder
    q, k, v = (torch.randn(b, h, t, d, dtype=dtype, requires_grad=True) for t in (tq, tk, tk))
    qm, km = key_mask(b, tq), key_mask(b, tk)
    mask = attention_mask(km, qm, future)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # float64: the masks keep torch's fused kernel usable
        fused = attend(q, k, v, mask)
    plain = plain_attention(q, k, v, mask)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads(fused, q, k, v), grads(plain, q, k, v)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(fused).all()  # the sample without a real key attends to its first frame


def test_cpu_kernel_takes_per_head_masks_and_rows_that_see_nothing():
    """A (B, heads, T_q, T_k) mask (TSDA's factorised one), broadcast forms, and a row with no key
    (the kernel's zeros, with no gradient; attention_mask never gives one)."""
    torch.manual_seed(1)
    b, h, tq, tk, d = 2, 3, 5, 9, 4
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for t in (tq, tk, tk))
    mask = torch.rand(b, h, tq, tk) < 0.6
    mask[..., 0] = True
    mask[1, 2, 3] = False
    out, lse, keep = attention_cpu(q, k, v, mask, 0.0, 0)
    assert keep.numel() == 0 and lse.shape == (b, h, tq)
    seen = mask.any(-1, keepdim=True)
    plain = plain_attention(q, k, v, mask | ~seen) * seen  # the blind row: zeros, no gradient
    assert (out[1, 2, 3] == 0).all()
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads(out, q, k, v), grads(plain, q, k, v)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    for shape in [(tk,), (tq, tk), (1, 1, 1, tk)]:  # broadcast over batch, heads and queries
        m = torch.rand(shape) < 0.7
        m[..., 0] = True
        torch.testing.assert_close(
            attention_cpu(q, k, v, m, 0.0, 0)[0], plain_attention(q, k, v, m), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("future", [False, True])
def test_dropout_attention_equals_plain_attention_with_the_same_mask(future):
    torch.manual_seed(0)
    b, h, tq, tk, d, p = 4, 2, 6, 45, 3, 0.3
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for t in (tq, tk, tk))
    mask = attention_mask(key_mask(b, tk), key_mask(b, tq), future)
    out, _, packed = attention_cpu(q, k, v, mask, p, 12345)
    keep = unpack_keep(packed, tk)  # the decisions the forward pass drew, for the keys it read
    allowed = keep | ~mask  # keys a row never reads (past its last allowed one) have no decision
    assert 0.5 < keep[mask.expand_as(keep)].float().mean() < 0.9
    plain = plain_attention(q, k, v, mask, allowed, p)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads(out, q, k, v), grads(plain, q, k, v)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    # one seed, one mask: the same seed draws it again, another draws another
    torch.testing.assert_close(attention_cpu(q, k, v, mask, p, 12345)[0], out)
    assert not torch.equal(attention_cpu(q, k, v, mask, p, 54321)[0], out)
    # attend draws its seed from torch's generator: manual_seed repeats a run
    torch.manual_seed(7)
    first = attend(q, k, v, mask, p, training=True)
    torch.manual_seed(7)
    torch.testing.assert_close(attend(q, k, v, mask, p, training=True), first)
    # evaluation, or p = 0, is no dropout at all
    torch.testing.assert_close(attend(q, k, v, mask, p, training=False), plain_attention(q, k, v, mask))


def test_dropout_keeps_each_weight_independently_with_the_asked_rate():
    b, h, tq, tk = 4, 5, 50, 400
    q, k = torch.zeros(b, h, tq, 2), torch.zeros(b, h, tk, 2)
    for p in (0.1, 0.3, 0.5):
        keep = unpack_keep(attention_cpu(q, k, k, None, p, 99)[2], tk).double()
        n = keep.numel()
        assert abs(keep.mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
        # neighbours along keys (one Philox call's words sit a quarter row apart), across rows and heads
        for a, c in [(keep[..., :-1], keep[..., 1:]), (keep[:, :, :-1], keep[:, :, 1:]), (keep[:, :-1], keep[:, 1:])]:
            corr = torch.corrcoef(torch.stack([a.flatten(), c.flatten()]))[0, 1].item()
            assert abs(corr) < 5 / math.sqrt(a.numel())
        quarter = keep[..., : tk // 4], keep[..., tk // 4 : tk // 2]
        corr = torch.corrcoef(torch.stack([quarter[0].flatten(), quarter[1].flatten()]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(quarter[0].numel())
    assert attention_cpu(q, k, k, None, 0.0, 99)[2].numel() == 0  # p = 0: nothing drawn, nothing dropped


@pytest.mark.parametrize("dtype, d", [(torch.float64, 3), (torch.float32, 16)])
def test_materialised_dropout_attention_equals_plain_attention_with_the_same_mask(dtype, d):
    """Wide heads and float64 keep torch's kernels, with attention dropout through _DropoutAttention."""
    torch.manual_seed(0)
    b, h, tq, tk, p = 4, 2, 6, 8, 0.3
    q, k, v = (torch.randn(b, h, t, d, dtype=dtype, requires_grad=True) for t in (tq, tk, tk))
    mask = attention_mask(key_mask(b, tk))
    torch.manual_seed(7)
    ours = attend(q, k, v, mask, dropout=p, training=True)
    torch.manual_seed(7)  # the same draws: the mask attend used
    keep = keep_mask((b, h, tq, tk), p)
    assert 0 < keep.float().mean() < 1
    plain = plain_attention(q, k, v, mask, keep, p)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(ours, plain, **tol)
    for g, r in zip(grads(ours, q, k, v), grads(plain, q, k, v)):
        torch.testing.assert_close(g, r, **tol)
    torch.testing.assert_close(attend(q, k, v, mask, p, training=False), plain_attention(q, k, v, mask), **tol)


def test_keep_mask_is_bernoulli_with_the_asked_rate():
    torch.manual_seed(0)
    n = 400_000
    for p in (0.1, 0.3, 0.5):
        keep = keep_mask((n,), p).double()
        assert abs(keep.mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
        # neighbours (the two halves of one 64-bit draw, and successive draws) are uncorrelated
        corr = torch.corrcoef(torch.stack([keep[:-1], keep[1:]]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(n)
    assert keep_mask((1000,), 0.0).all() and not keep_mask((1000,), 1.0).any()


def test_attention_dropout_is_unbiased():
    """Averaged over many draws, dropped-and-rescaled weights give the output without dropout."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, t, 4) for t in (3, 5, 5))
    mask = attention_mask(torch.ones(1, 5, dtype=torch.bool))
    draws = torch.stack([attend(q, k, v, mask, 0.3, training=True) for _ in range(4000)]).double()
    exact = attend(q, k, v, mask).double()
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 5 * se + 1e-6).all()


def _kernel_in_child(args):
    q, k, v, mask = args
    return attention_cpu(q, k, v, mask, 0.2, 3)[0]


def test_cpu_kernel_survives_a_fork_after_it_ran():
    """DataLoader workers and `results --workers` fork after training began: the kernels' threads
    must not make that fatal (numba's OpenMP layer terminates a forking process)."""
    q, k, v = (torch.randn(2, 3, t, 4) for t in (6, 70, 70))
    mask = attention_mask(key_mask(4, 70)[:2])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two slices, one in a pool thread
    try:
        here = attention_cpu(q, k, v, mask, 0.2, 3)[0]
    finally:
        torch.set_num_threads(threads)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        there = pool.map(_kernel_in_child, [(q, k, v, mask)])[0]
    torch.testing.assert_close(there, here, rtol=0, atol=0)


def test_cpu_kernel_is_a_well_formed_torch_op():
    """torch's own checks of a custom op: schema, fake (meta) outputs with the real strides, autograd
    registration, tracing (torch.compile's path)."""
    q, k, v = (torch.randn(2, 3, t, 4, requires_grad=True) for t in (5, 9, 9))
    mask = attention_mask(key_mask(4, 9)[:2])
    for p in (0.0, 0.3):
        torch.library.opcheck(attention_cpu, (q, k, v, mask, p, 11))
    q, k, v = (x.detach() for x in (q, k, v))  # the backward op has no backward of its own
    out, lse, keep = attention_cpu(q, k, v, mask, 0.3, 11)
    torch.library.opcheck(attention_cpu_backward, (torch.randn_like(out), q, k, v, mask, out, lse, keep, 0.3))


def test_flop_counter_counts_the_cpu_kernel():
    """Forward: the two matrix products of plain attention; backward: theirs recomputed and propagated."""
    q, k, v = (torch.randn(2, 3, t, 4, requires_grad=True) for t in (5, 7, 7))
    with FlopCounterMode(display=False) as counter:
        out = attention_cpu(q, k, v, None, 0.0, 0)[0]
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        plain_attention(q, k, v, torch.ones(7, dtype=torch.bool))
    assert forward == counter.get_total_flops() == 2 * (2 * 2 * 3 * 5 * 7 * 4)
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == 5 * 2 * 2 * 3 * 5 * 7 * 4  # scores again, dP, dV, dQ, dK


def test_attention_mask_broadcasts_and_the_future_mask_is_per_sample():
    km = key_mask(4, 9)
    assert attention_mask(km).shape == (4, 1, 1, 9)  # nothing per head or per query
    qm = torch.ones(4, 6, dtype=torch.bool)
    qm[0, 4:] = False
    mask = attention_mask(km, qm, future=True)
    assert mask.shape == (4, 1, 6, 9)
    lk, lq = real_length(km), real_length(qm)
    assert lk.tolist() == [9, 4, 9, 0] and lq.tolist() == [4, 6, 6, 6]
    for bi in range(3):
        off = abs(int(lk[bi]) - int(lq[bi]))
        for i in range(6):
            expected = [bool(km[bi, j]) and j <= i + off for j in range(9)]
            assert mask[bi, 0, i].tolist() == expected
    assert mask[3, 0, :, 0].all() and not mask[3, 0, :, 1:].any()  # no real key: the first one
    with pytest.raises(ValueError, match="query mask"):
        attention_mask(km, future=True)


def test_multihead_attention_equals_torch_module_with_its_state_dict():
    torch.manual_seed(0)
    dim, heads = 12, 3
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    ours = MultiheadAttention(dim, heads)
    ours.load_state_dict(ref.state_dict())  # the same names and shapes
    q, kv = torch.randn(4, 5, dim, requires_grad=True), torch.randn(4, 7, dim, requires_grad=True)
    km = key_mask(4, 7)
    km[3, 0] = True  # torch's module has no guard for a sample without keys
    expected, _ = ref(q, kv, kv, key_padding_mask=~km, need_weights=False)
    got = ours(q, kv, kv, attention_mask(km))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads(got, q, kv), grads(expected, q, kv)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    # self-attention (one tensor) and separate keys and values take the other projection paths
    torch.testing.assert_close(ours(q, q, q), ref(q, q, q, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    v = torch.randn(4, 7, dim)
    torch.testing.assert_close(ours(q, kv, v), ref(q, kv, v, need_weights=False)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_attn_mask", [False, True])
def test_encoder_layer_equals_torch_layer_in_training(with_attn_mask):
    torch.manual_seed(0)
    dim, heads, t = 8, 2, 6
    kwargs = dict(dim_feedforward=16, dropout=0.0, batch_first=True, norm_first=True)
    ref, ours = nn.TransformerEncoderLayer(dim, heads, **kwargs), EncoderLayer(dim, heads, **kwargs)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, t, dim, requires_grad=True)
    pad = torch.zeros(3, t, dtype=torch.bool)
    pad[1, 4:] = True
    attn = None
    if with_attn_mask:  # (B * heads, T, T), True = hidden, as TSDA gives it
        attn = torch.rand(3, t, t) < 0.3
        attn[..., 0] = False
        attn = attn.repeat_interleave(heads, dim=0)
    expected = ref(x, src_mask=attn, src_key_padding_mask=pad)
    got = ours(x, src_mask=attn, src_key_padding_mask=pad)
    real = ~pad
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)
    for g, r in zip(grads(got[real], x), grads(expected[real], x)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def plain_mult_layer(layer: MulTLayer, x, k, v, allowed):
    """MulT's layer written out from its weights: pre-norm attention (queries, keys and values through
    the first LayerNorm), residual, pre-norm ReLU feed-forward, residual."""
    norm0, norm1 = layer.norms
    w, b = layer.attn.in_proj_weight, layer.attn.in_proj_bias
    d, heads = x.shape[-1], layer.attn.heads

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2)

    qh = split(F.linear(norm0(x), w[:d], b[:d]))
    kh = split(F.linear(norm0(k), w[d : 2 * d], b[d : 2 * d]))
    vh = split(F.linear(norm0(v), w[2 * d :], b[2 * d :]))
    a = plain_attention(qh, kh, vh, allowed).transpose(1, 2).reshape(x.shape)
    x = x + layer.attn.out_proj(a)
    return x + layer.fc2(torch.relu(layer.fc1(norm1(x))))


def test_mult_layer_equals_the_plain_computation():
    torch.manual_seed(0)
    layer = MulTLayer(10, 2, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0)
    assert layer.fc1.out_features == 40  # feed-forward 4x, as MulT
    x, k, v = (torch.randn(4, t, 10, requires_grad=True) for t in (5, 8, 8))
    mask = attention_mask(key_mask(4, 8), torch.ones(4, 5, dtype=torch.bool), future=True)
    got = layer(x, mask, k, v)
    expected = plain_mult_layer(layer, x, k, v, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads(got, x, k, v), grads(expected, x, k, v)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_mult_stack_scales_adds_positions_and_normalises():
    torch.manual_seed(0)
    stack = AttentionStack(6, 2, layers=1, attn_dropout=0.0, future_mask=False).eval()
    q, kv = torch.randn(2, 4, 6), torch.randn(2, 5, 6)
    qm, km = torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    embed_q = q * math.sqrt(6) + fairseq_positions(qm, 6)
    embed_kv = kv * math.sqrt(6) + fairseq_positions(km, 6)
    x = plain_mult_layer(stack.layers[0], embed_q, embed_kv, embed_kv, attention_mask(km))
    torch.testing.assert_close(stack(q, qm, kv, km), stack.norm(x), rtol=1e-5, atol=1e-5)


def test_fairseq_positions_are_sines_then_cosines_from_position_one():
    mask = torch.tensor([[True, True, True, False]])
    pos = fairseq_positions(mask, 7)  # odd width: a zero column last
    half = 3
    freq = [math.exp(-i * math.log(10000) / (half - 1)) for i in range(half)]
    for t in range(3):
        expected = [math.sin((t + 1) * f) for f in freq] + [math.cos((t + 1) * f) for f in freq] + [0.0]
        torch.testing.assert_close(pos[0, t], torch.tensor(expected))
    assert (pos[0, 3] == 0).all()  # padding sits at position 0, whose row is zeros


def test_mult_default_is_mmsa_mosi_architecture():
    """2,571,551 parameters at MOSI's unaligned shapes, the count of MMSA's MULT with its MOSI config."""
    model = MODELS.get("mult")({"text": 768, "audio": 5, "vision": 20})
    assert sum(p.numel() for p in model.parameters()) == 2_571_551
    assert all(len(s.layers) == 4 for s in model.crossmodal.values())
    assert all(len(s.layers) == 4 for s in model.memory.values())  # max(nlevels 4, 3)
    assert model.max_len == {"text": 0, "audio": 0, "vision": 0} and not model.windows_padding
