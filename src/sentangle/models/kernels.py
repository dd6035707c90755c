"""Compiled CPU kernels (numba) for float32 tensors: scaled dot-product attention, forward and
backward (attention_cpu), and an LSTM layer's inference over each sample's real frames (lstm_cpu).

Why not torch's kernels: MulT's heads are 5 and 10 wide, where torch's fused CPU (flash) kernel runs
its tiles through matrix products with an inner dimension of 5, and it has no dropout, so attention
dropout went through a materialised (B, heads, T_q, T_k) path whose mask drawing alone was a fifth
of a MulT training step. These kernels walk each query row once: scores, softmax, dropout and the
weighted sum in one pass that stays in cache, vectorised over keys, with the row's log-sum-exp kept
for the backward pass, which recomputes the weights instead of storing them (as flash attention
does). Keys past a row's last allowed one are never read.

Dropout draws its bits from Philox-4x32-10 (the counter-based generator of torch's CUDA dropout)
keyed by one seed per call from torch's generator, so `torch.manual_seed` makes runs repeatable,
whatever the number of threads. Each weight is dropped with probability p resolved to 2^-32
(torch.rand's float32 draws resolve 2^-24) and the kept ones are scaled by 1 / (1 - p): attention
dropout as torch defines it, in distribution. The decisions are kept as bits for the backward pass.

Masks are booleans (True = may attend) broadcastable to (B, heads, T_q, T_k); a row that may see
no key gives zeros and no gradient. The batch x head rows are split over torch.get_num_threads()
threads (see _run).

The LSTM kernel is for inference only (layers.RealFrameLSTM calls it where no gradient is wanted):
torch's oneDNN LSTM spent about 90 us per step of a batch at MISA's hidden sizes of 5 and 20, so
MISA's prediction was four-fifths LSTM. lstm_cpu runs one sample at a time over its real frames
only, both directions, the samples split over the same threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit
from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # Philox-4x32 multipliers
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)  # and key increments (Salmon et al. 2011)
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_LOG2E = np.float32(1.4426950408889634)
_TWO32 = np.float32(4294967296.0)
_ONE, _TWO = np.float32(1.0), np.float32(2.0)
_EXP2_MAX = np.float32(125.0)


@njit(inline="always")
def _random_row(bits, n, row, head, k0, k1):
    """bits[:n] <- 32 random bits per key of one query row. With G = ceil(n / 4), Philox's counter
    (g, row, batch x head, 0) gives the bits of keys g, G + g, 2G + g and 3G + g: its four words go
    to the four quarters of bits[:4G], so the loop over g, all ten rounds in registers, vectorises."""
    m = (n + 3) // 4
    for g in range(m):
        c0, c1, c2, c3 = np.uint32(g), np.uint32(row), np.uint32(head), np.uint32(0)
        a0, a1 = k0, k1
        for _ in range(10):
            p0, p1 = np.uint64(c0) * _M0, np.uint64(c2) * _M1
            c0, c1, c2, c3 = (
                np.uint32(p1 >> _SHIFT) ^ c1 ^ a0,
                np.uint32(p1 & _LOW),
                np.uint32(p0 >> _SHIFT) ^ c3 ^ a1,
                np.uint32(p0 & _LOW),
            )
            a0, a1 = np.uint32(a0 + _W0), np.uint32(a1 + _W1)
        bits[g], bits[m + g], bits[2 * m + g], bits[3 * m + g] = c0, c1, c2, c3


@njit(inline="always")
def _pack(bits, threshold, words, n):
    """The keep decisions of one row's first n keys (bits[j] >= threshold) as bits of uint32 words,
    key j at bit j % 32 of word j // 32 (the rest 0): for the backward pass, 1/32 of a byte mask."""
    for w in range(words.shape[0]):
        word, base = np.uint32(0), 32 * w
        for b in range(max(0, min(32, n - base))):
            word |= np.uint32(bits[base + b] >= threshold) << np.uint32(b)
        words[w] = word


@njit(inline="always")
def _unpack(words, p, factor, w, n):
    """w[j] = p[j] * factor where _pack kept key j, else 0, for j < n."""
    for wd in range((n + 31) // 32):
        word, base = words[wd], 32 * wd
        if base + 32 <= n:
            for b in range(32):
                w[base + b] = p[base + b] * factor if (word >> np.uint32(b)) & np.uint32(1) else np.float32(0.0)
        else:
            for j in range(base, n):
                w[j] = p[j] * factor if (word >> np.uint32(j - base)) & np.uint32(1) else np.float32(0.0)


@njit(inline="always")
def _exp2(s, e, j, t):
    """2^t for t in [-125, 125] as s[j] * e.view(float32)[j], which the caller multiplies out in a
    second loop. Vectorisable, where libm's exp is not: 2^t = 2^floor(t) * 2^frac, the fraction by a
    degree-6 polynomial (relative error ~2e-7) into s[j], the power as exponent bits into the int32
    scratch e[j]."""
    w = np.floor(t)
    f = t - w
    p = np.float32(1.5353362e-4)
    p = p * f + np.float32(1.3398874e-3)
    p = p * f + np.float32(9.6180941e-3)
    p = p * f + np.float32(5.5503324e-2)
    p = p * f + np.float32(2.4022648e-1)
    p = p * f + np.float32(6.9314718e-1)
    s[j] = p * f + np.float32(1.0)
    e[j] = (np.int32(w) + np.int32(127)) << np.int32(23)


@njit(inline="always")
def _softmax_row(s, e, allowed, n, shift):
    """s[:n] <- exp(s - shift) where allowed, else 0 (s <= shift where allowed); returns the sum."""
    ef = e.view(np.float32)
    for j in range(n):
        _exp2(s, e, j, max(min(s[j] - shift, np.float32(0.0)), -_EXP2_MAX) * _LOG2E)
    total = np.float32(0.0)
    for j in range(n):
        x = s[j] * ef[j] if allowed[j] else np.float32(0.0)
        s[j] = x
        total += x
    return total


@njit(inline="always")
def _scores(s, q, kT, n, scale):
    """s[:n] <- (q . k_j) * scale for one query row (keys along kT's last axis)."""
    s[:n] = 0.0
    for d in range(kT.shape[0]):
        qd = q[d] * scale
        for j in range(n):
            s[j] += qd * kT[d, j]


@njit(inline="always")
def _dropout_scale(threshold):
    """1 / (1 - p) for the keep threshold p * 2^32."""
    return np.float32(1.0) / (np.float32(1.0) - np.float32(threshold) / _TWO32)


@njit(inline="always")
def _row_mask(mask, stops, row, heads, i):
    """Query i of batch x head `row`: its allowed keys and its stop, through the mask's broadcast
    dimensions (each 1 or full)."""
    b, h, q = (row // heads) % mask.shape[0], (row % heads) % mask.shape[1], i % mask.shape[2]
    return mask[b, h, q], stops[b, h, q]


@njit(nogil=True, fastmath=True, cache=True)
def _forward(first, q, kT, vT, out, lse, keep, mask, stops, heads, scale, threshold, k0, k1):  # pragma: no cover
    """Rows first, first + 1, ... of batch x head (the arrays before `mask` hold those rows only).
    Keys at or past a row's stop (one past its last allowed key) are never read: a future mask or
    trailing padding costs nothing."""
    bh_n, tq, dim = q.shape
    tk = kT.shape[2]
    factor = _dropout_scale(threshold)
    s = np.empty(tk, np.float32)
    e = np.empty(tk, np.int32)
    bits = np.empty(4 * ((tk + 3) // 4), np.uint32)
    for bh in range(bh_n):
        for i in range(tq):
            allowed, n = _row_mask(mask, stops, first + bh, heads, i)
            if n == 0:  # no key to see
                out[bh, i, :] = 0.0
                lse[bh, i] = np.inf
                keep[bh, i, :] = 0
                continue
            _scores(s, q[bh, i], kT[bh], n, scale)
            m = np.float32(-np.inf)
            for j in range(n):
                if allowed[j]:
                    m = max(m, s[j])
            total = _softmax_row(s, e, allowed, n, m)
            if threshold > 0:
                _random_row(bits, n, i, first + bh, k0, k1)
                for j in range(n):
                    if bits[j] < threshold:
                        s[j] = 0.0
                _pack(bits, threshold, keep[bh, i], n)
            norm = factor / total
            for d in range(dim):
                acc = np.float32(0.0)
                for j in range(n):
                    acc += s[j] * vT[bh, d, j]
                out[bh, i, d] = acc * norm
            lse[bh, i] = m + np.log(total)


@njit(nogil=True, fastmath=True, cache=True)
def _backward(
    first, q, kT, vT, keep, out, lse, grad, dq, dkT, dvT, mask, stops, heads, scale, threshold
):  # pragma: no cover
    """With P the softmax weights, W = P * keep / (1 - p) the ones the output used and G_j = dO . v_j:
    dV += W^T dO, dS = W * G - P * (dO . O) (the softmax gradient, keep^2 = keep), dQ = dS K * scale,
    dK += dS^T Q * scale."""
    bh_n, tq, dim = q.shape
    tk = kT.shape[2]
    factor = _dropout_scale(threshold)
    p = np.empty(tk, np.float32)
    w = np.empty(tk, np.float32)
    g = np.empty(tk, np.float32)
    e = np.empty(tk, np.int32)
    for bh in range(bh_n):
        dkT[bh] = 0.0
        dvT[bh] = 0.0
        for i in range(tq):
            allowed, n = _row_mask(mask, stops, first + bh, heads, i)
            if n == 0:
                dq[bh, i, :] = 0.0
                continue
            _scores(p, q[bh, i], kT[bh], n, scale)
            _scores(g, grad[bh, i], vT[bh], n, np.float32(1.0))
            _softmax_row(p, e, allowed, n, lse[bh, i])
            if threshold > 0:
                _unpack(keep[bh, i], p, factor, w, n)
            else:
                w[:n] = p[:n]
            row = np.float32(0.0)
            for d in range(dim):
                row += grad[bh, i, d] * out[bh, i, d]
            for j in range(n):
                g[j] = (w[j] * g[j] - p[j] * row) * scale  # dS, scaled for dQ and dK
            for d in range(dim):
                gd, qd = grad[bh, i, d], q[bh, i, d]
                acc = np.float32(0.0)
                for j in range(n):
                    dvT[bh, d, j] += w[j] * gd
                    dkT[bh, d, j] += g[j] * qd
                    acc += g[j] * kT[bh, d, j]
                dq[bh, i, d] = acc


@njit(inline="always")
def _add_product(g, u, h):
    """g += h @ u for u (R, 4H) and h (R,): four rows of u per pass over g, a quarter of the loads
    and stores of g that one row per pass costs (half the time at R = H = 20)."""
    hid, four = u.shape
    j = 0
    while j + 4 <= hid:
        h0, h1, h2, h3 = h[j], h[j + 1], h[j + 2], h[j + 3]
        u0, u1, u2, u3 = u[j], u[j + 1], u[j + 2], u[j + 3]
        for m in range(four):
            g[m] += u0[m] * h0 + u1[m] * h1 + u2[m] * h2 + u3[m] * h3
        j += 4
    for r in range(j, hid):
        hr = h[r]
        for m in range(four):
            g[m] += u[r, m] * hr


@njit(inline="always")
def _sigmoids(x, s, e, scale, n):
    """x[:n] <- 1 / (1 + exp(-scale[j] x[j])), through _exp2 (s, e: scratch of n)."""
    ef = e.view(np.float32)
    for j in range(n):
        _exp2(s, e, j, max(min(-scale[j] * x[j] * _LOG2E, _EXP2_MAX), -_EXP2_MAX))
    for j in range(n):
        x[j] = _ONE / (_ONE + s[j] * ef[j])


# error_model="numpy": a float division by zero gives inf instead of raising, which lets the
# sigmoids' divisions vectorise (they never divide by zero: 1 + exp(.) >= 1)
@njit(nogil=True, fastmath=True, cache=True, error_model="numpy")
def _lstm(first, x, out, final, wT, uT, bias, order, lengths):  # pragma: no cover
    """Samples first, first + 1, ... (x, out and final hold those samples only): one LSTM layer's
    recurrence over sample b's lengths[b] real frames, x[b, order[b, k]] for k < lengths[b],
    direction 0 forwards and 1 backwards, each with its weights (wT, uT transposed: (dirs, d, 4H),
    (dirs, H, 4H)) and summed biases (dirs, 4H). With wT of width 0, x holds the input's
    projections already, directions side by side (B, T, dirs x 4H). Gates in torch's order (i, f,
    g, o). out[b, k] <- the states after the frame of rank k, directions side by side (the rest
    stays as given); final[b] <- the last states (zeros for a sample without frames)."""
    dirs, hid = uT.shape[0], uT.shape[1]
    four = 4 * hid
    scale = np.ones(four, np.float32)
    scale[2 * hid : 3 * hid] = _TWO  # the cell gate's tanh(x) = 2 sigmoid(2x) - 1
    twos = np.full(hid, _TWO, np.float32)
    g = np.empty(four, np.float32)
    s = np.empty(four, np.float32)
    e = np.empty(four, np.int32)
    h = np.empty(hid, np.float32)
    c = np.empty(hid, np.float32)
    for b in range(x.shape[0]):
        n = lengths[first + b]
        for d in range(dirs):
            w, u, lo = wT[d], uT[d], d * hid
            h[:] = 0.0
            c[:] = 0.0
            for step in range(n):
                k = n - 1 - step if d else step
                row = x[b, order[first + b, k]]
                if w.shape[0]:
                    g[:] = bias[d]
                    _add_product(g, w, row)
                else:
                    for m in range(four):
                        g[m] = row[d * four + m] + bias[d, m]
                _add_product(g, u, h)
                _sigmoids(g, s, e, scale, four)
                for j in range(hid):
                    c[j] = g[hid + j] * c[j] + g[j] * (_TWO * g[2 * hid + j] - _ONE)
                h[:] = c
                _sigmoids(h, s, e, twos, hid)
                for j in range(hid):
                    h[j] = g[3 * hid + j] * (_TWO * h[j] - _ONE)
                out[b, k, lo : lo + hid] = h
            final[b, lo : lo + hid] = h


def _threshold(p: float) -> int:
    return round(p * 2**32)


def _keys(seed: int) -> tuple[np.uint32, np.uint32]:
    return np.uint32(seed & 0xFFFFFFFF), np.uint32((seed >> 32) & 0xFFFFFFFF)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _run(kernel, rows: list[np.ndarray], shared: tuple) -> None:
    """kernel(first, *rows[first:last], *shared) over torch.get_num_threads() slices of the rows
    (batch x head for attention, samples for the LSTM), in threads (the kernels release the GIL).
    Not numba's parallel loops: its OpenMP layer kills a process that forks afterwards (DataLoader
    workers, results --workers), and its other built-in layer cannot be entered from two threads at
    once (the server)."""
    global _POOL
    n = rows[0].shape[0]
    parts = max(1, min(torch.get_num_threads(), n))
    bounds = [n * i // parts for i in range(parts + 1)]

    def part(i: int) -> None:
        kernel(bounds[i], *(x[bounds[i] : bounds[i + 1]] for x in rows), *shared)

    if parts == 1:
        return part(0)
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < parts - 1:  # a forked child has no threads
        _POOL = (os.getpid(), ThreadPoolExecutor(parts - 1, thread_name_prefix="sentangle-kernel"))
    futures = [_POOL[1].submit(part, i) for i in range(1, parts)]
    part(0)
    for f in futures:
        f.result()


def _mask_arrays(mask: torch.Tensor | None, tk: int) -> tuple[np.ndarray, np.ndarray]:
    """The boolean mask as a (B|1, heads|1, T_q|1, T_k) uint8 array, broadcast dimensions kept at 1,
    and each row's stop: one past its last allowed key (0: none), int32 (B|1, heads|1, T_q|1)."""
    if mask is None:
        return np.ones((1, 1, 1, tk), np.uint8), np.full((1, 1, 1), tk, np.int32)
    m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    m = m.expand(*m.shape[:3], tk).contiguous()
    stops = (m * torch.arange(1, tk + 1, dtype=torch.int32)).amax(-1)
    return m.view(torch.uint8).numpy(), stops.numpy()


def _flat(x: torch.Tensor) -> np.ndarray:  # (B, H, T, D) -> (B * H, T, D) float32, contiguous
    return x.detach().reshape(-1, *x.shape[-2:]).contiguous().numpy()


def _flat_t(x: torch.Tensor) -> np.ndarray:  # (B, H, T, D) -> (B * H, D, T), keys along the last axis
    return x.detach().transpose(-1, -2).reshape(-1, x.shape[-1], x.shape[-2]).contiguous().numpy()


@torch.library.custom_op("sentangle::attention_cpu", mutates_args=())
def attention_cpu(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, T_q, D) queries over (B, H, T_k, D) keys and values -> the output, each row's
    log-sum-exp (B, H, T_q) and, with dropout, the keep decisions packed in bits (B, H, T_q, ceil(T_k /
    32)) int32, key j at bit j % 32 of word j // 32 (see unpack_keep); without dropout it is empty."""
    b, h, tq, d = q.shape
    tk = k.shape[-2]
    out = np.empty((b * h, tq, d), np.float32)
    lse = np.empty((b * h, tq), np.float32)
    keep = np.empty((b * h, tq, (tk + 31) // 32 if dropout > 0 else 0), np.uint32)
    shared = (*_mask_arrays(mask, tk), h, np.float32(d**-0.5), np.uint32(_threshold(dropout)), *_keys(seed))
    _run(_forward, [_flat(q), _flat_t(k), _flat_t(v), out, lse, keep], shared)
    return (
        torch.from_numpy(out).view(b, h, tq, d),
        torch.from_numpy(lse).view(b, h, tq),
        torch.from_numpy(keep.view(np.int32)).view(b, h, tq, -1),
    )


@attention_cpu.register_fake
def _(q, k, v, mask, dropout, seed):
    words = (k.shape[-2] + 31) // 32 if dropout > 0 else 0
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1]), q.new_empty((*q.shape[:-1], words), dtype=torch.int32)


@torch.library.custom_op("sentangle::attention_cpu_backward", mutates_args=())
def attention_cpu_backward(
    grad: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    out: torch.Tensor,
    lse: torch.Tensor,
    keep: torch.Tensor,
    dropout: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, h, tq, d = q.shape
    tk = k.shape[-2]
    dq = np.empty((b * h, tq, d), np.float32)
    dkT, dvT = np.empty((b * h, d, tk), np.float32), np.empty((b * h, d, tk), np.float32)
    rows = [
        _flat(q), _flat_t(k), _flat_t(v), keep.reshape(b * h, tq, -1).contiguous().numpy().view(np.uint32),
        _flat(out), lse.reshape(b * h, tq).contiguous().numpy(), _flat(grad), dq, dkT, dvT,
    ]  # fmt: skip
    _run(_backward, rows, (*_mask_arrays(mask, tk), h, np.float32(d**-0.5), np.uint32(_threshold(dropout))))
    dk, dv = (torch.from_numpy(x).view(b, h, d, tk).transpose(-1, -2) for x in (dkT, dvT))
    return torch.from_numpy(dq).view(b, h, tq, d), dk, dv


@attention_cpu_backward.register_fake
def _(grad, q, k, v, mask, out, lse, keep, dropout):
    # dk and dv come out of the kernel as (B, H, D, T_k) arrays seen transposed: the same strides here
    b, h, tk, d = k.shape
    return q.new_empty(q.shape), *(x.new_empty(b, h, d, tk).transpose(-1, -2) for x in (k, v))


def _setup(ctx, inputs, output):
    q, k, v, mask, dropout, _seed = inputs
    ctx.save_for_backward(q, k, v, mask, *output)
    ctx.dropout = dropout


def _grad(ctx, grad, _grad_lse, _grad_keep):
    q, k, v, mask, out, lse, keep = ctx.saved_tensors
    return (*attention_cpu_backward(grad, q, k, v, mask, out, lse, keep, ctx.dropout), None, None, None)


attention_cpu.register_autograd(_grad, setup_context=_setup)


# Inputs up to this wide are projected inside the kernel, frame by frame; wider ones (768-wide text
# features) by one matrix product first. Measured at MISA's and TFN's widths: precomputing a
# 20-40-wide input's projections writes and reads a (B, T, dirs x 4H) tensor that costs more than
# the kernel's products (MISA's eval batch 0.22 s against 0.17 s), while at 768 the kernel's
# products are the slower (TFN's inference 1,030 against 1,224 utt/s).
_PROJECT_IN_KERNEL = 64


@torch.library.custom_op("sentangle::lstm_cpu", mutates_args=())
def lstm_cpu(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias: torch.Tensor,
    order: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM layer, forward only (no autograd: for inference), over each sample's real frames.
    x (B, T, d); weight_ih (dirs, 4H, d), weight_hh (dirs, 4H, H) and bias (dirs, 4H, both biases
    summed) of nn.LSTM's directions; order (B, T') int64: each sample's real frames' positions
    first, in order; lengths (B,) int64. Direction 1 reads the frames backwards. -> outputs (B, T',
    dirs * H) at the frames' ranks, zeros past a sample's length, and the final states (B, dirs *
    H), zeros for a sample without frames."""
    dirs, _, hid = weight_hh.shape
    b, ranks = order.shape
    out = np.zeros((b, ranks, dirs * hid), np.float32)
    final = np.empty((b, dirs * hid), np.float32)
    x, weight_ih = x.detach(), weight_ih.detach()
    if x.shape[-1] > _PROJECT_IN_KERNEL:
        x, weight_ih = torch.nn.functional.linear(x, weight_ih.flatten(0, 1)), weight_ih[:, :, :0]
    wT, uT = (w.transpose(1, 2).contiguous().numpy() for w in (weight_ih, weight_hh.detach()))
    shared = (wT, uT, bias.detach().contiguous().numpy(), order.numpy(), lengths.numpy())
    _run(_lstm, [x.contiguous().numpy(), out, final], shared)
    return torch.from_numpy(out), torch.from_numpy(final)


@lstm_cpu.register_fake
def _(x, weight_ih, weight_hh, bias, order, lengths):
    dirs, _, hid = weight_hh.shape
    return x.new_empty((*order.shape, dirs * hid)), x.new_empty((order.shape[0], dirs * hid))


# FlopCounterMode counts these as torch's attention (the benchmarks' achieved fractions), though
# keys past a row's stop are never computed.
@register_flop_formula(torch.ops.sentangle.attention_cpu)
def _flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


@register_flop_formula(torch.ops.sentangle.attention_cpu_backward)
def _backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


def unpack_keep(keep: torch.Tensor, keys: int) -> torch.Tensor:
    """attention_cpu's packed keep decisions -> booleans (..., T_q, keys), True = kept."""
    bit = torch.arange(keys, dtype=torch.int32)
    return (keep[..., bit // 32] >> (bit % 32)) & 1 == 1
