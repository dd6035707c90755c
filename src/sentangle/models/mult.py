"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019).

No word alignment is needed: each target modality m attends over every other modality s through a
directional crossmodal Transformer (queries from m, keys/values from s), so m's sequence is
rewritten with what s says at whatever time s says it.

    X_m --Conv1d(k)--> P_m (B, T_m, d)
    Z_{m<-s} = CrossmodalStack(P_m queries, P_s keys/values)                 for each s != m  (B, T_m, d)
    H_m = SelfAttentionStack([Z_{m<-s}]_s)                                             (B, T_m, d*(n-1))
    y = out(residual MLP([last real frame of H_m]_m))

The default is MMSA's MulT (config_regression.json, "mult" / "mosi") layer for layer: 2,571,551
parameters at MOSI's unaligned shapes (text 768, audio 5, vision 20; tests/models/test_attention.py).
Each stack, as MulT's TransformerEncoder, scales its inputs by sqrt(width), adds sinusoidal positions
(fairseq's layout: sines then cosines, real frame t at position t + 1, padding at the zero row) and
applies the embedding dropout, to the queries and separately to the keys and the values; then
`layers` pre-norm layers (one LayerNorm shared by queries, keys and values; attention with its
dropout; residual dropout; a ReLU feed-forward 4x wide with its own dropout) and a final LayerNorm.
The self-attention stacks get max(layers, 3) layers, as MulT's get_network gives them. MulT's
"attn_mask" (on in MMSA) lets query i see keys j <= i + |T_k - T_q| only (`future_mask`; here
T is each sample's real length, see layers.attention_mask).

Deviations, on purpose:
- The temporal Conv1d projection (kernel 5, no bias, as MulT/MMSA) uses "same" padding so every
  frame keeps its mask (MulT uses no padding and shortens each sequence by k-1, which a length-1
  utterance-level sequence cannot survive); frames that are not real are zeroed before it and after.
  It costs no parameters.
- Every attention also masks padded keys, and the summary of H_m is its last REAL frame (MulT
  attends over padding and takes the last position of fixed-length data).
- `max_len > 0` (off by default) averages real frames in windows (layers.masked_downsample) so at
  most `max_len` remain before the projection; a dict sets it per modality. It was the default
  before exact full-length attention became fast enough; docs/baselines.md gives its measured
  accuracy and speed.

Absent modalities: with one modality there is no crossmodal block; its embedded sequence goes
straight to the self-attention stack (MulT's "unimodal" path). A modality missing at test time (no
real frame) is attended through key_padding_mask's guard (its first, zero frame), which keeps
every output finite.

Defaults otherwise: d = 50 with 10 heads, 4 levels, kernel 5 for all modalities, attention
dropout 0.3 (text targets and self-attention) / 0.2 (audio) / 0.0 (vision), residual and ReLU
dropout 0, embedding dropout 0.2, text input dropout 0.5, output dropout 0.5; lr 2e-3, batch 16,
gradient value clip 0.6, plateau scheduler (the training recipe: configs/models/mult.yaml; MMSA's
MulT trainer passes no weight decay to Adam). MMSA's gradient accumulation (update_epochs 8) has
no counterpart in the one trainer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import MultiheadAttention, attention_mask, masked_downsample, real_length

# Per-modality defaults; a dict given for one of these options updates them key by key.
DEFAULT_KERNELS = {"text": 5, "audio": 5, "vision": 5}
DEFAULT_ATTN_DROPOUT = {"text": 0.3, "audio": 0.2, "vision": 0.0}  # text's also serves the self-attention stacks


def fairseq_positions(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, T) real-frame mask -> (B, T, dim) sinusoidal positions as MulT adds them: frame t at
    position t + 1 (sines of half the width, then cosines; an odd width ends in a zero column),
    frames that are not real at position 0, whose row is zeros."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=mask.device) * -(math.log(10000.0) / max(half - 1, 1)))
    angle = torch.arange(1, mask.shape[1] + 1, device=mask.device)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angle), torch.cos(angle), angle.new_zeros(mask.shape[1], dim % 2)], dim=1)
    return table * mask.unsqueeze(-1)


class MulTLayer(nn.Module):
    """MulT's pre-norm encoder layer; keys and values, when given, share the queries' LayerNorm."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, attn_dropout)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.norms[0](x)
        if k is None or v is None:
            a = self.attn(h, h, h, mask)
        else:
            kn = self.norms[0](k)
            a = self.attn(h, kn, kn if v is k else self.norms[0](v), mask)
        x = x + F.dropout(a, self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.norms[1](x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class AttentionStack(nn.Module):
    """MulT's TransformerEncoder: embed (scale, positions, dropout), `layers` MulTLayers, LayerNorm.
    With a source sequence each layer attends over it (crossmodal); without, over its own input."""

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        attn_dropout: float,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        future_mask: bool = True,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            MulTLayer(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.dim, self.embed_dropout, self.future_mask = dim, embed_dropout, future_mask

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x * math.sqrt(self.dim) + fairseq_positions(mask, self.dim).to(x.dtype)
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(
        self, q: torch.Tensor, q_mask: torch.Tensor, kv: torch.Tensor | None = None, kv_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.embed(q, q_mask)
        k = v = None
        if kv is not None and kv_mask is not None:
            k = self.embed(kv, kv_mask)
            # MulT draws the embedding dropout of keys and values separately; without dropout they are one tensor
            v = self.embed(kv, kv_mask) if self.training and self.embed_dropout > 0 else k
        mask = attention_mask(q_mask if kv_mask is None else kv_mask, q_mask, self.future_mask)
        for layer in self.layers:
            x = layer(x, mask, k, v)
        return self.norm(x) * q_mask.unsqueeze(-1).to(x.dtype)


def last_real(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): each sample's last real frame (frame 0 for a sample with none)."""
    last = (real_length(mask) - 1).clamp_min(0)
    return x[torch.arange(x.shape[0], device=x.device), last]


@MODELS.register("mult")
class MulT(MSAModel):
    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        dim: int = 50,
        heads: int = 10,
        layers: int = 4,
        kernel_sizes: dict[str, int] | None = DEFAULT_KERNELS,  # temporal Conv1d projection
        attn_dropout: dict[str, float] | None = DEFAULT_ATTN_DROPOUT,
        memory_layers: int | None = None,  # None: max(layers, 3), as MulT
        embed_dropout: float = 0.2,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        text_dropout: float = 0.5,
        output_dropout: float = 0.5,
        future_mask: bool = True,  # MulT's attn_mask
        max_len: int | dict[str, int] = 0,  # see the module docstring
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        kernels = {**DEFAULT_KERNELS, **(kernel_sizes or {})}
        drops = {**DEFAULT_ATTN_DROPOUT, **(attn_dropout or {})}
        if dim % heads:
            raise ConfigError(f"mult: dim ({dim}) must be divisible by heads ({heads})")
        bad = {m: k for m, k in kernels.items() if k < 1 or k % 2 == 0}
        if bad:
            raise ConfigError(f'mult: kernel_sizes must be odd and >= 1 ("same" padding keeps the masks), got {bad}')
        if isinstance(max_len, dict):
            unknown = set(max_len) - set(DEFAULT_KERNELS)
            if unknown:
                raise ConfigError(
                    f"mult: max_len names unknown modalities {sorted(unknown)}; expected some of {list(DEFAULT_KERNELS)}"
                )
        self.max_len = {m: (max_len.get(m, 0) if isinstance(max_len, dict) else max_len) for m in self.input_dims}
        # masked_downsample's windows span the batch's padded length (the future mask does not)
        self.windows_padding = any(n > 0 for n in self.max_len.values())
        self.text_dropout = text_dropout
        self.proj = nn.ModuleDict(
            {m: nn.Conv1d(d, dim, kernels[m], padding=kernels[m] // 2, bias=False) for m, d in self.input_dims.items()}
        )
        self.sources = {m: [s for s in self.modalities if s != m] for m in self.modalities}

        def stack(width: int, n_layers: int, attn: float) -> AttentionStack:
            return AttentionStack(width, heads, n_layers, attn, relu_dropout, res_dropout, embed_dropout, future_mask)

        self.crossmodal = nn.ModuleDict(
            {f"{m}_from_{s}": stack(dim, layers, drops[m]) for m in self.modalities for s in self.sources[m]}
        )
        width = {m: dim * max(1, len(self.sources[m])) for m in self.modalities}
        memory_layers = max(layers, 3) if memory_layers is None else memory_layers
        self.memory = nn.ModuleDict({m: stack(width[m], memory_layers, drops["text"]) for m in self.modalities})
        combined = sum(width.values())
        self.proj1, self.proj2 = nn.Linear(combined, combined), nn.Linear(combined, combined)
        self.output_dropout = output_dropout
        self.out = nn.Linear(combined, output_dim)

    def embed(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d_m) -> the temporal convolution's (B, T', dim) and its mask (T' < T when windowed)."""
        x, mask = masked_downsample(x, mask, self.max_len[m])
        if m == "text":
            x = F.dropout(x, self.text_dropout, self.training)
        # zero what is not real, so the convolution's window reads padding as the zeros it pads with
        x = x * mask.unsqueeze(-1).to(x.dtype)
        h = self.proj[m](x.transpose(1, 2)).transpose(1, 2)
        return h * mask.unsqueeze(-1).to(h.dtype), mask

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        emb = {m: self.embed(m, feats[m], masks[m]) for m in self.modalities}  # {m: ((B, T_m, d), (B, T_m))}
        summaries = []
        for m in self.modalities:
            e_m, mask_m = emb[m]
            parts = [self.crossmodal[f"{m}_from_{s}"](e_m, mask_m, *emb[s]) for s in self.sources[m]]
            h = torch.cat(parts, dim=-1) if parts else e_m  # (B, T_m, d * (n-1))
            summaries.append(last_real(self.memory[m](h, mask_m), mask_m))
        last = torch.cat(summaries, dim=-1)  # (B, combined)
        res = self.proj2(F.dropout(F.relu(self.proj1(last)), self.output_dropout, self.training))
        y = self.out(res + last)
        return ModelOutput(self.head_output(y), extras={f"summary_{m}": s for m, s in zip(self.modalities, summaries)})
