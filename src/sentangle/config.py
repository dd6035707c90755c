"""Typed run configuration: defaults < dataset YAML < model YAML < user YAML < dotted overrides.

A run config has four parts. `model` and `dataset` are a `name` plus keyword arguments for the
registered constructor (they differ per model, so they stay dicts and the constructor checks them);
`train` is a dataclass because every model shares one trainer; `seeds` and `out` are top-level.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentangle.core.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
SEEDS = (1111, 1112, 1113, 1114, 1115)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 1e-3
    text_lr: float = 5e-5  # for the parameters of a fine-tuned text encoder inside the model
    weight_decay: float = 1e-4
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    grad_clip_value: float = 0.0  # clip each gradient element (the RTIL code does); 0 = off
    # Shuffled training batches of similar lengths (random chunks of 50 batches, each sorted by
    # length): far less padding, which is most of the work of a fine-tuned text encoder on short
    # transcripts (a random batch pads every text to its longest).
    group_by_length: bool = False
    scheduler: str = "none"  # none | cosine | plateau | linear (per-step warmup, then linear decay to 0)
    warmup: float = 0.1  # linear scheduler: fraction of all training steps spent warming up
    patience: int = 8  # epochs without validation improvement before stopping
    select_from_epoch: int = 1  # epochs before this are never selected (the RTIL code starts at 20)
    # When patience runs out: reload the best weights, multiply the learning rates by lr_decay and
    # go on, at most lr_decay_trials times (the RTIL recipe); 0 trials = plain early stopping.
    lr_decay_trials: int = 0
    lr_decay: float = 0.3
    loss: str = "auto"  # auto | l1 | mse | ce  (auto: l1 for regression, ce for classification)
    select_metric: str = "auto"  # validation metric for early stopping (auto: mae / accuracy)
    select_split: str = "valid"
    aux_weights: dict[str, float] = field(default_factory=dict)
    # multiplies every auxiliary weight (after aux_weights): one knob for a search over them all
    aux_scale: float = 1.0
    # auto (cuda when available, else cpu) | cpu | cuda | cuda:N; resolved when training starts
    device: str = "cpu"
    # fp32 | bf16 | fp16: forward passes under torch.autocast (fp16 with a gradient scaler); bf16
    # also runs on the CPU. Metrics are computed in float32 either way.
    precision: str = "fp32"
    # torch.compile the model for training and evaluation; where it cannot compile, a warning and eager
    compile: bool = False
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    progress: bool = True
    # fixed: the dataset's own train / valid / test splits. grouped_cv: every split pooled and dealt
    # into `folds` folds by speaker (the id's prefix before "$_$"); runs/protocol.py
    protocol: str = "fixed"
    folds: int = 0  # grouped_cv: K folds, or 0 (also written "loso") for one fold per group


@dataclass
class RunConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"name": "lf_dnn"})
    dataset: dict[str, Any] = field(default_factory=lambda: {"name": "synthetic"})
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: list[int] = field(default_factory=lambda: list(SEEDS))  # the protocol: five seeds
    out: str = "runs"
    name: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_name(self) -> str:
        # a dataset given as a file path contributes its stem, not its folders
        return self.name or f"{self.model['name']}-{Path(str(self.dataset['name'])).stem}"


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "aux_weights":
            _deep_update(base[k], v)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = copy.deepcopy(v)
    return base


def resolve_config_file(name: str | Path) -> Path:
    """A YAML path, or the name of a packaged experiment config (configs/experiments/<name>.yaml)."""
    path = Path(name)
    if path.exists():
        return path
    packaged = CONFIG_DIR / "experiments" / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml") and packaged.exists():
        return packaged
    known = sorted(p.stem for p in (CONFIG_DIR / "experiments").glob("*.yaml"))
    raise ConfigError(
        f"config file {name} does not exist (nor is it a packaged experiment: {', '.join(known) or 'none'})"
    )


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown top-level keys {sorted(unknown)}; expected model, dataset, train, seeds, out, name"
        )
    return data


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
PRECISIONS = ("fp32", "bf16", "fp16")
PROTOCOLS = ("fixed", "grouped_cv")

_SHORT_FLOAT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], 0.0003); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value (e.g. train.lr=3e-4)")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value) if value != "" else ""
    # YAML reads 3e-4 as a string (it wants 3.0e-4); people write it the short way.
    if isinstance(parsed, str) and _SHORT_FLOAT.fullmatch(parsed):
        parsed = float(parsed)
    return key.strip().split("."), parsed


def parse_seeds(value: Any, name: str = "seeds") -> list[int]:
    """`5` -> the first five standard seeds; `1111,1113` or a list -> those seeds.

    `name` is what the message calls the setting (`--seeds` on the command line)."""
    expected = f"expected a count 1..{len(SEEDS)} or distinct positive integer seeds like 1111,1112"
    given = value
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        parts = parts[:-1] if len(parts) > 1 and not parts[-1] else parts  # "1111," is one seed
        if not all(p.isascii() and p.isdigit() for p in parts):  # no 0x10, -3, 1e3, 1_000
            raise ConfigError(f"{name}={given!r}: {expected}")
        value = int(parts[0]) if len(parts) == 1 else [int(p) for p in parts]
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= len(SEEDS):
            return list(SEEDS[:value])
        if value > 1000:  # one explicit seed
            return [value]
        raise ConfigError(f"{name}={given!r}: {expected}")
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}={given!r}: {expected}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"{name}={given!r}: {expected}")
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        raise ConfigError(f"{name}={given!r}: seed(s) {repeated} given twice; {expected}")
    return [int(v) for v in value]


def build_config(
    model: str | None = None,
    dataset: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """Resolve a run config from the layered sources; every key ends up checked."""
    raw: dict = {}
    user = read_yaml(resolve_config_file(config_file)) if config_file else {}
    model = model or user.get("model", {}).get("name") or RunConfig().model["name"]
    dataset = dataset or user.get("dataset", {}).get("name") or RunConfig().dataset["name"]
    layers = [
        CONFIG_DIR / "datasets" / f"{dataset}.yaml",
        CONFIG_DIR / "models" / f"{model}.yaml",
        CONFIG_DIR / "runs" / f"{model}-{dataset}.yaml",  # tuned settings for one pair, if any
    ]
    for path in layers:
        if path.exists():
            _deep_update(raw, read_yaml(path))
    _deep_update(raw, user)
    raw.setdefault("model", {})["name"] = model
    raw.setdefault("dataset", {})["name"] = dataset
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            if node.get(k) is None:  # an option whose default is null takes a mapping too
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    old = [k for k in OLD_TEXT_OPTIONS if k in (raw.get("dataset") or {})]
    if old:
        warnings.warn(
            f"dataset.{', dataset.'.join(old)} deprecated: the text encoder is a model setting now; write "
            "model.text_encoder: {name: minilm, finetune: 0 | K | all, max_length: 64} "
            f"(read as model.text_encoder.{', model.text_encoder.'.join(OLD_TEXT_OPTIONS[k] for k in old)})",
            FutureWarning,
            stacklevel=2,
        )
    return from_dict(raw)


# Text encoder options that configs before model.text_encoder gave under `dataset` (run folders
# and checkpoints keep them): their name in model.text_encoder.
OLD_TEXT_OPTIONS = {"encoder": "name", "max_length": "max_length", "finetune_text": "finetune"}


def _move_text_options(raw: dict) -> None:
    dataset = raw.get("dataset")
    if not isinstance(dataset, dict) or not any(k in dataset for k in OLD_TEXT_OPTIONS):
        return
    model = raw.setdefault("model", RunConfig().model)
    if not isinstance(model, dict):
        return  # from_dict names the broken section
    setting = dict(model["text_encoder"]) if isinstance(model.get("text_encoder"), dict) else {}
    for old, new in OLD_TEXT_OPTIONS.items():
        if old in dataset:
            value = dataset.pop(old)
            if old == "finetune_text" and isinstance(value, bool):
                value = "all" if value else 0
            setting[new] = value
    model["text_encoder"] = setting


# train settings that must be above (">") or at least (">=") a bound; the value is a finite number
_RANGES = {
    "epochs": (">", 0),
    "batch_size": (">", 0),
    "eval_batch_size": (">", 0),
    "lr": (">", 0),
    "text_lr": (">", 0),
    "weight_decay": (">=", 0),
    "grad_clip": (">=", 0),
    "grad_clip_value": (">=", 0),
    "patience": (">=", 0),
    "select_from_epoch": (">=", 1),
    "lr_decay_trials": (">=", 0),
    "lr_decay": (">", 0),
    "aux_scale": (">=", 0),
    "threads": (">=", 0),
    "folds": (">=", 0),
}


def _check_ranges(train: dict) -> None:
    for k, (op, bound) in _RANGES.items():
        if k not in train:
            continue
        v = train[k]
        ok = math.isfinite(v) and (v > bound if op == ">" else v >= bound)
        if not ok:
            raise ConfigError(f"train.{k} must be a finite number {op} {bound}, got {v!r}")
    if "lr_decay" in train and not train["lr_decay"] <= 1:
        raise ConfigError(
            f"train.lr_decay multiplies the learning rates: expected a number in (0, 1], got {train['lr_decay']!r}"
        )
    aux = train.get("aux_weights", {})
    if not isinstance(aux, dict) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in aux.values()
    ):
        raise ConfigError(f"train.aux_weights must map loss names to finite numbers >= 0, got {aux!r}")


def from_dict(raw: dict) -> RunConfig:
    raw = copy.deepcopy(raw)
    _move_text_options(raw)
    train = raw.pop("train", {}) or {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(train) - names
    if unknown:
        raise ConfigError(f"unknown train settings {sorted(unknown)}; valid ones: {', '.join(sorted(names))}")
    unknown = set(raw) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise ConfigError(f"unknown top-level config keys {sorted(unknown)}")
    if isinstance(train.get("folds"), str) and train["folds"].strip().lower() == "loso":
        train["folds"] = 0  # leave one speaker (group) out: one fold per group
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for k, v in train.items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if types[k] == "int" and number and float(v).is_integer():
            train[k] = int(v)
        elif types[k] == "int":  # 2.5 epochs is a mistake to report, not to round
            raise ConfigError(f"train.{k} must be a whole number{' or loso' if k == 'folds' else ''}, got {v!r}")
        elif types[k] == "float" and number:
            train[k] = float(v)
        elif types[k] == "float":
            raise ConfigError(f"train.{k} must be a number, got {v!r}")
        elif types[k] == "bool" and not isinstance(v, bool):
            raise ConfigError(f"train.{k} must be true or false, got {v!r}")
        elif types[k] == "str" and not isinstance(v, str):
            raise ConfigError(f"train.{k} must be a string, got {v!r}")
    _check_ranges(train)
    cfg = RunConfig(train=TrainConfig(**train), **raw)
    cfg.seeds = parse_seeds(cfg.seeds)
    if cfg.train.scheduler not in ("none", "cosine", "plateau", "linear"):
        raise ConfigError(f"train.scheduler must be none, cosine, plateau or linear, got {cfg.train.scheduler!r}")
    if not 0.0 <= cfg.train.warmup < 1.0:
        raise ConfigError(f"train.warmup is a fraction of the training steps in [0, 1), got {cfg.train.warmup!r}")
    if cfg.train.loss not in ("auto", "l1", "mse", "ce"):
        raise ConfigError(f"train.loss must be auto, l1, mse or ce, got {cfg.train.loss!r}")
    if not DEVICE.fullmatch(cfg.train.device):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N (N a GPU number), got {cfg.train.device!r}")
    if cfg.train.protocol not in PROTOCOLS:
        raise ConfigError(f"train.protocol must be {' or '.join(PROTOCOLS)}, got {cfg.train.protocol!r}")
    if cfg.train.folds in (1, 2):
        raise ConfigError(
            f"train.folds must be 0 or loso (one fold per group) or at least 3 (a fold each for test and "
            f"valid, the rest for train), got {cfg.train.folds}"
        )
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be {', '.join(PRECISIONS)}, got {cfg.train.precision!r}")
    for part in ("model", "dataset"):
        if not isinstance(getattr(cfg, part), dict) or "name" not in getattr(cfg, part):
            raise ConfigError(f"config section {part!r} must be a mapping with a 'name'")
    return cfg


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _flatten(prefix: str, d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and k != "aux_weights":
            out += _flatten(f"{prefix}{k}.", v)
        else:
            out.append(f"{prefix}{k}={yaml_value(v)}")
    return out


def yaml_value(v: Any) -> str:
    """`v` as it is written after KEY= in a command-line override (YAML flow style)."""
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def make_config(
    model: str | dict | None = None,
    dataset: str | dict | None = None,
    config: str | None = None,
    seeds: int | str | list[int] | None = None,
    out: str | None = None,
    name: str | None = None,
    data_root: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **sections: dict,
) -> RunConfig:
    """Resolve a config like `sentangle train` does.

    `model` and `dataset` are a registered name or a dict with a "name" and options (as in the YAML
    files); `sections` are further dicts such as train={"epochs": 5}.
    """
    extra = list(overrides)
    if isinstance(model, dict):
        sections["model"] = {k: v for k, v in model.items() if k != "name"}
        model = model.get("name")
    if isinstance(dataset, dict):
        sections["dataset"] = {k: v for k, v in dataset.items() if k != "name"}
        dataset = dataset.get("name")
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{section}= must be a dict of settings, got {type(values).__name__}")
        extra += _flatten(f"{section}.", values)
    if seeds is not None:
        extra.append(f"seeds={yaml_value(parse_seeds(seeds))}")
    if out is not None:
        extra.append(f"out={out}")
    if name is not None:
        extra.append(f"name={name}")
    if data_root is not None:
        extra.append(f"dataset.root={data_root}")
    return build_config(model, dataset, config, extra)
