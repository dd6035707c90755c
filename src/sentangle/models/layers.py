"""Building blocks shared by every model. Masks are bool with True = real frame."""
from __future__ import annotations

import math

import torch
from torch import nn


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
            raise ValueError(f"sequence of {x.shape[1]} frames is longer than the positional table ({self.pe.shape[0]})")
        return x + self.pe[: x.shape[1]]


class SequenceEncoder(nn.Module):
    """Project (B, T, d_in) to D, add positions, run `layers` Transformer layers over real frames."""

    def __init__(self, d_in: int, dim: int = 128, layers: int = 1, heads: int = 4, dropout: float = 0.1,
                 positional: bool = True):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(d_in, dim), nn.LayerNorm(dim))
        self.pos = PositionalEncoding(dim) if positional else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.encoder = None
        if layers > 0:
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.pos(self.proj(x)))
        if self.encoder is not None:
            h = self.encoder(h, src_key_padding_mask=key_padding_mask(mask))
        return h * mask.unsqueeze(-1).to(h.dtype)
