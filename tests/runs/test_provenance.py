"""Which source files a seed's provenance covers: the import graph of the model and the training path."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import sentangle
from sentangle.models.lf_dnn import LFDNN
from sentangle.models.lmf import LMF
from sentangle.runs.provenance import (
    TRAINING_PATH,
    _code_only,
    code_fingerprint,
    code_structure,
    fingerprint,
    import_closure,
    model_files,
    read_sources,
    stale_seeds,
)

PACKAGE = Path(sentangle.__file__).resolve().parent


def sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def edited_copy(tmp_path: Path, name: str, edit) -> dict[str, bytes]:
    """The package as a temporary copy in which `name` was edited, read as the scanner reads it."""
    copy = tmp_path / "pkg" / "sentangle"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / name
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return read_sources(copy)


def seed_trained_by(folder: Path, texts: dict[str, bytes], roots) -> None:
    """A finished seed whose metrics.json records the code of `texts`, as run() would have written it."""
    files = import_closure(roots, texts)
    record = {
        "seed": 1111,
        "code": {f: sha16(texts[f]) for f in files},
        "code_structure": {f: sha16(_code_only(texts[f].decode("utf-8")).encode()) for f in files},
        "metrics": {"test": {"mae": 1.0}},
    }
    (folder / "seed_1111").mkdir(parents=True)
    (folder / "seed_1111" / "metrics.json").write_text(json.dumps(record))


def test_an_edit_of_an_imported_model_file_makes_the_importing_model_stale(tmp_path):
    # LMF's file does not define any base class of LMF in tfn.py: only the import graph finds it
    assert not any(f.endswith("tfn.py") for f in model_files(LMF))
    code = code_fingerprint(LMF)
    assert code["models/tfn.py"] == sha16((PACKAGE / "models" / "tfn.py").read_bytes())
    assert "models/tfn.py" not in code_fingerprint(LFDNN)

    texts = edited_copy(tmp_path, "models/tfn.py", lambda s: s + "\nEXTRA_SCALE = 2.0\n")
    seed_trained_by(tmp_path / "run", texts, model_files(LMF) | set(TRAINING_PATH))
    assert stale_seeds(tmp_path / "run", code) == {"seed_1111": ["models/tfn.py"]}


def test_a_comment_only_edit_of_an_imported_file_leaves_seeds_current(tmp_path):
    texts = edited_copy(tmp_path, "models/tfn.py", lambda s: "# reworded comment\n" + s.replace('"""', '"""Note. ', 1))
    assert sha16(texts["models/tfn.py"]) != code_fingerprint(LMF)["models/tfn.py"]
    seed_trained_by(tmp_path / "run", texts, model_files(LMF) | set(TRAINING_PATH))
    assert stale_seeds(tmp_path / "run", code_fingerprint(LMF)) == {}


def test_the_training_path_is_covered_for_every_model(tmp_path):
    for model in (LMF, LFDNN):
        code = code_fingerprint(model)
        for name in ("training/distributed.py", "config.py", "training/trainer.py", "evaluation/metrics.py"):
            assert code[name] == sha16((PACKAGE / name).read_bytes()), name
        assert code_structure(code).keys() == code.keys()
    texts = edited_copy(tmp_path, "training/distributed.py", lambda s: s + "\nWORLD_DEFAULT = 1\n")
    seed_trained_by(tmp_path / "run", texts, model_files(LFDNN) | set(TRAINING_PATH))
    assert stale_seeds(tmp_path / "run", code_fingerprint(LFDNN)) == {"seed_1111": ["training/distributed.py"]}


def test_the_import_graph_follows_function_level_and_relative_imports():
    texts = {
        "__init__.py": b"from sentangle.api import everything\n",
        "api.py": b"",
        "a.py": b"def f():\n    from sentangle.sub import b\n    return b\n",
        "sub/__init__.py": b"",
        "sub/b.py": b"from .c import x\nimport numpy\n",
        "sub/c.py": b"x = 1\n",
        "unused.py": b"",
    }
    assert import_closure({"a.py"}, texts) == {"a.py", "sub/__init__.py", "sub/b.py", "sub/c.py"}
    assert fingerprint({"sub/c.py"}, texts) == {"sub/c.py": sha16(b"x = 1\n")}
