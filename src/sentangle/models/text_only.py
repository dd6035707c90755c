"""Text-only model: a sequence encoder over token features (or a fine-tuned text encoder).

With frozen token features it adds `layers` Transformer layers and attention pooling; with the
encoder fine-tuned inside the model (`text_encoder` set by the dataset) `layers: 0` is enough.
"""

from __future__ import annotations

import torch
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import MLP, SequenceEncoder, masked_mean


@MODELS.register("text_only")
class TextOnly(MSAModel):
    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        hidden: int = 128,
        layers: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
        pooling: str = "mean",
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        if "text" not in self.input_dims:
            raise ConfigError("text_only needs a text modality; the dataset has " + ", ".join(self.modalities))
        if pooling not in ("mean", "attention"):
            raise ConfigError(f"pooling must be 'mean' or 'attention', got {pooling!r}")
        self.pooling = pooling
        self.encoder = SequenceEncoder(self.input_dims["text"], hidden, layers, heads, dropout)
        self.score = nn.Linear(hidden, 1) if pooling == "attention" else None
        self.head = MLP([hidden, hidden, output_dim], dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        h = self.encoder(feats["text"], masks["text"])  # (B, L, H)
        if self.score is None:
            pooled = masked_mean(h, masks["text"])
        else:
            w = self.score(h).squeeze(-1).masked_fill(~masks["text"], -1e4).softmax(-1)
            pooled = torch.einsum("bl,blh->bh", w, h)
        return ModelOutput(self.head_output(self.head(pooled)))
