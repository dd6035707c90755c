"""DBR: Dual-Branch Rebalancing over a shared-private decoupling stage (arXiv 2604.25179).

The claim: in shared/private pipelines the shared branch piles up redundant, modality-biased
evidence while the interaction between branches leaks shared information into the private
channels ("branch imbalance"). No code, equations or tables are public; this file builds the
four components the abstract names, each behind a switch, in the order data flows through them:

1. Decoupling (MISA-style): per-modality encoders, then one shared and one private code per frame,
   with similarity (CMD), difference (orthogonality) and reconstruction losses.
2. TSF, shared branch: a temporal path over each modality's shared sequence and a structural path
   over modality x feature-group nodes, mixed by an input-dependent gate, with a redundancy
   penalty (HSIC or cos^2) between the two paths.
3. AGPR, private branch: learnable per-modality anchors that private frames are routed to, and a
   small gated borrowing term from the other modalities' private codes, L1-penalised.
4. BRF: private-to-shared and shared-to-private cross-attention, then context-dependent branch
   weights that scale what each branch hands to the head.

Switched off, each component falls back to its plain version: TSF -> time-mean of the shared
codes; AGPR -> time-mean of the private codes; BRF -> concatenation of the two branch summaries.
Design choices and equations: docs/dbr.md.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models import losses
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import MLP, CrossAttention, SequenceEncoder, masked_downsample, masked_mean

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
REDUNDANCY = {"hsic": losses.hsic, "cos2": losses.cosine_squared}


def _stack_present(masks: dict[str, torch.Tensor], modalities) -> torch.Tensor:
    """(B, M) bool: which modalities have at least one real frame in each sample."""
    return torch.stack([masks[m].any(1) for m in modalities], dim=1)


# ---- 1. decoupling -------------------------------------------------------------------------------
class SharedPrivateDecoupling(nn.Module):
    """One shared encoder for every modality and one private encoder per modality, per frame.

    The shared encoder's weights are common to all modalities, so similarity between modalities
    has to be achieved in one space; the decoders (only built when reconstruction is on) map
    shared + private back to the encoder output they came from.
    """

    def __init__(self, modalities: tuple[str, ...], dim: int, activation: str, reconstruction: bool):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.shared = nn.Sequential(nn.Linear(dim, dim), act())
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, dim), act()) for m in modalities})
        self.decoder = nn.ModuleDict({m: nn.Linear(dim, dim) for m in modalities}) if reconstruction else None

    def forward(self, h: dict[str, torch.Tensor]):
        shared = {m: self.shared(x) for m, x in h.items()}  # (B, T_m, D) each
        private = {m: self.private[m](x) for m, x in h.items()}
        return shared, private

    def reconstruction(self, h_means, shared_means, private_means) -> torch.Tensor:
        # Utterance level, as MISA: frame-level targets would spend the codes on the positional
        # encodings. The target is detached: the loss should shape the codes, not shrink H.
        assert self.decoder is not None  # called only with reconstruction
        errs = [
            F.mse_loss(self.decoder[m](s + p), h.detach())
            for m, h, s, p in zip(self.decoder, h_means, shared_means, private_means)
        ]
        return torch.stack(errs).mean()


def similarity_loss(shared_means: list[torch.Tensor], moments: int) -> torch.Tensor:
    """Mean CMD between the time-mean shared codes of every modality pair (needs >= 2 modalities)."""
    return torch.stack([losses.cmd(a, b, moments) for a, b in itertools.combinations(shared_means, 2)]).mean()


def difference_loss(shared_means: list[torch.Tensor], private_means: list[torch.Tensor]) -> torch.Tensor:
    """Mean orthogonality between each modality's shared and private codes and between private pairs (MISA)."""
    terms = [losses.orthogonality(s, p) for s, p in zip(shared_means, private_means)]
    terms += [losses.orthogonality(a, b) for a, b in itertools.combinations(private_means, 2)]
    return torch.stack(terms).mean()


# ---- 2. Temporal-Structural Factorization (shared branch) ---------------------------------------
class TemporalStructuralFactorization(nn.Module):
    """Shared codes -> one shared token per modality, from a temporal and a structural path.

    temporal:   positions re-added, `layers` Transformer layers over the shared sequence, then
                `queries` learned queries pool it by attention (order-aware): t_m (B, D).
    structural: the time-mean shared code of each modality is cut into `groups` feature groups;
                every (modality, group) is a node; one attention layer over the fully connected node
                graph (order-blind: built from time-means): n_m = mean of its nodes (B, D).
    integration: g_m = sigmoid(MLP([t_m; n_m])); c_m = g_m t_m + (1 - g_m) n_m.
    redundancy: mean over modalities of HSIC(t_m, n_m) (or cos^2), so the paths carry different things.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        dim: int,
        heads: int,
        dropout: float,
        layers: int,
        queries: int,
        groups: int,
        redundancy: str,
    ):
        super().__init__()
        if groups < 1 or dim % groups:
            raise ConfigError(f"tsf_groups={groups}: must be a positive divisor of hidden={dim}")
        if queries < 1:
            raise ConfigError(f"tsf_queries={queries}: expected at least 1")
        self.groups = groups
        self.temporal = SequenceEncoder(dim, dim, layers, heads, dropout)
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.pool = CrossAttention(dim, heads, dropout)
        self.group_proj = nn.Linear(dim // groups, dim)
        self.node_embed = nn.Parameter(torch.randn(len(modalities) * groups, dim) * 0.02)
        self.graph = CrossAttention(dim, heads, dropout)
        self.gate = MLP([2 * dim, dim, 1], dropout)
        self.redundancy = REDUNDANCY[redundancy]

    def temporal_path(self, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.temporal(s, mask)  # (B, T, D)
        q = self.queries.unsqueeze(0).expand(s.shape[0], -1, -1)  # (B, K, D)
        return self.pool(q, z, mask).mean(1)  # (B, D)

    def structural_path(self, summaries: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        b, m, d = summaries.shape  # (B, M, D) time-means
        g = self.groups
        nodes = self.group_proj(summaries.view(b, m, g, d // g)).view(b, m * g, d) + self.node_embed
        node_mask = present.repeat_interleave(g, dim=1)  # (B, M*G)
        out = self.graph(nodes, nodes, node_mask, node_mask)
        return out.view(b, m, g, d).mean(2)  # (B, M, D)

    def forward(
        self, shared: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], present: torch.Tensor, loss: bool = True
    ):
        """c (B, M, D), the gate (B, M) and the redundancy loss (None unless `loss`)."""
        mods = list(shared)
        t = torch.stack([self.temporal_path(shared[m], masks[m]) for m in mods], dim=1)  # (B, M, D)
        n = self.structural_path(torch.stack([masked_mean(shared[m], masks[m]) for m in mods], 1), present)
        gate = torch.sigmoid(self.gate(torch.cat([t, n], -1)))  # (B, M, 1)
        c = gate * t + (1 - gate) * n
        redundancy = torch.stack([self.redundancy(t[:, i], n[:, i]) for i in range(len(mods))]).mean() if loss else None
        return c, gate.squeeze(-1), redundancy


# ---- 3. Anchor-Guided Private Routing (private branch) -------------------------------------------
def route_to_anchors(x: torch.Tensor, mask: torch.Tensor, anchors: torch.Tensor, temperature: float = 1.0):
    """Soft-route each real frame to K anchors and gather one slot per anchor.

    r_tk = softmax_k(<x_t, a_k> / (sqrt(D) * temperature)); slot_k = sum_t r_tk x_t / sum_t r_tk over
    real frames. Returns slots (B, K, D) and each anchor's share of the real frames, load (B, K).
    """
    r = torch.einsum("btd,kd->btk", x, anchors).div(math.sqrt(x.shape[-1]) * temperature).softmax(-1)
    r = r * mask.unsqueeze(-1).to(r.dtype)  # padded frames route nowhere
    mass = r.sum(1)  # (B, K)
    slots = torch.einsum("btk,btd->bkd", r, x) / mass.clamp_min(1e-6).unsqueeze(-1)
    load = mass / mask.sum(1, keepdim=True).clamp_min(1).to(r.dtype)
    return slots, load


class AnchorGuidedPrivateRouting(nn.Module):
    """Private codes -> one private token per modality, read out through its own anchors.

    Anchors are learnable per modality; each anchor's slot goes through its own part of the
    readout (Linear over the K concatenated slots), so what a frame contributes depends on which
    anchor it routes to. Borrowing (>= 2 modalities): b_m = W_m mean_{n != m} p_n, gated by
    g_m = sigmoid(U_m [p_m; mean_{n != m} p_n]) that starts nearly closed; q_m = p_m + g_m * b_m,
    with L1 on g_m as the sparsity penalty.
    """

    def __init__(
        self, modalities: tuple[str, ...], dim: int, anchors: int, temperature: float, borrow: bool, gate_bias: float
    ):
        super().__init__()
        if anchors < 1:
            raise ConfigError(f"agpr_anchors={anchors}: expected at least 1")
        if temperature <= 0:
            raise ConfigError(f"agpr_temperature={temperature}: expected a positive number")
        self.temperature = temperature
        self.norm = nn.LayerNorm(dim)
        self.anchors = nn.ParameterDict({m: nn.Parameter(torch.randn(anchors, dim)) for m in modalities})
        self.readout = nn.ModuleDict({m: nn.Linear(anchors * dim, dim) for m in modalities})
        self.borrow = self.gate = None
        if borrow and len(modalities) > 1:
            self.borrow = nn.ModuleDict({m: nn.Linear(dim, dim) for m in modalities})
            gates = {m: nn.Linear(2 * dim, dim) for m in modalities}
            self.gate = nn.ModuleDict(gates)
            for lin in gates.values():
                nn.init.constant_(lin.bias, gate_bias)

    def forward(self, private: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], present: torch.Tensor):
        mods = list(private)
        codes, loads = [], []
        for m in mods:
            slots, load = route_to_anchors(self.norm(private[m]), masks[m], self.anchors[m], self.temperature)
            codes.append(self.readout[m](slots.flatten(1)))  # (B, D)
            loads.append(load)
        p = torch.stack(codes, 1)  # (B, M, D)
        out = {"load": torch.stack(loads, 1)}  # (B, M, K)
        if self.gate is None or self.borrow is None:  # made together
            return p, out
        w = present.to(p.dtype).unsqueeze(-1)  # (B, M, 1)
        total, count = (p * w).sum(1, keepdim=True), w.sum(1, keepdim=True)
        others = (total - p * w) / (count - w).clamp_min(1.0)  # mean over the other present modalities
        q, per_mod_gates = [], []
        for i, m in enumerate(mods):
            g = torch.sigmoid(self.gate[m](torch.cat([p[:, i], others[:, i]], -1)))  # (B, D)
            q.append(p[:, i] + g * self.borrow[m](others[:, i]))
            per_mod_gates.append(g)
        gates = torch.stack(per_mod_gates, 1)  # (B, M, D)
        out["gate"] = gates.mean(-1)
        out["sparsity"] = gates.abs().mean()
        return torch.stack(q, 1), out


# ---- 4. Bidirectional Rebalancing Fusion ---------------------------------------------------------
class BidirectionalRebalancingFusion(nn.Module):
    """Shared tokens read the private ones and vice versa; then per-sample branch weights.

    c' = CrossAttn(c <- q) (private-to-shared), q' = CrossAttn(q <- c) (shared-to-private);
    h_s, h_p = mean over present modalities; w = softmax(MLP([h_s; h_p])) (B, 2);
    fused = [2 w_s h_s; 2 w_p h_p] (equal weights leave both branches unscaled).
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.private_to_shared = CrossAttention(dim, heads, dropout)
        self.shared_to_private = CrossAttention(dim, heads, dropout)
        self.weigher = MLP([2 * dim, dim, 2], dropout)

    def interact(self, c: torch.Tensor, q: torch.Tensor, present: torch.Tensor):
        c2 = self.private_to_shared(c, q, present, present)
        q2 = self.shared_to_private(q, c, present, present)
        return masked_mean(c2, present), masked_mean(q2, present)

    def forward(self, shared: torch.Tensor, private: torch.Tensor):
        w = self.weigher(torch.cat([shared, private], -1)).softmax(-1)  # (B, 2)
        return torch.cat([2 * w[:, :1] * shared, 2 * w[:, 1:] * private], -1), w


# ---- the model -----------------------------------------------------------------------------------
@MODELS.register("dbr")
class DBR(MSAModel):
    """Decoupling -> TSF (shared) + AGPR (private) -> BRF -> head; each component switchable.

    Extras for analysis (report/diagnostics.py reads them): `shared_summary` and `private_summary`
    (B, D), what each branch hands to the head; `shared_pre` / `private_pre`, the branch summaries
    before BRF; `branch_weights` (B, 2) [shared, private] when BRF is on; `tsf_gate` (B, M) the
    temporal path's weight; `agpr_gate` (B, M) the mean borrowing gate; `agpr_load` (B, M, K).
    `branch_head(shared, private)` recomputes the prediction from the two summaries.
    """

    windows_padding = True  # masked_downsample windows span the batch's padded length

    # Override with train.aux_weights.<name>=w, naming only losses the configuration produces (no
    # "sim" with one modality, no "tsf_redundancy" with tsf off).
    default_aux_weights = {"sim": 1.0, "diff": 0.3, "recon": 0.5, "tsf_redundancy": 0.1, "agpr_sparsity": 0.01}
    options_added = {"encoder_norm": False}

    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        # Every component has a switch; switched off it falls back to its plain version (tsf ->
        # time-mean of the shared codes, agpr -> time-mean of the private codes, brf -> concatenation).
        hidden: int = 128,
        heads: int = 4,
        dropout: float = 0.1,
        encoder_layers: int = 1,  # Transformer layers per modality before decoupling (0: projection only)
        encoder_positions: bool = True,  # sinusoidal positions in those encoders (a pretrained text encoder has its own)
        encoder_norm: bool = True,  # LayerNorm after the encoders' last (pre-norm) layer keeps their output scale bounded
        max_frames: int = 50,  # cap long audio/vision with windowed masked means; 0 = no cap
        code_activation: str = "sigmoid",  # shared/private code activation (MISA's)
        # 1. decoupling losses (MISA-style)
        similarity: bool = True,  # CMD between the modalities' shared codes -> aux loss "sim"
        difference: bool = True,  # orthogonality shared/private and private/private -> "diff"
        reconstruction: bool = True,  # decoders from shared + private -> "recon"
        cmd_moments: int = 5,
        # 2. Temporal-Structural Factorization (shared branch)
        tsf: bool = True,
        tsf_layers: int = 1,  # Transformer layers of the temporal path
        tsf_queries: int = 4,  # learned pooling queries of the temporal path
        tsf_groups: int = 4,  # feature groups per modality = structural nodes per modality
        tsf_redundancy: str = "hsic",  # hsic | cos2 -> aux loss "tsf_redundancy"
        # 3. Anchor-Guided Private Routing (private branch)
        agpr: bool = True,
        agpr_anchors: int = 4,
        agpr_temperature: float = 1.0,
        agpr_borrow: bool = True,  # gated cross-modal borrowing -> aux loss "agpr_sparsity" (L1 on the gates)
        agpr_gate_bias: float = -2.0,  # gates start nearly closed (sigmoid(-2) = 0.12)
        # 4. Bidirectional Rebalancing Fusion
        brf: bool = True,
        head_hidden: int | None = None,  # None: same as hidden
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        if code_activation not in ACTIVATIONS:
            raise ConfigError(f"code_activation={code_activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if tsf_redundancy not in REDUNDANCY:
            raise ConfigError(f"tsf_redundancy={tsf_redundancy!r}; expected one of {sorted(REDUNDANCY)}")
        if hidden % heads:
            raise ConfigError(f"hidden={hidden} must be divisible by heads={heads}")
        if max_frames < 0:
            raise ConfigError(f"max_frames={max_frames}: expected 0 (no cap) or a positive number of frames")
        self.max_frames = max_frames
        self.similarity, self.difference, self.cmd_moments = similarity, difference, cmd_moments
        mods = self.modalities
        # A pretrained text encoder already encodes positions; `encoder_positions: false` skips ours.
        # Without the final LayerNorm the encoders' outputs grew to a mean |h| of 27-152 on MOSEI text,
        # the reconstruction loss (its target detached) ran away and all 3 seeds ended near the mean
        # predictor (docs/dbr.md, "Encoder output scale").
        self.encoders = nn.ModuleDict(
            {
                m: SequenceEncoder(
                    self.input_dims[m],
                    hidden,
                    encoder_layers,
                    heads,
                    dropout,
                    positional=encoder_positions,
                    final_norm=encoder_norm,
                )
                for m in mods
            }
        )
        self.decouple = SharedPrivateDecoupling(mods, hidden, code_activation, reconstruction)
        self.tsf = (
            TemporalStructuralFactorization(
                mods, hidden, heads, dropout, tsf_layers, tsf_queries, tsf_groups, tsf_redundancy
            )
            if tsf
            else None
        )
        self.agpr = (
            AnchorGuidedPrivateRouting(mods, hidden, agpr_anchors, agpr_temperature, agpr_borrow, agpr_gate_bias)
            if agpr
            else None
        )
        self.brf = BidirectionalRebalancingFusion(hidden, heads, dropout) if brf else None
        # One LayerNorm per branch before fusion: time-means of sigmoid codes vary little around
        # 0.5, and the plain (no-BRF) path has no other normalisation before the head. Separate
        # norms keep the branches independent, so ablating one cannot rescale the other.
        self.norm_shared, self.norm_private = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.head = MLP([2 * hidden, head_hidden or hidden, output_dim], dropout)

    def branch_head(self, shared: torch.Tensor, private: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prediction from the two branch summaries (B, D) each, and the branch weights (or None)."""
        shared, private = self.norm_shared(shared), self.norm_private(private)
        if self.brf is None:
            fused, w = torch.cat([shared, private], -1), None
        else:
            fused, w = self.brf(shared, private)
        return self.head_output(self.head(fused)), w

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        h, mk = {}, {}
        for m in self.modalities:
            x, k = feats[m], masks[m]
            if self.max_frames:  # long audio/vision: windowed means keep the order at a fraction of the cost
                x, k = masked_downsample(x, k, self.max_frames)
            h[m], mk[m] = self.encoders[m](x, k), k  # (B, T_m, D)
        present = _stack_present(mk, self.modalities)  # (B, M)
        aux, extras = {}, {}

        # 1. decoupling
        shared, private = self.decouple(h)
        s_mean = [masked_mean(shared[m], mk[m]) for m in self.modalities]  # (B, D) each
        p_mean = [masked_mean(private[m], mk[m]) for m in self.modalities]
        wanted = self.computes_aux_losses
        if wanted and self.similarity and len(self.modalities) > 1:
            aux["sim"] = similarity_loss(s_mean, self.cmd_moments)
        if wanted and self.difference:
            aux["diff"] = difference_loss(s_mean, p_mean)
        if wanted and self.decouple.decoder is not None:
            h_mean = [masked_mean(h[m], mk[m]) for m in self.modalities]
            aux["recon"] = self.decouple.reconstruction(h_mean, s_mean, p_mean)

        # 2. shared branch
        if self.tsf is None:
            c = torch.stack(s_mean, 1)  # (B, M, D)
        else:
            c, extras["tsf_gate"], redundancy = self.tsf(shared, mk, present, loss=wanted)
            if redundancy is not None:
                aux["tsf_redundancy"] = redundancy

        # 3. private branch
        if self.agpr is None:
            q = torch.stack(p_mean, 1)
        else:
            q, routed = self.agpr(private, mk, present)
            extras["agpr_load"] = routed["load"]
            if "gate" in routed:
                extras["agpr_gate"] = routed["gate"]
                if wanted:
                    aux["agpr_sparsity"] = routed["sparsity"]

        # 4. fusion
        extras["shared_pre"], extras["private_pre"] = masked_mean(c, present), masked_mean(q, present)
        if self.brf is None:
            hs, hp = extras["shared_pre"], extras["private_pre"]
        else:
            hs, hp = self.brf.interact(c, q, present)
        y, w = self.branch_head(hs, hp)
        extras["shared_summary"], extras["private_summary"] = hs, hp
        if w is not None:
            extras["branch_weights"] = w
        return ModelOutput(y, aux, extras)
