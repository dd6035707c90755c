"""One training loop for every model.

loss = task loss + sum_k weight_k * aux_k, with each model's auxiliary losses named in its output
and weighted from the config. Model selection is on the validation split only; the test split is
evaluated once, with the selected weights, after training ends.
"""

from __future__ import annotations

import copy
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sentangle.config import TrainConfig
from sentangle.core.errors import TrainingError
from sentangle.data.batch import Batch
from sentangle.data.dataset import MSADataset
from sentangle.evaluation.metrics import METRIC_DIRECTIONS, compute_metrics
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.training.distributed import setup as distributed_setup


def set_seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def task_loss(pred: torch.Tensor, labels: torch.Tensor, task: str, name: str = "auto") -> torch.Tensor:
    if name == "auto":
        name = "l1" if task == "regression" else "ce"
    if (name == "ce") != (task == "classification"):
        raise TrainingError(f"loss {name!r} does not fit a {task} task")
    if name == "l1":
        return F.l1_loss(pred, labels)
    if name == "mse":
        return F.mse_loss(pred, labels)
    return F.cross_entropy(pred, labels)


def selection(cfg: TrainConfig, task: str) -> tuple[str, str]:
    metric = cfg.select_metric
    if metric == "auto":
        metric = "mae" if task == "regression" else "accuracy"
    if metric not in METRIC_DIRECTIONS:
        raise TrainingError(
            f"train.select_metric {metric!r} is not a metric; known: {', '.join(sorted(METRIC_DIRECTIONS))}"
        )
    return metric, METRIC_DIRECTIONS[metric]


def make_optimizer(model: MSAModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    # A pretrained text encoder needs a much smaller step than freshly initialised layers.
    declared = {id(p) for p in model.text_encoder_parameters()}
    enc: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (enc if id(p) in declared else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr}]
    if enc:
        groups.append({"params": enc, "lr": cfg.text_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def warmup_linear(total: int, warmup: float):
    """LR factor per optimiser step: rises linearly to 1 over the first warmup*total steps, then
    falls linearly to 0 at step `total`."""
    warm = max(int(warmup * total), 1)
    return lambda step: min((step + 1) / warm, max(total - step, 0) / max(total - warm, 1))


@torch.no_grad()
def predict(
    model: MSAModel, dataset: MSADataset, split: str, batch_size: int = 256, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predictions (N,) or logits (N, C), labels and ids of one split, in dataset order."""
    model.eval()
    preds, labels, ids = [], [], []
    for batch in dataset.batches(split, batch_size):
        out = model(batch.to(device))
        preds.append(out.prediction.float().cpu())
        labels.append(batch.labels)
        ids += batch.ids
    return torch.cat(preds).numpy(), torch.cat(labels).numpy(), ids


def evaluate(
    model: MSAModel, dataset: MSADataset, split: str, batch_size: int = 256, device: str | torch.device = "cpu"
) -> dict[str, float]:
    pred, label, _ = predict(model, dataset, split, batch_size, device)
    return compute_metrics(dataset.task, pred, label, dataset.num_classes)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    select_metric: str
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def training_loss(
    out: ModelOutput, labels: torch.Tensor, task: str, cfg: TrainConfig, weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss `fit` minimises for one batch's output (task loss plus the weighted auxiliary
    losses; a weight of 0 leaves its loss out of the graph) and its parts, detached, for the history."""
    loss = task_loss(out.prediction, labels, task, cfg.loss)
    parts = {"task": loss.detach()}
    for name, value in out.aux_losses.items():
        w = weights.get(name, 1.0)
        parts[name] = value.detach()
        if w:
            loss = loss + w * value
    return loss, parts


def train_step(
    model: MSAModel,
    batch: Batch,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    weights: dict[str, float],
    task: str,
    *,
    forward: Callable[[Batch], ModelOutput] | None = None,
    share: float = 1.0,
    before_backward: Callable[[ModelOutput, torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step of `fit` on one batch: forward, loss, backward, gradient clipping, step.

    `forward` replaces `model` for the forward pass (a DistributedDataParallel wrapper), `share`
    scales the loss of this rank's slice, and `before_backward` may refuse the step (raise) after
    seeing the output and the loss. Returns the loss and its detached parts.
    """
    out = (forward or model)(batch)
    loss, parts = training_loss(out, batch.labels, task, cfg, weights)
    if before_backward is not None:
        before_backward(out, loss, parts)
    opt.zero_grad(set_to_none=True)
    (loss * share).backward()
    if cfg.grad_clip_value > 0:
        torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip_value)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss, parts


def _check_aux_names(model: MSAModel, out: ModelOutput, cfg: TrainConfig) -> None:
    """A typo in train.aux_weights is an error; a loss the model has but not on this data (e.g. CMD
    between modalities a text-only dataset lacks) is only worth a warning."""
    known = set(out.aux_losses) | set(model.default_aux_weights)
    unknown = set(cfg.aux_weights) - known
    if unknown:
        raise TrainingError(
            f"train.aux_weights names {sorted(unknown)}, but {type(model).__name__} "
            f"produces {sorted(known) or 'no auxiliary losses'}"
        )
    idle = set(cfg.aux_weights) - set(out.aux_losses)
    if idle:
        warnings.warn(
            f"train.aux_weights {sorted(idle)}: {type(model).__name__} does not produce "
            "these losses on this data (a modality is absent or a switch is off)",
            stacklevel=5,  # the caller of fit (through guard and train_step)
        )


def fit(model: MSAModel, dataset: MSADataset, cfg: TrainConfig, seed: int, desc: str = "") -> FitResult:
    """Train with early stopping on the validation split; leaves the best weights in `model`."""
    gen = set_seed(seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ddp = distributed_setup(cfg.device)  # a pass-through unless launched by torchrun with WORLD_SIZE > 1
    ddp.reseed(seed)
    device = ddp.device
    model.to(device)
    metric, direction = selection(cfg, dataset.task)
    better = (lambda a, b: a < b) if direction == "min" else (lambda a, b: a > b)
    opt = make_optimizer(model, cfg)
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    elif cfg.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min" if direction == "min" else "max", factor=0.5, patience=max(cfg.patience // 3, 1)
        )
    weights = {**model.default_aux_weights, **cfg.aux_weights}
    n_train = len(dataset.splits["train"])
    step_sched = None
    if cfg.scheduler == "linear":
        # The usual recipe for fine-tuning a pretrained encoder: warm up, then decay to 0 at the
        # last planned step (early stopping may end training before it gets there).
        total = max(cfg.epochs * math.ceil(n_train / cfg.batch_size), 1)
        step_sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(total, cfg.warmup))
    best_score, best_epoch, best_state, stale = math.inf if direction == "min" else -math.inf, -1, None, 0
    history: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(
        total=cfg.epochs * n_train,
        unit="utt",
        unit_scale=True,
        desc=desc or type(model).__name__,
        disable=not cfg.progress or not ddp.main,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    net = ddp.wrap(model, dataset, cfg.batch_size, weights)  # DistributedDataParallel, or `model` alone
    checked_names = False
    trials = 0

    def guard(out: ModelOutput, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        nonlocal checked_names
        if not checked_names:
            _check_aux_names(model, out, cfg)
            checked_names = True
        if not ddp.all_finite(loss):
            raise TrainingError(
                f"{desc}: loss is {loss.item()} at epoch {epoch + 1} "
                f"(parts: { {k: float(v) for k, v in parts.items()} }); try a lower train.lr"
            )

    for epoch in range(cfg.epochs):
        model.train()
        sums: dict[str, float] = {}
        seen = 0
        for batch in dataset.batches(
            "train", cfg.batch_size, shuffle=True, generator=gen, group_by_length=cfg.group_by_length
        ):
            batch, share = ddp.shard(batch)  # this rank's slice; share scales its loss (1.0 alone)
            batch = batch.to(device)
            loss, parts = train_step(
                model, batch, opt, cfg, weights, dataset.task, forward=net, share=share, before_backward=guard
            )
            if step_sched is not None:
                step_sched.step()
            b = len(batch) if share else 0
            seen += b
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            bar.update(b * ddp.world)
        hook = getattr(model, "on_epoch_end", None)
        if hook is not None:
            hook(epoch)
        sums, seen = ddp.reduce_sums(sums, seen)
        # One validation result for all ranks, so that selection and early stopping agree.
        val = ddp.on_main(lambda: evaluate(model, dataset, cfg.select_split, cfg.eval_batch_size, device))
        score = val[metric]
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
            **{f"{cfg.select_split}_{k}": v for k, v in val.items()},
        }
        history.append(record)
        if sched is not None:
            sched.step(score) if cfg.scheduler == "plateau" else sched.step()
        if epoch + 1 >= cfg.select_from_epoch and better(score, best_score):
            best_score, best_epoch, stale = score, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        elif epoch + 1 >= cfg.select_from_epoch:
            stale += 1
        bar.set_postfix(
            epoch=epoch + 1, loss=f"{record['train_task']:.3f}", **{f"{cfg.select_split}_{metric}": f"{score:.3f}"}
        )
        if stale >= cfg.patience:
            if trials < cfg.lr_decay_trials:
                trials, stale = trials + 1, 0
                if best_state is not None:  # None while every score so far was unusable (NaN)
                    model.load_state_dict(best_state)
                for group in opt.param_groups:
                    group["lr"] *= cfg.lr_decay
                continue
            bar.total = bar.n
            break
    bar.close()
    if best_state is None:
        raise TrainingError(f"{desc}: no epoch produced a usable {cfg.select_split} {metric} (is train.epochs > 0?)")
    model.load_state_dict(best_state)
    metrics = ddp.on_main(lambda: {s: evaluate(model, dataset, s, cfg.eval_batch_size, device) for s in dataset.splits})
    return FitResult(best_epoch, best_score, metric, history, metrics, time.perf_counter() - start)
