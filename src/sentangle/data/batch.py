"""The one batch type every model receives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODALITIES = ("text", "audio", "vision")


@dataclass
class Batch:
    """Per-modality padded sequences with boolean masks (True = a real frame).

    `features[m]` is (B, T_m, d_m) float32 and `masks[m]` is (B, T_m) bool for each modality
    present; a dataset without a modality simply has no key for it. `labels` is (B,) float for
    regression or long for classification. `tokens` holds `input_ids` / `attention_mask` (B, L)
    when the text encoder is fine-tuned inside the model instead of read as frozen features.
    """

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    labels: torch.Tensor
    ids: list[str] = field(default_factory=list)
    tokens: dict[str, torch.Tensor] | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        names = set(self.features)
        if self.tokens is not None:
            names.add("text")
        return tuple(m for m in MODALITIES if m in names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        move = lambda d: {k: v.to(device, non_blocking=True) for k, v in d.items()}  # noqa: E731
        return Batch(
            features=move(self.features),
            masks=move(self.masks),
            labels=self.labels.to(device, non_blocking=True),
            ids=self.ids,
            tokens=None if self.tokens is None else move(self.tokens),
        )

    def pin_memory(self) -> Batch:
        """The same batch in page-locked host memory, from which a copy to a GPU can run asynchronously."""
        pin = lambda d: {k: v.pin_memory() for k, v in d.items()}  # noqa: E731
        return Batch(
            features=pin(self.features),
            masks=pin(self.masks),
            labels=self.labels.pin_memory(),
            ids=self.ids,
            tokens=None if self.tokens is None else pin(self.tokens),
        )

    def without(self, *modalities: str) -> Batch:
        """The same batch with whole modalities removed (for ablations and missing-modality tests)."""
        keep = lambda d: {k: v for k, v in d.items() if k not in modalities}  # noqa: E731
        return Batch(
            features=keep(self.features),
            masks=keep(self.masks),
            labels=self.labels,
            ids=self.ids,
            tokens=None if "text" in modalities else self.tokens,
        )
