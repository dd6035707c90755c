"""Load feature pickles without letting them run code.

A pickle can call any importable function while it loads (`os.system`, `subprocess.Popen`, ...),
so a downloaded `aligned_50.pkl` is untrusted input. Feature pickles only need dicts, lists,
strings, numbers and numpy arrays, so by default only the classes that rebuild those are allowed;
anything else is refused before it is even imported. `trusted=True` (CLI `--trust-pickle`) falls
back to plain `pickle.load` for files the user vouches for.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np

from sentangle.core.errors import DataError

# Python 2 pickles (protocols 0-2) name builtins "__builtin__"; "xrange" became "range".
_BUILTINS = {
    "list",
    "dict",
    "tuple",
    "set",
    "frozenset",
    "bytearray",
    "bytes",
    "str",
    "int",
    "float",
    "complex",
    "bool",
    "slice",
    "range",
}
_ALLOWED = {
    *{("builtins", n) for n in _BUILTINS},
    *{("__builtin__", n) for n in _BUILTINS},
    ("__builtin__", "xrange"),
    ("__builtin__", "unicode"),
    ("__builtin__", "long"),
    # bytes pickled with protocol < 3 are rebuilt as _codecs.encode(text, "latin1"); no codec runs code.
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # protocol 5 rebuilds contiguous arrays from a buffer
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # numpy >= 2 pickles StringDType arrays through this constructor
    ("numpy._core._internal", "_convert_to_stringdtype_kwargs"),
}
_PY2_NAMES = {("__builtin__", "xrange"): "range", ("__builtin__", "unicode"): "str", ("__builtin__", "long"): "int"}


def _resolve(module: str, name: str):
    name = _PY2_NAMES.get((module, name), name)
    if module == "__builtin__":
        module = "builtins"
    if module.startswith("numpy.core.") and hasattr(np, "_core"):
        # numpy >= 2 keeps numpy.core only as a deprecated alias; go to the real module quietly.
        module = "numpy._core." + module[len("numpy.core.") :]
    return getattr(importlib.import_module(module), name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        # latin1 only changes how Python 2 byte strings decode; numpy arrays pickled by Python 2
        # cannot be read with the default ASCII.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _resolve(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            obj = getattr(importlib.import_module(module), name, None)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                return obj
        raise DataError(
            f"{self._path}: the pickle tries to load {module}.{name}, which is refused: a pickle can run "
            "code while it loads, so only plain data (dicts, lists, strings, numbers, numpy arrays) is "
            "allowed by default. If you trust this file, load it with trusted=True (CLI flag --trust-pickle)."
        )


def load_pickle(path: str | Path, trusted: bool = False):
    """Unpickle `path`, refusing anything but plain data unless `trusted`.

    Every failure (missing, truncated or corrupt file, refused class) is a `DataError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a pickle file")
    try:
        with path.open("rb") as f:
            if trusted:
                return pickle.load(f, encoding="latin1")
            return _RestrictedUnpickler(f, str(path)).load()
    except DataError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        raise DataError(
            f"{path}: not a complete pickle ({type(e).__name__}: {e}); the file is truncated or corrupt"
        ) from e
    except Exception as e:  # a corrupt stream can fail in any constructor it reaches
        raise DataError(
            f"{path}: cannot be unpickled ({type(e).__name__}: {e}); the file is corrupt or not a pickle"
        ) from e
