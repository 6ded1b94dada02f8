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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from advise.config import ConfigError, OptimConfig, TrainConfig
from advise.data.datasets import collate_clips
from advise.train import distributed
from advise.train.checkpoint import (
    load_checkpoint,
    model_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from advise.train.metrics import AccuracyMeter
from advise.train.optim import build_optimizer, lr_at, scaled_lr, set_lr
from advise.train.tasks import Task, forward_batch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    """metrics.jsonl: one JSON object per logged step or epoch, appended and flushed."""

    path: Path
    enabled: bool = True  # only rank 0 writes in a distributed run

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")


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
    path.write_text("".join(line + "\n" for line in kept))


def train(
    model: nn.Module,
    task: Task,
    dataset: Dataset,
    *,
    optim: OptimConfig,
    train_config: TrainConfig,
    out_dir: Path,
    meta: dict[str, Any],
    resume: bool = False,
    num_workers: int = 0,
    max_bad_fraction: float = 0.05,
    description: str = "train",
) -> TrainResult:
    """Train `model`'s trainable parameters on `dataset` with `task`'s loss.

    Writes `out_dir/metrics.jsonl` and `out_dir/checkpoints/last.{safetensors,json}`. `meta`
    (class names, IFM name and weights hash, resolved config) is stored in every checkpoint.
    With `resume`, continues from the checkpoint in `out_dir` (model, optimiser, schedule, step,
    RNG) so the run ends as an uninterrupted run would.
    """
    device = next(model.parameters()).device
    batch_size = train_config.batch_size  # global: split between processes in a DDP run
    world = distributed.world_size()
    main_process = distributed.is_main()
    if batch_size % world:
        raise ValueError(f"train.batch_size={batch_size} must be divisible by {world} processes")
    steps_per_epoch = len(dataset) // batch_size if len(dataset) >= batch_size else 1
    drop_last = len(dataset) >= batch_size
    total_steps = steps_per_epoch * train_config.epochs
    warmup_steps = round(optim.warmup_epochs * steps_per_epoch)
    peak_lr = scaled_lr(optim.base_lr, batch_size, optim.reference_batch)
    if world > 1 and train_config.sync_bn:
        distributed.convert_sync_batchnorm(model, device)
    optimizer = build_optimizer(_trainable_named_parameters(model), peak_lr, optim.weight_decay)
    forward_model = _data_parallel(model, device) if world > 1 else model

    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_stem = out_dir / "checkpoints" / "last"
    checkpoint_stem.parent.mkdir(exist_ok=True)
    log = RunLog(out_dir / "metrics.jsonl", enabled=main_process)

    step = 0
    history: list[dict[str, Any]] = []
    task.start(model)
    if resume:
        tensors, state = load_checkpoint(checkpoint_stem)
        model.load_trainable_state_dict(model_tensors(tensors))
        optimizer_from_tensors(optimizer, model_tensors(tensors, "optim."), state["optimizer"])
        task.load_state_tensors(model_tensors(tensors, "task."))
        set_rng_state(state["rng"])
        step = state["step"]
        history = state.get("history", [])
        if main_process:
            _truncate_log(log.path, step)
    elif log.path.exists() and main_process:
        log.path.unlink()
    distributed.barrier()  # nobody starts before the log is reset

    def save() -> Path:
        if not main_process:  # rank 0 writes; the others wait until the files are whole
            distributed.barrier()
            return checkpoint_stem
        optim_tensors, optim_meta = optimizer_to_tensors(optimizer)
        tensors = {f"model.{k}": v for k, v in model.trainable_state_dict().items()}
        tensors.update({f"optim.{k}": v for k, v in optim_tensors.items()})
        tensors.update({f"task.{k}": v for k, v in task.state_tensors().items()})
        state = {
            "step": step,
            "epoch": step / steps_per_epoch,
            "total_steps": total_steps,
            "optimizer": optim_meta,
            "rng": rng_state(),
            "history": history,
            **meta,
        }
        save_checkpoint(checkpoint_stem, tensors, state)
        distributed.barrier()
        return checkpoint_stem

    dataset.index_videos()
    sampler = EpochSampler(
        len(dataset), train_config.seed, batch_size=batch_size, drop_last=drop_last
    )
    started = time.perf_counter()
    bad_paths: set[str] = set()
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, start=step_in_epoch * batch_size)
        loader = DataLoader(
            dataset,
            batch_size=batch_size // world,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=collate_clips,
            persistent_workers=False,
        )
        sums = {"loss": 0.0, "acc": 0.0, "num": 0, "data_seconds": 0.0, "step_seconds": 0.0}
        epoch_skipped = 0
        progress = tqdm(
            total=steps_per_epoch,
            initial=step_in_epoch,
            desc=f"{description} epoch {epoch + 1}/{train_config.epochs}",
            disable=not (_show_progress() and main_process),
            leave=False,
            dynamic_ncols=True,
        )
        tick = time.perf_counter()
        for batch in loader:
            data_seconds = time.perf_counter() - tick
            skipped_paths = batch["skipped_paths"]
            if world > 1 and distributed.all_reduce_sum([batch["skipped"]])[0]:
                skipped_paths = sum(distributed.all_gather_objects(skipped_paths), [])
            epoch_skipped += len(skipped_paths) if world > 1 else batch["skipped"]
            bad_paths.update(skipped_paths)
            if len(bad_paths) > max_bad_fraction * len(dataset):
                raise TooManyBadVideos(
                    f"{len(bad_paths)} of {len(dataset)} videos failed to decode (more than "
                    f"data.max_bad_fraction={max_bad_fraction}); first: {min(bad_paths or ['-'])}"
                )
            lr = lr_at(step, total_steps, warmup_steps, peak_lr, optim.min_lr)
            set_lr(optimizer, lr)
            model.train()
            record: dict[str, Any] = {"step": step + 1, "epoch": epoch + 1, "lr": lr}
            # BatchNorm needs two samples (a task may need more); in DDP every process must
            # step, or none
            enough = batch["labels"].numel() >= task.min_clips
            if world > 1:
                enough = distributed.all_reduce_sum([0.0 if enough else 1.0])[0] == 0
            if enough:
                with trainable_autocast(device, train_config.precision):
                    out = task.step(forward_model, to_device(batch, device))
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss.item()} at step {step + 1}; the last good checkpoint "
                        f"is {checkpoint_stem}.safetensors (lower optim.base_lr?)"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if optim.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
                optimizer.step()
                task.after_update(model, step, total_steps)
                # the global batch's loss and accuracy (a sum over processes in DDP)
                loss_sum, acc_sum, num = distributed.all_reduce_sum(
                    [loss.item() * out["num"], out["acc"] * out["num"], out["num"]]
                )
                record.update(loss=loss_sum / num, acc=acc_sum / num, num=int(num))
                sums["loss"] += loss_sum
                sums["acc"] += acc_sum
                sums["num"] += int(num)
            elif batch["skipped"]:
                warnings.warn(
                    f"step {step + 1}: fewer than {task.min_clips} clips left after skipping bad "
                    "videos; "
                    "no update this step",
                    stacklevel=2,
                )
            step += 1
            step_seconds = time.perf_counter() - tick
            sums["data_seconds"] += data_seconds
            sums["step_seconds"] += step_seconds
            record.update(data_seconds=round(data_seconds, 4), step_seconds=round(step_seconds, 4))
            if step % train_config.log_every == 0 or step == total_steps:
                log.write(record)
                if main_process and not _show_progress():
                    print(
                        f"{description} step {step}/{total_steps} "
                        f"loss {record.get('loss', float('nan')):.4f} "
                        f"acc {record.get('acc', float('nan')):.1f} lr {lr:.2e} "
                        f"data {data_seconds:.3f}s step {step_seconds:.3f}s",
                        flush=True,
                    )
            progress.set_postfix(loss=f"{record.get('loss', float('nan')):.3f}", lr=f"{lr:.1e}")
            progress.update()
            at_epoch_end = step % steps_per_epoch == 0
            if at_epoch_end:
                num = max(sums["num"], 1)
                summary = {
                    "epoch": epoch + 1,
                    "step": step,
                    "train_loss": sums["loss"] / num,
                    "train_acc": sums["acc"] / num,
                    "skipped_videos": epoch_skipped,
                    "data_seconds": round(sums["data_seconds"], 3),
                    "step_seconds": round(sums["step_seconds"], 3),
                }
                history.append(summary)
                log.write(summary)
            if (train_config.checkpoint_every and step % train_config.checkpoint_every == 0) or (
                at_epoch_end
            ):
                save()
            tick = time.perf_counter()
        progress.close()
    distributed.barrier()
    if total_steps == 0 or not checkpoint_stem.with_suffix(".json").exists():
        save()
    return TrainResult(
        steps=step,
        epochs=train_config.epochs,
        seconds=time.perf_counter() - started,
        history=history,
        checkpoint=checkpoint_stem,
    )


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
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=share,
        num_workers=num_workers,
        collate_fn=collate_clips,
    )
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
