"""LF-DNN: late fusion of time-pooled modalities (the field's simplest multimodal baseline).

Each modality is averaged over its real frames, passed through its own small MLP, and the
per-modality codes are concatenated for the head. Order within a sequence is invisible to it,
which is exactly what makes it the reference point for models that claim to use dynamics.

It is not MMSA's LF_DNN, which reads text with an LSTM (TFN's subnetworks, concatenated): an LSTM
would end the order blindness the project's checks rely on, so the widths here are the project's
own (docs/baselines.md compares the two).
"""

from __future__ import annotations

import torch
from torch import nn

from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import MLP, masked_mean


@MODELS.register("lf_dnn")
class LFDNN(MSAModel):
    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        hidden: int = 128,
        fusion_hidden: int = 128,
        dropout: float = 0.2,
        modalities: list[str] | None = None,
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        self.use = tuple(modalities or self.modalities)
        self.subnets = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.LayerNorm(self.input_dims[m]), MLP([self.input_dims[m], hidden, hidden], dropout), nn.ReLU()
                )
                for m in self.use
            }
        )
        self.head = MLP([hidden * len(self.use), fusion_hidden, output_dim], dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        codes = {m: self.subnets[m](masked_mean(feats[m], masks[m])) for m in self.use}  # (B, H) each
        y = self.head(torch.cat([codes[m] for m in self.use], dim=-1))
        return ModelOutput(self.head_output(y), extras={f"code_{m}": c for m, c in codes.items()})
