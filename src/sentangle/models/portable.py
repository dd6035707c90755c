"""The portable model folder: a trained model that moves to another machine, Hugging Face style.

    DIR/config.json         format, the model's name and every option, input_dims, output_dim, task,
                            class names, the text encoder setting by name (never a machine path)
    DIR/model.safetensors   the weights (safetensors: tensors only, no code)
    DIR/preprocessing.json  normalisation statistics and feature spec (data/preprocessing.py)
    DIR/README.md           the model card
    DIR/checksums.sha256    SHA-256 of every other file (`sha256sum -c` reads it), checked on load

This module reads and writes the files and checks their digests; `MSAModel.save_pretrained` and
`models.base.load_model` build the model from them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from sentangle.core.errors import CheckpointError, DataError, OutputError
from sentangle.core.io import atomic_folder, write_json, write_text
from sentangle.core.version import __version__
from sentangle.data.preprocessing import PREPROCESSING_FORMAT, preprocessing_statistics

MODEL_FORMAT = "sentangle-model-1"
FILES = ("config.json", "model.safetensors", "preprocessing.json", "README.md")
CHECKSUMS = "checksums.sha256"


def is_model_folder(path: str | os.PathLike) -> bool:
    """A folder that claims to be a model folder (its files are checked when it is read)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in (CHECKSUMS, "config.json", "model.safetensors"))


def machine_paths(value, where: str = "") -> list[str]:
    """'field: path' for every string in `value` (nested dicts and lists) that is an absolute path."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in machine_paths(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in machine_paths(v, f"{where}[{i}]")]
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")):
        return [f"{where}: {value}"]
    return []


def write_model_folder(
    folder: str | os.PathLike,
    config: dict,
    state_dict: dict[str, torch.Tensor],
    preprocessing: dict,
    card: str,
    overwrite: bool = False,
) -> Path:
    """Write a new model folder (OutputError if `folder` exists, unless `overwrite` and it is a
    model folder, or is a link); nothing appears at `folder` unless every file was written."""
    found = machine_paths({"config.json": config, "preprocessing.json": preprocessing})
    if found:
        raise OutputError(
            f"cannot write model folder {folder}: it would name a path of this machine ({'; '.join(found[:3])}); "
            "a portable model names its text encoder as 'minilm', a hub id or a relative folder"
        )
    # Clones: safetensors refuses tensors that share memory, and views of one buffer may.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}

    def fill(tmp: Path) -> None:
        write_json(tmp / "config.json", config)
        (tmp / "model.safetensors").write_bytes(save_safetensors(tensors, metadata={"format": "pt"}))
        write_json(tmp / "preprocessing.json", preprocessing)
        write_text(tmp / "README.md", card)
        lines = [f"{hashlib.sha256((tmp / name).read_bytes()).hexdigest()}  {name}\n" for name in FILES]
        write_text(tmp / CHECKSUMS, "".join(lines))

    return atomic_folder(folder, fill, "model folder", is_model_folder if overwrite else None)


def _checksums(folder: Path) -> dict[str, str]:
    file = folder / CHECKSUMS
    if not file.is_file():
        raise CheckpointError(
            f"model folder {folder}: missing file {CHECKSUMS}; expected a folder written by sentangle export"
        )
    out = {}
    for n, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise CheckpointError(f"model folder {folder}: {CHECKSUMS} line {n} is not '<sha256>  <file name>'")
        out[name] = digest
    return out


def _verified(folder: Path, name: str, digests: dict[str, str]) -> bytes:
    """The bytes of `name`, read once and checked against its digest (what is parsed is what was checked)."""
    if name not in digests:
        raise CheckpointError(f"model folder {folder}: {CHECKSUMS} lists no {name}; expected a digest for every file")
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"model folder {folder}: missing file {name}; copy the whole folder")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digests[name]:
        raise CheckpointError(
            f"model folder {folder}: {name} does not match its SHA-256 in {CHECKSUMS} (altered or corrupt); "
            "export the model again or restore the file"
        )
    return data


def _json(folder: Path, name: str, data: bytes, fmt: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError as e:
        raise CheckpointError(f"model folder {folder}: {name} is not JSON ({e})") from None
    if not isinstance(value, dict) or value.get("format") != fmt:
        raise CheckpointError(f"model folder {folder}: {name} has no 'format: {fmt}'; not written by sentangle")
    return value


def read_model_folder(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(config, state_dict, preprocessing) of a model folder, every file checked against its
    SHA-256 first: CheckpointError naming the folder and the file that is missing or altered."""
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} is not a folder")
    digests = _checksums(folder)
    data = {name: _verified(folder, name, digests) for name in FILES}
    config = _json(folder, "config.json", data["config.json"], MODEL_FORMAT)
    missing = [k for k in ("model", "input_dims", "output_dim") if k not in config]
    if missing or not isinstance(config["model"], dict) or "name" not in config["model"]:
        raise CheckpointError(f"model folder {folder}: config.json lacks {missing or ['model.name']}")
    preprocessing = _json(folder, "preprocessing.json", data["preprocessing.json"], PREPROCESSING_FORMAT)
    try:
        preprocessing_statistics(preprocessing, "preprocessing.json")
    except DataError as e:
        raise CheckpointError(f"model folder {folder}: {e}") from None
    try:
        state_dict = load_safetensors(data["model.safetensors"])
    except SafetensorError as e:
        raise CheckpointError(f"model folder {folder}: model.safetensors cannot be read ({e})") from None
    return config, state_dict, preprocessing


def folder_config(build_args: dict, output_dim: int, text_encoder: dict | None, preprocessing: dict | None) -> dict:
    """config.json of a model built by `create_model` with `build_args` (models.base)."""
    features = (preprocessing or {}).get("features") or {}
    return {
        "format": MODEL_FORMAT,
        "model": {"name": build_args["name"], **build_args["options"]},
        "input_dims": build_args["input_dims"],
        "output_dim": output_dim,
        "task": features.get("task") or ("regression" if output_dim == 1 else "classification"),
        "class_names": features.get("class_names"),
        "text_encoder": text_encoder,
        "versions": {"sentangle": __version__, "torch": str(torch.__version__)},
    }


def bare_preprocessing(config: dict) -> dict:
    """preprocessing.json of a model saved without its data's: no statistics, the spec config knows."""
    features = {k: config[k] for k in ("input_dims", "task", "class_names", "text_encoder")}
    return {"format": PREPROCESSING_FORMAT, "normalization": None, "features": features}


def basic_card(config: dict) -> str:
    """A model card for a model saved without its training record (`sentangle export` writes a full one)."""
    options = ", ".join(f"{k}={v!r}" for k, v in config["model"].items() if k != "name")
    return (
        f"# {config['model']['name']}\n\nA sentangle model folder ({config['task']}); inputs "
        f"{config['input_dims']}; options: {options or 'none'}.\n\nSaved without a training record: no data, "
        "metrics or normalisation statistics are known for it. Load it with `sentangle.load_model(DIR)`.\n"
    )
