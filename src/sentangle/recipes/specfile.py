"""The YAML files of studies (ablation, sweep space, results plan): a mapping at the top level, read
with errors that name the file and what was expected."""

from __future__ import annotations

from pathlib import Path

import yaml

from sentangle.core.errors import ConfigError


def read_mapping(path: str | Path, what: str, keys: set[str] | None = None, error: type = ConfigError) -> dict:
    """The mapping in YAML file `path` (a `what` file: "ablation file", ...); with `keys`, no other
    top-level key. Raises `error` (a ConfigError subclass) naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise error(f"{what} {path} cannot be read as YAML: {e}") from None
    if not isinstance(data, dict) or not data:
        raise error(
            f"{what} {path}: expected a mapping at the top level" + (f" with keys {sorted(keys)}" if keys else "")
        )
    unknown = set(data) - keys if keys else set()
    if unknown:
        raise error(f"{what} {path}: unknown keys {sorted(unknown)} at the top level; expected {sorted(keys or ())}")
    return data
