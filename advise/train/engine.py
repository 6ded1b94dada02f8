"""One loop for pre-training and fine-tuning, and multi-view evaluation.

The loop does the learning-rate schedule, logging, checkpointing and resume; the task
(`PlaybackRateTask`, `ActionTask`) owns the loss. Everything random in an epoch is a pure
function of (seed, epoch, position): the shuffled order comes from `EpochSampler`, and each
item's sampling and augmentation from the dataset's own (seed, epoch, index) streams, so a run
resumed from a checkpoint ends where an uninterrupted run would.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from advise.config import ConfigError, OptimConfig, TrainConfig
from advise.data.datasets import loader_batches
from advise.files import atomic_write
from advise.train import distributed
from advise.train.checkpoint import (
    link_checkpoint,
    load_checkpoint,
    model_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from advise.train.metrics import AccuracyMeter
from advise.train.optim import build_optimizer, lr_at, scaled_lr, schedule_warnings, set_lr
from advise.train.tasks import Task, forward_batch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class ScheduleWarning(UserWarning):
    """The learning-rate schedule will not train as the config seems to mean."""


class TooManyBadVideos(RuntimeError):
    """More videos failed to decode than `data.max_bad_fraction` allows."""


class EpochSampler(Sampler[int]):
    """Indices in an order that is a pure function of (seed, epoch); can start mid-epoch.

    With `batch_size` in a distributed run, each process yields only its share of every
    global batch (`distributed.rank_slice`), and a last partial batch is dropped when
    `drop_last`: together the processes see exactly what one process would.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        batch_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.batch_size, self.drop_last = batch_size, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration yields epoch `epoch`'s order from position `start` on."""
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())

    def _indices(self) -> list[int]:
        indices = self.order()[self.start :]
        if self.batch_size is None or distributed.world_size() == 1:
            return indices
        if self.drop_last:
            indices = indices[: len(indices) // self.batch_size * self.batch_size]
        return distributed.rank_slice(indices, self.batch_size)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda was asked for but no CUDA device is available")
    return torch.device(name)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def _show_progress() -> bool:
    return sys.stderr.isatty()


@dataclass
class RunLog:
    """metrics.jsonl: one JSON object per logged row, appended and flushed, each with its
    `kind` ("step", "epoch" or "val") and wall-clock `time` (seconds since the epoch); the
    same rows go to each of `sinks` (e.g. TensorBoard)."""

    path: Path
    enabled: bool = True  # only rank 0 writes in a distributed run
    sinks: list[Any] = field(default_factory=list)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record["time"] = round(time.time(), 3)
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


@dataclass
class TrainResult:
    steps: int
    epochs: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    checkpoint: Path | None = None


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP over the trainable parts; the frozen IFM is neither broadcast nor reduced."""
    from torch.nn.parallel import DistributedDataParallel

    frozen = [name for name, _ in model.named_parameters() if name.startswith("ifm.")]
    frozen += [name for name, _ in model.named_buffers() if name.startswith("ifm.")]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, param) for name, param in model.named_parameters() if param.requires_grad]


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("step", 0) <= step:
            kept.append(line)
    atomic_write(path, "".join(line + "\n" for line in kept))


class TrainingDataset(Protocol):
    """What the loop asks of a dataset (`advise.data.datasets`): items by index, the epoch
    whose random draws they make, and a chance to index every video before workers fork."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def set_epoch(self, epoch: int) -> None: ...

    def index_videos(self) -> None: ...


@dataclass(frozen=True)
class Schedule:
    """Steps and learning rates of a run: `batch_size` videos per global step, the last
    partial batch dropped (one step per epoch when the dataset is smaller than a batch)."""

    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    min_lr: float
    drop_last: bool

    @classmethod
    def of(cls, num_videos: int, optim: OptimConfig, train_config: TrainConfig) -> Schedule:
        batch_size = train_config.batch_size  # global: split between processes in DDP
        if batch_size % distributed.world_size():
            raise ValueError(
                f"train.batch_size={batch_size} must be divisible by "
                f"{distributed.world_size()} processes"
            )
        steps_per_epoch = num_videos // batch_size if num_videos >= batch_size else 1
        return cls(
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            total_steps=steps_per_epoch * train_config.epochs,
            warmup_steps=round(optim.warmup_epochs * steps_per_epoch),
            peak_lr=scaled_lr(optim.base_lr, batch_size, optim.reference_batch),
            min_lr=optim.min_lr,
            drop_last=num_videos >= batch_size,
        )

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)

    def warnings(self) -> list[str]:
        """What is wrong with this schedule (e.g. a warm-up longer than the run, a step at lr
        0), in sentences; empty when nothing is."""
        return schedule_warnings(self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)


def training_step(
    model: nn.Module,
    task: Task,
    batch: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    total_steps: int,
    precision: str = "fp32",
    grad_clip: float | None = None,
    forward_model: nn.Module | None = None,
) -> dict[str, Any]:
    """One update: the task's forward and loss (through `forward_model`, e.g. the DDP
    wrapper, when given), backward, optional gradient clipping, the optimiser step and the
    task's own update. Returns the task's `{"loss", "acc", "num"}`. The training loop and the
    cost benchmark (`advise bench`) both run exactly this."""
    device = next(model.parameters()).device
    with trainable_autocast(device, precision):
        out = task.step(forward_model or model, batch)
    loss = out["loss"]
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    task.after_update(model, step, total_steps)
    return out


@dataclass
class _Run:
    """What the loop carries: model, task, optimiser, schedule, where it writes, and counts."""

    model: nn.Module
    forward_model: nn.Module
    task: Task
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    checkpoint: Path
    meta: dict[str, Any]
    log: RunLog
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_paths: set[str] = field(default_factory=set)
    best: dict[str, Any] | None = None  # the best validation so far: top1, epoch, step

    def save(self) -> Path:
        """The checkpoint of this step; rank 0 writes, the others wait until it is whole."""
        checkpoint = self.checkpoint
        if distributed.is_main():
            optim_tensors, optim_meta = optimizer_to_tensors(self.optimizer)
            tensors = {f"model.{k}": v for k, v in self.model.trainable_state_dict().items()}
            tensors.update({f"optim.{k}": v for k, v in optim_tensors.items()})
            tensors.update({f"task.{k}": v for k, v in self.task.state_tensors().items()})
            state = {
                "step": self.step,
                "epoch": self.step / self.schedule.steps_per_epoch,
                "total_steps": self.schedule.total_steps,
                "optimizer": optim_meta,
                "rng": rng_state(),
                "history": self.history,
                "best": self.best,
                **self.meta,
            }
            save_checkpoint(checkpoint, tensors, state)
        distributed.barrier()
        return checkpoint

    def restore(self) -> None:
        """Model, optimiser, task state, RNG, step, history and best validation from the
        checkpoint."""
        tensors, state = load_checkpoint(self.checkpoint)
        self.model.load_trainable_state_dict(model_tensors(tensors))
        optimizer_from_tensors(self.optimizer, model_tensors(tensors, "optim."), state["optimizer"])
        self.task.load_state_tensors(model_tensors(tensors, "task."))
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.history = state.get("history", [])
        self.best = state.get("best")


Validate = Callable[[nn.Module], dict[str, Any]]


def train(
    model: nn.Module,
    task: Task,
    dataset: TrainingDataset,
    *,
    optim: OptimConfig,
    train_config: TrainConfig,
    out_dir: Path,
    meta: dict[str, Any],
    resume: bool = False,
    num_workers: int = 0,
    max_bad_fraction: float = 0.05,
    description: str = "train",
    validate: Validate | None = None,
) -> TrainResult:
    """Train `model`'s trainable parameters on `dataset` with `task`'s loss.

    Writes `out_dir/metrics.jsonl` and `out_dir/checkpoints/last.{safetensors,json}`. `meta`
    (class names, IFM name and weights hash, resolved config) is stored in every checkpoint.
    With `resume`, continues from the checkpoint in `out_dir` (model, optimiser, task state,
    schedule, step, RNG) so the run ends as an uninterrupted run would. With `validate` (the
    model -> {"top1", ...}), every `train.eval_every` epochs and at the end the model is
    validated (a "val" row) and the best top-1 so far is also saved as `checkpoints/best`.
    """
    run = _start(model, task, dataset, optim, train_config, out_dir, meta, resume)
    schedule, started, first_step = run.schedule, time.perf_counter(), run.step
    saved = started  # when the last checkpoint was written (train.checkpoint_seconds)
    sampler = EpochSampler(
        len(dataset), train_config.seed, batch_size=schedule.batch_size,
        drop_last=schedule.drop_last,
    )  # fmt: skip
    dataset.index_videos()
    while run.step < schedule.total_steps:
        epoch, step_in_epoch = divmod(run.step, schedule.steps_per_epoch)
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, start=step_in_epoch * schedule.batch_size)
        sums = dict.fromkeys(("loss", "acc", "num", "data_seconds", "step_seconds"), 0.0)
        skipped, tick = 0, time.perf_counter()
        progress = _progress(description, epoch, step_in_epoch, schedule, train_config.epochs)
        for batch in _epoch_loader(dataset, sampler, schedule, num_workers):
            data_seconds = time.perf_counter() - tick
            skipped += _count_bad_videos(run, batch, len(dataset), max_bad_fraction)
            record = _step(run, batch, sums, optim.grad_clip, train_config.precision)
            step_seconds = time.perf_counter() - tick
            sums["data_seconds"] += data_seconds
            sums["step_seconds"] += step_seconds
            record.update(data_seconds=round(data_seconds, 4), step_seconds=round(step_seconds, 4))
            _log_step(run, record, train_config.log_every, description, progress)
            at_epoch_end = run.step % schedule.steps_per_epoch == 0
            improved = False
            if at_epoch_end:
                progress.close()
                times = (time.perf_counter() - started, first_step)
                _end_epoch(run, epoch, sums, skipped, times, description, train_config.epochs)
                improved = validate is not None and _validate(run, validate, train_config)
            every = train_config.checkpoint_every
            due = at_epoch_end and (
                improved
                or run.step == schedule.total_steps
                or time.perf_counter() - saved >= train_config.checkpoint_seconds
            )
            if train_config.checkpoint_seconds and at_epoch_end:  # every process as rank 0's
                due = distributed.broadcast_object(due)  # clock says (a save has a barrier)
            if due or (every and run.step % every == 0):
                run.save()
                saved = time.perf_counter()
            if improved and distributed.is_main():  # the pair just saved, linked
                link_checkpoint(run.checkpoint, run.checkpoint.with_name("best"))
            tick = time.perf_counter()
        progress.close()
    distributed.barrier()
    if schedule.total_steps == 0 or not run.checkpoint.with_suffix(".json").exists():
        run.save()
    run.log.close()
    seconds = time.perf_counter() - started
    return TrainResult(run.step, train_config.epochs, seconds, run.history, run.checkpoint)


def _validate(run: _Run, validate: Validate, train_config: TrainConfig) -> bool:
    """Validate when `train.eval_every` says so (and after the last epoch): log a "val" row
    and keep the best. True when this validation is the best so far. The random state of
    training is left as it was: a run ends the same with or without validation."""
    epoch = run.step // run.schedule.steps_per_epoch
    every = train_config.eval_every
    if not every or (epoch % every and run.step < run.schedule.total_steps):
        return False
    saved = rng_state()
    try:
        result = validate(run.model)
    finally:
        set_rng_state(saved)
    row = {"kind": "val", "epoch": epoch, "step": run.step, **result}
    run.log.write(dict(row))
    improved = run.best is None or result["top1"] > run.best["top1"]
    if improved:
        run.best = {"top1": result["top1"], "epoch": epoch, "step": run.step}
    if distributed.is_main():
        best = run.best
        print(
            f"  validation top-1 {result['top1']:.2f} ({result.get('views', '')} views); best "
            f"{best['top1']:.2f} at epoch {best['epoch']}",
            flush=True,
        )
    return improved


def _start(
    model: nn.Module,
    task: Task,
    dataset: TrainingDataset,
    optim: OptimConfig,
    train_config: TrainConfig,
    out_dir: Path,
    meta: dict[str, Any],
    resume: bool,
) -> _Run:
    """Schedule, optimiser, DDP wrapper and run folder; restored from its checkpoint with
    `resume` (log lines after it dropped), else with a fresh log."""
    device = next(model.parameters()).device
    schedule = Schedule.of(len(dataset), optim, train_config)
    for warning in schedule.warnings():
        warnings.warn(warning, ScheduleWarning, stacklevel=3)
    if distributed.world_size() > 1 and train_config.sync_bn:
        distributed.convert_sync_batchnorm(model, device)
    optimizer = build_optimizer(
        _trainable_named_parameters(model), schedule.peak_lr, optim.weight_decay
    )
    forward_model = _data_parallel(model, device) if distributed.world_size() > 1 else model
    checkpoint = out_dir / "checkpoints" / "last"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir / "metrics.jsonl", enabled=distributed.is_main())
    run = _Run(model, forward_model, task, optimizer, schedule, checkpoint, meta, log)
    task.start(model)
    if resume:
        run.restore()
        if distributed.is_main():
            _truncate_log(log.path, run.step)
    elif log.path.exists() and distributed.is_main():
        log.path.unlink()
    if train_config.tensorboard and distributed.is_main():
        from advise.train.tensorboard import TensorBoardSink

        log.sinks.append(TensorBoardSink(out_dir / "tensorboard"))
    distributed.barrier()  # nobody starts before the log is reset
    return run


def _epoch_loader(
    dataset: TrainingDataset, sampler: EpochSampler, schedule: Schedule, num_workers: int
) -> Iterable[dict[str, Any]]:
    batch_size = schedule.batch_size // distributed.world_size()
    return loader_batches(dataset, sampler, batch_size, schedule.drop_last, num_workers)


def _progress(
    description: str, epoch: int, step_in_epoch: int, schedule: Schedule, epochs: int
) -> tqdm:
    return tqdm(
        total=schedule.steps_per_epoch,
        initial=step_in_epoch,
        desc=f"{description} epoch {epoch + 1}/{epochs}",
        disable=not (_show_progress() and distributed.is_main()),
        leave=False,
        dynamic_ncols=True,
    )


def _count_bad_videos(
    run: _Run, batch: dict[str, Any], num_videos: int, max_bad_fraction: float
) -> int:
    """The batch's skipped videos (over every process in DDP), counted against the run's
    allowance; more bad videos in the run than `max_bad_fraction` stop it."""
    skipped_paths = batch["skipped_paths"]
    world = distributed.world_size()
    if world > 1 and distributed.all_reduce_sum([batch["skipped"]])[0]:
        skipped_paths = sum(distributed.all_gather_objects(skipped_paths), [])
    run.bad_paths.update(skipped_paths)
    if len(run.bad_paths) > max_bad_fraction * num_videos:
        raise TooManyBadVideos(
            f"{len(run.bad_paths)} of {num_videos} videos failed to decode (more than "
            f"data.max_bad_fraction={max_bad_fraction}); first: {min(run.bad_paths or ['-'])}"
        )
    return len(skipped_paths) if world > 1 else batch["skipped"]


def _step(
    run: _Run,
    batch: dict[str, Any],
    sums: dict[str, float],
    grad_clip: float | None,
    precision: str,
) -> dict[str, Any]:
    """Set the step's learning rate and take it (when the batch has enough clips in every
    process); the step's log record, with the global batch's loss and accuracy, also added
    to the epoch's `sums`."""
    lr = run.schedule.lr(run.step)
    set_lr(run.optimizer, lr)
    run.model.train()
    epoch = run.step // run.schedule.steps_per_epoch + 1
    record: dict[str, Any] = {"kind": "step", "step": run.step + 1, "epoch": epoch, "lr": lr}
    enough = batch["labels"].numel() >= run.task.min_clips
    if distributed.world_size() > 1:  # in DDP every process must step, or none
        enough = distributed.all_reduce_sum([0.0 if enough else 1.0])[0] == 0
    if enough:
        device = next(run.model.parameters()).device
        try:
            out = training_step(
                run.model, run.task, to_device(batch, device), run.optimizer,
                step=run.step, total_steps=run.schedule.total_steps, precision=precision,
                grad_clip=grad_clip, forward_model=run.forward_model,
            )  # fmt: skip
        except TrainingDiverged as error:
            raise TrainingDiverged(
                f"{error}; the last good checkpoint is {run.checkpoint}.safetensors (lower "
                f"optim.base_lr?)"
            ) from None
        # the global batch's loss and accuracy (a sum over processes in DDP)
        loss_sum, acc_sum, num = distributed.all_reduce_sum(
            [out["loss"].item() * out["num"], out["acc"] * out["num"], out["num"]]
        )
        record.update(loss=loss_sum / num, acc=acc_sum / num, num=int(num))
        sums["loss"] += loss_sum
        sums["acc"] += acc_sum
        sums["num"] += int(num)
    elif batch["skipped"]:
        warnings.warn(
            f"step {run.step + 1}: fewer than {run.task.min_clips} clips left after skipping "
            "bad videos; no update this step",
            stacklevel=3,
        )
    run.step += 1
    return record


def _log_step(
    run: _Run, record: dict[str, Any], log_every: int, description: str, progress: tqdm
) -> None:
    """metrics.jsonl every `log_every` steps and at the end (a printed line when stderr is
    not a terminal), and the progress bar."""
    nan = float("nan")
    if run.step % log_every == 0 or run.step == run.schedule.total_steps:
        run.log.write(record)
        if distributed.is_main() and not _show_progress():
            print(
                f"{description} step {run.step}/{run.schedule.total_steps} "
                f"loss {record.get('loss', nan):.4f} acc {record.get('acc', nan):.1f} "
                f"lr {record['lr']:.2e} data {record['data_seconds']:.3f}s "
                f"step {record['step_seconds']:.3f}s",
                flush=True,
            )
    progress.set_postfix(loss=f"{record.get('loss', nan):.3f}", lr=f"{record['lr']:.1e}")
    progress.update()


def _end_epoch(
    run: _Run,
    epoch: int,
    sums: dict[str, float],
    skipped: int,
    times: tuple[float, int],
    description: str,
    epochs: int,
) -> None:
    """The epoch's summary: kept in the run's history, logged as an "epoch" row and printed
    as one line. `times` is (seconds since this process started training, its first step),
    for the ETA of the whole run."""
    elapsed, first_step = times
    remaining = run.schedule.total_steps - run.step
    num, busy = max(sums["num"], 1), sums["step_seconds"]
    summary = {
        "kind": "epoch",
        "epoch": epoch + 1,
        "step": run.step,
        "loss": sums["loss"] / num,
        "acc": sums["acc"] / num,
        "lr": run.schedule.lr(run.step - 1),
        "skipped_videos": skipped,
        "data_seconds": round(sums["data_seconds"], 3),
        "step_seconds": round(busy, 3),
        "data_share": round(sums["data_seconds"] / busy, 3) if busy else 0.0,
        "elapsed": round(elapsed, 1),
        "eta": round(elapsed / (run.step - first_step) * remaining, 1),
    }
    run.history.append(summary)
    run.log.write(dict(summary))
    if distributed.is_main():
        print(epoch_line(description, epochs, summary), flush=True)


def epoch_line(description: str, epochs: int, summary: dict[str, Any]) -> str:
    """One line per epoch, on a terminal and in logs alike: loss, accuracy, learning rate,
    the share of time spent waiting for data, time so far and the ETA of the whole run."""
    return (
        f"{description} epoch {summary['epoch']}/{epochs}  loss {summary['loss']:.4f}  "
        f"acc {summary['acc']:.1f}  lr {summary['lr']:.2e}  "
        f"data {100 * summary['data_share']:.0f}%  elapsed {_clock(summary['elapsed'])}  "
        f"ETA {_clock(summary['eta'])}"
    )


def _clock(seconds: float) -> str:
    """12.3 -> '0:12'; 3725 -> '1:02:05'."""
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"


def trainable_autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for the TMM and head when `train.precision=bf16` (weights, optimiser
    state and the loss stay fp32). The frozen IFM sets its own precision inside."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    description: str = "evaluate",
    meter: AccuracyMeter | None = None,
    precision: str = "fp32",
    max_bad_fraction: float = 0.05,
) -> dict[str, Any]:
    """Multi-view top-1/top-5: the softmax of every view of a video is averaged, and each
    video counts once. Also reports single-view top-1 (the first view of each video).
    Videos that fail to decode are skipped and listed; more than `max_bad_fraction` of them
    fail the evaluation (`TooManyBadVideos`) rather than report an accuracy of the rest.
    Pass a `meter` to read per-video scores afterwards (`meter.video_scores()`). In a DDP run
    the processes split the videos and gather their scores by video: every process returns
    the exact result of one process."""
    device = next(model.parameters()).device
    model.eval()
    # in DDP each process tests every world_size-th video: no padding, no video twice
    share = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    loader = loader_batches(dataset, share, batch_size, num_workers=num_workers)
    dataset.index_videos()
    meter = meter if meter is not None else AccuracyMeter()
    local = AccuracyMeter()
    skipped: list[str] = []
    for batch in tqdm(loader, desc=description, disable=not _show_progress(), leave=False):
        skipped += batch["skipped_paths"]
        if batch["labels"].numel() == 0:
            continue
        with trainable_autocast(device, precision):
            logits = forward_batch(model, batch, device).float().cpu()
        local.update(logits, batch["labels"], batch["video_of_clip"])
    for tensors in distributed.all_gather_objects(local.to_tensors()):  # by video id
        meter.merge_tensors(tensors)
    skipped = sum(distributed.all_gather_objects(skipped), [])
    if skipped and len(skipped) > max_bad_fraction * len(dataset):
        raise TooManyBadVideos(
            f"{len(skipped)} of {len(dataset)} test videos could not be read (more than "
            f"data.max_bad_fraction={max_bad_fraction}); first: {sorted(skipped)[0]}"
        )
    result = meter.compute()
    result.update(views_combined="mean of softmax over views", skipped_videos=skipped)
    return result
