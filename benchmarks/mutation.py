"""Mutation testing of the numeric core with mutmut 3 (a manual job; not part of CI).

For each chosen module a scratch copy of the project is made (src/, tests/, pyproject.toml with a
[tool.mutmut] section appended), so the project's own pyproject and working tree stay untouched
and mutmut's `mutants/` folder never lands in the checkout. Only the tests that exercise the module
run against its mutants, which keeps a module to minutes on a small machine.

    python benchmarks/mutation.py metrics losses          # one or more modules, see MODULES
    python benchmarks/mutation.py --all --max-children 2
    python benchmarks/mutation.py metrics --keep          # keep the scratch copy to inspect mutants

Inside a kept copy, `mutmut show NAME` prints a mutant's diff and `mutmut results` lists survivors.
The summary (killed/survived per module and the surviving mutant names) is printed and written
as JSON to --out. docs/mutation.md records the last run and what each survivor means.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module key -> (source file, tests that exercise it, mutant name patterns or None for the whole file)
MODULES: dict[str, tuple[str, list[str], list[str] | None]] = {
    "metrics": ("src/sentangle/evaluation/metrics.py", ["tests/evaluation/test_metrics.py"], None),
    "losses": ("src/sentangle/models/losses.py", ["tests/models/test_losses.py"], None),
    "layers": ("src/sentangle/models/layers.py", ["tests/models/test_layers.py"], None),
    "normalisation": (
        "src/sentangle/data/dataset.py",
        ["tests/data/test_dataset.py"],
        ["sentangle.data.dataset.x_feature_stats*", "sentangle.data.dataset.x_row_chunks*", "*normalize*"],
    ),
    "selection": (
        "src/sentangle/training/trainer.py",
        ["tests/training/test_trainer.py"],
        ["sentangle.training.trainer.x_fit*", "sentangle.training.trainer.x_selection*"],
    ),
    "resume": ("src/sentangle/runs/folder.py", ["tests/runs/test_resume.py", "tests/runs/test_checkpoints.py"], None),
}

STATUS = {0: "survived", 1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 33: "no tests", 34: "skipped"}


def mutmut_section(source: str, tests: list[str]) -> str:
    # a JSON list of strings is also a TOML array
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {json.dumps([source])}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        # -p no:cacheprovider: the copy is thrown away; -x: one failing test is enough to kill
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
    )


def scratch_copy(dest: Path, source: str, tests: list[str]) -> None:
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "pyproject.toml").read_text()
    (dest / "pyproject.toml").write_text(text + mutmut_section(source, tests))


def results(work: Path) -> dict[str, str]:
    """Mutant name -> status, from the meta files mutmut writes beside each mutated source."""
    out: dict[str, str] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = "not run" if code is None else STATUS.get(code, f"exit {code}")
    return out


def run_module(key: str, max_children: int, keep: bool) -> dict:
    source, tests, patterns = MODULES[key]
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{key}-"))
    scratch_copy(work, source, tests)
    # The folder must exist before Python starts: an entry missing at start-up is cached as
    # unimportable, and the tests would then silently import the unmutated installed package.
    (work / "mutants" / "src").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(work / "mutants" / "src")}
    cmd = ["mutmut", "run", "--max-children", str(max_children), *(patterns or [])]
    print(f"[{key}] {' '.join(cmd)}  (in {work})", flush=True)
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
    status = results(work)
    if patterns:
        from fnmatch import fnmatch

        status = {n: s for n, s in status.items() if any(fnmatch(n, p) for p in patterns)}
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    tested = counts.get("killed", 0) + counts.get("survived", 0) + counts.get("timeout", 0)
    score = (counts.get("killed", 0) + counts.get("timeout", 0)) / tested if tested else float("nan")
    summary = {
        "module": key,
        "source": source,
        "tests": tests,
        "counts": counts,
        "score": score,
        "survived": sorted(n for n, s in status.items() if s == "survived"),
        "workdir": str(work) if keep else None,
        "mutmut_exit": proc.returncode,
    }
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"any of: {', '.join(MODULES)}")
    ap.add_argument("--all", action="store_true", help="every module in MODULES")
    ap.add_argument("--max-children", type=int, default=1, help="mutants tested in parallel (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies (mutmut show/results there)")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mutation-results.json",
        help="summary JSON (default: in the temp folder, so no stray file lands in the checkout)",
    )
    args = ap.parse_args(argv)
    keys = list(MODULES) if args.all else args.modules
    unknown = [k for k in keys if k not in MODULES]
    if not keys or unknown:
        ap.error(f"modules must be among {', '.join(MODULES)} (got {unknown or 'none'})")
    summaries = []
    for key in keys:
        s = run_module(key, args.max_children, args.keep)
        summaries.append(s)
        print(f"[{key}] {s['counts']}  score {s['score']:.1%}", flush=True)
        for name in s["survived"]:
            print(f"    survived: {name}")
        args.out.write_text(json.dumps(summaries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
