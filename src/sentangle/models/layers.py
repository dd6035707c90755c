"""Building blocks shared by every model. Masks are bool with True = real frame."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sentangle.core.errors import DataError


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, D) counting only real frames; a sample with none gives zeros."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """Attention padding mask (True = ignore) that never hides every key of a row.

    A row with no real frame would make softmax over -inf produce NaN; letting it see its first
    (zero) frame keeps it finite, and masked pooling later ignores that row's outputs anyway.
    """
    pad = ~mask
    empty = pad.all(dim=1)
    if empty.any():
        pad = pad.clone()
        pad[empty, 0] = False
    return pad


def real_length(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B,): one past each sample's last real frame (0 for none); frames lost inside a
    sequence keep their slots, so this is the length the sample would have unpadded."""
    t = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.long() * t).amax(1)


def attention_mask(
    key_mask: torch.Tensor, query_mask: torch.Tensor | None = None, future: bool = False
) -> torch.Tensor:
    """The boolean mask (True = may attend) that `attend` takes, from a key mask (B, T_k), True = real.

    Without `future` it is (B, 1, 1, T_k): one row per sample, broadcast over heads and queries, which
    keeps torch's fused attention kernels usable and allocates nothing per head. With `future`
    (MulT's "attn_mask") query i may see only keys j <= i + |L_k - L_q|, L the sample's real
    lengths (MulT takes the padded tensors' lengths, which on its fixed-length data are the same;
    per sample, padding a batch further changes nothing); that mask is (B, 1, T_q, T_k) and needs
    `query_mask` (B, T_q). Either way a row that would see no key sees the first key (see
    key_padding_mask): softmax over nothing is NaN.
    """
    mask = ~key_padding_mask(key_mask)[:, None, None, :]
    if not future:
        return mask
    if query_mask is None:
        raise ValueError("a future mask needs the query mask")
    offset = (real_length(key_mask) - real_length(query_mask)).abs()[:, None, None, None]
    i = torch.arange(query_mask.shape[1], device=key_mask.device)[:, None]
    j = torch.arange(key_mask.shape[1], device=key_mask.device)[None, :]
    mask = mask & (j <= i + offset)
    empty = ~mask.any(-1, keepdim=True)
    if empty.any():
        mask = mask | (empty & (j == 0))
    return mask


# torch.rand draws 24 random bits per element; one 64-bit draw split in two gives 32 bits each at
# a fraction of the cost, and a keep threshold with 2^-32 resolution.
_INT32_RANGE = 2**32


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | None = None) -> torch.Tensor:
    """Bernoulli(1 - p) booleans (True = keep), p resolved to 2^-32: dropout's mask, cheaper.

    torch's dropout spends most of an attention's time drawing its mask (30 M draws for one MulT
    audio-vision block of a batch); drawing 64 random bits and comparing each half with a threshold
    is about 6x faster on a CPU and at least as fine-grained as torch.rand's float32 draws.
    """
    if p >= 1.0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    threshold = round(p * _INT32_RANGE) - 2**31  # P(int32 < threshold) = p
    return (bits.view(torch.int32)[:n] >= threshold).view(shape)


class _DropoutAttention(torch.autograd.Function):
    """softmax(q k^T * scale, masked) with dropout on the weights, times v: attention dropout exactly
    as MulT and torch define it (each weight dropped with probability p, the rest scaled by
    1 / (1 - p)), where torch's CPU kernels fall back to a generic path that draws the mask with its
    slow generator and makes more passes over the (B, heads, T_q, T_k) weights.

    Backward from the kept weights W = P * keep alone: with G = dO V^T, the softmax gradient
    P * (G * keep - sum_j G * keep * P) equals G * W - P * sum_j (G * W)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, p: float):
        scale = q.shape[-1] ** -0.5
        s = torch.matmul(q * scale, k.transpose(-1, -2))
        if mask is not None:
            s.masked_fill_(~mask, float("-inf"))
        probs = torch.softmax(s, dim=-1)
        del s
        kept = torch.where(keep_mask(probs.shape, p, probs.device), probs, 0.0)
        ctx.save_for_backward(q, k, v, probs, kept)
        ctx.factor, ctx.scale = 1.0 / (1.0 - p), scale
        return torch.matmul(kept, v).mul_(ctx.factor)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, probs, kept = ctx.saved_tensors
        grad = grad * ctx.factor
        dv = torch.matmul(kept.transpose(-1, -2), grad)
        ds = torch.matmul(grad, v.transpose(-1, -2)).mul_(kept)
        ds.addcmul_(probs, ds.sum(-1, keepdim=True), value=-1.0)
        dq = torch.matmul(ds, k).mul_(ctx.scale)
        dk = torch.matmul(ds.transpose(-1, -2), q).mul_(ctx.scale)
        return dq, dk, dv, None, None


def _kernel_wins(head_dim: int, keys: int) -> bool:
    """Whether kernels.attention_cpu beats torch's CPU kernels here. Measured on 2 cores, batch 16 x
    10 heads (docs/PERFORMANCE.md): 2-7x faster for MulT's 5-wide heads at every length and its
    10-wide heads over 100 keys or more; at 10 wide over 50 keys, and at 16 and wider (RTIL 16, TSDA
    and DBR 32, MISA 64, over at most 50 frames), torch's matrix-product kernels are as fast or faster."""
    return head_dim < 16 and (head_dim <= 8 or keys >= 100)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention over (B, heads, T, head_dim) tensors; `mask` from attention_mask.

    float32 on a CPU with narrow heads (_kernel_wins) goes through kernels.attention_cpu
    (one pass per query row, dropout drawn inside, no T_q x T_k weights stored). Otherwise, without
    dropout, it is torch's scaled_dot_product_attention, whose fused (flash) kernels take a broadcast
    boolean mask and never build the (B, heads, T_q, T_k) weights; those kernels have no dropout on
    the CPU, so attention dropout in training goes through _DropoutAttention there."""
    p = dropout if training else 0.0
    if q.device.type == "cpu" and _kernel_wins(q.shape[-1], k.shape[-2]) and p < 1.0 and _kernel_takes(q, k, v, mask):
        from sentangle.models import kernels  # numba's import (0.5 s) only where it runs

        seed = int(torch.randint(2**63 - 1, (), dtype=torch.int64)) if p > 0 else 0
        return kernels.attention_cpu(q, k, v, mask, p, seed)[0]
    if p <= 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if q.device.type != "cpu":  # CUDA's fused kernels do dropout themselves
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    return _DropoutAttention.apply(q, k, v, mask, p)


def _kernel_takes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """float32 (B, H, T, D) tensors of one batch and head count, a boolean mask or none."""
    same = q.dim() == 4 and q.dtype == k.dtype == v.dtype == torch.float32 and q.shape[:2] == k.shape[:2] == v.shape[:2]
    return same and (mask is None or mask.dtype == torch.bool)


class MultiheadAttention(nn.Module):
    """Multi-head attention through `attend`. Its parameters are those of torch's
    nn.MultiheadAttention (one packed input projection, then out_proj), under the same names, so
    state dicts saved with that module load unchanged."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, heads, T, D / heads)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T_q, D) queries over (B, T_k, D) keys and values; self-attention when all three are one tensor."""
        w, b = self.in_proj_weight, self.in_proj_bias
        d = w.shape[1]
        if q is k and k is v:
            qh, kh, vh = F.linear(q, w, b).chunk(3, dim=-1)
        elif k is v:
            qh = F.linear(q, w[:d], b[:d])
            kh, vh = F.linear(k, w[d:], b[d:]).chunk(2, dim=-1)
        else:
            qh, kh, vh = (F.linear(x, w[i * d : (i + 1) * d], b[i * d : (i + 1) * d]) for i, x in enumerate((q, k, v)))
        out = attend(self._split(qh), self._split(kh), self._split(vh), mask, self.dropout, self.training)
        return self.out_proj(out.transpose(1, 2).flatten(2))


def as_hidden(mask: torch.Tensor) -> torch.Tensor:
    """A torch attention mask, boolean (True = hidden) or additive (0 or -inf), as booleans."""
    return mask if mask.dtype == torch.bool else mask != 0


class EncoderLayer(nn.TransformerEncoderLayer):
    """torch's Transformer encoder layer (same arguments, parameters and state dict) whose
    self-attention runs through `attend`: fused kernels where torch's layer would fall back to its
    generic path, the cheap dropout mask where there is attention dropout."""

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):  # noqa: ARG002 (torch's signature)
        mha = self.self_attn
        qh, kh, vh = (
            t.unflatten(-1, (mha.num_heads, -1)).transpose(1, 2)
            for t in F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        )
        mask = None
        if key_padding_mask is not None:  # True = padding, or torch's additive form (0 or -inf)
            mask = ~as_hidden(key_padding_mask)[:, None, None, :]
        if attn_mask is not None:  # (T, T) or (B * heads, T, T), as torch takes it
            allowed = ~as_hidden(attn_mask)
            allowed = allowed.view(-1, mha.num_heads, *allowed.shape[-2:]) if allowed.dim() == 3 else allowed
            mask = allowed if mask is None else mask & allowed
        out = attend(qh, kh, vh, mask, mha.dropout, self.training)
        return self.dropout1(mha.out_proj(out.transpose(1, 2).flatten(2)))


class MLP(nn.Sequential):
    def __init__(self, dims: list[int], dropout: float = 0.0, act: type[nn.Module] = nn.ReLU):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers += [act(), nn.Dropout(dropout)]
        super().__init__(*layers)


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal positions; without them attention is blind to frame order."""

    pe: torch.Tensor

    def __init__(self, dim: int, max_len: int = 4096):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise DataError(
                f"a batch has sequences of {x.shape[1]} frames; the positional table holds at most "
                f"{self.pe.shape[0]} frames: expected sequences no longer than that"
            )
        return x + self.pe[: x.shape[1]]


class SequenceEncoder(nn.Module):
    """Project (B, T, d_in) to D, add positions, run `layers` Transformer layers over real frames.

    The layers are pre-norm, whose residual stream is never normalised: its scale can grow without
    bound in training. `final_norm` adds the LayerNorm that pre-norm stacks usually end with (off by
    default, so that models trained without it keep their numbers)."""

    def __init__(
        self,
        d_in: int,
        dim: int = 128,
        layers: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
        positional: bool = True,
        final_norm: bool = False,
    ):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(d_in, dim), nn.LayerNorm(dim))
        self.pos = PositionalEncoding(dim) if positional else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.encoder = None
        if layers > 0:
            layer = EncoderLayer(
                dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(
                layer, layers, norm=nn.LayerNorm(dim) if final_norm else None, enable_nested_tensor=False
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.pos(self.proj(x)))
        if self.encoder is not None:
            h = self.encoder(h, src_key_padding_mask=key_padding_mask(mask))
        return h * mask.unsqueeze(-1).to(h.dtype)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.alpha * grad, None


def grad_reverse(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient times -alpha backward: an adversary trained with the same
    optimizer as the encoder it fights (one optimizer serves every model)."""
    return _GradReverse.apply(x, alpha)


class FactorizedBilinearPooling(nn.Module):
    """Multi-modal factorized bilinear pooling (MFB, Yu et al. 2017).

    z = sum over k groups of (U x) * (V y), then signed square root and L2 normalisation, giving an
    (B, out) code of the pair's multiplicative interactions with rank-k factors. `bias=False` and
    `signed_sqrt=False` give the plainer form some implementations use (factors without bias, the
    pooled sum normalised as it is).
    """

    def __init__(
        self,
        dx: int,
        dy: int,
        out: int,
        k: int = 5,
        dropout: float = 0.1,
        eps: float = 1e-8,
        bias: bool = True,
        signed_sqrt: bool = True,
    ):
        super().__init__()
        self.u, self.v = nn.Linear(dx, out * k, bias=bias), nn.Linear(dy, out * k, bias=bias)
        self.drop = nn.Dropout(dropout)
        self.out, self.k, self.eps, self.signed_sqrt = out, k, eps, signed_sqrt

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        joint = self.drop(self.u(x) * self.v(y))
        z = joint.view(*joint.shape[:-1], self.out, self.k).sum(-1)
        if self.signed_sqrt:
            z = torch.sign(z) * torch.sqrt(z.abs() + self.eps)  # eps: finite gradient at 0
        return torch.nn.functional.normalize(z, dim=-1)


class CrossAttention(nn.Module):
    """Queries from one sequence attend over another's real frames; residual, LayerNorm, feed-forward."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, dropout=dropout)
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor, q_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        kvn = self.norm_kv(kv)
        a = self.attn(self.norm_q(q), kvn, kvn, attention_mask(kv_mask))
        h = q + self.drop(a)
        h = h + self.drop(self.ff(self.norm_ff(h)))
        return h if q_mask is None else h * q_mask.unsqueeze(-1).to(h.dtype)


def masked_downsample(x: torch.Tensor, mask: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average real frames in windows of `ceil(T / max_len)` so at most `max_len` remain.

    Attention over 375 audio or 500 vision frames costs T^2; windows keep the frame order (unlike a
    time-average) at a fraction of the cost. A window with no real frame stays padding.
    """
    b, t, d = x.shape
    if max_len <= 0 or t <= max_len:
        return x, mask
    stride = math.ceil(t / max_len)
    pad = (-t) % stride
    w = mask.to(x.dtype)
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        w = torch.nn.functional.pad(w, (0, pad))
    x = x.view(b, -1, stride, d)
    w = w.view(b, -1, stride)
    count = w.sum(-1)
    y = (x * w.unsqueeze(-1)).sum(2) / count.clamp_min(1.0).unsqueeze(-1)
    return y, count > 0


class RealFrameLSTM(nn.Module):
    """An LSTM over the real frames of each sample (the recurrent subnetworks of TFN, LMF, MISA, Self-MM).

    forward(x (B, T, d), mask (B, T)) -> (outputs (B, T', dirs*H) with the real frames first,
    their mask (B, T'), final hidden state of the last layer (B, dirs*H)). A sample without any real
    frame gets zeros for both, so a missing modality contributes nothing rather than a state
    computed from padding.

    Why not a PackedSequence: on the CPU the backward pass of a packed LSTM slices its input once per
    time step and each slice's gradient fills a zero tensor of the whole input, which is quadratic
    in the length (MISA's LSTMs over 375-500 frames spent half their time in that fill). Each
    direction instead runs unpacked over the real frames moved to the front (the backward direction
    over them reversed), where padding after a sample's last real frame cannot reach its outputs;
    the same weights (`self.lstm`), the same numbers, 5-10x faster in training.

    Where no gradient is wanted (inference, float32 on the CPU) the recurrence runs in
    kernels.lstm_cpu instead, over each sample's real frames only, with the same numbers within
    float32 rounding (tests/models/test_baselines.py).
    """

    def __init__(self, d_in: int, hidden: int, layers: int = 1, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(
            d_in,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dirs = 2 if bidirectional else 1
        # One-layer, one-direction LSTMs that forward runs with the weights of `self.lstm`
        # (torch.func.functional_call), so the parameters and state dict stay those of one nn.LSTM.
        # On the meta device they hold no memory and draw nothing from the random generator; in a
        # tuple, nn.Module does not register them.
        self._steps = tuple(
            nn.LSTM(size, hidden, bias=self.lstm.bias, batch_first=True, device="meta")
            for size in [d_in, hidden * self.dirs][:layers]
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = mask.sum(1)
        t = max(int(lengths.max()), 1)
        # the real frames' positions, first and in order: a stable sort of "is padding"; None when
        # they already come first (padding only at the end)
        order = None
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :t]
        out_mask = torch.arange(t, device=x.device)[None, :] < lengths[:, None]
        if self._inference_kernel_applies(x):
            h, final = self._forward_kernel(x, order, lengths, t)
        else:
            h, final = self._forward_torch(x, order, lengths, out_mask)
        present = (lengths > 0).to(x.dtype)
        return h, out_mask, final * present[:, None]

    def _inference_kernel_applies(self, x: torch.Tensor) -> bool:
        """kernels.lstm_cpu has no backward: float32 on the CPU, outside autocast, no gradient wanted."""
        # any parameter: a partly frozen LSTM still needs the gradients of the others
        wants_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.lstm.parameters())
        )
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and not wants_grad
            and not torch.is_autocast_enabled("cpu")
        )

    def _forward_kernel(
        self, x: torch.Tensor, order: torch.Tensor | None, lengths: torch.Tensor, t: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: kernels.lstm_cpu, over the real frames only (4-8x faster than the unpacked
        nn.LSTM at MISA's widths)."""
        from sentangle.models import kernels  # numba's import (0.5 s) only where it runs

        ranks = torch.arange(t).expand(x.shape[0], t).contiguous()
        positions = ranks if order is None else order.contiguous()
        h = x
        lstm, suffixes = self.lstm, ["", "_reverse"][: self.dirs]
        for layer in range(lstm.num_layers):
            if layer > 0 and lstm.dropout > 0:
                h = nn.functional.dropout(h, lstm.dropout, self.training)
            names = [f"_l{layer}{suffix}" for suffix in suffixes]
            w_ih, w_hh = (torch.stack([getattr(lstm, kind + n) for n in names]) for kind in ("weight_ih", "weight_hh"))
            bias = torch.stack([getattr(lstm, "bias_ih" + n) + getattr(lstm, "bias_hh" + n) for n in names])
            h, final = kernels.lstm_cpu(h, w_ih, w_hh, bias, positions, lengths)
            positions = ranks
        return h, final

    def _forward_torch(
        self, x: torch.Tensor, order: torch.Tensor | None, lengths: torch.Tensor, out_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = out_mask.shape
        rows = torch.arange(b, device=x.device)
        h = x[:, :t] if order is None else x[rows[:, None], order]
        steps = torch.arange(t, device=x.device)
        last = (lengths - 1).clamp_min(0)
        # reverse each sample's real frames in place: frame i <-> frame length-1-i (padding stays put)
        flip = torch.where(out_mask, last[:, None] - steps[None, :], steps[None, :])
        finals: list[torch.Tensor] = []
        for layer in range(self.lstm.num_layers):
            if layer > 0 and self.lstm.dropout > 0:
                h = nn.functional.dropout(h, self.lstm.dropout, self.training)
            step = self._steps[min(layer, 1)].train(self.training)
            outs, finals = [], []
            for d in range(self.dirs):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                weights = {n: getattr(self.lstm, n.removesuffix("_l0") + suffix) for n, _ in step.named_parameters()}
                seq = h if d == 0 else h[rows[:, None], flip]
                zeros = h.new_zeros(1, b, self.lstm.hidden_size)
                o, _ = torch.func.functional_call(step, weights, (seq, (zeros, zeros)))
                finals.append(o[rows, last])
                outs.append(o if d == 0 else o[rows[:, None], flip])
            h = torch.cat(outs, dim=-1) * out_mask.unsqueeze(-1).to(x.dtype)
        return h, torch.cat(finals, dim=-1)
