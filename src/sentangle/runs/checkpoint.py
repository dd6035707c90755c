"""The checkpoint format: weights, resolved config and data facts, sealed by a SHA-256 digest;
loaded weights-only (tensors and plain data, no code)."""

from __future__ import annotations

import hashlib
import json
import pickle
import pickletools
import re
import warnings
from pathlib import Path

import torch

from sentangle.config import RunConfig, from_dict
from sentangle.core.errors import CheckpointError
from sentangle.core.io import atomic_write, versions
from sentangle.data.dataset import MSADataset
from sentangle.data.preprocessing import preprocessing
from sentangle.data.text import ALL_LAYERS, encoder_name, resolve_encoder, text_setting
from sentangle.models.base import MSAModel, create_model, model_options


def save_checkpoint(path: Path, model: MSAModel, cfg: RunConfig, ds: MSADataset, seed: int) -> None:
    payload = {
        "format": "sentangle-checkpoint-1",
        "state_dict": model.state_dict(),
        "config": cfg.to_dict(),
        "seed": seed,
        "versions": versions(),
        "data": {
            "input_dims": ds.input_dims,
            "output_dim": ds.output_dim,
            "task": ds.task,
            "class_names": ds.class_names,
            "text_encoder": _built_with(model),
        },
        # normalisation statistics and feature spec: what predicting on new data needs (absent before)
        "preprocessing": preprocessing(ds, model.text_setting, cfg.dataset),
    }
    payload["sha256"] = checkpoint_digest(payload)
    atomic_write(path, lambda tmp: _save(payload, tmp))


def _save(payload: dict, tmp: str) -> None:
    # Through a Python file: torch.save to a path reports a full disk as RuntimeError("unexpected
    # pos ..."), through a file object as the OSError (ENOSPC) that atomic_write explains.
    with open(tmp, "wb") as f:
        torch.save(payload, f)


def _built_with(model: MSAModel) -> str | dict | None:
    """The fine-tuned encoder in the form older versions read (a name for every layer, name and
    top_layers for the top ones), the name as the config gives it: never a resolved machine path."""
    setting = model.text_setting
    if setting is None or setting["finetune"] == 0:
        return None
    if setting["finetune"] == ALL_LAYERS:
        return setting["name"]
    return {"name": setting["name"], "top_layers": setting["finetune"]}


def _text_setting(path: Path, cfg: RunConfig, data: dict) -> dict | None:
    """The model's text encoder setting. Checkpoints of older versions name the encoder they
    fine-tuned by its resolved path only: the offline MiniLM package's folder reads as "minilm"
    wherever it is installed now, another folder must still exist."""
    given, built = cfg.model.get("text_encoder"), data.get("text_encoder")
    if built is None:
        return None  # no encoder inside the model: frozen features, or no text
    setting = text_setting(built, f"checkpoint {path}: data.text_encoder")
    setting["name"] = encoder_name(setting["name"])
    if given is not None:  # its name and max_length as the user gave them
        setting = {**text_setting(given, f"checkpoint {path}: model.text_encoder"), "finetune": setting["finetune"]}
    try:
        resolve_encoder(setting["name"])
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path} fine-tunes the text encoder in folder {setting['name']}, which does not exist "
            "here; copy that encoder folder (its config, tokenizer and weights) to this path, or install the "
            "package it came from"
        ) from None
    return setting


def _digest_matches(payload: dict) -> bool:
    try:
        return checkpoint_digest(payload) == payload["sha256"]
    except Exception:  # corrupt metadata can make a "tensor" that cannot even be hashed
        return False


def checkpoint_digest(payload: dict) -> str:
    """SHA-256 of the weights, config, data facts, seed and preprocessing (where the checkpoint has
    it: older ones keep their digest). torch.load does not check the zip CRCs, so a flipped byte
    inside a tensor would otherwise load as silently different weights."""
    keys = ("config", "data", "seed") + (("preprocessing",) if "preprocessing" in payload else ())
    h = hashlib.sha256(json.dumps([payload.get(k) for k in keys], sort_keys=True, default=str).encode())
    for name in sorted(payload["state_dict"]):
        t = payload["state_dict"][name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_SAFE_IMPORTS = ("torch.", "collections.OrderedDict")  # what a legacy (non-zip) torch file imports


def _pickled_import(path: Path) -> str | None:
    """The first function or class a plain (non-zip) pickle would import, if any: torch's
    weights-only loader may stop at an unsupported opcode before it reaches the import."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:2] == b"PK":  # a torch zip: torch's own message names the import
        return None
    strings: list[str] = []
    found = None
    try:  # only a whole, well-formed pickle counts: text files can look like opcodes for a while
        for op, arg, _ in pickletools.genops(data):
            name = None
            if op.name in ("GLOBAL", "INST"):
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = ".".join(strings[-2:])
            elif isinstance(arg, str):
                strings.append(arg)
            if found is None and name and _DOTTED.fullmatch(name) and not name.startswith(_SAFE_IMPORTS):
                found = name
    except Exception:  # truncated or not a pickle
        return None
    return found


def load_checkpoint(path: str | Path, allow_unverified: bool = False) -> tuple[MSAModel, RunConfig, dict]:
    """Rebuild the model of a checkpoint. Loads tensors and plain data only (no code runs).

    A checkpoint without its SHA-256 digest (written before the digest existed, or stripped of it)
    is refused unless `allow_unverified=True` (`--allow-unverified`): nothing else tells a flipped
    byte inside its weights from the trained ones."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file; expected a checkpoint.pt written by sentangle")
    try:
        with warnings.catch_warnings():  # a foreign pickle also draws a protocol warning: one error is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        found = _GLOBAL.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        code = found.group(1) if found else _pickled_import(path)
        if code:  # the pickle names a function or class to import and call: code, never run here
            raise CheckpointError(
                f"checkpoint {path} contains code ({code}), not only "
                "tensors and plain data: it must not be loaded and was not. sentangle checkpoints hold no "
                "code; this file was not written by sentangle or was tampered with"
            ) from None
        first = (str(e).splitlines() or [""])[0][:200]
        why = type(e).__name__ if "weights_only" in first else f"{type(e).__name__}: {first}"  # not torch's advice
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a sentangle checkpoint ({why})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "sentangle-checkpoint-1":
        raise CheckpointError(f"checkpoint {path}: missing 'format: sentangle-checkpoint-1'; not written by sentangle")
    missing = [k for k in ("state_dict", "config", "data") if not isinstance(payload.get(k), dict)]
    if missing:
        raise CheckpointError(f"checkpoint {path}: no {missing} entries; expected a state_dict, config and data dicts")
    if "sha256" not in payload:
        if not allow_unverified:
            raise CheckpointError(
                f"checkpoint {path} has no SHA-256 digest, so its weights cannot be verified; expected a "
                "checkpoint written by sentangle >= the digest (retrain), or pass --allow-unverified "
                "(allow_unverified=True) to load it anyway"
            )
    elif not _digest_matches(payload):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its weights/config do not match the SHA-256 stored "
            "in it (flipped or overwritten bytes); retrain or restore the file"
        )
    cfg = from_dict(payload["config"])
    data = payload["data"]
    # a checkpoint saved before an option existed gets the value that reproduces it (options_added)
    args = model_options(cfg.model["name"], cfg.model, saved=True)
    args.pop("name")
    args.pop("text_encoder", None)
    text = _text_setting(path, cfg, data)
    model = create_model(cfg.model["name"], data["input_dims"], data["output_dim"], text, **args)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {cfg.model['name']!r}: {str(e)[:300]}"
        ) from None
    model.eval()
    return model, cfg, payload
