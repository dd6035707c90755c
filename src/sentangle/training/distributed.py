"""Data-parallel training with PyTorch DDP under torchrun, for the one training loop.

Launched by `torchrun --nproc_per_node N -m sentangle.cli train ...`, every process reads
WORLD_SIZE / RANK / LOCAL_RANK from the environment. With WORLD_SIZE > 1:

* the processes join one group: gloo on CPU, nccl on CUDA with device cuda:LOCAL_RANK;
* every rank draws the same seeded shuffle and takes a disjoint slice of each batch, so the global
  batch is still `train.batch_size`. A slice's loss is scaled by world * slice / batch, so DDP's
  gradient average is exactly the gradient of the whole batch's mean loss (also for a short last
  batch). That holds for per-sample losses; a loss computed over the batch as a set (CMD, HSIC,
  centre distances) sees only the slice on each rank, as with any data parallelism;
* validation runs on rank 0 and its metrics are broadcast, so selection, early stopping, learning
  rate decay and the plateau scheduler take one decision on all ranks;
* only rank 0 writes files (runs/runner.py asks `is_main()`).

Models keeping per-sample training state outside their weights (Self-MM's generated unimodal
labels) would build it from each rank's slices only; they are refused with an error saying what
to do instead. Without WORLD_SIZE > 1 every helper here is a pass-through.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from sentangle.config import DEVICE
from sentangle.core.errors import ConfigError, TrainingError
from sentangle.data.batch import Batch

# Attributes holding per-sample training state that DDP cannot keep consistent (see module doc).
PER_SAMPLE_STATE = {"label_store": "model.label_generation=false (plain multi-task learning)"}


def _env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in a single process and on rank 0 of a torchrun job: the one process that writes files."""
    rank, world, _ = _env()
    return world <= 1 or rank == 0


def _error(message: str) -> Exception:

    return TrainingError(message)


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def reseed(self, seed: int) -> None:
        """Different dropout masks per rank (rank 0 keeps the single-process stream); the
        shuffle uses its own generator, which stays the same on every rank."""
        if self.active and self.rank:
            torch.manual_seed(seed + 7919 * self.rank)

    def shard(self, batch: Batch) -> tuple[Batch, float]:
        """This rank's slice of a global batch and the factor for its loss (1.0 in one process)."""
        if not self.active:
            return batch, 1.0
        n = len(batch)
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        share = self.world * (hi - lo) / n
        if hi == lo:
            # Fewer samples than ranks: still take part in the gradient all-reduce, with weight 0.
            lo, hi = 0, 1
        part = slice(lo, hi)
        cut = lambda d: {k: v[part] for k, v in d.items()}  # noqa: E731
        return dataclasses.replace(
            batch,
            features=cut(batch.features),
            masks=cut(batch.masks),
            labels=batch.labels[part],
            ids=batch.ids[part],
            tokens=None if batch.tokens is None else cut(batch.tokens),
        ), share

    def wrap(self, model: torch.nn.Module, dataset, batch_size: int, weights: dict[str, float]) -> torch.nn.Module:
        """DistributedDataParallel around `model`; find_unused_parameters only when a probe forward
        on this rank's slice of the first training batch leaves trainable parameters without
        gradient (a switched-off branch, an auxiliary loss with weight 0)."""
        if not self.active:
            return model
        for attr, instead in PER_SAMPLE_STATE.items():
            if getattr(model, attr, None) is not None:
                raise _error(
                    f"{type(model).__name__} keeps per-sample training state ({attr}) that each rank would "
                    f"build from its own slices only, so data-parallel training would not match one process; "
                    f"train it without torchrun, or set {instead}"
                )
        probe = self.shard(next(dataset.batches("train", batch_size)))[0]
        unused = unused_parameters(model, probe.to(self.device), weights)
        flag = torch.tensor(
            [float(bool(unused) or os.environ.get("SENTANGLE_DDP_FIND_UNUSED") == "1")], device=self.device
        )
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # one answer for all ranks
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(
            _LossOutputs(model, weights), device_ids=ids, find_unused_parameters=bool(flag.item())
        )

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank, so that all ranks stop together."""
        ok = torch.isfinite(loss.detach()).float().reshape(1)
        if self.active:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    def reduce_sums(self, sums: dict[str, float], seen: int) -> tuple[dict[str, float], int]:
        """Per-epoch loss sums and sample counts added over ranks (the history logs global means)."""
        if not self.active:
            return sums, seen
        names: list[list[str]] = [[] for _ in range(self.world)]
        dist.all_gather_object(names, sorted(sums))
        keys = sorted(set().union(*names))
        t = torch.tensor([float(seen)] + [sums.get(k, 0.0) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t[1:].tolist())), int(round(t[0].item()))

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """fn() run on rank 0 and its result sent to every rank; an error on rank 0 stops all ranks."""
        if not self.active:
            return fn()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = ("ok", fn())
            except BaseException as e:
                box[0] = ("error", f"{type(e).__name__}: {e}")
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise _error(f"rank 0 failed: {value}")
        return value

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


class _LossOutputs(torch.nn.Module):
    """The model as DDP sees it: only outputs that reach the loss keep their graph. With
    find_unused_parameters DDP walks the graph back from the outputs, so a parameter reached only
    by an extra (Self-MM's unimodal predictions) or by a loss weighted 0 would count as used and
    DDP would wait for its gradient forever."""

    def __init__(self, model: torch.nn.Module, weights: dict[str, float]):
        super().__init__()
        self.model, self.weights = model, weights

    def forward(self, batch: Batch):
        out = self.model(batch)
        cut = lambda v: v.detach() if isinstance(v, torch.Tensor) else v  # noqa: E731
        return dataclasses.replace(
            out,
            aux_losses={k: v if self.weights.get(k, 1.0) else cut(v) for k, v in out.aux_losses.items()},
            extras={k: cut(v) for k, v in out.extras.items()},
        )


_context: Context | None = None


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """train.device as a torch.device: `auto` is cuda when CUDA is available, else cpu; a GPU that
    this machine lacks is a ConfigError here, before any work."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE.fullmatch(text):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N (N a GPU number), got {text!r}")
    dev = torch.device(text)
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        raise ConfigError(
            f"train.device={text!r}, but CUDA is not available here (torch {torch.__version__}, {build}); "
            "expected cpu or auto on this machine"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"train.device={text!r}, but this machine has {torch.cuda.device_count()} GPU(s): "
            f"expected cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def setup(device: str | torch.device = "cpu") -> Context:
    """The process's context; joins the process group on first call under torchrun (WORLD_SIZE > 1)."""
    global _context
    rank, world, local = _env()
    dev = resolve_device(device)
    if world <= 1:
        return Context(device=dev)
    if _context is not None:
        return _context
    if dev.type == "cuda":  # one GPU per process: the local rank's, whatever index was given
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        atexit.register(shutdown)
    _context = Context(rank, world, local, dev)
    return _context


def shutdown() -> None:
    global _context
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _context = None


def unused_parameters(model: torch.nn.Module, batch: Batch, weights: dict[str, float]) -> list[str]:
    """Trainable parameters that the training loss (prediction plus the auxiliary losses with a
    non-zero weight) does not reach on `batch`. Runs one forward with RNG, buffers (batch-norm
    statistics) and train/eval mode restored, so training afterwards is unaffected."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        return []
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        out = model(batch)
        loss = out.prediction.float().sum()
        for name, value in out.aux_losses.items():
            if weights.get(name, 1.0):
                loss = loss + value.float().sum()
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    finally:
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        model.train(was_training)
    return [n for (n, _), g in zip(named, grads) if g is None]
