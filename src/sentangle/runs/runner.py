"""Multi-seed runs and the run folder.

    runs/<name>/config.yaml        the resolved config (re-run it with --config)
    runs/<name>/environment.json   versions, git commit, platform
    runs/<name>/dataset.json       what was loaded (sizes, shapes, normalisation report)
    runs/<name>/seed_<s>/          metrics.json (per split + history), checkpoint.pt, predictions.npz
                                   (every split; runs/predictions.py)
    runs/<name>/summary.json|md    mean and std over seeds, per split
    runs/<name>/confusion.csv|md|png   classification: the test confusion matrix, seeds pooled
                                   (and seed_<s>/confusion.csv|md per seed; runs/confusion.py)

With train.protocol grouped_cv (runs/protocol.py) each seed trains one model per fold, each with
`train_seed` as a seed of a fixed-split run is trained, into seed_<s>/folds/fold_<k>/ (metrics.json,
checkpoint.pt, predictions.npz, dataset.json); the seed's own predictions.npz and metrics.json hold
the folds' valid and test predictions pooled and the metrics computed on them, so every reader of
run folders reads a cross-validated run like any other. A finished fold is kept on a restart.

A seed whose metrics.json exists (for the same config) is not trained again, so an interrupted
multi-seed run picks up where it stopped. Each seed records a hash of every source file that
trained it (`code_fingerprint`) and of their code without comments and docstrings (`code_structure`);
reusing a seed trained by other code is allowed (a resume after an upgrade) but warned about, naming
the files that differ; `stale_seeds` lists such seeds for reports. An edit of comments or
docstrings alone leaves seeds current.
    runs/<name>/replays.json       seeds trained again after a code change, and whether their metrics
                                   came out identical (then the other seeds of that code still count)
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import warnings
from pathlib import Path

from sentangle.config import RunConfig, dump_yaml, read_yaml
from sentangle.core.io import check_output, new_output, output_errors, versions, write_json, write_text
from sentangle.core.registry import MODELS
from sentangle.data.dataset import MSADataset
from sentangle.data.named import describe, load_dataset
from sentangle.data.synthetic import oracle_table
from sentangle.data.text import ALL_LAYERS, text_setting
from sentangle.models.base import MSAModel, check_model_options, create_model
from sentangle.report.diagnose import diagnostics_markdown, summarize_run_diagnostics, write_seed_diagnostics
from sentangle.report.tables import aggregate, split_table
from sentangle.runs.checkpoint import save_checkpoint
from sentangle.runs.confusion import write_run_confusion
from sentangle.runs.folder import (
    check_same_data,
    comparable_config,
    differences,
    finished,
    finished_folds,
    finished_metrics,
    folder_lock,
    prepare_folder,
    resolved_config,
)
from sentangle.runs.predictions import write_seed_predictions
from sentangle.runs.protocol import POOLED_SPLITS, Folds, pooled_metrics, pooled_predictions
from sentangle.runs.provenance import code_fingerprint, code_structure, record_changes, stale_seeds
from sentangle.runs.sanity import NO_GAIN_MARGIN, constant_predictions, no_better_than_constant
from sentangle.training.distributed import setup as distributed_setup
from sentangle.training.trainer import fit, predict, set_seed

# The modalities load_dataset normalises unless a config's dataset.normalize says otherwise.
LOAD_NORMALIZE = inspect.signature(load_dataset).parameters["normalize"].default


def dataset_from_config(cfg: RunConfig, root=None, **options) -> MSADataset:
    """The dataset of `cfg`, its raw texts encoded as the model's text encoder setting needs them;
    `options` replace load options of the config (normalize=() for data a model's statistics normalise).

    For train.protocol grouped_cv the features are left unnormalised: each fold normalises with its
    own training speakers' statistics (runs/protocol.py)."""
    if cfg.train.protocol == "grouped_cv":
        options = {"normalize": (), **options}
    args = {k: v for k, v in cfg.dataset.items() if k != "name"} | options
    if root is not None:
        args["root"] = root
    return load_dataset(cfg.dataset["name"], text_encoder=cfg.model.get("text_encoder"), **args)


def dataset_key(cfg: RunConfig) -> str:
    """Equal for configs that load the same dataset (the text encoder setting included)."""
    return json.dumps([cfg.dataset, text_setting(cfg.model.get("text_encoder"))], sort_keys=True, default=str)


def model_text_setting(cfg: RunConfig, ds: MSADataset) -> dict | None:
    """model.text_encoder; for data read as tokens of a named encoder (an MMSA pickle's BERT
    tokens) with no setting given, that encoder fine-tuned, as its tokens require."""
    given = cfg.model.get("text_encoder")
    if "text" not in ds.modalities:
        return None  # nothing for an encoder to read
    tokens = any(sp.tokens is not None for sp in ds.splits.values())
    if given is None and tokens and ds.text_encoder:
        return {"name": ds.text_encoder, "finetune": ALL_LAYERS}
    return given


def model_for(cfg: RunConfig, ds: MSADataset) -> MSAModel:
    args = {k: v for k, v in cfg.model.items() if k not in ("name", "text_encoder")}
    return create_model(cfg.model["name"], ds.input_dims, ds.output_dim, model_text_setting(cfg, ds), **args)


def run_code(cfg: RunConfig, model_class: type | None = None) -> dict[str, str]:
    """The code fingerprint that `cfg`'s seeds record (runs.provenance): the model's files and the
    training path, and runs/protocol.py under cross-validation. The runner and every staleness check
    use this one definition, so that a cross-validated seed is not taken for another code's."""
    extra = ("runs/protocol.py",) if cfg.train.protocol == "grouped_cv" else ()
    return code_fingerprint(model_class or MODELS.get(cfg.model["name"]), extra)


def summarize(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    splits = next(iter(per_seed.values()))
    return {s: {m: aggregate([per_seed[seed][s][m] for seed in per_seed]) for m in splits[s]} for s in splits}


def run(cfg: RunConfig, overwrite: bool = False, dataset: MSADataset | None = None) -> dict:
    """Train `cfg.model` on `cfg.dataset` once per seed; write the run folder; return the summary."""
    check_model_options(cfg.model["name"], cfg.model)
    cfg = resolved_config(cfg)
    folder = Path(cfg.out) / cfg.run_name
    for path in (cfg.out, folder):  # an unwritable output fails now, not after training
        check_output(path, "folder")
    resolved = cfg.to_dict()
    # Under torchrun (training/distributed.py) rank 0 alone reads and writes the run folder and
    # tells the other ranks what it found, so they also work on a node without a shared disk.
    ddp = distributed_setup(cfg.train.device)

    def check_folder() -> None:
        if (folder / "config.yaml").exists() and not overwrite and (finished(folder) or finished_folds(folder)):
            old, new = comparable_config(read_yaml(folder / "config.yaml")), comparable_config(resolved)
            if old != new:
                diff = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in differences(old, new)[:5])
                raise FileExistsError(
                    f"{folder} holds a run with a different config ({diff}); pass --overwrite or another --name"
                )

    ddp.on_main(check_folder)
    ds = dataset or dataset_from_config(cfg)
    # the folds (and a train.folds the data cannot fill) are known before anything is written
    folds = Folds(ds, cfg.train.folds) if cfg.train.protocol == "grouped_cv" else None
    code = run_code(cfg, type(model_for(cfg, ds)))  # a bad model name or option fails here, before anything is written
    if not overwrite:
        ddp.on_main(lambda: check_same_data(folder, ds))
        stale = ddp.on_main(lambda: stale_seeds(folder, code, cfg.seeds))
        if stale:
            warnings.warn(
                f"{folder}: reusing {len(stale)} finished seed(s) trained by other code than this "
                f"checkout's (source files that differ: {stale}); pass --overwrite to retrain them",
                stacklevel=2,
            )
    # A write that fails (a full disk ...) removes the folders this run created, unless a seed finished.
    with (
        new_output(folder, keep=lambda: bool(finished(folder) or finished_folds(folder))),
        output_errors(folder, "run folder"),
    ):
        with contextlib.ExitStack() as stack:
            # rank 0 holds the lock; on_main stops every rank if it cannot (no rank waits on a dead one)
            ddp.on_main(lambda: stack.enter_context(folder_lock(folder)))
            return _train_and_write(cfg, ds, folder, resolved, code, overwrite, ddp, folds)


def _train_and_write(
    cfg: RunConfig,
    ds: MSADataset,
    folder: Path,
    resolved: dict,
    code: dict,
    overwrite: bool,
    ddp,
    folds: Folds | None = None,
) -> dict:
    if ddp.main:
        prepare_folder(folder, resolved)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "config.yaml", dump_yaml(resolved))
        write_json(folder / "environment.json", versions())
        write_json(folder / "dataset.json", {**describe(ds), "info": ds.info})
    per_seed: dict[int, dict] = {}
    for seed in cfg.seeds:
        seed_dir = folder / f"seed_{seed}"
        done = seed_dir / "metrics.json"
        kept = ddp.on_main(lambda: None if overwrite else finished_metrics(done))
        if kept is not None:
            per_seed[seed] = kept
        elif folds is None:
            per_seed[seed] = train_seed(cfg, ds, seed_dir, seed, code, ddp)["metrics"]
        else:
            per_seed[seed] = _train_folds(cfg, folds, seed_dir, seed, code, overwrite, ddp)
    summary = summarize(per_seed)
    if not ddp.main:
        ddp.barrier()  # return when rank 0 has written the summary
        return {"folder": str(folder), "task": ds.task, "splits": summary, "per_seed": per_seed, "references": None}
    diagnostics = summarize_run_diagnostics(folder, per_seed)  # over the seeds that wrote diagnostics.json
    cv = _cv_summary(folder, folds, per_seed) if folds is not None else None
    write_json(
        folder / "summary.json",
        {
            "model": cfg.model["name"],
            "dataset": cfg.dataset["name"],
            "task": ds.task,
            "seeds": list(per_seed),
            "std": "sample (ddof=1)",
            "splits": summary,
            "per_seed": per_seed,
            **({"protocol": cv} if cv else {}),
            **({"diagnostics": diagnostics} if diagnostics else {}),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    md = (
        f"# {cfg.run_name}\n\nModel `{cfg.model['name']}` on `{cfg.dataset['name']}`, seeds {list(per_seed)}; "
        f"selected on {cfg.train.select_split} ({cfg.train.select_metric}); mean ± sample std over seeds.\n\n"
    )
    if cv:
        md += (
            f"Grouped cross-validation: {cv['folds']} folds over {cv['groups']} speakers (the sample id's prefix "
            "before `$_$`, sorted and dealt round-robin); fold k tests on its speakers, selects on fold k+1's and "
            "trains on the rest. Each seed's metrics are computed on its folds' pooled predictions (every "
            "sample predicted once, by the model that did not train on its speaker).\n\n"
        )
    md += split_table(summary, ds.task) + "\n"
    if cv and cv["per_fold"]:
        md += (
            "\nPer fold (test speakers; mean ± sample std over seeds, seed_<s>/folds/fold_<k>/metrics.json):\n\n"
            + split_table(cv["per_fold"], ds.task, label="fold")
            + "\n"
        )
    references = None
    if "oracle" in ds.info and folds is None:  # the synthetic benchmark knows what is achievable
        references = oracle_table(ds)
        md += "\nReference predictors on the same test split:\n\n" + references + "\n"
    if diagnostics:
        md += "\nBranch / gate diagnostics (seed_<s>/diagnostics.json):\n\n" + diagnostics_markdown(diagnostics) + "\n"
    if ds.task == "classification" and write_run_confusion(folder, per_seed):
        md += "\nTest confusion matrix, seeds pooled (confusion.md, .csv; row-normalised in confusion.png):\n\n"
        md += (folder / "confusion.md").read_text(encoding="utf-8")
    write_text(folder / "summary.md", md)
    ddp.barrier()
    return {"folder": str(folder), "task": ds.task, "splits": summary, "per_seed": per_seed, "references": references}


def train_seed(
    cfg: RunConfig, ds: MSADataset, seed_dir: Path, seed: int, code: dict, ddp, desc: str = "", extra=None
) -> dict:
    """Train one model on `ds`'s train split with `seed` and write `seed_dir` (predictions of every
    split, checkpoint, diagnostics, metrics.json last: its presence marks the work finished). Returns
    what metrics.json holds (on the ranks other than 0: the metrics only). The one training path:
    a seed of a fixed-split run, and each fold of a cross-validation seed (with `extra` facts)."""
    set_seed(seed)  # initialisation belongs to the seed too
    model = model_for(cfg, ds)
    result = fit(model, ds, cfg.train, seed, desc=desc or f"{cfg.model['name']} seed {seed}")
    if not ddp.main:
        return {"metrics": result.metrics}
    outputs, stored = {}, {}
    for split in ds.splits:
        pred, label, ids = predict(model, ds, split, cfg.train.eval_batch_size, ddp.device, cfg.train.precision)
        stored[split] = pred, label, ids
        outputs[split] = pred, label
    write_seed_predictions(seed_dir, stored, (ds.class_names or []) if ds.task != "regression" else None)
    constant, no_gain = _sanity(seed_dir, outputs, ds.task)
    model.cpu()  # checkpoints and diagnostics hold and read CPU tensors, whatever train.device was
    save_checkpoint(seed_dir / "checkpoint.pt", model, cfg, ds, seed)
    write_seed_diagnostics(seed_dir, cfg.model["name"], model, ds)  # report/diagnose.py: opt-in per model
    record = {
        "seed": seed,
        **(extra or {}),
        "code": code,
        "code_structure": code_structure(code),
        "best_epoch": result.best_epoch,
        "select_metric": result.select_metric,
        "select_split": cfg.train.select_split,
        "best_score": result.best_score,
        "constant_predictions": constant,
        "no_better_than_constant": no_gain,
        "train_seconds": round(result.seconds, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": result.metrics,
        "history": result.history,
    }
    write_json(seed_dir / "metrics.json", record)  # last: its presence marks the seed as finished for resuming
    return record


def _sanity(seed_dir: Path, outputs: dict, task: str) -> tuple[list[str], list[str]]:
    """The splits where the model predicts a constant, and those where it is no better than the best
    constant fitted on the training labels, each warned about."""
    constant = [s for s, (pred, label) in outputs.items() if constant_predictions(pred, label, task)]
    train_label = outputs["train"][1] if "train" in outputs else None
    no_gain = [
        s
        for s, (pred, label) in outputs.items()
        if s not in constant and train_label is not None and no_better_than_constant(pred, label, train_label, task)
    ]
    if constant:
        warnings.warn(
            f"{seed_dir}: the selected model gives (nearly) the same prediction for every sample of "
            f"{', '.join(constant)}: it has collapsed to a constant predictor, and its metrics are "
            "those of a constant; look at the loss history in metrics.json",
            stacklevel=3,
        )
    if no_gain:
        warnings.warn(
            f"{seed_dir}: on {', '.join(no_gain)} the selected model's error is above "
            f"{100 * NO_GAIN_MARGIN:.0f}% of that of the "
            "best constant predictor fitted on the training labels: it has learned (almost) nothing; "
            "look at the loss history in metrics.json",
            stacklevel=3,
        )
    return constant, no_gain


def _train_folds(
    cfg: RunConfig, folds: Folds, seed_dir: Path, seed: int, code: dict, overwrite: bool, ddp
) -> dict[str, dict[str, float]]:
    """One seed of a grouped cross-validation run: `train_seed` per fold into
    seed_dir/folds/fold_<k>/ (a finished fold is kept, as a finished seed is), then the folds'
    valid and test predictions pooled into the seed's predictions.npz and metrics.json."""
    records, stale = [], {}
    normalize = cfg.dataset.get("normalize", LOAD_NORMALIZE)
    for k in range(len(folds)):
        fold_dir = seed_dir / "folds" / f"fold_{k}"
        record = ddp.on_main(lambda: None if overwrite else _finished_record(fold_dir / "metrics.json"))
        if record is None:
            fold_ds = folds.dataset(k, normalize)
            if ddp.main:
                fold_dir.mkdir(parents=True, exist_ok=True)
                write_json(fold_dir / "dataset.json", {**describe(fold_ds), "info": fold_ds.info})
            desc = f"{cfg.model['name']} seed {seed} fold {k + 1}/{len(folds)}"
            record = train_seed(cfg, fold_ds, fold_dir, seed, code, ddp, desc, {"fold": k, "groups": folds.plan[k]})
        elif record_changes(record, code):
            stale[fold_dir.name] = record_changes(record, code)
        records.append(record)
    if stale:
        warnings.warn(
            f"{seed_dir}: reusing finished fold(s) trained by other code than this checkout's "
            f"(source files that differ: {stale}); pass --overwrite to retrain them",
            stacklevel=3,
        )

    def pool() -> dict[str, dict[str, float]]:
        pooled, names = pooled_predictions([seed_dir / "folds" / f"fold_{k}" for k in range(len(folds))])
        metrics = pooled_metrics(pooled, folds.ds.task, folds.ds.num_classes)
        write_seed_predictions(seed_dir, pooled, names)
        flagged = {key: sorted({s for r in records for s in r.get(key) or []}) for key in SANITY_KEYS}
        write_json(
            seed_dir / "metrics.json",
            {
                "seed": seed,
                "protocol": "grouped_cv",
                "code": code,
                "code_structure": code_structure(code),
                "best_epoch": None,  # one per fold, under "folds"
                "select_metric": records[0].get("select_metric"),
                "select_split": cfg.train.select_split,
                "best_score": None,
                **flagged,  # splits flagged in any fold
                "train_seconds": round(sum(r.get("train_seconds", 0.0) for r in records), 2),
                "parameters": records[0].get("parameters"),
                "metrics": metrics,  # the folds' pooled valid and test predictions
                "folds": [
                    {
                        "fold": k,
                        "groups": {s: folds.plan[k][s] for s in POOLED_SPLITS},
                        "best_epoch": r.get("best_epoch"),
                        "train_seconds": r.get("train_seconds"),
                        "metrics": r["metrics"],
                    }
                    for k, r in enumerate(records)
                ],
                "history": [],  # per fold, in folds/fold_<k>/metrics.json
            },
        )
        return metrics

    return ddp.on_main(pool)


SANITY_KEYS = ("constant_predictions", "no_better_than_constant")


def _finished_record(done: Path) -> dict | None:
    """A finished fold's metrics.json, or None when it has to be (re)trained."""
    if finished_metrics(done) is None:
        return None
    return json.loads(done.read_text(encoding="utf-8"))


def _cv_summary(folder: Path, folds: Folds, per_seed: dict) -> dict:
    """summary.json's `protocol`: the folds' speakers, and each fold's metrics over seeds."""
    by_fold: dict[int, list[dict]] = {}
    for seed in per_seed:
        record = json.loads((folder / f"seed_{seed}" / "metrics.json").read_text(encoding="utf-8"))
        for entry in record.get("folds") or []:
            by_fold.setdefault(entry["fold"], []).append(entry["metrics"]["test"])
    per_fold = {
        f"{k} ({', '.join(folds.plan[k]['test'])})": {m: aggregate([r[m] for r in rows]) for m in rows[0]}
        for k, rows in sorted(by_fold.items())
    }
    return {
        "name": "grouped_cv",
        "folds": len(folds),
        "groups": len({g for fold in folds.plan for g in fold["test"]}),
        "assignment": "sorted group names dealt round-robin; fold k: test = fold k, valid = fold k+1 (mod K)",
        "plan": [{s: fold[s] for s in POOLED_SPLITS} for fold in folds.plan],
        "metrics": "per seed over the folds' pooled predictions; per_fold: each fold's test split",
        "per_fold": per_fold,
    }
