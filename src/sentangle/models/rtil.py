"""RTIL / SATI / IRG-SVR (arXiv 2409.00143): shared-private disentanglement with temporal invariance.

One paper under three titles; one model here with two presets that differ only in the temporal
regulariser: `rtil` (Jensen-Shannon divergence between adjacent frames, as the released code
X-G-Y/SATI does) and `irg_svr` (sequential variation regularisation: 1-D total variation of the
frame-to-frame differences). Data flow, top to bottom as in `forward`:

 1. Encode. Audio/vision: (windowed downsampling to `max_frames`) + one Transformer layer, on
    features brought to D with positions (default) or on the raw features as the code does
    (`encoder_input`). Text: the token features as given, or the fine-tuned encoder (MSAModel.inputs).
 2. Project each modality to D (Linear, ReLU, LayerNorm).                          (B, T_m, D)
 3. Per frame: a private encoder per modality and one shared encoder for all (Linear + Sigmoid).
 4. Auxiliary losses on the codes (each switchable, unweighted here, weighted by the trainer):
      domain    a modality discriminator on time-means of shared (and private) codes behind
                gradient reversal, with a margin softmax over the three modality classes;
      cmd       central moment discrepancy between the shared time-means of each modality pair;
      recon     reconstruction of the projected input from private + shared;
      temporal  JSD (rtil) or total variation (irg_svr) along the frames of private+shared codes.
 5. Invariant-guided fusion: the anchor's (text's) private codes query each other modality's
    private codes (cross-attention); a gate from factorized bilinear pooling of that modality's
    and the anchor's shared codes scales what the other modality adds; residual LayerNorm;
    concatenate the branches; one Transformer layer; mean over time; MLP head.

Missing modalities. The fusion is anchored on text; without text the first present modality of
(text, audio, vision) anchors it. With only the anchor present (e.g. text-only `mosi`) there is
nothing to attend to: the fusion reads the anchor's private sequence alone, and the discriminator
and CMD are not built (with one modality there is no modality to confuse and no pair to match).
With text + audio (`mosi_utt`) there is a single text<-audio branch, so the fusion layer has width
D instead of 2D. A modality that the model was built for but that a batch lacks arrives as one
padded frame (MSAModel.inputs): its branch attends to nothing real and its gate reads zeros.

`paper_faithful=True` reproduces the released code's choices, each also reachable alone:
hard-binarised gate (a step: it never receives gradient, so it never learns), the vision gate
reusing the audio gate's output layer, a gate per word frame (needs word-aligned input: an error
otherwise), temporal loss on vision only in the code's batch-mean form, no padding masks, cosine
margin (cos - m) with an L2 penalty on the class centres, reconstruction of every frame from
the time-mean code, a reconstruction target that takes gradient (the default detaches it:
`recon_detach`), and full-strength gradient reversal from the first step (the default ramps it up
over `reverse_ramp` epochs, DANN's schedule). The defaults fix these and work on unaligned inputs.
Its architecture is the code's too: post-norm encoder layers on the raw audio/vision features
(2 / 1 heads, feed-forward 2048, no positions), plain cross-attention (no bias on its query, key
and value maps, output dropout 0.2, no normalisation or feed-forward inside the gated update), a
gate pooling without biases or signed square root (dropout 0.4), and a fusion layer with
feed-forward 2048; at the code's shapes it has the code's parameter count, less its text encoder
(tests/models/test_rtil.py, docs/rtil.md).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import MODALITIES, Batch
from sentangle.models import losses
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import (
    MLP,
    CrossAttention,
    EncoderLayer,
    FactorizedBilinearPooling,
    PositionalEncoding,
    SequenceEncoder,
    attend,
    attention_mask,
    grad_reverse,
    key_padding_mask,
    masked_downsample,
    masked_mean,
)

TEMPORAL_KINDS = ("jsd", "tv", "none")
GATES = ("soft", "hard", "none")
GATE_POOLING = ("mean", "frame")
MARGINS = ("angular", "cosine")
RECON_TARGETS = ("frame", "mean")
ENCODER_INPUTS = ("projected", "raw")
CROSS_BLOCKS = ("prenorm", "plain")
CODE_ENCODER_HEADS = {"audio": 2, "vision": 1}  # the code's raw-feature encoders
CODE_FF = 2048  # torch's default feed-forward width, which every Transformer layer of the code keeps
MODALITY_CLASS = {m: i for i, m in enumerate(MODALITIES)}  # the discriminator's three classes


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}; expected one of {list(allowed)}")


def _temporal_plan(spec, modalities: tuple[str, ...], preset: str, paper: bool) -> dict[str, str]:
    """{modality: 'jsd' | 'tv'} for the modalities that get a temporal regulariser."""
    if spec is None:
        spec = {"vision": preset} if paper else preset  # the code regularises vision only
    if isinstance(spec, str):
        _choice("temporal", spec, TEMPORAL_KINDS)
        plan = {m: spec for m in modalities}
    elif isinstance(spec, dict):
        unknown = set(spec) - set(MODALITIES)
        if unknown:
            raise ConfigError(f"temporal names modalities {sorted(unknown)}; expected keys from {list(MODALITIES)}")
        for m, kind in spec.items():
            _choice(f"temporal[{m!r}]", kind, TEMPORAL_KINDS)
        # A modality this dataset lacks is skipped: one config serves every modality subset.
        plan = {m: spec.get(m, "none") for m in modalities}
    else:
        raise ConfigError(f"temporal={spec!r}; expected one of {list(TEMPORAL_KINDS)} or a dict modality -> kind")
    return {m: k for m, k in plan.items() if k != "none"}


def _raw_heads(spec, widths: dict[str, int]) -> dict[str, int]:
    """Heads of each raw-feature encoder. None: the code's (2 audio, 1 vision), cut to the largest
    count that divides the feature width (MMSA's 5-d MOSI audio cannot be split in 2; the code's
    384-d openSMILE audio can); a count given explicitly must divide its width."""
    if spec is None:
        return {m: math.gcd(CODE_ENCODER_HEADS.get(m, 1), w) for m, w in widths.items()}
    given = {m: spec for m in widths} if isinstance(spec, int) else dict(spec)
    if set(given) - set(CODE_ENCODER_HEADS):
        raise ConfigError(
            f"raw_encoder_heads names {sorted(set(given) - set(CODE_ENCODER_HEADS))}; expected a head "
            f"count or a dict with keys from {list(CODE_ENCODER_HEADS)} (text has no such encoder)"
        )
    heads = {m: given.get(m, CODE_ENCODER_HEADS.get(m, 1)) for m in widths}
    for m, h in heads.items():
        if not isinstance(h, int) or h < 1 or widths[m] % h:
            raise ConfigError(
                f"raw_encoder_heads[{m!r}]={h!r}: expected a positive head count that divides the "
                f"{m} feature width {widths[m]} (the raw-feature encoder attends over the features as given)"
            )
    return heads


class RawFeatureEncoder(nn.Module):
    """The released code's audio/vision encoder: post-norm Transformer layers on the features as
    given (no projection, no positions), padded frames masked and zeroed."""

    def __init__(self, width: int, layers: int, heads: int, ff: int, dropout: float):
        super().__init__()
        layer = EncoderLayer(width, heads, dim_feedforward=ff, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x, src_key_padding_mask=key_padding_mask(mask))
        return h * mask.unsqueeze(-1).to(h.dtype)


class PlainCrossAttention(nn.Module):
    """The released code's cross-attention: multi-head attention whose query, key and value maps
    have no bias, an output projection, dropout on the output. No normalisation, residual or
    feed-forward: its output is the update that the gate scales."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"cross_heads={heads} must divide hidden={dim}")
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, heads, T, D / heads)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        a = attend(self._split(self.q(q)), self._split(self.k(kv)), self._split(self.v(kv)), attention_mask(kv_mask))
        return self.drop(self.out(a.transpose(1, 2).flatten(2)))


@MODELS.register("rtil")
class RTIL(MSAModel):
    """Shared-private disentanglement with temporal-invariant learning (preset: adjacent-frame JSD)."""

    windows_padding = True  # masked_downsample windows span the batch's padded length

    default_aux_weights = {"domain": 0.4, "cmd": 1.0, "recon": 1.0, "temporal": 1.0}
    preset_temporal = "jsd"

    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        # CPU defaults, not the paper's D=128 and 64-frame cap: D=64 and a 32-frame cap make a full
        # synthetic epoch about 3x cheaper (56 s -> 17 s on one busy core) and still beat LF-DNN
        # clearly there (docs/rtil_checks.md). The paper's recipe: configs/experiments/rtil-paper-*.yaml.
        hidden: int = 64,  # D
        dropout: float = 0.2,  # head and discriminator; the paper's 0.6 gave way to the usual value for a model this small (not tuned)
        attn_dropout: float = 0.1,  # encoders, cross-attention, fusion layer, gate pooling
        # 1. encoders
        encoder_layers: int = 1,  # Transformer layers on audio/vision (0: the projection reads raw features)
        encoder_heads: int = 4,  # heads of the projected encoders
        # None: projected (to D, LayerNorm, positions, pre-norm layers with feed-forward 2D);
        # raw: the code's post-norm layers on the features as given, no positions
        encoder_input: str | None = None,
        raw_encoder_heads: int | dict | None = None,  # None: the code's 2 audio / 1 vision (a divisor of the width)
        raw_encoder_ff: int | None = None,  # feed-forward width of the raw encoders (None: the code's 2048)
        max_frames: int = 32,  # window-average longer sequences to this many frames (0: keep every frame)
        # 4. auxiliary parts
        discriminator: bool = True,  # modality discriminator behind gradient reversal (aux loss "domain")
        # the private time-means go to the discriminator too: True behind gradient reversal (the
        # code), "cooperative" without it (private codes learn to tell modalities apart, as v3's
        # modality-specific codes should), False not at all
        domain_on_private: bool | str = True,
        reverse_weight: float = 1.0,  # gradient-reversal scale once ramped up
        reverse_ramp: float | None = None,  # None: 10 epochs (0 in paper mode) of DANN's 2/(1+exp(-10p))-1 ramp
        margin_type: str | None = None,  # None: angular (cos(theta + m)); cosine (cos - m) is the code's
        margin_s: float = 30.0,
        margin_m: float = 0.5,
        center_decay: float | None = None,  # L2 on the class centres (None: 0; the code's 0.02 in paper mode)
        cmd: bool = True,  # CMD between shared time-means of each modality pair (aux loss "cmd")
        cmd_moments: int = 5,
        reconstruction: bool = True,  # rebuild the projection from private + shared (aux loss "recon")
        recon_target: str | None = None,  # None: frame (each frame from its codes); mean: from the time-mean (code)
        recon_detach: bool | None = None,  # None: True (the target takes no gradient); False: the code's
        temporal: str | dict | None = None,  # None: the preset on every modality; jsd | tv | none | {vision: jsd, ...}
        tv_order: int = 2,  # irg_svr: total variation of the frame-to-frame differences
        jsd_batch_mean: bool | None = None,  # None: per sample; True: the code's batch-averaged distributions
        # 5. fusion
        anchor: str = "text",  # the fusion's query modality (the first present one when it is absent)
        cross_attention: bool = True,  # False: the fusion reads the anchor's private codes alone
        cross_heads: int = 4,
        # None: prenorm (LayerNorms on query and keys, residual, feed-forward: layers.CrossAttention);
        # plain: the code's attention alone, no bias on q/k/v, its output the gated update
        cross_block: str | None = None,
        cross_dropout: float | None = None,  # None: attn_dropout (the code: 0.2 on the output)
        gate: str | None = None,  # None: soft (sigmoid); hard (the code's step: no gradient); none
        gate_pooling: str | None = None,  # None: mean (time-pooled, any alignment); frame (the code's: aligned only)
        share_gate_layer: bool | None = None,  # None: False; True: the vision gate reuses the audio gate's layer
        gate_hidden: int = 32,
        gate_k: int = 2,
        gate_dropout: float | None = None,  # None: attn_dropout (the code: 0.4)
        gate_bias: bool | None = None,  # None: True; False: the code's pooling factors without bias
        gate_sqrt: bool | None = None,  # None: True (MFB's signed square root); False: the code's, none
        fusion_layers: int = 1,  # Transformer layers over the concatenated branches
        fusion_heads: int = 1,
        fusion_ff: int | None = None,  # None: 2x its width; the code's 2048
        # the released code's choices (None: decided by paper_faithful)
        use_masks: bool | None = None,  # None: True; False ignores padding (the code)
        paper_faithful: bool = False,  # True: every None above takes the released code's choice
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        paper = bool(paper_faithful)
        pick = lambda value, fixed, code: (code if paper else fixed) if value is None else value  # noqa: E731
        self.paper_faithful = paper
        self.use_masks = pick(use_masks, True, False)
        self.gate_kind = pick(gate, "soft", "hard")
        self.gate_pooling = pick(gate_pooling, "mean", "frame")
        self.share_gate_layer = pick(share_gate_layer, False, True)
        self.margin_type = pick(margin_type, "angular", "cosine")
        self.center_decay = float(pick(center_decay, 0.0, 0.02))  # code: 0.01 * |W|^2 in each of 2 terms
        self.recon_target = pick(recon_target, "frame", "mean")
        self.recon_detach = bool(pick(recon_detach, True, False))
        self.jsd_batch_mean = pick(jsd_batch_mean, False, True)
        self.reverse_ramp = float(pick(reverse_ramp, 10.0, 0.0))
        self.encoder_input = pick(encoder_input, "projected", "raw")
        self.cross_block = pick(cross_block, "prenorm", "plain")
        cross_dropout = float(pick(cross_dropout, attn_dropout, 0.2))
        gate_dropout = float(pick(gate_dropout, attn_dropout, 0.4))
        gate_bias, gate_sqrt = bool(pick(gate_bias, True, False)), bool(pick(gate_sqrt, True, False))
        self.epochs_done = 0  # advanced by on_epoch_end; sets the reversal coefficient
        _choice("gate", self.gate_kind, GATES)
        _choice("gate_pooling", self.gate_pooling, GATE_POOLING)
        _choice("margin_type", self.margin_type, MARGINS)
        _choice("recon_target", self.recon_target, RECON_TARGETS)
        _choice("encoder_input", self.encoder_input, ENCODER_INPUTS)
        _choice("cross_block", self.cross_block, CROSS_BLOCKS)
        if self.encoder_input == "projected" and (raw_encoder_heads is not None or raw_encoder_ff is not None):
            raise ConfigError('raw_encoder_heads and raw_encoder_ff apply to encoder_input="raw" only')
        if anchor not in MODALITIES:
            raise ConfigError(f"anchor={anchor!r}; expected one of {list(MODALITIES)}")
        if max_frames < 0 or encoder_layers < 0 or fusion_layers < 0:
            raise ConfigError(
                f"max_frames, encoder_layers and fusion_layers must be >= 0; got "
                f"{max_frames}, {encoder_layers}, {fusion_layers}"
            )
        if self.reverse_ramp < 0:
            raise ConfigError(f"reverse_ramp must be >= 0 epochs; got {self.reverse_ramp}")
        if domain_on_private not in (True, False, "cooperative"):
            raise ConfigError(f'domain_on_private must be true, false or "cooperative"; got {domain_on_private!r}')
        if tv_order < 1 or cmd_moments < 1:
            raise ConfigError(f"tv_order and cmd_moments must be >= 1; got {tv_order}, {cmd_moments}")
        mods, d = self.modalities, hidden
        self.hidden, self.max_frames = hidden, max_frames
        self.margin_s, self.margin_m, self.cmd_moments, self.tv_order = margin_s, margin_m, cmd_moments, tv_order

        # 1-2. encoders and projection to D. Audio/vision get one Transformer layer; text arrives
        # contextual. SequenceEncoder brings them to D first, so any raw width works with any head
        # count; the code's encoders keep the raw width, so their heads must divide it.
        encoded = [m for m in mods if m != "text" and encoder_layers > 0]
        if self.encoder_input == "raw":
            heads = _raw_heads(raw_encoder_heads, {m: self.input_dims[m] for m in encoded})
            ff = CODE_FF if raw_encoder_ff is None else raw_encoder_ff
            self.encoders = nn.ModuleDict(
                {m: RawFeatureEncoder(self.input_dims[m], encoder_layers, heads[m], ff, attn_dropout) for m in encoded}
            )
        else:
            self.encoders = nn.ModuleDict(
                {
                    m: SequenceEncoder(self.input_dims[m], d, encoder_layers, encoder_heads, attn_dropout)
                    for m in encoded
                }
            )
        projected = self.encoder_input == "projected"
        self.project = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d if m in self.encoders and projected else self.input_dims[m], d),
                    nn.ReLU(),
                    nn.LayerNorm(d),
                )
                for m in mods
            }
        )

        # 3. per-frame private encoders and the one shared encoder
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in mods})
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())

        # 4. auxiliary parts; with one modality there is nothing to confuse or to match
        several = len(mods) > 1
        self.discriminator = None
        if discriminator and several:
            self.domain_on_private, self.reverse_weight = domain_on_private, reverse_weight
            self.discriminator = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout))
            self.class_centres = nn.Linear(d, len(MODALITIES), bias=False)  # rows: margin-softmax centres
        self.use_cmd = bool(cmd and several)
        self.recon = nn.ModuleDict({m: nn.Linear(d, d) for m in mods}) if reconstruction else None
        self.temporal_plan = _temporal_plan(temporal, mods, self.preset_temporal, paper)

        # 5. invariant-guided fusion
        self.anchor = anchor if anchor in mods else mods[0]
        self.others = tuple(m for m in mods if m != self.anchor) if cross_attention else ()
        self.pos = PositionalEncoding(d)
        block = CrossAttention if self.cross_block == "prenorm" else PlainCrossAttention
        self.cross = nn.ModuleDict({m: block(d, cross_heads, cross_dropout) for m in self.others})
        self.branch_norm = nn.ModuleDict({m: nn.LayerNorm(d) for m in self.others})
        gated = self.others if self.gate_kind != "none" else ()
        self.gate_fbp = nn.ModuleDict(
            {
                m: FactorizedBilinearPooling(
                    d, d, gate_hidden, gate_k, gate_dropout, bias=gate_bias, signed_sqrt=gate_sqrt
                )
                for m in gated
            }
        )
        # The code scores the vision gate with the audio gate's layer: one layer serves every branch.
        self._gate_layer_of = {m: (gated[0] if self.share_gate_layer else m) for m in gated}
        self.gate_out = nn.ModuleDict(
            {m: nn.Linear(gate_hidden, 1) for m in dict.fromkeys(self._gate_layer_of.values())}
        )
        width = d * max(len(self.others), 1)
        self.fusion = None
        if fusion_layers > 0:
            ff = pick(fusion_ff, 2 * width, CODE_FF)
            layer = EncoderLayer(width, fusion_heads, dim_feedforward=ff, dropout=attn_dropout, batch_first=True)
            self.fusion = nn.TransformerEncoder(layer, fusion_layers, enable_nested_tensor=False)
        self.head = MLP([width, d, output_dim], dropout)

    # ---- forward, in the order of the paper ------------------------------------------------------
    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        if not self.use_masks or (self.gate_pooling == "frame" and self.gate_out):
            self._check_aligned(feats)
        if not self.use_masks:  # the code ignores padding: every frame counts
            masks = {m: torch.ones_like(k) for m, k in masks.items()}

        # 1-2. encode and project                                                  (B, T_m, D)
        x = {}
        for m in self.modalities:
            f, k = masked_downsample(feats[m], masks[m], self.max_frames) if self.max_frames else (feats[m], masks[m])
            masks[m] = k
            x[m] = self.project[m](self.encoders[m](f, k) if m in self.encoders else f)

        # 3. private and shared codes per frame                                    (B, T_m, D)
        private = {m: self.private[m](x[m]) for m in self.modalities}
        shared = {m: self.shared(x[m]) for m in self.modalities}
        pooled_shared = {m: masked_mean(shared[m], masks[m]) for m in self.modalities}  # (B, D)
        pooled_private = {m: masked_mean(private[m], masks[m]) for m in self.modalities}

        # 4. auxiliary losses (unweighted)
        aux = {}
        wanted = self.computes_aux_losses
        if wanted and self.discriminator is not None:
            aux["domain"] = self._domain_loss(pooled_shared, pooled_private)
        if wanted and self.use_cmd:
            pairs = list(itertools.combinations(self.modalities, 2))
            aux["cmd"] = losses.total(
                losses.cmd(pooled_shared[a], pooled_shared[b], self.cmd_moments) for a, b in pairs
            ) / len(pairs)
        if wanted and self.recon is not None:
            aux["recon"] = self._recon_loss(x, private, shared, masks)
        if wanted and self.temporal_plan:
            aux["temporal"] = self._temporal_loss(private, shared, masks)

        # 5. invariant-guided fusion and the head
        h, extras = self._fuse(private, shared, pooled_shared, masks)
        extras.update({f"shared_{m}": v for m, v in pooled_shared.items()})
        extras.update({f"private_{m}": v for m, v in pooled_private.items()})
        return ModelOutput(self.head_output(self.head(h)), aux, extras)

    def _check_aligned(self, feats: dict[str, torch.Tensor]) -> None:
        lengths = {m: int(feats[m].shape[1]) for m in self.modalities}
        if len(set(lengths.values())) > 1:
            why = (
                "paper_faithful=True (the released code's per-word gate and unmasked frames)"
                if self.paper_faithful
                else "gate_pooling='frame' or use_masks=false"
            )
            raise ConfigError(
                f"{type(self).__name__}: {why} needs word-aligned input (one length for every "
                f"modality), but this batch has lengths {lengths}. Use aligned features "
                "(e.g. dataset.aligned=true, an MMSA aligned_50.pkl) or the default settings, "
                "which work on unaligned input."
            )

    # ---- 4. the auxiliary losses -------------------------------------------------------------------
    def _domain_loss(self, pooled_shared, pooled_private) -> torch.Tensor:
        """Margin softmax over modality classes; gradient reversal makes the encoders fight it."""
        centres = self.class_centres.weight  # (3, D)
        margin_loss = losses.margin_softmax_loss if self.margin_type == "angular" else losses.cosine_margin_softmax_loss
        coefficient = self.reversal_coefficient()
        # (codes, whether the encoders fight the discriminator on them): cooperative private codes
        # get its plain gradient and learn to tell the modalities apart
        kinds = [(pooled_shared, True)]
        if self.domain_on_private:
            kinds.append((pooled_private, self.domain_on_private != "cooperative"))
        assert self.discriminator is not None  # called only with a discriminator
        per_kind = []
        for codes, fight in kinds:
            terms = []
            for m, z in codes.items():
                labels = torch.full((z.shape[0],), MODALITY_CLASS[m], dtype=torch.long, device=z.device)
                logits = self.discriminator(grad_reverse(z, coefficient) if fight else z)
                terms.append(margin_loss(logits, centres, labels, self.margin_s, self.margin_m))
            per_kind.append(losses.total(terms) / len(terms))
        total = losses.total(per_kind)
        if self.center_decay:
            total = total + self.center_decay * centres.pow(2).sum()
        return total

    def reversal_coefficient(self) -> float:
        """The gradient-reversal scale for the epoch in progress: DANN's schedule
        w * (2 / (1 + exp(-10 p)) - 1) with p = epochs done / reverse_ramp, so 0 in the first epoch.

        Why: at the start the margin softmax (s = 30) gives a domain loss ~20x the task loss, and its
        full reversed gradient can hold the encoders at the mean predictor for the whole run (seen
        on real MOSI in 2 of 5 seeds); the ramp lets the task shape the codes first."""
        if not self.reverse_ramp:
            return self.reverse_weight
        p = min(self.epochs_done / self.reverse_ramp, 1.0)
        return self.reverse_weight * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the trainer after each epoch (a hand-written loop must call it too, or the
        reversal stays at 0)."""
        self.epochs_done = epoch + 1

    def _recon_loss(self, x, private, shared, masks) -> torch.Tensor:
        """Rebuild the projected input from private + shared: per frame, or (the code) every frame
        from the time-mean code; the projected input is a fixed target unless recon_detach=False."""
        assert self.recon is not None  # called only with reconstruction
        terms = []
        for m in self.modalities:
            code = private[m] + shared[m]
            if self.recon_target == "mean":
                code = masked_mean(code, masks[m]).unsqueeze(1)  # (B, 1, D), broadcast over frames
            # Why detach: with a target that takes gradient, the cheapest way to lower the loss is to
            # reshape the projection itself, which the task needs; on real MOSI that held the model at
            # the mean predictor for the first epochs (for all 10 fine-tuning epochs in 3 of 10 seeds).
            target = x[m].detach() if self.recon_detach else x[m]
            err = (self.recon[m](code) - target).pow(2).mean(-1)  # (B, T)
            w = masks[m].to(err.dtype)
            terms.append((err * w).sum() / w.sum().clamp_min(1.0))
        return losses.total(terms) / len(terms)

    def _temporal_loss(self, private, shared, masks) -> torch.Tensor:
        terms = []
        for m, kind in self.temporal_plan.items():
            z = torch.cat([private[m], shared[m]], dim=-1)  # (B, T, 2D), as the code regularises
            mask = masks[m] if self.use_masks else None
            if kind == "jsd":
                terms.append(losses.temporal_jsd(z, mask, batch_mean=self.jsd_batch_mean))
            else:
                # Per feature (the shared function sums over features), so that the loss weight
                # means the same for every D; summed over 2D sigmoid codes it swamps the task loss
                # and the codes collapse to constants in time.
                terms.append(losses.total_variation(z, mask, order=self.tv_order) / z.shape[-1])
        return losses.total(terms) / len(terms)

    # ---- 5. fusion -----------------------------------------------------------------------------------
    def _gate(self, m: str, shared, pooled_shared) -> torch.Tensor:
        """(B, 1, 1) from the time-pooled shared codes, or (B, T, 1) per aligned frame (the code)."""
        a = self.anchor
        if self.gate_pooling == "frame":
            z = self.gate_fbp[m](shared[m], shared[a])  # (B, T, k)
        else:
            z = self.gate_fbp[m](pooled_shared[m], pooled_shared[a]).unsqueeze(1)  # (B, 1, k)
        logit = self.gate_out[self._gate_layer_of[m]](z)
        if self.gate_kind == "hard":
            # The code's tanh followed by (sign + |sign|) / 2: a step with zero gradient everywhere.
            return (logit > 0).to(logit.dtype)
        return torch.sigmoid(logit)

    def _fuse(self, private, shared, pooled_shared, masks) -> tuple[torch.Tensor, dict]:
        a = self.anchor
        q = self.pos(private[a])  # (B, T_a, D)
        extras, branches = {}, []
        for m in self.others:
            # What modality m adds to the anchor: the pre-norm block's residual update, or the
            # plain block's output as it is (the code's).
            update = self.cross[m](q, self.pos(private[m]), masks[m])
            if self.cross_block == "prenorm":
                update = update - q
            if self.gate_kind != "none":
                g = self._gate(m, shared, pooled_shared)
                extras[f"gate_{m}"] = g.squeeze(-1).mean(-1)  # (B,)
                update = g * update
            branches.append(self.branch_norm[m](q + update))
        h = torch.cat(branches, dim=-1) if branches else q  # (B, T_a, D * branches)
        if self.fusion is not None:
            h = self.fusion(h, src_key_padding_mask=key_padding_mask(masks[a]))
        return masked_mean(h, masks[a]), extras


@MODELS.register("irg_svr")
class IRGSVR(RTIL):
    """IRG-SVR (v3 of arXiv 2409.00143): the same model with sequential variation regularisation,
    i.e. total variation of the frame-to-frame differences (`tv_order=2`) instead of the JSD."""

    preset_temporal = "tv"
