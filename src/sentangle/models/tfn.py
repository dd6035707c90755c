"""TFN: Tensor Fusion Network (Zadeh et al., EMNLP 2017).

Each modality is summarised by its own subnetwork: an LSTM over the text tokens, and a small MLP
over the time-average of audio and vision (the MMSA recipe; MMSA averages audio/vision over time
for TFN). Every code gets a constant 1 appended and the three are multiplied out:

    Z = [h_t; 1] (x) [h_a; 1] (x) [h_v; 1]        (B, (d_t+1)(d_a+1)(d_v+1))

so Z holds the unimodal codes (the entries that meet the other modalities' 1s), every bimodal
product and every trimodal product at once. An MLP on Z gives the prediction.

Absent modalities. A modality missing from the dataset simply has no factor: the product runs over
the modalities present, which is what the full product would give with that modality's code empty
(its factor is just the 1). A modality the model was built with but a sample lacks at test time (no
real frame) gets the code h_m = 0, so [h_m; 1] = e_1 and Z keeps exactly the terms of the other
modalities, all cross terms with m vanish.

Defaults: MMSA config_regression.json, "tfn" / "mosi" (hidden_dims [128, 32, 128] for text, audio,
vision; text_out 32; post_fusion_dim 64; dropouts 0.3 / 0.3 / 0.3 / 0.5; lr 1e-3, batch 32,
early stop 8; the training recipe in configs/models/tfn.yaml). MMSA's text subnetwork silently drops
its dropout for a one-layer LSTM; here the configured text dropout is applied to the LSTM's final
state. At MOSI's unaligned feature sizes the model has MMSA's TFN's trained weights, layer for
layer: 9,497,043 parameters (MMSA counts 2 more, its output bound's constants stored as frozen
parameters; docs/baselines.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import RealFrameLSTM, masked_mean


class _BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that falls back on its running statistics for a training batch of one sample
    (which has no batch statistics), so an odd last batch cannot crash a run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class PooledSubNet(nn.Module):
    """TFN's audio/vision subnetwork: BatchNorm, dropout and three ReLU layers on the time-average."""

    def __init__(self, d_in: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = _BatchNorm(d_in)
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(masked_mean(x, mask)))


class TextSubNet(nn.Module):
    """TFN's text subnetwork: an LSTM over the real tokens, its final state, dropout, a linear layer."""

    def __init__(self, d_in: int, hidden: int, out: int, dropout: float):
        super().__init__()
        self.lstm = RealFrameLSTM(d_in, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.lstm(x, mask)[2]))


class PreFusionSubnets(nn.Module):
    """The per-modality subnetworks TFN and LMF share; `forward` returns {m: (B, dims[m])}."""

    def __init__(self, input_dims: dict[str, int], hidden: dict[str, int], text_out: int, dropouts: dict[str, float]):
        super().__init__()
        self.nets = nn.ModuleDict(
            {
                m: TextSubNet(d, hidden[m], text_out, dropouts[m])
                if m == "text"
                else PooledSubNet(d, hidden[m], dropouts[m])
                for m, d in input_dims.items()
            }
        )
        self.dims = {m: text_out if m == "text" else hidden[m] for m in input_dims}

    def forward(self, feats: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        codes = {}
        for m, net in self.nets.items():
            present = masks[m].any(1, keepdim=True).to(feats[m].dtype)
            codes[m] = net(feats[m], masks[m]) * present  # no real frame -> h_m = 0 (see module doc)
        return codes


def with_one(h: torch.Tensor) -> torch.Tensor:
    """[h; 1]: the constant keeps every lower-order term alive in the products."""
    return torch.cat([h, h.new_ones(h.shape[0], 1)], dim=-1)


def tensor_fusion(codes: list[torch.Tensor]) -> torch.Tensor:
    """Flattened outer product of [h_1; 1] (x) [h_2; 1] (x) ... per sample: (B, prod(d_i + 1))."""
    z = with_one(codes[0])
    for h in codes[1:]:
        z = torch.einsum("bi,bj->bij", z, with_one(h)).flatten(1)
    return z


@MODELS.register("tfn")
class TFN(MSAModel):
    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        text_hidden: int = 128,
        audio_hidden: int = 32,
        vision_hidden: int = 128,
        text_out: int = 32,
        post_fusion_dim: int = 64,
        text_dropout: float = 0.3,
        audio_dropout: float = 0.3,
        vision_dropout: float = 0.3,
        post_fusion_dropout: float = 0.5,
        bounded_output: bool = True,
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        hidden = {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden}
        dropouts = {"text": text_dropout, "audio": audio_dropout, "vision": vision_dropout}
        self.subnets = PreFusionSubnets(self.input_dims, hidden, text_out, dropouts)
        fused = 1
        for d in self.subnets.dims.values():
            fused *= d + 1
        self.post_fusion = nn.Sequential(
            nn.Dropout(post_fusion_dropout),
            nn.Linear(fused, post_fusion_dim),
            nn.ReLU(),
            nn.Linear(post_fusion_dim, post_fusion_dim),
            nn.ReLU(),
            nn.Linear(post_fusion_dim, output_dim),
        )
        # TFN regresses into the label range: sigmoid scaled to (-3, 3), the MOSI/MOSEI range.
        self.bounded = bounded_output and output_dim == 1

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        codes = self.subnets(feats, masks)  # {m: (B, d_m)}
        z = tensor_fusion([codes[m] for m in self.modalities])  # (B, prod(d_m + 1))
        y = self.post_fusion(z)
        if self.bounded:
            y = 6.0 * torch.sigmoid(y) - 3.0
        return ModelOutput(self.head_output(y), extras={f"code_{m}": c for m, c in codes.items()})
