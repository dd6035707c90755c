"""A pretrained text transformer inside a model: the fine-tuning path of the text modality."""

from __future__ import annotations

import torch

from sentangle.core.errors import ConfigError
from sentangle.data.text import ALL_LAYERS, DEFAULT_ENCODER, _load_model, resolve_encoder, text_setting


class TextEncoder(torch.nn.Module):
    """A pretrained transformer trained together with the model (the fine-tuning path).

    `setting` is a model's `text_encoder` (see data.text.text_setting) with finetune "all" or K.
    With K only the top K layers are kept, and they read the cached hidden states below them: the
    lower layers' forward and backward passes, most of fine-tuning's cost on a CPU, are skipped.
    """

    def __init__(self, setting: dict | str = DEFAULT_ENCODER):
        super().__init__()
        setting = text_setting(setting)
        if setting["finetune"] == 0:
            raise ValueError("TextEncoder is the fine-tuning path; finetune=0 reads frozen features instead")
        self.setting = setting
        self.name = setting["name"]  # as given; resolved only to load the weights
        self.top_layers = None if setting["finetune"] == ALL_LAYERS else setting["finetune"]
        model = _load_model(resolve_encoder(self.name))
        self.hidden_size = int(model.config.hidden_size)
        if self.top_layers is None:
            self.model = model
            return
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if not isinstance(layers, torch.nn.ModuleList):
            raise ConfigError(
                f"text encoder {self.name}: fine-tuning only the top layers needs a BERT-style "
                "encoder (model.encoder.layer); use model.text_encoder.finetune: all"
            )
        if not 0 < self.top_layers <= len(layers):
            raise ConfigError(f"text encoder {self.name} has {len(layers)} layers; top_layers={self.top_layers}")
        self.layers = torch.nn.ModuleList(list(layers)[-self.top_layers :])

    def read(self, batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(features, masks) of the text in `batch`, or None when it carries none (text missing)."""
        if self.top_layers is None:
            return None if batch.tokens is None else self(batch.tokens["input_ids"], batch.tokens["attention_mask"])
        return None if "text" not in batch.features else self(batch.features["text"], batch.masks["text"])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: token ids (B, L), or with top_layers the hidden states below them (B, L, H); mask: real tokens."""
        mask = mask.bool()
        if self.top_layers is None:
            return self.model(input_ids=x, attention_mask=mask.long()).last_hidden_state, mask
        # BERT's additive form of the padding mask, broadcast over heads and query positions.
        bias = (~mask)[:, None, None, :].to(x.dtype) * torch.finfo(x.dtype).min
        for layer in self.layers:
            out = layer(x, attention_mask=bias)
            x = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple
        return x * mask.unsqueeze(-1).to(x.dtype), mask  # padding zero, as in the frozen features
