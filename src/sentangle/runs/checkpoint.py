"""The checkpoint format: weights, resolved config and data facts, sealed by a SHA-256 digest;
loaded weights-only (tensors and plain data, no code)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from sentangle.config import RunConfig, from_dict
from sentangle.core.errors import CheckpointError
from sentangle.core.io import atomic_write, versions
from sentangle.data.dataset import MSADataset
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
            "text_encoder": ds.text_encoder,
        },
    }
    payload["sha256"] = checkpoint_digest(payload)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _digest_matches(payload: dict) -> bool:
    try:
        return checkpoint_digest(payload) == payload["sha256"]
    except Exception:  # corrupt metadata can make a "tensor" that cannot even be hashed
        return False


def checkpoint_digest(payload: dict) -> str:
    """SHA-256 of the weights, config, data facts and seed. torch.load does not check the zip CRCs,
    so a flipped byte inside a tensor would otherwise load as silently different weights."""
    h = hashlib.sha256(
        json.dumps([payload.get(k) for k in ("config", "data", "seed")], sort_keys=True, default=str).encode()
    )
    for name in sorted(payload["state_dict"]):
        t = payload["state_dict"][name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_checkpoint(path: str | Path) -> tuple[MSAModel, RunConfig, dict]:
    """Rebuild the model of a checkpoint. Loads tensors and plain data only (no code runs)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # a foreign pickle also draws a protocol warning: one error is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a sentangle checkpoint "
            f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "sentangle-checkpoint-1":
        raise CheckpointError(f"checkpoint {path}: missing 'format: sentangle-checkpoint-1'; not written by sentangle")
    missing = [k for k in ("state_dict", "config", "data") if not isinstance(payload.get(k), dict)]
    if missing:
        raise CheckpointError(f"checkpoint {path}: no {missing} entries; expected a state_dict, config and data dicts")
    # Checkpoints written before the digest existed carry none; every later one is verified.
    if "sha256" in payload and not _digest_matches(payload):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its weights/config do not match the SHA-256 stored "
            "in it (flipped or overwritten bytes); retrain or restore the file"
        )
    cfg = from_dict(payload["config"])
    data = payload["data"]
    # a checkpoint saved before an option existed gets the value that reproduces it (options_added)
    args = model_options(cfg.model["name"], cfg.model, saved=True)
    args.pop("name")
    model = create_model(cfg.model["name"], data["input_dims"], data["output_dim"], data["text_encoder"], **args)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {cfg.model['name']!r}: {str(e)[:300]}"
        ) from None
    model.eval()
    return model, cfg, payload
