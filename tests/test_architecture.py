"""The package's layers (docs/ARCHITECTURE.md): no import cycle between packages, counting every
import statement, function-level ones included; import-linter's contract holds and catches a breach."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sentangle"


def _unit(module: str) -> str | None:
    """The package (or top-level module) of `module` below sentangle: sentangle.data.text -> data."""
    parts = module.split(".")
    if parts[0] != "sentangle" or len(parts) < 2:
        return None
    return parts[1]


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """{unit: units it imports}, from every import statement of every module (at any depth)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("").parts
        if rel == ("sentangle", "__init__"):
            continue  # the facade re-exports the API; nothing inside the package imports it
        package = list(rel[:-1])
        here = _unit(".".join(rel if rel[-1] != "__init__" else rel[:-1]))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                unit = _unit(t)
                real = unit and ((root / unit).is_dir() or (root / f"{unit}.py").exists())
                if real and here and unit != here:
                    graph.setdefault(here, set()).add(unit)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)):
                return c
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_cycle_finder_finds_a_cycle_and_passes_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_packages_counting_function_level_imports():
    graph = import_graph()
    assert {"core", "data", "models", "training", "runs", "recipes", "cli"} <= set(graph) | {"core"}
    assert find_cycle(graph) is None, f"import cycle between packages: {' -> '.join(find_cycle(graph))}"


def test_the_graph_sees_an_import_placed_inside_a_function(tmp_path):
    pkg = tmp_path / "sentangle"
    for sub in ("data", "report"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "report" / "tables.py").write_text("from sentangle.data import x\n")
    (pkg / "data" / "x.py").write_text("def f():\n    from sentangle.report import tables\n")
    graph = import_graph(pkg)
    assert graph == {"report": {"data"}, "data": {"report"}}
    assert find_cycle(graph) is not None


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or pytest.skip("lint-imports (import-linter) is not installed")
    return subprocess.run([exe], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_layers_contract_holds_and_a_data_module_importing_report_breaks_it(tmp_path):
    root = SRC.parents[1]
    ok = _lint_imports(root)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the same tree with one upward import added to a data module
    copy = tmp_path / "repo"
    shutil.copytree(root / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(root / "pyproject.toml", copy / "pyproject.toml")
    target = copy / "src" / "sentangle" / "data" / "batch.py"
    target.write_text(target.read_text(encoding="utf-8") + "\nimport sentangle.report  # noqa\n", encoding="utf-8")
    env_path = f"{copy / 'src'}"
    exe = shutil.which("lint-imports")
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {env_path!r}); "
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exe and bad.returncode != 0
    assert "sentangle.data.batch -> sentangle.report" in bad.stdout, bad.stdout + bad.stderr


def _python_blocks(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    return [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]


def test_architecture_doc_examples_run(tmp_path, monkeypatch):
    """The worked examples of docs/ARCHITECTURE.md run: the model registers, runs forward on a batch and
    rejects a bad option; the study trains through runs.runner.run and writes its table."""
    import torch

    from sentangle.core.registry import MODELS
    from sentangle.data.synthetic import make_synthetic

    model_src, reader_src, study_src = _python_blocks(SRC.parents[1] / "docs" / "ARCHITECTURE.md")
    namespace: dict = {}
    exec(compile(model_src, "ARCHITECTURE.md:model", "exec"), namespace)
    try:
        ds = make_synthetic(n_train=16, n_valid=8, n_test=8, seed=0)
        torch.manual_seed(0)
        model = MODELS.get("mean_fusion")(ds.input_dims, ds.output_dim, hidden=8)
        batch = next(iter(ds.batches("train", 4)))
        out = model(batch)
        assert out.prediction.shape == (len(batch),)
        with pytest.raises(Exception, match="model.hidden must be a positive integer"):
            MODELS.get("mean_fusion")(ds.input_dims, 1, hidden=0)
        study: dict = {}
        exec(compile(study_src, "ARCHITECTURE.md:study", "exec"), study)
        monkeypatch.chdir(tmp_path)
        path = study["lr_study"](
            "mean_fusion", {"name": "synthetic", "scale": 0.05}, rates=(1e-3, 1e-2), seeds=1, out="lr", epochs=1
        )
        table = Path(path).read_text(encoding="utf-8")
        assert "lr=0.001" in table and "lr=0.01" in table and "learning rate" in table
    finally:
        MODELS._items.pop("mean_fusion", None)


def test_architecture_doc_plan_section_renders_its_verdict(tmp_path, monkeypatch):
    """The published-study example of docs/ARCHITECTURE.md, added to the project's plan, is a valid section:
    `sentangle results --quick` trains it and writes its document with the check's verdict."""
    import yaml

    from sentangle.cli import main

    text = (SRC.parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section, document = (yaml.safe_load(b.split("```", 1)[0])[0] for b in text.split("```yaml\n")[1:3])
    plan = yaml.safe_load((SRC.parents[1] / "benchmarks" / "results_plan.yaml").read_text(encoding="utf-8"))
    plan["sections"].append(section)
    plan["documents"].append(document)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan), encoding="utf-8")
    # the files the plan names beside it (a tuned group's spaces)
    (tmp_path / "fair_spaces.yaml").write_text(
        (SRC.parents[1] / "benchmarks" / "fair_spaces.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    args = ["results", "--plan-file", "plan.yaml", "--quick", "--out", "out", "--only", "lf_dnn_lr"]
    assert main(args) == 0
    doc = (tmp_path / "out" / "docs" / "lr_checks.md").read_text(encoding="utf-8")
    assert doc.startswith("# Learning-rate checks") and "### LF-DNN at its default learning rate" in doc
    row = next(line for line in doc.splitlines() if line.startswith("| LF-DNN at lr 3e-4 has a lower test MAE"))
    assert "**PASS**" in row or "**FAIL**" in row
    assert (tmp_path / "out" / "synthetic-unaligned-lf_dnn-lr3e-4" / "lf_dnn" / "seed_1111" / "metrics.json").is_file()
