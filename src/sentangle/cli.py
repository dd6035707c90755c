"""The `sentangle` command: train, compare, eval, predict, export, data, extract, models, robust, report, ablate,
sweep, results, serve."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from sentangle.config import make_config, parse_seeds
from sentangle.core.errors import ConfigError, UserError
from sentangle.core.io import check_output, versions, write_json, write_text
from sentangle.core.registry import DATASETS, MODELS
from sentangle.data.convert import convert
from sentangle.data.extract import extract
from sentangle.data.extractors import DEFAULT as DEFAULT_AUDIO
from sentangle.data.extractors import audio_extractors
from sentangle.data.named import describe, list_datasets, load_dataset
from sentangle.data.text import describe_setting
from sentangle.models import list_models
from sentangle.models.base import model_defaults
from sentangle.recipes import results
from sentangle.recipes.ablate import ablate
from sentangle.recipes.compare import compare
from sentangle.recipes.report import report
from sentangle.recipes.robust import robust
from sentangle.recipes.sweep import sweep
from sentangle.report.tables import aggregate, split_table
from sentangle.runs.export import export
from sentangle.runs.inference import input_dataset, load_trained, predict_input
from sentangle.runs.predictions import rows_csv
from sentangle.runs.runner import run
from sentangle.serve.server import is_loopback, serve
from sentangle.training.distributed import is_main
from sentangle.training.trainer import evaluate

EPILOG_OVERRIDES = """Overrides are dotted keys, for example:
  train.epochs=20 train.lr=3e-4 model.hidden=64 dataset.scale=0.5 train.aux_weights.cmd=0.5
Config layers, later wins: configs/datasets/<dataset>.yaml < configs/models/<model>.yaml
  < configs/runs/<model>-<dataset>.yaml < --config FILE < overrides."""


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding mosi/, mosei/, mintrec/ ... (default: $SENTANGLE_DATA_ROOT, ./data, ../shared/data)",
    )


def _add_allow_unverified(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="load a checkpoint that has no SHA-256 digest (written before it existed); its weights are not checked",
    )


# No abbreviated options: `predict CKPT --data f.npz` would otherwise be taken as --data-root.
class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sentangle",
        description="Multimodal sentiment analysis with disentangled representations.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    parser.add_argument(
        "--debug", action="store_true", help="on a user error, show the traceback instead of one 'error:' line"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train a model over one or more seeds and write a run folder",
        description="Train MODEL on DATASET once per seed, select on the validation split, "
        "evaluate every split, and write runs/<name>/ with config, metrics, "
        "checkpoints, predictions and a summary table.",
        epilog=EPILOG_OVERRIDES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", "-m", help="registered model name (see `sentangle models`); default lf_dnn")
    p.add_argument(
        "--dataset", "-d", help="dataset name (see `sentangle data list`) or a feature file; default synthetic"
    )
    p.add_argument("--config", "-c", help="YAML file with model/dataset/train/seeds sections")
    p.add_argument("--seeds", help="a count (3 = seeds 1111..1113) or a comma list; default all five 1111..1115")
    p.add_argument("--out", help="parent folder of run folders (default runs)")
    p.add_argument("--name", help="run folder name (default <model>-<dataset>)")
    p.add_argument("--overwrite", action="store_true", help="retrain seeds that already finished in this run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary classes in a feature pickle you trust (same as dataset.trusted=true)",
    )
    _add_data_root(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    p = sub.add_parser(
        "compare",
        help="train several models on one dataset over seeds and write one table",
        description="Train each MODEL on DATASET over the seeds (finished seeds are reused) and "
        "write <out>/<name>/comparison.md and .csv: mean ± std per metric, best in bold.",
        epilog=EPILOG_OVERRIDES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        help="model(s) to include: repeat the flag or give a comma list",
    )
    p.add_argument("--dataset", "-d", required=True, help="dataset name or feature file")
    p.add_argument("--seeds", default="5", help="a count or a comma list (default 5: 1111..1115)")
    p.add_argument("--out", default="runs/compare", help="parent folder (default runs/compare)")
    p.add_argument("--name", help="comparison name (default: the dataset name)")
    _add_data_root(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides applied to every model")

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint or model folder on its dataset's splits",
        description="Rebuild the model of CHECKPOINT (a checkpoint.pt or a model folder from `sentangle "
        "export`), reload the dataset it was trained on, or DATA, normalised with the model's own "
        "training statistics, and print metrics.",
    )
    p.add_argument("checkpoint")
    p.add_argument("data", nargs="?", help="dataset name or feature file (default: the model's dataset)")
    _add_allow_unverified(p)
    p.add_argument("--split", action="append", help="split(s) to evaluate (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--trust-pickle", action="store_true", help="allow arbitrary classes in a pickle you trust")
    _add_data_root(p)

    p = sub.add_parser(
        "predict",
        help="predict with a checkpoint or model folder (default: the bundled text model): on a clip, a CSV of "
        "clips, or a dataset",
        description="Predict with MODEL (a checkpoint.pt or a model folder from `sentangle export`; without "
        "MODEL, the text model that ships with sentangle, trained on CMU-MOSEI, on the clip given by --text) on one "
        "clip (--text, --audio, --video: media are extracted with the model's own extractors), on a CSV of "
        "clips (video_id, clip_id, text) with --media DIR, or on DATA (a dataset name, feature file or "
        "folder from `sentangle extract`; default the model's own dataset). Input is normalised with the "
        "model's training statistics and checked against its feature spec. Writes one row per clip: id, "
        "prediction, label (if any), polarity or class probabilities, and the model's gates / branch weights.",
    )
    p.add_argument(
        "checkpoint",
        metavar="MODEL",
        nargs="?",
        help="checkpoint.pt or model folder (default: the bundled text model, for a clip given by --text)",
    )
    p.add_argument("data", nargs="?", help="dataset name, feature file or folder, or a CSV of clips with --media")
    p.add_argument("--text", help="the transcript of one clip")
    p.add_argument("--audio", metavar="FILE", help="one clip's audio (wav, flac, mp3, m4a) or a video's sound")
    p.add_argument("--video", metavar="FILE", help="one clip's video (faces, and its sound unless --audio is given)")
    p.add_argument("--media", metavar="DIR", help="the folder that holds the clips of a CSV given as DATA")
    p.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="MODALITY",
        help="predict although the input lacks MODALITY (read as missing, masked out); repeatable",
    )
    p.add_argument("--split", default="test", help="split of DATA to predict (default test)")
    p.add_argument("--output", "-o", help="file to write, CSV or .json; - or none: CSV on standard output")
    p.add_argument("--workers", type=int, default=1, help="processes extracting the media of a CSV (default 1)")
    p.add_argument(
        "--asr", metavar="NAME", help="transcribe clips given without text with this recogniser (pocketsphinx)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar while extracting")
    _add_allow_unverified(p)
    p.add_argument("--trust-pickle", action="store_true", help="allow arbitrary classes in a pickle you trust")
    _add_data_root(p)

    p = sub.add_parser(
        "export",
        help="write a trained seed as a portable model folder",
        description="Write the model of SEED (a run's seed folder RUN/seed_S, or its checkpoint.pt) as the "
        "new folder DIR: config.json, model.safetensors, preprocessing.json (the training data's "
        "normalisation statistics), README.md (model card) and checksums.sha256. Load it with "
        "sentangle.load_model(DIR), or give DIR to `sentangle predict` / `eval`.",
    )
    p.add_argument("seed", metavar="SEED", help="a seed folder RUN/seed_S or its checkpoint.pt")
    p.add_argument("out", metavar="DIR", help="the model folder to write (must not exist, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it is a model folder (nothing else)")
    _add_allow_unverified(p)
    _add_data_root(p)

    p = sub.add_parser("data", help="list datasets, or show one", description="Inspect datasets.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    dsub.add_parser("list", help="list named datasets")
    q = dsub.add_parser(
        "info",
        help="load a dataset and print sizes, modalities and label statistics",
        epilog="Dataset options as dotted overrides, e.g. dataset.scale=0.1 dataset.aligned=true",
    )
    q.add_argument("name", help="dataset name or feature file")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    _add_data_root(q)
    q = dsub.add_parser(
        "convert",
        help="write a dataset or feature file as a memory-mapped feature folder",
        description="Read IN (a dataset name, an MMSA/MulT pickle, .npz ...) and write OUT, a folder "
        "of .npy arrays that `-d OUT` reads lazily: batches gather their rows from "
        "the file and normalisation is applied per batch (data/lazy.py).",
        epilog="Dataset options as dotted overrides, e.g. dataset.scale=0.1 dataset.aligned=true",
    )
    q.add_argument("name", metavar="IN", help="dataset name or feature file")
    q.add_argument("out", metavar="OUT", help="folder to write")
    q.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    q.add_argument("--trust-pickle", action="store_true", help="allow arbitrary classes in a pickle you trust")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    _add_data_root(q)

    p = sub.add_parser(
        "extract",
        help="extract audio (and vision) features from your own clips into a feature folder",
        description="Read CSV (an MMSA label.csv: video_id, clip_id, text, optional label, mode, start, end, "
        "file), find each clip under MEDIA_DIR (by `file`, else <video_id>/<clip_id>.<ext>, else "
        "<video_id>_<clip_id>.<ext>), extract frame-level features and write OUT, a feature folder that "
        "`sentangle train -d OUT` reads, with report.md / report.json (failed clips and why). "
        "Clips are cached: a rerun (or a killed run) extracts only what is missing. See docs/own-data.md.",
    )
    p.add_argument("media_dir", metavar="MEDIA_DIR", help="folder holding the audio/video files")
    p.add_argument("transcripts", metavar="CSV", help="label CSV, one row per clip")
    p.add_argument("out", metavar="OUT", help="feature folder to write")
    p.add_argument(
        "--audio",
        default=DEFAULT_AUDIO,
        help=f"audio extractor: {', '.join(audio_extractors())} or none (default {DEFAULT_AUDIO})",
    )
    p.add_argument("--vision", metavar="NAME", help="face detector for vision features (default: no vision)")
    p.add_argument("--fps", type=float, default=5.0, help="video frames per second for vision (default 5)")
    p.add_argument("--max-frames", type=int, help="at most N frames per clip (window averages of real frames)")
    p.add_argument("--workers", type=int, default=1, help="extraction processes (default 1)")
    p.add_argument("--cache-dir", metavar="DIR", help="per-clip cache (default $SENTANGLE_CACHE/extract)")
    p.add_argument("--mmsa-pickle", metavar="FILE", help="also write the features as an MMSA unaligned pickle")
    p.add_argument(
        "--asr",
        metavar="NAME",
        help="transcribe clips whose text is empty (the text column may be left out) with this recogniser "
        "(pocketsphinx: offline US English, pip install 'sentangle[asr]')",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("models", help="list registered models and their options")

    p = sub.add_parser(
        "results",
        add_help=False,  # its own parser (recipes/results.py) reads every argument, --help included
        help="train what a results plan lists and render its documents (docs/RESULTS.md and the check docs)",
    )
    p.set_defaults(arguments=[])  # the unparsed rest: see main

    p = sub.add_parser(
        "robust",
        help="evaluate trained runs on a corrupted test split (noise, missing, drop, shuffle)",
        description="Reload every seed's checkpoint of each RUN_FOLDER and evaluate the test split under "
        "test-time perturbations (docs/robustness.md). Writes <run>/robust.json, and "
        "robust.md and PNG curves under --out.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_FOLDER")
    p.add_argument(
        "--out", help="folder for robust.md and the PNGs (default: the run folder, or <parent>/robust for several)"
    )
    p.add_argument("--seed", type=int, default=0, help="perturbation seed (default 0): same seed, same corrupted data")
    p.add_argument(
        "--noise-levels", default="0.25,0.5,1,2", help="noise sigmas in train-std units (default 0.25,0.5,1,2)"
    )
    p.add_argument("--drop-rates", default="0.1,0.3,0.5,0.7", help="frame drop rates (default 0.1,0.3,0.5,0.7)")
    p.add_argument(
        "--waveform",
        action="append",
        default=[],
        metavar="KIND[=LEVEL]",
        help="a waveform perturbation of the test clips before extraction, for runs on audio-read datasets "
        "(emodb, ravdess): noise=SNR_DB, clip=FRACTION, band=LOW-HIGH (Hz), drop=FRACTION; repeat it",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    _add_data_root(p)

    p = sub.add_parser(
        "report",
        help="tables, CSV and plots from run folders",
        description="Markdown and CSV tables (mean ± std over seeds, best per column in bold), "
        "predicted-vs-true scatter or confusion matrix, gate / branch-weight "
        "distributions, and robustness curves where robust.json exists.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_FOLDER")
    p.add_argument("--out", help="output folder (default: <run>/report, or <parent>/report for several runs)")
    p.add_argument("--no-gates", action="store_true", help="do not reload checkpoints for gate distributions")
    _add_data_root(p)

    p = sub.add_parser(
        "ablate",
        help="train the variants of an ablation YAML over seeds and write one table",
        description="Train every variant of ABLATION.yaml (a model, a dataset, shared overrides and "
        "named variants with switch overrides) into its own run folder (finished seeds "
        "are reused), then write ablation.md / .csv: the full model first, delta vs full. "
        "Packaged: ablate-tsda, ablate-rtil, ablate-irg_svr, ablate-dbr.",
    )
    p.add_argument("--config", "-c", required=True, help="ablation YAML, or the name of a packaged one")
    p.add_argument("--seeds", help="a count or a comma list (default: the YAML's, else 5)")
    p.add_argument("--out", help="parent folder (default: the YAML's out, else runs/ablations)")
    p.add_argument("--variant", action="append", help="train only these variants (repeat; the table uses what exists)")
    _add_data_root(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides applied to every variant")

    p = sub.add_parser(
        "sweep",
        help="hyperparameter search with Optuna over any config key (pip install 'sentangle[sweep]')",
        description="Run --trials trials of an Optuna study: each samples the space, trains through the "
        "normal run into <out>/<study>/trial_<n>/ and reports the validation selection score "
        "(mean over seeds; never test). Workers on any machine sharing one --storage add to "
        "one study. Writes best.yaml (for `sentangle train -c`), trials.md and trials.csv.",
        epilog="Space YAML: dotted keys to distributions, e.g.\n"
        "  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "  model.hidden: {type: int, low: 32, high: 256, step: 32}\n"
        "  train.scheduler: {type: categorical, choices: [none, cosine]}\n"
        "See docs/scaling.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", "-m", help="registered model name; default lf_dnn")
    p.add_argument("--dataset", "-d", help="dataset name or feature file; default synthetic")
    p.add_argument("--space", required=True, help="YAML file mapping dotted config keys to distributions")
    p.add_argument("--trials", type=int, required=True, help="trials this worker runs (they add to the study)")
    p.add_argument(
        "--storage",
        help="Optuna storage URL shared by all workers, e.g. sqlite:///sweep.db or "
        "postgresql://user:pass@host/db (default: sqlite in <out>/<study>/optuna.db)",
    )
    p.add_argument("--study", help="study name (default <model>-<dataset>)")
    p.add_argument("--config", "-c", help="base config YAML (as for train)")
    p.add_argument("--seeds", default="1", help="seeds per trial, a count or comma list (default 1: seed 1111)")
    p.add_argument("--out", default="runs/sweeps", help="parent folder of the study folder (default runs/sweeps)")
    p.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (give each worker its own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_data_root(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides for every trial")

    p = sub.add_parser(
        "serve",
        help="an HTTP API, a demo page and a results browser for model folders (pip install 'sentangle[serve]')",
        description="Serve model folders (sentangle export) over HTTP: POST /v1/predict and /v1/predict/batch, "
        "GET /v1/models and /health, the demo page at /, OpenAPI documentation at /docs and, with --runs, "
        "a results browser at /runs. Each model is loaded once per worker. See docs/serving.md.",
        usage="sentangle serve [MODEL_DIR ...] [--host HOST] [--port PORT] [--workers N] [--runs DIR]",
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL_DIR",
        help="model folders; the first is the default model (none: the bundled text model)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; the server has no authentication)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the models (default 1)")
    p.add_argument("--runs", metavar="DIR", help="a folder of run folders to browse at /runs")
    return parser


def _print_summary(summary: dict) -> None:

    print(split_table(summary["splits"], summary["task"]))
    if summary.get("references"):
        print("\nReference predictors on the same test split:\n" + summary["references"])
    print(f"\nrun folder: {summary['folder']}")


def _seeds(args):
    """--seeds checked here, so that the message names the flag (YAML would read 0x10 as 16)."""
    return None if args.seeds is None else parse_seeds(args.seeds, "--seeds")


def cmd_train(args) -> int:

    cfg = make_config(
        args.model,
        args.dataset,
        args.config,
        _seeds(args),
        args.out,
        args.name,
        args.data_root,
        args.overrides + (["dataset.trusted=true"] if args.trust_pickle else []),
    )
    if args.no_progress:
        cfg.train.progress = False

    print(f"training {cfg.model['name']} on {cfg.dataset['name']}, seeds {cfg.seeds}", file=sys.stderr)
    # a pair config may turn fine-tuning on: say so (not for a dataset read without its text)
    if cfg.model.get("text_encoder") is not None and cfg.dataset.get("text") != "none":
        print(f"text encoder: {describe_setting(cfg.model['text_encoder'])}", file=sys.stderr)
    summary = run(cfg, overwrite=args.overwrite)
    if is_main():  # under torchrun every rank gets the summary; one prints it
        _print_summary(summary)
    return 0


def cmd_compare(args) -> int:

    models = [m for arg in args.model for m in arg.split(",") if m]  # -m a -m b or -m a,b
    res = compare(models, args.dataset, _seeds(args), args.out, args.name, args.data_root, args.overrides)
    print(res["table"])
    print(f"\nwrote {res['markdown']} and {res['csv']}")
    return 0


def _checkpoint_data(args, data_name=None):

    trained = load_trained(args.checkpoint, allow_unverified=args.allow_unverified)
    ds = input_dataset(trained, data_name, args.data_root, getattr(args, "trust_pickle", False))
    return trained.model, trained.cfg, ds


def cmd_eval(args) -> int:

    model, cfg, ds = _checkpoint_data(args, args.data)
    splits = args.split or list(ds.splits)
    res = {s: evaluate(model, ds, s) for s in splits}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(split_table({s: {k: aggregate([v]) for k, v in m.items()} for s, m in res.items()}, ds.task))
    return 0


def cmd_predict(args) -> int:

    to_file = args.output not in (None, "-")
    if to_file:
        check_output(args.output)  # before the model and data are loaded
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}; expected a positive number of processes")
    if args.checkpoint is None and args.text is None:
        # The bundled model reads text only: without a transcript it has nothing to predict from.
        raise ConfigError(
            'predict: give MODEL (a checkpoint.pt or model folder), or --text "..." for the bundled text model '
            '(e.g. sentangle predict --text "what a wonderful film")'
        )
    trained = load_trained(args.checkpoint, allow_unverified=args.allow_unverified)
    rows = predict_input(
        trained,
        args.data,
        text=args.text,
        audio=args.audio,
        video=args.video,
        media=args.media,
        split=args.split,
        allow_missing=tuple(args.allow_missing),
        root=args.data_root,
        trusted=args.trust_pickle,
        workers=args.workers,
        progress=not args.no_progress,
        asr=args.asr,
    )
    failures = [r for r in rows if "error" in r]
    if failures:
        print(f"{len(failures)} clip(s) could not be read; their rows give the reason (column error)", file=sys.stderr)
    if to_file and Path(args.output).suffix.lower() == ".json":
        write_json(Path(args.output), rows)
    elif to_file:
        write_text(Path(args.output), rows_csv(rows))
    else:
        sys.stdout.write(rows_csv(rows))
    if to_file:
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:

    res = export(args.seed, args.out, args.data_root, args.allow_unverified, args.overwrite)
    if res["recomputed"]:
        print(
            f"{res['checkpoint']} carries no normalisation statistics (written before they were stored): "
            "recomputed them from the run's dataset",
            file=sys.stderr,
        )
    print(
        f"wrote model folder {res['folder']}; load it with sentangle.load_model, or: sentangle predict {res['folder']} DATA"
    )
    return 0


def cmd_data(args) -> int:

    if args.data_command in (None, "list"):
        for name in list_datasets():
            doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()[0]
            print(f"{name:10s} {doc}")
        return 0

    cfg = make_config(dataset=args.name, data_root=args.data_root, overrides=args.overrides)
    kwargs = {k: v for k, v in cfg.dataset.items() if k != "name"}
    if args.data_command == "convert":
        if Path(args.name).suffix in (".pkl", ".pickle"):
            kwargs = {"trusted": args.trust_pickle}
        folder = convert(
            args.name, args.out, overwrite=args.overwrite, text_encoder=cfg.model.get("text_encoder"), **kwargs
        )
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"wrote {folder} ({size / 2**30:.2f} GiB); train with: sentangle train -d {folder}")
        return 0
    print(json.dumps(describe(load_dataset(args.name, text_encoder=cfg.model.get("text_encoder"), **kwargs)), indent=2))
    return 0


def cmd_extract(args) -> int:
    rep = extract(
        args.media_dir,
        args.transcripts,
        args.out,
        audio=args.audio,
        vision=args.vision,
        fps=args.fps,
        max_frames=args.max_frames,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        cache_dir=args.cache_dir,
        mmsa_pickle=args.mmsa_pickle,
        asr=args.asr,
    )
    c = rep["clips"]
    print(f"extracted {c['extracted']} of {c['rows']} clips ({rep['seconds']:.1f} s of media) into {rep['folder']}")
    if c["failed"]:
        print(f"{c['failed']} clips failed: see {Path(rep['folder']) / 'report.md'}", file=sys.stderr)
    for w in rep.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if rep.get("mmsa_pickle"):
        print(f"wrote {rep['mmsa_pickle']}")
    print(f"train with: sentangle train -d {rep['folder']}")
    return 0


def cmd_models(args) -> int:
    import inspect

    for name in list_models():
        cls = MODELS.get(name)
        doc = (inspect.getmodule(cls).__doc__ or "").strip().splitlines()[0]
        params = [f"{k}={v!r}" for k, v in model_defaults(name).items()]
        print(f"{name}: {doc}\n    options: {', '.join(params)}")
    return 0


def _floats(text: str, flag: str, low: float, high: float, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(low <= v < high for v in values):
        raise ConfigError(f"{flag} takes a comma list of {what}, got {text!r}")
    return values


def _waveform(text: str) -> dict:
    """--waveform KIND[=LEVEL] as {kind, level} (data/waveform.py checks the values when the dataset loads)."""
    kind, _, level = text.partition("=")
    if not level:
        return {"kind": kind}
    try:
        parts = [float(v) for v in level.split("-")] if kind == "band" else [float(level)]
    except ValueError:
        raise ConfigError(
            f"--waveform {text}: expected KIND[=LEVEL] such as noise=10, clip=0.3, band=300-3400 or drop=0.2"
        ) from None
    return {"kind": kind, "level": parts if kind == "band" else parts[0]}


def cmd_robust(args) -> int:
    if args.out:
        check_output(args.out, "folder")
    res = robust(
        args.runs,
        args.out,
        args.seed,
        _floats(args.noise_levels, "--noise-levels", 0, math.inf, "noise sigmas >= 0 (e.g. 0.25,0.5,1)"),
        _floats(args.drop_rates, "--drop-rates", 0, 1, "frame drop rates in [0, 1) (e.g. 0.1,0.5)"),
        args.data_root,
        plots=not args.no_plots,
        waveform=[_waveform(w) for w in args.waveform],
    )
    print(res["table"])
    print(
        f"\nwrote robust.json in each run folder, {res['markdown']}"
        + (f" and {len(res['plots'])} PNGs" if res["plots"] else "")
    )
    return 0


def cmd_report(args) -> int:
    if args.out:
        check_output(args.out, "folder")
    res = report(args.runs, args.out, data_root=args.data_root, gates=not args.no_gates)
    print(res["table"])
    print(f"\nwrote {res['markdown']}, {res['csv']} and {len(res['plots'])} PNGs")
    return 0


def cmd_ablate(args) -> int:
    if args.out:
        check_output(args.out, "folder")
    res = ablate(
        args.config,
        seeds=_seeds(args),
        out=args.out,
        data_root=args.data_root,
        overrides=args.overrides,
        only=args.variant,
    )
    print(res["table"])
    print(f"\nwrote {res['markdown']} and {res['csv']}")
    return 0


def cmd_results(args) -> int:
    return results.main(args.arguments)


def cmd_sweep(args) -> int:

    res = sweep(
        args.model,
        args.dataset,
        args.space,
        args.trials,
        args.storage,
        args.study,
        args.config,
        _seeds(args),
        args.out,
        args.data_root,
        args.overrides,
        progress=not args.no_progress,
        sampler_seed=args.sampler_seed,
    )
    print(res["table"])
    if res["best"]:
        print(f"\nbest: trial {res['best']['number']} ({res['best']['value']:.6g}); wrote {res['best_yaml']}")
    print(f"wrote {res['markdown']} and {res['csv']}")
    return 0


def cmd_serve(args) -> int:

    if not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}, reachable from other machines; the server has no authentication "
            "or TLS: put it behind a reverse proxy (docs/serving.md)",
            file=sys.stderr,
        )
    serve(args.models, args.host, args.port, args.workers, args.runs)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "results":
        args.arguments = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.version:
        print(json.dumps(versions(), indent=2))
        return 0
    if args.command is None:
        parser.print_help()
        return 0

    handler = {
        "train": cmd_train,
        "compare": cmd_compare,
        "eval": cmd_eval,
        "predict": cmd_predict,
        "export": cmd_export,
        "data": cmd_data,
        "extract": cmd_extract,
        "models": cmd_models,
        "robust": cmd_robust,
        "report": cmd_report,
        "ablate": cmd_ablate,
        "sweep": cmd_sweep,
        "results": cmd_results,
        "serve": cmd_serve,
    }
    try:
        return handler[args.command](args)
    except (UserError, FileExistsError) as e:  # FileExistsError: "exists; pass --overwrite"
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
