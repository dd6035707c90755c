"""TSDA: Temporal-Spatial Decouple before Act (arXiv 2601.13659), built from the paper's description.

The claim: mixing a modality's temporal dynamics with its static ("spatial") structure before
fusion makes the modalities interact on unlike evidence. So each modality is first split into a
temporal token sequence and a time-invariant token set, like is aligned only with like across
modalities (FCCA), the two factors are kept apart (token purity, summary decorrelation) and are
recoupled at the end by a gate that looks at how much the two factors agree.

No code, equations or loss weights are public: every choice below is ours and docs/tsda.md gives
its reason. Every component has a switch, and a switched-off component creates no parameters and
produces no loss, so the paper's ablations are configs (docs/tsda.md lists them).

Data flow per modality m (B batch, T_m frames, T'_m <= max_tokens temporal tokens, K queries):
  x_m (B, T_m, d_m) -> u_m = W_m x_m (B, T_m, D)                              projection
  temporal: window-average u_m to (B, T'_m, D), [+ first differences], + positions,
            Transformer                                  -> Z^T_m (B, T'_m, D)
  spatial:  K queries attend over all real frames of u_m, no positions -> Z^S_m (B, K, D)
then over all modalities: FCCA (factor-masked self-attention over every token), summaries
s^T_m, s^S_m, the gated recouple per modality and a head over the concatenated modality codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models import losses
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import (
    MLP,
    CrossAttention,
    EncoderLayer,
    SequenceEncoder,
    grad_reverse,
    masked_downsample,
    masked_mean,
)

FACTORS = ("temporal", "spatial")
FCCA_MODES = ("factor", "full", "none")
FUSIONS = ("gate", "concat", "average")
PURITY_MODES = ("supervised", "adversarial", "none")
TEMPORAL_INPUTS = ("frames", "diff", "both")


def first_difference(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x_t - x_prev for each real token t, where prev is the last real token before t; else 0.

    Skipping over padding keeps a missing window from turning into a jump. (B, T, D) -> (B, T, D).
    """
    b, t, _ = x.shape
    pos = torch.arange(t, device=x.device).expand(b, t)
    last_real = torch.where(mask, pos, torch.full_like(pos, -1)).cummax(dim=1).values  # last real index <= t
    prev = torch.cat([last_real.new_full((b, 1), -1), last_real[:, :-1]], dim=1)  # last real index < t
    valid = mask & (prev >= 0)
    gathered = x.gather(1, prev.clamp_min(0).unsqueeze(-1).expand_as(x))
    return (x - gathered) * valid.unsqueeze(-1).to(x.dtype)


def factor_attention_mask(real: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """Which keys each query may see: (B, N) real tokens and (N,) factor ids -> (B, N, N) bool, True = allowed.

    With `factor` a token sees only real tokens of its own factor (block-diagonal by factor);
    with None it sees every real token. A row with nothing to see is allowed its own token, so
    softmax never runs over an all-masked row (no NaN); that row is padding and is dropped later.
    """
    allowed = real.unsqueeze(1).expand(-1, real.shape[1], -1)
    if factor is not None:
        allowed = allowed & (factor.unsqueeze(0) == factor.unsqueeze(1))
    eye = torch.eye(real.shape[1], dtype=torch.bool, device=real.device)
    return allowed | (eye & ~allowed.any(-1, keepdim=True))


class TemporalEncoder(nn.Module):
    """A small Transformer over a modality's (window-averaged) frames, with positions: Z^T (B, T', D).

    `inputs`: "frames" feeds the tokens, "diff" their first differences (only change reaches this
    branch, so static levels cannot leak into it), "both" the two concatenated.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, inputs: str = "frames"):
        super().__init__()
        self.inputs = inputs
        self.encoder = SequenceEncoder(
            2 * dim if inputs == "both" else dim, dim, layers, heads, dropout, positional=True
        )

    def forward(self, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.inputs == "diff":
            u = first_difference(u, mask)
        elif self.inputs == "both":
            u = torch.cat([u, first_difference(u, mask)], dim=-1)
        return self.encoder(u, mask)


class SpatialEncoder(nn.Module):
    """K learnable queries attend over a modality's real frames: a time-invariant set Z^S (B, K, D).

    The keys carry no positions, so permuting the frames of a sample leaves Z^S unchanged.
    """

    def __init__(self, dim: int, queries: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.blocks = nn.ModuleList([CrossAttention(dim, heads, dropout) for _ in range(layers)])

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.queries.expand(frames.shape[0], -1, -1)
        for block in self.blocks:
            z = block(z, frames, mask)
        return z


class FactorConsistentAlignment(nn.Module):
    """FCCA: self-attention over the tokens of all modalities and both factors at once.

    `factor_mask=True`: temporal tokens attend only to temporal tokens (of any modality), spatial
    only to spatial; False gives plain attention over every token (the "no FCCA" ablation).
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, factor_mask: bool = True):
        super().__init__()
        self.heads, self.factor_mask = heads, factor_mask
        layer = EncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor, real: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        allowed = factor_attention_mask(real, factor if self.factor_mask else None)  # (B, N, N)
        blocked = (~allowed).repeat_interleave(self.heads, dim=0)  # (B * heads, N, N), True = hidden
        return self.encoder(tokens, mask=blocked)


class FactorHead(nn.Module):
    """Auxiliary head on one factor summary: its own prediction of the label and a confidence.

    Classification: logits, confidence = max softmax probability, loss = cross-entropy.
    Regression: a prediction trained with L1 (the task loss) and a predicted absolute error e
    trained with L1 against the head's actual (detached) error; confidence = -e. A head that
    knows it is unreliable on this sample says so, in label units.
    """

    def __init__(self, dim: int, output_dim: int, dropout: float):
        super().__init__()
        self.classify = output_dim > 1
        self.net = MLP([dim, dim, output_dim if self.classify else 2], dropout)

    def forward(self, s: torch.Tensor) -> dict[str, torch.Tensor]:
        """prediction (B,) or logits (B, C); view (B, 1) or (B, C) for the disagreement; confidence (B, 1)."""
        out = self.net(s)
        if self.classify:
            prob = out.softmax(-1)
            return {"prediction": out, "view": prob, "confidence": prob.max(-1, keepdim=True).values}
        pred, err = out[:, 0], F.softplus(out[:, 1])
        return {"prediction": pred, "view": pred.unsqueeze(-1), "confidence": -err.unsqueeze(-1), "error": err}

    @staticmethod
    def loss(out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if "error" not in out:
            return F.cross_entropy(out["prediction"], labels)
        miss = (out["prediction"] - labels).abs()
        return miss.mean() + (out["error"] - miss.detach()).abs().mean()


class Recouple(nn.Module):
    """One modality's factor summaries -> its code h_m.

    gate: g = sigmoid(MLP([s^T; s^S; |y^T - y^S|; c^T; c^S])) (elementwise, D), h = g P_T(s^T) + (1 - g) P_S(s^S);
    concat: h = [P_T(s^T); P_S(s^S)]; average: h = (P_T(s^T) + P_S(s^S)) / 2. With one factor, h = P(s).
    The aux heads' outputs enter the gate detached: they stay honest predictors of the label
    rather than becoming free features shaped by the task loss.
    """

    def __init__(self, dim: int, factors: tuple[str, ...], fusion: str, head_dim: int | None, dropout: float):
        super().__init__()
        self.factors, self.fusion = factors, fusion
        self.proj = nn.ModuleDict({f: nn.Linear(dim, dim) for f in factors})
        self.gate: MLP | None = None
        if len(factors) == 2 and fusion == "gate":
            extra = 0 if head_dim is None else head_dim + 2  # |y^T - y^S| and two confidences
            self.gate = MLP([2 * dim + extra, dim, dim], dropout)
        self.out_dim = 2 * dim if len(factors) == 2 and fusion == "concat" else dim

    def forward(self, s: dict[str, torch.Tensor], heads: dict | None):
        """-> (h (B, D) or (B, 2D), the projections {factor: (B, D)}, the gate (B, D) or None)."""
        p = {f: self.proj[f](s[f]) for f in self.factors}  # (B, D) each
        if len(self.factors) == 1:
            return p[self.factors[0]], p, None
        pt, ps = p["temporal"], p["spatial"]
        if self.fusion == "concat":
            return torch.cat([pt, ps], dim=-1), p, None
        if self.fusion == "average":
            return 0.5 * (pt + ps), p, None
        assert self.gate is not None  # made for fusion "gate" with two factors, the case left
        parts = [s["temporal"], s["spatial"]]
        if heads is not None:
            t, sp = heads["temporal"], heads["spatial"]
            parts += [(t["view"] - sp["view"]).abs().detach(), t["confidence"].detach(), sp["confidence"].detach()]
        g = torch.sigmoid(self.gate(torch.cat(parts, dim=-1)))  # (B, D)
        return g * pt + (1 - g) * ps, p, g


@MODELS.register("tsda")
class TSDA(MSAModel):
    """Temporal-Spatial Decouple before Act. Switches (docs/tsda.md has the ablation table):

    temporal / spatial: build that factor's branch (False removes it everywhere downstream);
    decouple: False = one mixed encoder per modality (the queries read the temporal encoder's
      output instead of the raw frames, so both token sets come from one entangled encoder);
    fcca: "factor" (block-diagonal factor mask), "full" (plain attention over all tokens), "none";
    purity: "supervised" (token discriminator trained with the encoders), "adversarial" (behind
      gradient reversal), "none"; cos_loss / hsic_loss: summary decorrelation; orth_loss: P_T vs P_S;
    aux_heads: per-factor prediction heads (their losses, and their agreement/confidence in the gate);
    fusion: "gate", "concat" or "average"; modalities: which input modalities to use;
    max_tokens: cap on temporal tokens per modality (window averaging; 0 = every frame);
    temporal_input: "frames", "diff" (first differences) or "both".
    """

    windows_padding = True  # masked_downsample windows span the batch's padded length

    default_aux_weights = {"purity": 0.1, "cos": 0.1, "hsic": 1.0, "orth": 0.1, "aux_temporal": 0.3, "aux_spatial": 0.3}

    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        hidden: int = 128,  # D
        heads: int = 4,
        dropout: float = 0.1,
        modalities: list[str] | None = None,  # None: every modality of the data; e.g. [text, audio] removes vision
        temporal: bool = True,  # temporal branch (False: the "w/o temporal" ablation)
        spatial: bool = True,  # spatial branch
        decouple: bool = True,  # False: one mixed encoder per modality ("w/o decoupling")
        temporal_layers: int = 1,
        temporal_input: str = "both",  # frames | diff (first differences) | both (frames and their differences)
        max_tokens: int = 32,  # temporal tokens per modality after window averaging (0 = every frame)
        queries: int = 4,  # K spatial queries per modality
        spatial_layers: int = 1,
        spatial_max_frames: int = 0,  # window-average frames before the spatial queries read them (0 = every frame)
        fcca: str = "factor",  # factor (block-diagonal factor mask) | full (plain attention) | none
        fcca_layers: int = 1,
        purity: str = "supervised",  # supervised | adversarial (gradient reversal) | none
        purity_alpha: float = 1.0,  # gradient-reversal strength of the adversarial variant
        cos_loss: bool = True,  # cos^2 between each modality's temporal and spatial summaries
        hsic_loss: bool = True,  # HSIC between them
        orth_loss: bool = True,  # orthogonality between P_T(s^T) and P_S(s^S)
        aux_heads: bool = True,  # per-factor prediction heads (losses; agreement and confidence feed the gate)
        fusion: str = "gate",  # gate | concat | average
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        for option, value, allowed in (
            ("fcca", fcca, FCCA_MODES),
            ("fusion", fusion, FUSIONS),
            ("purity", purity, PURITY_MODES),
            ("temporal_input", temporal_input, TEMPORAL_INPUTS),
        ):
            if value not in allowed:
                raise ConfigError(f"tsda: {option}={value!r}; expected one of {', '.join(allowed)}")
        if not (temporal or spatial):
            raise ConfigError(
                "tsda: temporal=False and spatial=False leave nothing to encode; keep at least one branch"
            )
        if not decouple and not (temporal and spatial):
            raise ConfigError(
                "tsda: decouple=False builds one mixed encoder for both factors; "
                "it needs temporal=True and spatial=True"
            )
        if hidden % heads:
            raise ConfigError(f"tsda: hidden={hidden} must be divisible by heads={heads}")
        if max_tokens < 0 or spatial_max_frames < 0 or queries < 1:
            raise ConfigError(
                "tsda: need max_tokens >= 0 and spatial_max_frames >= 0 (0 = no cap) and queries >= 1; "
                f"got {max_tokens}, {spatial_max_frames}, {queries}"
            )
        use = tuple(modalities) if modalities else self.modalities
        unknown = [m for m in use if m not in self.input_dims]
        if unknown or not use:
            raise ConfigError(
                f"tsda: modalities={list(use)}: {unknown or 'none'} not in the data; it has {list(self.modalities)}"
            )
        self.use = use
        self.factors = tuple(f for f, on in zip(FACTORS, (temporal, spatial)) if on)
        two = len(self.factors) == 2
        self.decouple, self.max_tokens, self.purity_alpha = decouple, max_tokens, purity_alpha
        self.spatial_max_frames = spatial_max_frames
        # Regularisers that compare the two factors exist only when there are two factors.
        self.purity = purity if two else "none"
        self.cos_loss, self.hsic_loss, self.orth_loss = cos_loss and two, hsic_loss and two, orth_loss and two

        # 1. Projection per modality. Affine (no norm), so window-averaging commutes with it: the
        #    temporal branch's averaged tokens are exactly projections of averaged frames.
        self.proj = nn.ModuleDict({m: nn.Linear(self.input_dims[m], hidden) for m in use})
        # 2. Temporal encoder per modality (positions added inside).
        self.temporal = (
            nn.ModuleDict({m: TemporalEncoder(hidden, temporal_layers, heads, dropout, temporal_input) for m in use})
            if temporal
            else None
        )
        # 3. Spatial encoder per modality: K queries over time, no positions on the keys.
        self.spatial = (
            nn.ModuleDict({m: SpatialEncoder(hidden, queries, spatial_layers, heads, dropout) for m in use})
            if spatial
            else None
        )
        # 4. FCCA over every token; modality embeddings tell it where a token came from.
        self.fcca = None
        if fcca != "none":
            self.fcca = FactorConsistentAlignment(hidden, fcca_layers, heads, dropout, factor_mask=fcca == "factor")
            self.modality_embedding = nn.Parameter(torch.zeros(len(use), hidden))
        self.summary_norm = nn.ModuleDict({f: nn.LayerNorm(hidden) for f in self.factors})
        # 5. Token-level factor discriminator (temporal = 1, spatial = 0).
        self.discriminator = MLP([hidden, hidden, 1], dropout) if self.purity != "none" else None
        # 7. Auxiliary factor heads and the recouple, per modality; then the head over modality codes.
        self.aux_heads = (
            nn.ModuleDict(
                {m: nn.ModuleDict({f: FactorHead(hidden, output_dim, dropout) for f in self.factors}) for m in use}
            )
            if aux_heads
            else None
        )
        head_dim = (output_dim if output_dim > 1 else 1) if aux_heads else None
        recouple = {m: Recouple(hidden, self.factors, fusion, head_dim, dropout) for m in use}
        self.recouple = nn.ModuleDict(recouple)
        self.head = MLP([sum(r.out_dim for r in recouple.values()), hidden, output_dim], dropout)

    # ---- encoders --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, mask: torch.Tensor, m: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One modality -> {factor: (tokens (B, N_f, D), real (B, N_f))}."""
        u = self.proj[m](x)  # (B, T, D)
        out = {}
        if self.temporal is not None:
            ut, mt = masked_downsample(u, mask, self.max_tokens)  # (B, T', D): at most max_tokens
            out["temporal"] = (self.temporal[m](ut, mt), mt)
        if self.spatial is not None:
            # Decoupled: queries read the raw projected frames (order-blind). Mixed: they read the
            # temporal encoder's output, so both factors come out of one encoder.
            frames, fmask = masked_downsample(u, mask, self.spatial_max_frames) if self.decouple else out["temporal"]
            z = self.spatial[m](frames, fmask)  # (B, K, D)
            present = mask.any(1, keepdim=True).expand(-1, z.shape[1])  # a wholly missing modality has no set
            out["spatial"] = (z, present)
        return out

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        enc = {m: self.encode(feats[m], masks[m], m) for m in self.use}

        # 4. FCCA: one sequence of every token, grouped by factor, then by modality.
        keys = [(f, m) for f in self.factors for m in self.use]
        tokens = torch.cat([enc[m][f][0] for f, m in keys], dim=1)  # (B, N, D)
        real = torch.cat([enc[m][f][1] for f, m in keys], dim=1)  # (B, N)
        sizes = [enc[m][f][0].shape[1] for f, m in keys]
        if self.fcca is not None:
            dev = tokens.device
            repeats = torch.tensor(sizes, device=dev)
            ids = torch.tensor([self.use.index(m) for _, m in keys], device=dev)
            tokens = tokens + self.modality_embedding[ids].repeat_interleave(repeats, dim=0)
            factor = torch.tensor([FACTORS.index(f) for f, _ in keys], device=dev).repeat_interleave(repeats)
            tokens = self.fcca(tokens, real, factor)
        aligned = dict(zip(keys, zip(tokens.split(sizes, dim=1), real.split(sizes, dim=1))))

        aux: dict[str, torch.Tensor] = {}
        extras: dict[str, torch.Tensor] = {}
        # 5. Factor purity over real tokens; each factor's tokens weigh half, whatever their count.
        wanted = self.computes_aux_losses
        if wanted and self.discriminator is not None:
            aux["purity"] = self._purity(aligned)

        # Summaries: masked mean over each modality's real tokens of each factor, normalised.
        summary = {m: {f: self.summary_norm[f](masked_mean(*aligned[(f, m)])) for f in self.factors} for m in self.use}
        present = {m: masks[m].any(1) for m in self.use}  # samples that have modality m at all
        labels = batch.labels

        codes = []
        per_mod: dict[str, list[torch.Tensor]] = {k: [] for k in ("cos", "hsic", "orth", "aux_temporal", "aux_spatial")}
        for m in self.use:
            s, keep = summary[m], present[m]
            heads = None
            if self.aux_heads is not None:
                heads_of_m = self.aux_heads[m]
                assert isinstance(heads_of_m, nn.ModuleDict)  # one FactorHead per factor
                heads = {f: heads_of_m[f](s[f]) for f in self.factors}
                for f in self.factors:
                    extras[f"y_{f}_{m}"] = heads[f]["prediction"]
                    # Labels that do not fit the head (float labels for a C-way output in a shape
                    # check) give no aux loss; the trainer's task loss reports a real mismatch.
                    if wanted and keep.any() and (labels.is_floating_point() != heads_of_m[f].classify):
                        kept = {k: v[keep] for k, v in heads[f].items()}
                        per_mod[f"aux_{f}"].append(FactorHead.loss(kept, labels[keep]))
            h, p, g = self.recouple[m](s, heads)  # 7. gated recouple
            codes.append(h)
            if g is not None:
                extras[f"gate_{m}"] = g
            for f in self.factors:
                extras[f"summary_{f}_{m}"] = s[f]
            # 6. Summary decorrelation and the orthogonality of the recoupled projections.
            st, ss = s.get("temporal"), s.get("spatial")
            if wanted and keep.sum() >= 2 and st is not None and ss is not None:  # the losses need both factors
                if self.cos_loss:
                    per_mod["cos"].append(losses.cosine_squared(st[keep], ss[keep]))
                if self.hsic_loss:
                    per_mod["hsic"].append(losses.hsic(st[keep], ss[keep]))
                if self.orth_loss:
                    per_mod["orth"].append(losses.orthogonality(p["temporal"][keep], p["spatial"][keep]))
        for name, values in per_mod.items():
            if values:
                aux[name] = torch.stack(values).mean()
        y = self.head(torch.cat(codes, dim=-1))
        return ModelOutput(self.head_output(y), aux, extras)

    def _purity(self, aligned: dict) -> torch.Tensor:
        assert self.discriminator is not None  # called only with purity != "none"
        terms = []
        for target, f in ((1.0, "temporal"), (0.0, "spatial")):
            z = torch.cat([aligned[(f, m)][0] for m in self.use], dim=1)  # (B, N_f, D)
            r = torch.cat([aligned[(f, m)][1] for m in self.use], dim=1)
            z = z[r]  # (n_real, D)
            if self.purity == "adversarial":
                z = grad_reverse(z, self.purity_alpha)
            logit = self.discriminator(z).squeeze(-1)
            terms.append(
                F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, target))
                if len(z)
                else logit.new_zeros(())
            )
        return 0.5 * (terms[0] + terms[1])
