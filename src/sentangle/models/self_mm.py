"""Self-MM: self-supervised multi-task learning with generated unimodal labels (Yu et al., AAAI 2021).

One multimodal head and one head per modality are trained together. Datasets label only the
utterance, so each unimodal target is generated: the Unimodal Label Generation Module (ULGM) asks
how much closer a sample's unimodal feature sits to its modality's positive class centre than
to its negative one, compared with the same for the multimodal feature, and shifts the multimodal
label by that difference.

For modality s and fusion f, with C^p / C^n the means of the stored features of the training
samples whose (own) label is > 0 / < 0:

    delta_s = (||F_s - C_s^n|| - ||F_s - C_s^p||) / ||F_s - C_s^p||     (same for delta_f)
    new y_s = clip(0.5 * (delta_s / delta_f) * y_m + 0.5 * (y_m + delta_s - delta_f), -H, H)
    y_s <- (n - 1) / (n + 1) * y_s + 2 / (n + 1) * new y_s                 (n: the epoch, from 2 on)

and the loss of modality s is mean(tanh(|y_s - y_m|) * |y_hat_s - y_s|): a unimodal label that
agrees with the multimodal one says nothing new and weighs nothing. The multimodal head's loss is
the trainer's task loss (L1 against y_m, weight 1, as Self-MM).

How it lives in the one trainer: in training mode forward() sees `batch.ids` and `batch.labels`,
registers new ids in per-sample stores (`UnimodalLabels`: labels initialised to y_m, the latest
features), returns the unimodal losses as aux_losses (`unimodal_<m>`, default weight 1) and then
updates the stores. `label_update="step"` (Self-MM/MMSA) regenerates a batch's labels right after
its loss from its current features and the centres of the stored features, from epoch 2 on;
`"epoch"` regenerates every stored sample at once in `on_epoch_end`, which the trainer calls after
each epoch. Stores are training state, not weights: they are not in the state_dict.

Encoders: text is pooled token features (`text_pooling`: "first" token, Self-MM's [CLS] of a
fine-tuned BERT; "mean" over real tokens; "auto" takes "first" with an encoder fine-tuned inside
the model and "mean" for frozen token features, where the first token was never trained to
summarise); audio and vision are one-layer LSTMs over their real frames, final state, linear.
Each head: dropout, Linear + ReLU (its output is the feature F used by ULGM), Linear + ReLU, Linear.

Absent modalities: heads, losses and stores exist for the modalities present; text-only data gives a
fusion head and a text head. Classification (output_dim > 1): ULGM is defined for regression, so
the unimodal heads give logits trained with cross-entropy on the utterance class (plain multi-task
learning), which is also what `label_generation: false` does for regression (L1 on y_m).

Defaults: MMSA config_regression.json, "self_mm" / "mosi": LSTM hidden 16 (audio) / 32 (vision),
audio_out 16, video_out 32, post_fusion_dim 128, post_text/audio/video dims 32 / 16 / 32,
dropouts 0.0 / 0.1 / 0.1 / 0.0, H = 3.0, excludeZero, batch 16, learning_rate_other 1e-3 and
weight decay 1e-3 (the training recipe in configs/models/self_mm.yaml). The one trainer has one
learning rate for non-encoder parameters, so MMSA's 5e-3 for the audio/vision subnets and its
gradient accumulation (update_epochs 4) have no counterpart. At MOSI's unaligned feature sizes the
model has MMSA's SELF_MM's 159,332 parameters without its BERT (docs/baselines.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import RealFrameLSTM, masked_mean


def relative_distance(f: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(||f - C^n|| - ||f - C^p||) / ||f - C^p|| per row of f (B, D): > 0 means nearer the positive centre."""
    d_p = torch.linalg.vector_norm(f - pos, dim=-1)
    d_n = torch.linalg.vector_norm(f - neg, dim=-1)
    return (d_n - d_p) / (d_p + eps)


def generate_label(
    y_m: torch.Tensor, delta_s: torch.Tensor, delta_f: torch.Tensor, bound: float, eps: float = 1e-8
) -> torch.Tensor:
    """ULGM: the average of a ratio estimate (delta_s / delta_f) * y_m and a difference estimate
    y_m + delta_s - delta_f, clipped to [-bound, bound]."""
    new = 0.5 * (delta_s / (delta_f + eps)) * y_m + 0.5 * (y_m + delta_s - delta_f)
    return new.clamp(-bound, bound)


class UnimodalLabels:
    """Per-training-sample stores of Self-MM: labels and latest features for "fusion" and each modality.

    Rows are assigned to sample ids on first sight; the fusion label stays the dataset label y_m.
    """

    def __init__(self, modalities: tuple[str, ...], bound: float = 3.0, exclude_zero: bool = True, eps: float = 1e-8):
        self.names = ("fusion", *modalities)
        self.modalities = tuple(modalities)
        self.bound, self.exclude_zero, self.eps = bound, exclude_zero, eps
        self.row_of: dict[str, int] = {}
        self.ids: list[str] = []
        self.labels: dict[str, torch.Tensor] = {}  # name -> (capacity,)
        self.features: dict[str, torch.Tensor] = {}  # name -> (capacity, D)
        self.stored = torch.zeros(0, dtype=torch.bool)  # (capacity,) bool: features written at least once

    def __len__(self) -> int:
        return len(self.ids)

    def register(self, ids: list[str], y: torch.Tensor) -> torch.Tensor:
        """Rows of `ids` (B,), adding unseen ids with every label set to their y_m."""
        new = [(i, float(v)) for i, v in zip(ids, y.detach().cpu().tolist()) if i not in self.row_of]
        if new:
            start, n = len(self.ids), len(self.ids) + len(new)
            for k, (i, _) in enumerate(new):
                self.row_of[i] = start + k
                self.ids.append(i)
            self._grow(n, y.device)
            values = torch.tensor([v for _, v in new], device=y.device, dtype=torch.float32)
            for name in self.names:
                self.labels[name][start:n] = values
        return torch.tensor([self.row_of[i] for i in ids], device=y.device, dtype=torch.long)

    def _grow(self, n: int, device) -> None:
        cap = self.stored.shape[0]
        if n <= cap:
            return
        size = max(n, 2 * cap, 64)  # doubling: registering N ids costs O(N) copies in all

        def bigger(t: torch.Tensor | None, tail: tuple, dtype: torch.dtype) -> torch.Tensor:
            out = torch.zeros((size, *tail), device=device, dtype=dtype)
            if t is not None:
                out[: t.shape[0]] = t
            return out

        self.stored = bigger(self.stored, (), torch.bool)
        for name in self.names:
            self.labels[name] = bigger(self.labels.get(name), (), torch.float32)
            if name in self.features:
                self.features[name] = bigger(self.features[name], tuple(self.features[name].shape[1:]), torch.float32)

    def store(self, rows: torch.Tensor, feats: dict[str, torch.Tensor]) -> None:
        for name, f in feats.items():
            if name not in self.features:
                # float32 whatever precision the forward ran at (train.precision): the centres average it
                self.features[name] = f.new_zeros(self.stored.shape[0], f.shape[-1], dtype=torch.float32)
            self.features[name][rows] = f.detach().float()
        self.stored[rows] = True

    def centres(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Means of the stored features of samples whose `name` label is positive / negative
        (a zero label counts as neither with exclude_zero, else as positive); None if a class is empty."""
        n = len(self)
        lab, seen = self.labels[name][:n], self.stored[:n]
        pos = seen & ((lab > 0) if self.exclude_zero else (lab >= 0))
        neg = seen & (lab < 0)
        if not pos.any() or not neg.any():
            return None
        f = self.features[name][:n]
        return f[pos].mean(0), f[neg].mean(0)

    def update(self, rows: torch.Tensor, feats: dict[str, torch.Tensor], n: int) -> None:
        """Regenerate the unimodal labels of `rows` from their features `feats` (B, D) and the stored
        centres, then blend with the old labels: weight (n-1)/(n+1) on the old, 2/(n+1) on the new."""
        fusion = self.centres("fusion")
        if fusion is None:
            return
        y_m = self.labels["fusion"][rows]
        delta_f = relative_distance(feats["fusion"].detach().float(), *fusion, self.eps)
        for m in self.modalities:
            c = self.centres(m)
            if c is None:
                continue
            delta_s = relative_distance(feats[m].detach().float(), *c, self.eps)
            new = generate_label(y_m, delta_s, delta_f, self.bound, self.eps)
            self.labels[m][rows] = (n - 1) / (n + 1) * self.labels[m][rows] + 2 / (n + 1) * new

    def update_all(self, n: int) -> None:
        """The per-epoch variant: every stored sample, from its stored features."""
        rows = torch.nonzero(self.stored[: len(self)]).squeeze(1)
        if len(rows):
            self.update(rows, {name: self.features[name][rows] for name in self.names}, n)


class _Head(nn.Module):
    """dropout -> Linear+ReLU (the feature ULGM reads) -> Linear+ReLU -> Linear."""

    def __init__(self, d_in: int, dim: int, out: int, dropout: float):
        super().__init__()
        self.first = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, dim), nn.ReLU())
        self.rest = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.first(x)
        return feature, self.rest(feature)


class _SeqSubNet(nn.Module):
    """Self-MM's audio/vision subnetwork: LSTM over the real frames, final state, linear."""

    def __init__(self, d_in: int, hidden: int, out: int):
        super().__init__()
        self.lstm = RealFrameLSTM(d_in, hidden)
        self.out = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(x, mask)[2])


@MODELS.register("self_mm")
class SelfMM(MSAModel):
    default_aux_weights = {"unimodal_text": 1.0, "unimodal_audio": 1.0, "unimodal_vision": 1.0}

    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        # auto: the first token with an in-model (fine-tuned) encoder, the mean of frozen token features
        text_pooling: str = "auto",
        audio_lstm_hidden: int = 16,
        vision_lstm_hidden: int = 32,
        audio_out: int = 16,
        vision_out: int = 32,
        post_fusion_dim: int = 128,
        post_text_dim: int = 32,
        post_audio_dim: int = 16,
        post_vision_dim: int = 32,
        post_fusion_dropout: float = 0.0,
        post_text_dropout: float = 0.1,
        post_audio_dropout: float = 0.1,
        post_vision_dropout: float = 0.0,
        unimodal_heads: bool = True,
        label_generation: bool = True,
        label_update: str = "step",  # step: per batch, from epoch 2 (Self-MM); epoch: all samples after each epoch
        H: float = 3.0,
        exclude_zero: bool = True,
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        if text_pooling not in ("auto", "first", "mean"):
            raise ConfigError(f"self_mm: text_pooling must be 'auto', 'first' or 'mean', got {text_pooling!r}")
        if label_update not in ("step", "epoch"):
            raise ConfigError(f"self_mm: label_update must be 'step' or 'epoch', got {label_update!r}")
        if H <= 0:
            raise ConfigError(f"self_mm: H (the bound of generated labels) must be > 0, got {H}")
        self.text_pooling = (
            ("first" if text_encoder is not None else "mean") if text_pooling == "auto" else text_pooling
        )
        lstm = {"audio": audio_lstm_hidden, "vision": vision_lstm_hidden}
        outs = {"audio": audio_out, "vision": vision_out}
        self.subnets = nn.ModuleDict(
            {m: _SeqSubNet(d, lstm[m], outs[m]) for m, d in self.input_dims.items() if m != "text"}
        )
        code_dims = {m: d if m == "text" else outs[m] for m, d in self.input_dims.items()}
        self.fusion_head = _Head(sum(code_dims.values()), post_fusion_dim, output_dim, post_fusion_dropout)
        dims = {"text": post_text_dim, "audio": post_audio_dim, "vision": post_vision_dim}
        drops = {"text": post_text_dropout, "audio": post_audio_dropout, "vision": post_vision_dropout}
        self.unimodal = (
            nn.ModuleDict({m: _Head(code_dims[m], dims[m], output_dim, drops[m]) for m in self.modalities})
            if unimodal_heads
            else None
        )
        self.generate = unimodal_heads and label_generation and output_dim == 1
        self.label_update = label_update
        self.label_store = UnimodalLabels(self.modalities, H, exclude_zero) if self.generate else None
        self.epoch = 1  # 1-based number of the epoch in progress; on_epoch_end advances it

    def encode(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if m != "text":
            return self.subnets[m](x, mask)
        return x[:, 0] if self.text_pooling == "first" else masked_mean(x, mask)

    def forward(self, batch: Batch) -> ModelOutput:
        feats, masks = self.inputs(batch)
        codes = {m: self.encode(m, feats[m], masks[m]) for m in self.modalities}  # {m: (B, d_m)}
        fusion_feature, y = self.fusion_head(torch.cat([codes[m] for m in self.modalities], dim=-1))
        extras: dict[str, torch.Tensor] = {}
        aux: dict[str, torch.Tensor] = {}
        if self.unimodal is None:
            return ModelOutput(self.head_output(y), aux, extras)
        uni = {m: self.unimodal[m](codes[m]) for m in self.modalities}  # {m: (feature, prediction)}
        extras.update({f"prediction_{m}": self.head_output(p) for m, (_, p) in uni.items()})
        if not self.computes_aux_losses:
            return ModelOutput(self.head_output(y), aux, extras)
        if not self.generate:
            # Class logits need class indices; a batch without them (a regression batch fed to a
            # classifier) gets no unimodal loss here, and the trainer's task loss rejects it anyway.
            if self.output_dim == 1 or not batch.labels.is_floating_point():
                for m, (_, p) in uni.items():
                    p = self.head_output(p)
                    aux[f"unimodal_{m}"] = (
                        F.l1_loss(p, batch.labels) if self.output_dim == 1 else F.cross_entropy(p, batch.labels)
                    )
            return ModelOutput(self.head_output(y), aux, extras)

        store = self.label_store
        assert store is not None  # made when self.generate
        rows = store.register(batch.ids, batch.labels)
        y_m = store.labels["fusion"][rows]
        for m, (_, p) in uni.items():
            y_s = store.labels[m][rows]
            weight = torch.tanh((y_s - y_m).abs())
            aux[f"unimodal_{m}"] = (weight * (self.head_output(p) - y_s).abs()).mean()
        with torch.no_grad():
            features = {"fusion": fusion_feature, **{m: f for m, (f, _) in uni.items()}}
            if self.label_update == "step" and self.epoch > 1:
                store.update(rows, features, self.epoch)
            store.store(rows, features)
        return ModelOutput(self.head_output(y), aux, extras)

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the trainer after epoch `epoch` (0-based); the per-epoch label update runs here."""
        self.epoch = epoch + 2
        if self.label_store is not None and self.label_update == "epoch":  # made when self.generate
            self.label_store.update_all(self.epoch)
