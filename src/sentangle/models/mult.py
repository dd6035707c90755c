"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019).

No word alignment is needed: each target modality m attends over every other modality s through a
directional crossmodal Transformer (queries from m, keys/values from s), so m's sequence is
rewritten with what s says at whatever time s says it.

    X_m --Conv1d(k)--> (B, T_m, d) --*sqrt(d) + positions--> E_m
    Z_{m<-s} = CrossmodalStack(E_m queries, E_s keys/values)       for each s != m   (B, T_m, d)
    H_m = SelfAttentionStack([Z_{m<-s}]_s)                                          (B, T_m, d*(n-1))
    y = out(residual MLP([last real frame of H_m]_m))

Pieces and deviations, on purpose:
- The temporal Conv1d projection (kernel 5, no bias, as MulT/MMSA) uses "same" padding so every
  frame keeps its mask (MulT uses no padding and shortens each sequence by k-1, which a length-1
  utterance-level sequence cannot survive); frames that are not real are zeroed before it (so a
  window reads them as padding) and after it.
- Crossmodal and self-attention blocks are layers.CrossAttention (pre-LayerNorm on queries and
  keys/values, residual, feed-forward), one dropout rate per block: the target's attention dropout.
  MulT's residual/ReLU dropouts are 0 in MMSA's MOSI config, so they are not separate options.
- Every attention masks padded keys; the summary of H_m is its last REAL frame (MulT takes the
  last position of fixed-length, padded data).
- `max_len > 0` averages real frames in windows (layers.masked_downsample) so at most `max_len`
  remain before the projection: attention over 375 audio / 500 vision frames costs T^2 on a CPU.
  0 keeps every frame (MulT). A dict sets it per modality; the default (not MMSA's) caps audio and
  vision at 50 frames and leaves text untouched: full-length unaligned MulT (375 audio x 500 vision
  frames) took about 35-60 min per synthetic epoch on 2 CPU cores, windowed about 1 min
  (docs/PERFORMANCE.md); `model.max_len=0` restores MulT's full-length attention.

Absent modalities: with one modality there is no crossmodal block; its embedded sequence goes
straight to the self-attention stack (MulT's "unimodal" path). A modality missing at test time (no
real frame) is attended through key_padding_mask's guard (its first, zero frame), which keeps
every output finite.

Defaults: MMSA config_regression.json, "mult" / "mosi": d = 50 with 10 heads, 4 levels (the
self-attention stacks get max(4, 3) layers as MulT's get_network does), kernel 5 for all
modalities, attention dropout 0.3 (text targets and self-attention) / 0.2 (audio) / 0.0 (vision),
embedding dropout 0.2, text input dropout 0.5, output dropout 0.5, lr 2e-3, batch 16, gradient
value clip 0.6, plateau scheduler (the training recipe: configs/models/mult.yaml; MMSA's MulT
trainer passes no weight decay to Adam). MMSA's gradient accumulation
(update_epochs 8) has no counterpart in the one trainer.
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
from sentangle.models.layers import CrossAttention, PositionalEncoding, masked_downsample

# Per-modality defaults; a dict given for one of these options updates them key by key.
DEFAULT_KERNELS = {"text": 5, "audio": 5, "vision": 5}
DEFAULT_ATTN_DROPOUT = {"text": 0.3, "audio": 0.2, "vision": 0.0}  # text's also serves the self-attention stacks
DEFAULT_MAX_LEN = {"audio": 50, "vision": 50}  # a modality left out keeps every frame


class AttentionStack(nn.Module):
    """`layers` attention blocks then a LayerNorm. With `kv` given each block attends over that fixed
    source sequence (crossmodal); without, each block attends over its own input (self-attention)."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(CrossAttention(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, q: torch.Tensor, q_mask: torch.Tensor, kv: torch.Tensor | None = None, kv_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for block in self.blocks:
            q = block(q, q if kv is None else kv, q_mask if kv is None else kv_mask, q_mask)
        return self.norm(q) * q_mask.unsqueeze(-1).to(q.dtype)


def last_real(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): each sample's last real frame (frame 0 for a sample with none)."""
    t = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.long() * (t + 1)).argmax(1)
    return x[torch.arange(x.shape[0], device=x.device), last]


@MODELS.register("mult")
class MulT(MSAModel):
    windows_padding = True  # masked_downsample windows span the batch's padded length

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
        text_dropout: float = 0.5,
        output_dropout: float = 0.5,
        max_len: int | dict[str, int] = DEFAULT_MAX_LEN,  # see the module docstring
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
        self.dim, self.text_dropout = dim, text_dropout
        self.proj = nn.ModuleDict(
            {m: nn.Conv1d(d, dim, kernels[m], padding=kernels[m] // 2, bias=False) for m, d in self.input_dims.items()}
        )
        self.pos = PositionalEncoding(dim)
        self.embed_drop = nn.Dropout(embed_dropout)
        self.sources = {m: [s for s in self.modalities if s != m] for m in self.modalities}
        self.crossmodal = nn.ModuleDict(
            {
                f"{m}_from_{s}": AttentionStack(dim, heads, layers, drops[m])
                for m in self.modalities
                for s in self.sources[m]
            }
        )
        width = {m: dim * max(1, len(self.sources[m])) for m in self.modalities}
        # the self-attention ("memory") stacks run over the concatenated crossmodal outputs;
        # MulT gives them max(layers, 3) layers unless told otherwise
        memory_layers = max(layers, 3) if memory_layers is None else memory_layers
        self.memory = nn.ModuleDict(
            {m: AttentionStack(width[m], heads, memory_layers, drops["text"]) for m in self.modalities}
        )
        combined = sum(width.values())
        self.proj1, self.proj2 = nn.Linear(combined, combined), nn.Linear(combined, combined)
        self.output_dropout = output_dropout
        self.out = nn.Linear(combined, output_dim)

    def embed(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = masked_downsample(x, mask, self.max_len[m])
        if m == "text":
            x = F.dropout(x, self.text_dropout, self.training)
        # zero what is not real, so the convolution's window reads padding as the zeros it pads with
        x = x * mask.unsqueeze(-1).to(x.dtype)
        h = self.proj[m](x.transpose(1, 2)).transpose(1, 2)  # (B, T, d): temporal convolution
        h = self.embed_drop(self.pos(h * math.sqrt(self.dim)))
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
