"""MISA: Modality-Invariant and -Specific representations (Hazarika et al., ACM MM 2020).

Each modality's utterance code u_m (B, H) is split into two subspaces:

    shared  s_m = sigmoid(W_s u_m + b)        one encoder for all modalities (invariant)
    private p_m = sigmoid(W_m u_m + b_m)      one encoder per modality (specific)

and three auxiliary losses shape them:
- similarity: CMD (5 central moments, losses.cmd) between the shared codes of every pair of
  modalities, averaged over pairs: the shared space should not tell modalities apart;
- difference: orthogonality (losses.orthogonality) between p_m and s_m for each m and between
  every pair of private codes, summed: the subspaces should carry different things;
- reconstruction: mean squared error between u_m and a linear decoding of p_m + s_m, averaged
  over modalities: neither subspace may throw the utterance away.
The 2n codes then form a sequence of 2n tokens for one Transformer layer (2 heads); the outputs are
concatenated for the head.

Utterance codes: text is the masked mean of the token features (MISA with BERT averages BERT's
outputs), audio and vision go through MISA's sLSTM (two bidirectional LSTM layers with a LayerNorm
between them, final states of both layers concatenated); each then Linear + ReLU + LayerNorm to H.
The LSTMs read each modality's own real frames (MMSA packs audio/vision with the text lengths,
which only fits aligned data).

Absent modalities: codes and losses exist for the modalities present; with one modality there is no
pair to compare, so `similarity` is not produced. A modality missing at test time keeps its tokens in
the fusion sequence but they are hidden as keys, so the others do not attend to them.

Defaults: MMSA config_regression.json, "misa" / "mosi" with use_cmd_sim: H = 128, dropout 0.2,
sim_weight 0.3, diff_weight 0.1, recon_weight 1.0, lr 1e-4, batch 16, gradient value clip 0.8,
weight decay 0 (the training recipe in configs/models/misa.yaml). MISA's task loss is MSE; here
the task loss is the trainer's, the same for every model (L1 unless train.loss says otherwise). The adversarial
similarity alternative (use_cmd_sim: false) is not built. At MOSI's unaligned feature sizes the
model has the 1,134,445 parameters that train in MMSA's MISA without its BERT; MMSA also builds a
LayerNorm for a text LSTM its BERT path never runs and a shared/private discriminator whose output
no loss reads, which are not built here (docs/baselines.md).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import EncoderLayer, RealFrameLSTM, key_padding_mask, masked_mean
from sentangle.models.losses import cmd, orthogonality, total


class SLSTM(nn.Module):
    """MISA's sequence encoder: BiLSTM, LayerNorm, BiLSTM; final states of both layers (B, 4 * hidden)."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.rnn1 = RealFrameLSTM(d_in, hidden, bidirectional=True)
        self.norm = nn.LayerNorm(2 * hidden)
        self.rnn2 = RealFrameLSTM(2 * hidden, hidden, bidirectional=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out1, mask1, final1 = self.rnn1(x, mask)
        _, _, final2 = self.rnn2(self.norm(out1), mask1)
        return torch.cat([final1, final2], dim=-1)


@MODELS.register("misa")
class MISA(MSAModel):
    default_aux_weights = {"similarity": 0.3, "difference": 0.1, "reconstruction": 1.0}

    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        hidden: int = 128,
        dropout: float = 0.2,
        rnn_hidden: int | None = None,  # None: each modality's LSTM is as wide as its input (MISA)
        cmd_moments: int = 5,
        fusion_heads: int = 2,
        similarity: bool = True,
        difference: bool = True,
        reconstruction: bool = True,
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        if hidden % fusion_heads:
            raise ConfigError(f"misa: hidden ({hidden}) must be divisible by fusion_heads ({fusion_heads})")
        self.cmd_moments = cmd_moments
        self.use_similarity, self.use_difference = similarity, difference
        # the LSTM width is each modality's input size unless given (MISA's hidden_sizes = input sizes)
        self.encoders = nn.ModuleDict({m: SLSTM(d, rnn_hidden or d) for m, d in self.input_dims.items() if m != "text"})
        enc_dims = {m: d if m == "text" else 4 * (rnn_hidden or d) for m, d in self.input_dims.items()}
        self.project = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.LayerNorm(hidden)) for m, d in enc_dims.items()}
        )
        self.private = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid()) for m in self.modalities}
        )
        self.shared = nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid())
        self.recon = nn.ModuleDict({m: nn.Linear(hidden, hidden) for m in self.modalities}) if reconstruction else None
        # nn.TransformerEncoderLayer's defaults otherwise (feed-forward 2048, dropout 0.1, post-norm), as MISA
        layer = EncoderLayer(hidden, fusion_heads, batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        n = 2 * len(self.modalities)
        self.head = nn.Sequential(
            nn.Linear(n * hidden, n * hidden // 2),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(n * hidden // 2, output_dim),
        )

    def utterance(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean(x, mask) if m == "text" else self.encoders[m](x, mask)
        return self.project[m](pooled)  # (B, H)

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        mods = self.modalities
        u = {m: self.utterance(m, feats[m], masks[m]) for m in mods}
        private = {m: self.private[m](u[m]) for m in mods}
        shared = {m: self.shared(u[m]) for m in mods}

        aux: dict[str, torch.Tensor] = {}
        pairs = list(itertools.combinations(mods, 2))
        wanted = self.computes_aux_losses
        if wanted and self.use_similarity and pairs:
            aux["similarity"] = total(cmd(shared[a], shared[b], self.cmd_moments) for a, b in pairs) / len(pairs)
        if wanted and self.use_difference:
            aux["difference"] = total(orthogonality(private[m], shared[m]) for m in mods) + sum(
                orthogonality(private[a], private[b]) for a, b in pairs
            )
        if wanted and self.recon is not None:
            aux["reconstruction"] = total(F.mse_loss(self.recon[m](private[m] + shared[m]), u[m]) for m in mods) / len(
                mods
            )

        tokens = torch.stack([private[m] for m in mods] + [shared[m] for m in mods], dim=1)  # (B, 2n, H)
        present = torch.stack([masks[m].any(1) for m in mods] * 2, dim=1)  # (B, 2n)
        h = self.fusion(tokens, src_key_padding_mask=key_padding_mask(present))
        y = self.head(h.flatten(1))
        extras = {
            **{f"utterance_{m}": v for m, v in u.items()},
            **{f"private_{m}": p for m, p in private.items()},
            **{f"shared_{m}": s for m, s in shared.items()},
        }
        return ModelOutput(self.head_output(y), aux, extras)
