"""LMF: Low-rank Multimodal Fusion with modality-specific factors (Liu et al., ACL 2018).

TFN's fusion tensor Z = [h_t; 1] (x) [h_a; 1] (x) [h_v; 1] followed by a linear layer W is a
(d_t+1)(d_a+1)(d_v+1) x out weight tensor. LMF writes that tensor as a rank-R sum of products of
modality-specific factors,

    W = sum_r w_r  W_t^(r) (x) W_a^(r) (x) W_v^(r),      W_m^(r): (d_m + 1, out)

and never builds Z: the prediction is sum_r w_r prod_m ([h_m; 1] W_m^(r)) + b, which is linear in
each modality's factors and costs sum_m d_m instead of prod_m d_m. (tests/models/test_baselines.py checks
it against the full-rank tensor built from the factors.)

The pre-fusion subnetworks are TFN's (LSTM for text, MLP on the time-average for audio/vision).
Absent modalities: a modality missing from the dataset has no factor in the product; one missing
at test time gets h_m = 0, so its factor contributes the row of the appended 1 only (as in TFN).

Defaults: MMSA config_regression.json, "lmf" / "mosi": hidden_dims [128, 16, 128], text_out =
text_hidden / 2 = 64 (as MMSA derives it), subnet dropouts 0.3, rank 3, lr 1e-3, weight decay
0.005, batch 64 (the training recipe in configs/models/lmf.yaml). The fourth ("post-fusion")
dropout of that config is declared but never applied by MMSA's LMF, so it has no counterpart here.
As in TFN, the text dropout is applied to the LSTM's final state (MMSA's text subnetwork drops it for a
one-layer LSTM). Factors are initialised Xavier-normal, the bias at 0, as MMSA does. At MOSI's
unaligned feature sizes the model has MMSA's LMF's 505,071 parameters (docs/baselines.md).
"""

from __future__ import annotations

import torch
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.tfn import PreFusionSubnets, with_one


@MODELS.register("lmf")
class LMF(MSAModel):
    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        text_hidden: int = 128,
        audio_hidden: int = 16,
        vision_hidden: int = 128,
        text_out: int = 64,
        rank: int = 3,
        text_dropout: float = 0.3,
        audio_dropout: float = 0.3,
        vision_dropout: float = 0.3,
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        if rank < 1:
            raise ConfigError(f"lmf: rank must be >= 1, got {rank}")
        hidden = {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden}
        dropouts = {"text": text_dropout, "audio": audio_dropout, "vision": vision_dropout}
        self.subnets = PreFusionSubnets(self.input_dims, hidden, text_out, dropouts)
        self.factors = nn.ParameterDict(
            {
                m: nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, d + 1, output_dim)))
                for m, d in self.subnets.dims.items()
            }
        )
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)))  # w_r
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        codes = self.subnets(feats, masks)  # {m: (B, d_m)}
        fused = None
        for m in self.modalities:
            # [h_m; 1] W_m^(r) for every rank at once: (B, d_m+1) x (R, d_m+1, out) -> (R, B, out)
            part = torch.matmul(with_one(codes[m]), self.factors[m])
            fused = part if fused is None else fused * part
        y = torch.einsum("r,rbo->bo", self.rank_weights[0], fused) + self.bias  # (B, out)
        return ModelOutput(self.head_output(y), extras={f"code_{m}": c for m, c in codes.items()})
