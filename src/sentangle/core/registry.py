"""Name -> constructor tables for models and datasets (timm-style decorators)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from sentangle.core.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)


def signature_options(fn: Callable, skip: Iterable[str] = ()) -> list[str]:
    """The options `fn` names in its signature, in order (not its *args or **kwargs)."""
    skip = set(skip)
    return [
        k
        for k, p in inspect.signature(fn).parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and k not in skip
    ]


OPTION_ERROR = "{what} has no option(s) {unknown}{hint}; its options are: {valid}"


def check_options(
    fn: Callable | None,
    options: Iterable[str],
    what: str,
    *,
    skip: Iterable[str] = (),
    valid: Iterable[str] | None = None,
    error: type[Exception] = ConfigError,
    message: str = OPTION_ERROR,
) -> None:
    """The one check of option names against what a constructor or reader takes.

    A misspelt option must fail before anything runs, naming it, its closest valid spellings and
    every valid option, instead of vanishing or ending in a TypeError traceback. `valid` replaces
    the signature of `fn` (for readers whose options depend on the file); `message` is a format
    string over what, unknown (a list), names (comma-separated), hint and valid.
    """
    if valid is None:
        assert fn is not None, "check_options needs a callable or the valid names"
        if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
            return  # it passes them on, and whatever receives them checks them
        valid = signature_options(fn, skip)
    allowed = list(valid)
    unknown = sorted(k for k in options if k not in allowed)
    if not unknown:
        return
    close = list(dict.fromkeys(c for k in unknown for c in difflib.get_close_matches(k, allowed, n=2)))  # best first
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise error(
        message.format(
            what=what,
            unknown=unknown,
            names=", ".join(map(repr, unknown)),
            hint=hint,
            valid=", ".join(allowed) or "none",
        )
    )


MODELS: Registry[type[Any]] = Registry("model")  # model classes
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")  # functions that load a dataset
AUDIO_EXTRACTORS: Registry[type[Any]] = Registry("audio extractor")  # data/extractors/audio.py classes
ASR_ENGINES: Registry[type[Any]] = Registry("speech recogniser")  # data/extractors/asr.py classes
