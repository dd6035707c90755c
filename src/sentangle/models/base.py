"""The model contract: forward(batch) -> ModelOutput(prediction, aux_losses, extras)."""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sentangle.core.errors import CheckpointError, ConfigError, UnknownNameError
from sentangle.core.registry import MODELS, check_options
from sentangle.data.batch import MODALITIES, Batch
from sentangle.data.text import text_setting
from sentangle.models.portable import (
    bare_preprocessing,
    basic_card,
    folder_config,
    read_model_folder,
    write_model_folder,
)
from sentangle.models.text_encoder import TextEncoder


@dataclass
class ModelOutput:
    prediction: torch.Tensor  # (B,) for regression, (B, C) logits for classification
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted scalars
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # gates, summaries, for analysis


class MSAModel(nn.Module):
    """Base class: knows which modalities exist and, optionally, owns a fine-tuned text encoder.

    Subclasses build their modules from `self.input_dims` (modality -> feature size; a modality
    missing from the dataset is simply absent) and start `forward` with `self.inputs(batch)`.
    `default_aux_weights` gives each auxiliary loss its weight unless the config overrides it; a
    model computes its auxiliary losses only while `computes_aux_losses` (training mode).
    `options_added` maps each option added after checkpoints of the model were already saved to
    the value that reproduces them: a saved config lacking the key gets it when loaded.
    """

    default_aux_weights: dict[str, float] = {}
    options_added: dict[str, object] = {}
    # True when a sample's output depends on how far its batch is padded (frames averaged in windows
    # of the padded length): runs.inference.predict_clips then batches only samples of equal lengths.
    windows_padding: bool = False
    # What create_model built it from (name, every option, input_dims): what save_pretrained writes.
    build_args: dict | None = None
    # A model from load_model: the contents of its preprocessing.json (data/preprocessing.py), the
    # normalisation statistics and feature spec that new input must go through.
    preprocessing: dict | None = None

    def __init__(self, input_dims: dict[str, int], output_dim: int = 1, text_encoder: str | dict | None = None):
        super().__init__()
        dims = dict(input_dims)
        # model.text_encoder (data.text.text_setting): finetune 0 reads the frozen features the
        # dataset carries, so the model owns an encoder only when it fine-tunes one
        self.text_setting = None if text_encoder is None else text_setting(text_encoder)
        self.text_encoder = None
        if self.text_setting is not None and self.text_setting["finetune"] != 0:
            self.text_encoder = TextEncoder(self.text_setting)
            dims["text"] = self.text_encoder.hidden_size
        self.input_dims = {m: dims[m] for m in MODALITIES if m in dims}
        if not self.input_dims:
            raise ConfigError(f"{type(self).__name__}: no modality to read; expected some of {MODALITIES}")
        self.modalities = tuple(self.input_dims)
        self.output_dim = output_dim

    def inputs(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        feats, masks = dict(batch.features), dict(batch.masks)
        text = None if self.text_encoder is None else self.text_encoder.read(batch)
        if text is not None:
            feats["text"], masks["text"] = text
        missing = [m for m in self.modalities if m not in feats]
        if missing:
            # A modality the model was built for but the batch lacks: treat as wholly missing
            # (zeros, nothing real) so robustness tests can drop modalities at test time.
            ref = next(iter(feats.values()))
            for m in missing:
                feats[m] = ref.new_zeros(ref.shape[0], 1, self.input_dims[m])
                masks[m] = torch.zeros(ref.shape[0], 1, dtype=torch.bool, device=ref.device)
        return feats, masks

    # True: the auxiliary losses in eval mode too (their values on held-out data, without dropout).
    aux_losses_in_eval: bool = False

    @property
    def computes_aux_losses(self) -> bool:
        """Whether forward computes the auxiliary losses: in training mode (or with
        `aux_losses_in_eval`). They shape training and cost time; evaluation and prediction read
        the prediction alone (and `extras`), which do not depend on them."""
        return self.training or self.aux_losses_in_eval

    def text_encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters of the fine-tuned pretrained encoder: the trainer gives them their own,
        much smaller learning rate (train.text_lr)."""
        return [] if self.text_encoder is None else list(self.text_encoder.parameters())

    def head_output(self, y: torch.Tensor) -> torch.Tensor:
        return y.squeeze(-1) if self.output_dim == 1 else y

    def save_pretrained(
        self,
        folder: str | os.PathLike,
        preprocessing: dict | None = None,
        card: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write this model as a new portable model folder (models/portable.py) that `load_model`
        reads on any machine: `preprocessing` (data.preprocessing.preprocessing) carries the
        training data's normalisation statistics and feature spec, `card` the README.md.
        `overwrite` replaces an existing model folder (nothing else)."""
        if self.build_args is None:
            raise ConfigError(
                f"{type(self).__name__} was not built by create_model, so its options are unknown; "
                "build it with sentangle.create_model to save it"
            )
        config = folder_config(self.build_args, self.output_dim, self.text_setting, preprocessing)
        return write_model_folder(
            folder,
            config,
            self.state_dict(),
            preprocessing or bare_preprocessing(config),
            card or basic_card(config),
            overwrite,
        )


def create_model(
    name: str, input_dims: dict[str, int], output_dim: int = 1, text_encoder: str | dict | None = None, **kwargs
) -> MSAModel:
    """Build a registered model by name; unknown keyword arguments get a clear error."""
    check_model_options(name, kwargs)
    options = model_options(name, kwargs)
    options.pop("name")
    model = MODELS.get(name)(input_dims=input_dims, output_dim=output_dim, text_encoder=text_encoder, **options)
    model.build_args = {"name": name, "options": options, "input_dims": dict(input_dims)}
    return model


def load_model(folder: str | os.PathLike) -> MSAModel:
    """The model of a model folder (`save_pretrained`, `sentangle export`), in eval mode, every file
    checked against its SHA-256 first; `model.preprocessing` holds its preprocessing.json."""
    config, state_dict, preprocessing = read_model_folder(folder)
    options = dict(config["model"])
    name = options.pop("name")
    try:
        model = create_model(name, config["input_dims"], config["output_dim"], config.get("text_encoder"), **options)
    except (ConfigError, UnknownNameError) as e:
        raise CheckpointError(f"model folder {folder}: config.json: {e}") from None
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise CheckpointError(f"model folder {folder}: weights do not fit model {name!r}: {str(e)[:300]}") from None
    model.preprocessing = preprocessing
    return model.eval()


# ---- model options: the constructor's signature is their one source of defaults -------------------

# Constructor arguments that the data decides, not the config.
DATA_ARGUMENTS = ("input_dims", "output_dim", "text_encoder")


def model_defaults(name: str) -> dict[str, object]:
    """Every option of model `name` with its default, in signature order."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {k: copy.deepcopy(p.default) for k, p in params.items() if k not in DATA_ARGUMENTS}


def model_options(name: str, options: dict, saved: bool = False) -> dict[str, object]:
    """{"name": name, every option}: `options` over the constructor's defaults.

    A mapping given for an option whose default is a mapping updates it key by key (model.max_len.audio=10
    keeps mult's vision cap), as the YAML layers did. `saved`: the options come from a config
    written earlier (a run folder, a checkpoint); an option it lacks that is in the model's
    `options_added` takes the value that reproduces it, not today's default. Names the model does
    not take are kept (check_model_options reports them; a comparison sees them differ).
    """
    given = {k: v for k, v in options.items() if k != "name"}
    if saved:
        given = {**{k: v for k, v in MODELS.get(name).options_added.items() if k not in given}, **given}
    out: dict[str, Any] = {"name": name, **model_defaults(name)}
    for k, v in copy.deepcopy(given).items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_model_options(name: str, options, where: str = "") -> None:
    """ConfigError naming the options `name` does not take (and those it does); used before a long
    job starts, so that a typo in its last model does not surface after hours of the others."""
    # text_encoder is every model's setting (MSAModel reads it; data.text.text_setting checks it)
    check_options(
        MODELS.get(name),
        [k for k in options if k not in ("name", "text_encoder")],
        f"{where + ': ' if where else ''}model {name!r}",
        skip=DATA_ARGUMENTS,
    )


def list_models() -> list[str]:
    return MODELS.names()
