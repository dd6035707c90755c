"""One training loop for every model.

loss = task loss + sum_k weight_k * aux_k, with each model's auxiliary losses named in its output
and weighted from the config. Model selection is on the validation split only; the test split is
evaluated once, with the selected weights, after training ends.

Where it runs is one switch each: `train.device` (auto | cpu | cuda | cuda:N), `train.precision`
(fp32 | bf16 | fp16: the forward passes under torch.autocast, fp16 with a gradient scaler; losses
and metrics in float32) and `train.compile` (torch.compile; eager, with a warning, where it cannot
compile). The hot loop never waits for the device: losses are summed as tensors and read once per
epoch.
"""

from __future__ import annotations

import contextlib
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
from sentangle.core.errors import ConfigError, TrainingError, UserError
from sentangle.data.batch import Batch
from sentangle.data.dataset import MSADataset
from sentangle.evaluation.metrics import METRIC_DIRECTIONS, compute_metrics
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.training.distributed import resolve_device
from sentangle.training.distributed import setup as distributed_setup

Forward = Callable[[Batch], ModelOutput]


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


# ---- device, precision, compilation ------------------------------------------------------------
def check_precision(precision: str, device: torch.device) -> None:
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.precision=bf16: the GPU {device} does not support bfloat16; expected fp16 or fp32")


def _onednn_lacks(dtype: torch.dtype) -> bool:
    """Whether oneDNN has no kernels of `dtype` on this CPU (they need AVX-512 BF16/FP16 or AMX)."""
    supported = (
        torch.ops.mkldnn._is_mkldnn_bf16_supported
        if dtype == torch.bfloat16
        else torch.ops.mkldnn._is_mkldnn_fp16_supported
    )
    return not supported()


@contextlib.contextmanager
def _onednn_off():
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context of a forward pass at train.precision. fp32 is no autocast at all, so it computes
    exactly what it did before precision was a setting."""
    if precision == "fp32":
        return contextlib.nullcontext()
    device = torch.device(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    stack = contextlib.ExitStack()
    if device.type == "cpu" and _onednn_lacks(dtype):
        # Autocast sends LSTMs to oneDNN in reduced precision, which fails on CPUs without its
        # instructions ("could not create a primitive descriptor"); without oneDNN they run in
        # float32 and everything else still autocasts.
        stack.enter_context(_onednn_off())
    stack.enter_context(torch.autocast(device.type, dtype=dtype))
    return stack


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's loss scaling (small gradients would underflow to 0); bf16 has float32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch on `device`, copied once; to a GPU from pinned host memory, so the copy does not
    hold the host up (non_blocking)."""
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device)


class CompiledForward:
    """`module` through torch.compile. A call that fails to compile warns once, naming train.compile
    and the reason, and that call and every later one run the plain module eagerly (the module is
    never replaced: its state dict keeps its own keys)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.compiled: Callable | None = None
        try:
            # Symbolic sizes from the first call: batches are cut to their longest real sequence, so
            # lengths differ per batch, and compiling for each one (the default) hits torch's
            # recompile limit (MISA, TSDA: 3-6x longer to compile here).
            self.compiled = torch.compile(module, dynamic=True)
        except Exception as e:  # a platform without a compiler backend
            self._fall_back(e)

    def _fall_back(self, e: Exception) -> None:
        self.compiled = None
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        warnings.warn(
            f"train.compile=true: torch.compile cannot compile {type(self.module).__name__} here "
            f"({type(e).__name__}: {reason}); training and evaluating it eagerly instead",
            stacklevel=3,
        )

    def __call__(self, batch: Batch) -> ModelOutput:
        if self.compiled is not None:
            try:
                return self.compiled(batch)
            except UserError:  # the model refusing its input (a config, the data) is no compiler failure
                raise
            except Exception as e:
                # Any other failure of the model's own code fails again eagerly, with its own message.
                self._fall_back(e)
        return self.module(batch)


def forward_for(model: torch.nn.Module, compile: bool) -> Forward:
    return CompiledForward(model) if compile else model


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def predict(
    model: MSAModel,
    dataset: MSADataset,
    split: str,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    forward: Forward | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predictions (N,) or logits (N, C), labels and ids of one split, in dataset order.

    The forward pass runs at `precision` (train.precision) through `forward` (a compiled `model`)
    if given; predictions come back as float32."""
    model.eval()
    device = resolve_device(device)
    preds, labels, ids = [], [], []
    for batch in dataset.batches(split, batch_size):
        with autocast(precision, device):
            out = (forward or model)(to_device(batch, device))
        preds.append(out.prediction.float())
        labels.append(batch.labels)
        ids += batch.ids
    return torch.cat(preds).cpu().numpy(), torch.cat(labels).numpy(), ids


def evaluate(
    model: MSAModel,
    dataset: MSADataset,
    split: str,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    forward: Forward | None = None,
) -> dict[str, float]:
    pred, label, _ = predict(model, dataset, split, batch_size, device, precision, forward)
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
    losses; a weight of 0 leaves its loss out of the graph) and its parts, detached, for the history.
    In float32 whatever precision the forward pass ran at."""
    loss = task_loss(out.prediction.float(), labels, task, cfg.loss)
    parts = {"task": loss.detach()}
    for name, value in out.aux_losses.items():
        w = weights.get(name, 1.0)
        value = value.float()
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
    forward: Forward | None = None,
    share: float = 1.0,
    before_backward: Callable[[ModelOutput, torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step of `fit` on one batch (already on the model's device): forward at
    cfg.precision, loss, backward, gradient clipping, step.

    `forward` replaces `model` for the forward pass (a DistributedDataParallel wrapper, a compiled
    model), `share` scales the loss of this rank's slice, `before_backward` may refuse the step
    (raise) after seeing the output and the loss, and `scaler` scales the loss for fp16 (see
    grad_scaler). Returns the loss and its detached parts, as tensors (reading them waits for the device).
    """
    with autocast(cfg.precision, batch.labels.device):
        out = (forward or model)(batch)
    loss, parts = training_loss(out, batch.labels, task, cfg, weights)
    if before_backward is not None:
        before_backward(out, loss, parts)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        (loss * share).backward()
    else:
        scaler.scale(loss * share).backward()
        scaler.unscale_(opt)  # clipping compares the true gradients with its thresholds
    if cfg.grad_clip_value > 0:
        torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip_value)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)  # skipped when the scaled gradients overflowed; the scale then shrinks
        scaler.update()
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


def fit_closed_form(model, dataset: MSADataset, cfg: TrainConfig, seed: int, device, metric: str, better) -> FitResult:
    """A model fitted in closed form (models/linear.py): one fit per value of its grid on the training
    split, the value kept that scores best on the selection split, as `fit` keeps an epoch."""
    start = time.perf_counter()
    model.eval()
    xs, ys = [], []
    with torch.no_grad():
        for batch in dataset.batches("train", cfg.eval_batch_size):
            batch = to_device(batch, device)
            xs.append(model.pooled(batch).double().cpu())
            ys.append(batch.labels.cpu())
    x, y = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    history, best_score, best_index, best_state = [], math.nan, -1, None
    for i, value in enumerate(tqdm(model.grid, desc=f"{type(model).__name__} grid", disable=not cfg.progress)):
        record = {"epoch": i + 1, **model.fit_candidate(x, y, value, seed)}
        val = evaluate(model, dataset, cfg.select_split, cfg.eval_batch_size, device, cfg.precision)
        record.update({f"{cfg.select_split}_{k}": v for k, v in val.items()})
        history.append(record)
        if best_state is None or better(val[metric], best_score):
            best_score, best_index, best_state = val[metric], i + 1, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    metrics = {s: evaluate(model, dataset, s, cfg.eval_batch_size, device, cfg.precision) for s in dataset.splits}
    return FitResult(best_index, best_score, metric, history, metrics, time.perf_counter() - start)


def fit(model: MSAModel, dataset: MSADataset, cfg: TrainConfig, seed: int, desc: str = "") -> FitResult:
    """Train with early stopping on the validation split; leaves the best weights in `model`, on
    the device train.device names."""
    gen = set_seed(seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ddp = distributed_setup(cfg.device)  # a pass-through unless launched by torchrun with WORLD_SIZE > 1
    ddp.reseed(seed)
    device = ddp.device
    check_precision(cfg.precision, device)
    model.to(device)
    metric, direction = selection(cfg, dataset.task)
    better = (lambda a, b: a < b) if direction == "min" else (lambda a, b: a > b)
    if getattr(model, "closed_form", False):
        return fit_closed_form(model, dataset, cfg, seed, device, metric, better)
    opt = make_optimizer(model, cfg)
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    elif cfg.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min" if direction == "min" else "max", factor=0.5, patience=max(cfg.patience // 3, 1)
        )
    weights = {k: w * cfg.aux_scale for k, w in {**model.default_aux_weights, **cfg.aux_weights}.items()}
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
    forward = forward_for(net, cfg.compile)
    # Evaluation (rank 0 alone) calls the model itself, not the DDP wrapper.
    eval_forward = forward if net is model else forward_for(model, cfg.compile)
    scaler = grad_scaler(cfg.precision, device)
    checked_names = False
    trials = 0

    def guard(out: ModelOutput, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        nonlocal checked_names
        if not checked_names:
            _check_aux_names(model, out, cfg)
            checked_names = True

    def evaluate_on(split: str) -> dict[str, float]:
        return evaluate(model, dataset, split, cfg.eval_batch_size, device, cfg.precision, eval_forward)

    for epoch in range(cfg.epochs):
        model.train()
        # Running sums stay on the device (float64, as Python floats summed them): reading a
        # loss every step would make the host wait for the device every step.
        sums: dict[str, torch.Tensor] = {}
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # non-finite once any loss is
        seen = 0
        for batch in dataset.batches(
            "train", cfg.batch_size, shuffle=True, generator=gen, group_by_length=cfg.group_by_length
        ):
            batch, share = ddp.shard(batch)  # this rank's slice; share scales its loss (1.0 alone)
            batch = to_device(batch, device)
            loss, parts = train_step(
                model,
                batch,
                opt,
                cfg,
                weights,
                dataset.task,
                forward=forward,
                share=share,
                before_backward=guard,
                scaler=scaler,
            )
            if step_sched is not None:
                step_sched.step()
            b = len(batch) if share else 0
            seen += b
            loss_sum += loss.detach()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.double() * b
            bar.update(b * ddp.world)
        if not ddp.all_finite(loss_sum):  # all ranks stop together
            means = {k: float(v) / max(seen, 1) for k, v in sums.items()}
            raise TrainingError(
                f"{desc}: loss is {float(loss_sum)} at epoch {epoch + 1} "
                f"(epoch means of its parts: {means}); try a lower train.lr"
            )
        hook = getattr(model, "on_epoch_end", None)
        if hook is not None:
            hook(epoch)
        totals = dict(zip(sums, torch.stack(list(sums.values())).tolist())) if sums else {}
        totals, seen = ddp.reduce_sums(totals, seen)
        # One validation result for all ranks, so that selection and early stopping agree.
        val = ddp.on_main(lambda: evaluate_on(cfg.select_split))
        score = val[metric]
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": v / max(seen, 1) for k, v in totals.items()},
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
    metrics = ddp.on_main(lambda: {s: evaluate_on(s) for s in dataset.splits})
    return FitResult(best_epoch, best_score, metric, history, metrics, time.perf_counter() - start)
