"""`advise bench`: the training cost of the paper's Table 6, measured in one run.

Every variant trains with playback-rate perception (PRP, 4 speed classes) on the same clip
batch (`batch` clips of `frames` x `size` x `size`), one variant at a time:

    a-b16-256  a-l14-256  a-b16-2048   AdViSe online (the presets of the same names): the
                                       frozen IFM encodes the frames, the TMM + MLP head train
    r3d50                              R3D-50 (`advise.models.r3d.R3D50`) trained end to end
    a-b16-256-store  a-l14-256-store   the TMM + head of the online variant of the same
    a-b16-2048-store                   name trained from stored tokens: a real feature store
                                       (`advise.runs.extract` over a small fabricated
                                       dataset, same IFM and input size; one store serves
                                       every variant of the same IFM), read through a torch
                                       DataLoader
    mini  mini-store                   the same online-vs-store pair with the built-in mini
                                       IFM and the demo preset's TMM (64 px frames unless
                                       `size` is given)

Precision: the IFM as its preset says (`auto`: bf16 where the device runs it natively) or
`ifm_precision`; the trainable part (the TMM + head, all of R3D-50) in fp32, or under bf16
autocast for every variant alike with `tmm_precision="bf16"` (weights and AdamW stay fp32), so
that online, store and R3D-50 can be compared at one precision.

Every IFM is randomly initialised (`ifm.random_init=true`): no weights are available offline,
and the cost of a network does not depend on the values of its weights.

What is measured, per variant:
- trainable parameters, and multiply-accumulates (MACs) per clip counted on the meta device
  (`advise.models.cost`), split into the frozen IFM and the TMM + head;
- the median time of a training iteration (forward, backward, AdamW step; for the store path
  also the wait for the DataLoader) after `warmup` iterations. Online variants and R3D-50 get
  a batch already in memory, so their time is pure compute; the store path pays its real data
  loading, and the time it is blocked on the DataLoader iterator is reported as its own share;
- peak memory of the training iterations: on CUDA `torch.cuda.max_memory_allocated` minus what
  was allocated before the model was built; on CPU each variant runs in its own process (by
  default), and the peak is its high-water RSS (`VmHWM`, reset through `/proc/self/clear_refs`
  where allowed, else the process's life-time peak) minus its RSS just before the model was
  built: weights, optimiser state, activations, the batch, and the store's mapped pages, but
  not the memory of DataLoader worker processes.

For online variants also: the time of the IFM's forward pass alone (timed after the training
iterations, on the same batch), and so the FLOP/s the frozen IFM achieves.

For the store path also: its speed-up over online AdViSe with the same IFM, beside the ratio
of their MACs per clip, both as the forward ratio (IFM + TMM) / TMM and as the ratio of a
training step's work (IFM + TMM forward and backward) / (TMM forward and backward), the
backward counted on the meta device: the IFM runs forward only, so the second ratio is what
skipping it can give at equal speed per MAC. And the FLOP/s its training step achieves
(2 x 3 x MACs per clip x clips / median step time) against a 2048^3 fp32 matrix product timed
in the same run on the same device (with `torch.mm`, and as a 1 x 1 convolution, the library
the TMM's convolutions run in). The MACs ratio is the speed-up only if the IFM's forward and
the TMM's training step run at the same FLOP/s; both are measured, and so is the speed-up they
predict, (IFM forward + store compute) / store compute, which differs from the measured one by
the store's data wait (and noise).

Timings on a shared machine move with other work: the run records the load average before and
after, and the table shows each variant's fastest and slowest timed iteration beside the median.
`repeats` > 1 runs the whole list of variants that many times, one after another (A B C A B
C ...), and pools each variant's timed iterations, so that a slow spell of the machine is shared
between variants instead of falling on one.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from advise.config import Config, ConfigError, load_config
from advise.files import atomic_write
from advise.models.build import build_frozen_ifm, build_model, resolve_precision
from advise.models.cost import count_macs, count_params
from advise.models.r3d import R3D50
from advise.pretexts import Pretext, build_pretext
from advise.report import markdown_table
from advise.train.engine import training_step
from advise.train.optim import build_optimizer, scaled_lr
from advise.train.tasks import Task

GIB = 1024**3


@dataclass(frozen=True)
class Variant:
    """One row of the table: how its model is built and what its cost is compared with."""

    label: str
    kind: str  # online | store | r3d
    preset: str  # AdViSe config (r3d: the optimiser and pretext recipe only)
    online: str | None = None  # store variants: the online variant with the same IFM and TMM


VARIANTS: dict[str, Variant] = {
    "a-b16-256": Variant("A-B/16-256", "online", "a-b16-256"),
    "a-l14-256": Variant("A-L/14-256", "online", "a-l14-256"),
    "a-b16-2048": Variant("A-B/16-2048", "online", "a-b16-2048"),
    "r3d50": Variant("R3D-50 end to end", "r3d", "prp-ucf101"),
    "a-b16-256-store": Variant("A-B/16-256 from the store", "store", "a-b16-256", "a-b16-256"),
    "a-l14-256-store": Variant("A-L/14-256 from the store", "store", "a-l14-256", "a-l14-256"),
    "a-b16-2048-store": Variant(
        "A-B/16-2048 from the store", "store", "a-b16-2048", "a-b16-2048"
    ),
    "mini": Variant("mini IFM (demo) online", "online", "demo"),
    "mini-store": Variant("mini IFM (demo) from the store", "store", "demo", "mini"),
}  # fmt: skip

DEFAULT_VARIANTS = {
    "vit": (
        "a-b16-256",
        "a-l14-256",
        "a-b16-2048",
        "r3d50",
        "a-b16-256-store",
        "a-l14-256-store",
        "a-b16-2048-store",
    ),
    "mini": ("mini", "mini-store", "r3d50"),
}

# PAPER.md, Table 6 (A800 GPU): trainable params (M), GFLOPs (= GMACs, trainable part), memory
# (GB), time per iteration (s).
PAPER_TABLE6: dict[str, tuple[float, float, float, float]] = {
    "a-b16-256": (4.0, 8.1, 4.9, 5.6),
    "a-l14-256": (4.0, 8.1, 6.2, 11.8),
    "a-b16-2048": (44.3, 66.2, 7.9, 17.0),
    "r3d50": (31.8, 125.3, 40.0, 19.2),
}

# Fabricated videos the store is extracted from: enough to make the DataLoader read from
# several files; PRP clips wrap around a video's end, so short videos serve any speed.
STORE_VIDEOS = 4
STORE_VIDEO_SIZE = 64  # pixels; extraction resizes to the IFM's input size


@dataclass(frozen=True)
class BenchSettings:
    """What one `advise bench` run measures. `size=None`: 224 px, and the demo preset's own
    input size (64 px) for the mini IFM; `threads=0`: torch's default; `isolate`: each
    variant in its own process (what makes CPU peak memory per variant meaningful)."""

    device: str = "cpu"
    batch: int = 2
    frames: int = 8
    size: int | None = None
    iters: int = 5
    warmup: int = 2
    threads: int = 0
    workers: int = 0
    in_memory: bool = False  # store path: tokens held in memory, as `ablate` and `demo` train
    variants: tuple[str, ...] = DEFAULT_VARIANTS["vit"]
    isolate: bool = True
    peak_size: int = 2048  # the matrix product that gives the device's reference peak
    ifm_precision: str | None = None  # None: each preset's own (`auto`: bf16 where native)
    tmm_precision: str = "fp32"  # the trainable part, every variant: fp32 | bf16 (autocast)
    repeats: int = 1  # passes over the variant list, interleaved; timings pooled


def default_settings(
    device: str | None = None, ifm_online: str = "vit", **given: Any
) -> BenchSettings:
    """The defaults for `device` (cuda: 8 clips per step, the paper's per-GPU batch; cpu: 2),
    overridden by the non-None values of `given`."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = BenchSettings(
        device=device,
        batch=8 if device == "cuda" else 2,
        variants=DEFAULT_VARIANTS[ifm_online],
    )
    chosen = {key: value for key, value in given.items() if value is not None}
    if "variants" in chosen:
        chosen["variants"] = tuple(chosen["variants"])
    return replace(settings, **chosen)


# ------------------------------------------------------------------ configs and counting


def variant_config(name: str, settings: BenchSettings, store: Path | None = None) -> Config:
    """The variant's preset with the bench's clip batch, a random IFM and one clip per item."""
    variant = VARIANTS[name]
    base = load_config(variant.preset)
    overrides: dict[str, Any] = {
        "ifm.random_init": True,
        "ifm.weights": None,
        "ifm.img_size": clip_size(name, settings),
        "data.num_frames": settings.frames,
        "data.num_workers": settings.workers,
        "pretext.prp.clips_per_video": 1,  # one clip per item: a batch is `batch` clips
        "train.batch_size": settings.batch,
        "train.device": settings.device,
        "train.threads": settings.threads,
    }
    if settings.ifm_precision is not None:
        overrides["ifm.precision"] = settings.ifm_precision
    if store is not None:
        overrides["data.root"] = str(store.parent / "videos")
        overrides["data.source"] = f"store:{store}"
        overrides["data.in_memory"] = settings.in_memory
    return base.replace(overrides)


def clip_size(name: str, settings: BenchSettings) -> int:
    """Frame size of the variant's clips: `settings.size`, else 224 (64 for the mini IFM)."""
    if settings.size is not None:
        return settings.size
    preset = load_config(VARIANTS[name].preset)
    if VARIANTS[name].kind != "r3d" and preset.ifm.name == "mini":
        return preset.ifm.img_size or 64
    return 224


def count_variant(name: str, settings: BenchSettings) -> dict[str, Any]:
    """Trainable parameters and MACs per clip, on the meta device (no memory, no weights).

    `macs` = `ifm_macs` (online only) + `trainable_macs`: one forward pass. `step_macs` is a
    training step's work per clip: the IFM forward (no backward: it is frozen) plus the
    trainable part's forward and backward, counted by running backward on the meta device
    (less than 3 forward passes where an input needs no gradient, e.g. the TMM's first
    convolution on tokens).
    """
    variant = VARIANTS[name]
    size = clip_size(name, settings)
    config = variant_config(name, settings)
    num_classes = len(build_pretext(config).class_names)
    with torch.device("meta"):
        frames = torch.empty(1, settings.frames, 3, size, size)  # [1, T, 3, H, W]
        if variant.kind == "r3d":
            model = R3D50(num_classes=num_classes)
            macs = count_macs(model, frames)
            return {
                "trainable_params": count_params(model, trainable_only=True),
                "ifm_macs": 0,
                "trainable_macs": macs,
                "trainable_training_macs": count_training_macs(model, frames),
                "macs": macs,
                "step_macs": count_training_macs(model, frames),
                "ifm": None,
                "token_shape": None,
            }
        ifm = build_frozen_ifm(config.ifm, torch.device("meta"))
        model = build_model(config, num_classes, ifm)
        tokens = ifm(frames)  # [1, D, T, h, w]
        ifm_macs = count_macs(ifm, frames)
        trainable = nn.Sequential(model.sfu, model.tmm, model.head)  # = forward_tokens
        trainable_macs = count_macs(trainable, tokens)
        training_macs = count_training_macs(trainable, tokens)
    online = variant.kind == "online"
    return {
        "trainable_params": count_params(model, trainable_only=True),
        "ifm_macs": ifm_macs if online else 0,
        "trainable_macs": trainable_macs,
        "trainable_training_macs": training_macs,
        "macs": trainable_macs + (ifm_macs if online else 0),
        "step_macs": training_macs + (ifm_macs if online else 0),
        "ifm": config.ifm.name,
        "ifm_macs_per_clip_at_extraction": None if online else ifm_macs,
        "token_shape": list(tokens.shape[1:]),
    }


def count_training_macs(module: nn.Module, one_clip: torch.Tensor) -> int:
    """MACs per clip of a forward and backward pass in train mode, on the meta device.

    Run on two copies of the clip (batch norm in train mode needs more than one value per
    channel) and halved; the module's train/eval flags are restored."""
    flags = {submodule: submodule.training for submodule in module.modules()}
    module.train()
    try:
        batch = one_clip.expand(2, *one_clip.shape[1:])  # [2, ...]
        with FlopCounterMode(display=False) as counter:
            module(batch).float().sum().backward()
    finally:
        for submodule, training in flags.items():
            submodule.training = training
        module.zero_grad(set_to_none=True)
    return counter.get_total_flops() // 2 // 2  # FLOPs -> MACs, two clips -> one


# ------------------------------------------------------------------ the feature store


def build_store(name: str, settings: BenchSettings, folder: Path) -> dict[str, Any]:
    """Fabricate a few small videos and extract the variant's IFM tokens into a store.

    Returns where the store is and what building it cost (a one-time cost, amortised over
    every later epoch and run, so not part of the training iteration)."""
    from advise.data.video import write_video
    from advise.runs import RandomInitWarning, extract

    videos = folder / "videos"
    num_frames = max(2 * settings.frames, 16)
    lines = []
    for index in range(STORE_VIDEOS):
        relative = f"Clip/v_Clip_g{index:02d}.mp4"
        write_video(videos / relative, _moving_square(num_frames, STORE_VIDEO_SIZE, index))
        lines.append(f"{relative} 1\n")
    (videos / "classInd.txt").write_text("1 Clip\n")
    (videos / "trainlist01.txt").write_text("".join(lines))
    (videos / "testlist01.txt").write_text("")
    config = variant_config(name, settings).replace({"data.root": str(videos)})
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)  # the bench says so in its output
        store = extract(config, folder / "store", subset="train", progress=False)
    return {
        "path": str(store),
        "videos": STORE_VIDEOS,
        "frames_per_video": num_frames,
        "dtype": "fp16",
        "extract_seconds": time.perf_counter() - start,
    }


def _moving_square(num_frames: int, size: int, seed: int) -> np.ndarray:
    """[T, size, size, 3] uint8: a bright square drifting over noise."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        top, left = (3 * t) % (size - 8), (5 * t + 7 * seed) % (size - 8)
        frames[t, top : top + 8, left : left + 8] = (230, 200, 40)
    return frames


# ------------------------------------------------------------------ one variant's iterations


def measure_variant(job: dict[str, Any]) -> dict[str, Any]:
    """Train one variant for `warmup + iters` iterations; times, memory, what ran.

    `job`: {"name", "settings" (BenchSettings as a dict), "store" (path or None)}.
    """
    name = job["name"]
    settings = BenchSettings(**{**job["settings"], "variants": tuple(job["settings"]["variants"])})
    store = Path(job["store"]) if job.get("store") else None
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    device = torch.device(settings.device)
    variant = VARIANTS[name]
    config = variant_config(name, settings, store if variant.kind == "store" else None)
    size = clip_size(name, settings)

    memory = _MemoryProbe(device)
    pretext = build_pretext(config)
    num_classes = len(pretext.class_names)
    model, loader = _trained_model(variant.kind, config, settings, pretext, device)
    model.train()
    optimizer = build_optimizer(
        model.named_parameters(),
        lr=scaled_lr(config.optim.base_lr, settings.batch, config.optim.reference_batch),
        weight_decay=config.optim.weight_decay,
    )
    task = pretext.task()
    fixed_batch = None
    if loader is None:
        fixed_batch = _random_batch(settings, size, num_classes, device)
    step_seconds, data_seconds, result = _train_iterations(
        name, model, task, optimizer, config, settings, fixed_batch, loader
    )

    peak_bytes, method = memory.peak()
    precision = (
        resolve_precision(config.ifm.precision, device) if variant.kind == "online" else None
    )
    ifm_seconds = []
    if variant.kind == "online":  # the frozen part alone, after the memory peak was read
        ifm_seconds = _time_ifm_forward(model.ifm, fixed_batch["input"], settings, name)
    return {
        "step_seconds": step_seconds,
        "data_seconds": data_seconds,
        "median_step_seconds": statistics.median(step_seconds),
        "data_share": sum(data_seconds) / sum(step_seconds),
        "peak_memory_bytes": peak_bytes,
        "memory_method": method,
        "ifm_precision": precision,
        "tmm_precision": settings.tmm_precision,
        "ifm_forward_seconds": ifm_seconds,
        "torch_threads": torch.get_num_threads(),
        "clip": [settings.batch, settings.frames, 3, size, size],
        "last_loss": float(result["loss"].detach()),
    }


def _trained_model(
    kind: str, config: Config, settings: BenchSettings, pretext: Pretext, device: torch.device
) -> tuple[nn.Module, torch.utils.data.DataLoader | None]:
    """The variant's model on `device`, and for the store path the DataLoader of its tokens
    (None otherwise): R3D-50, the online model around a frozen IFM, or TMM + head alone."""
    num_classes = len(pretext.class_names)
    if kind == "r3d":
        return R3D50(num_classes=num_classes).to(device), None
    if kind == "online":
        ifm = build_frozen_ifm(config.ifm, device)
        return build_model(config, num_classes, ifm).to(device), None
    loader, token_dim = _store_loader(config, settings, pretext)
    return build_model(config, num_classes, None, token_dim).to(device), loader


def _random_batch(
    settings: BenchSettings, size: int, num_classes: int, device: torch.device
) -> dict[str, Any]:
    """One batch of random frames and labels, kept in memory for every iteration."""
    return {
        "input": torch.randn(settings.batch, settings.frames, 3, size, size, device=device),
        "input_kind": "frames",
        "labels": torch.randint(num_classes, (settings.batch,), device=device),
    }


def _train_iterations(
    name: str,
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    config: Config,
    settings: BenchSettings,
    fixed_batch: dict[str, Any] | None,
    loader: Iterable[dict[str, Any]] | None,
) -> tuple[list[float], list[float], dict[str, Any]]:
    """`warmup + iters` training steps on `fixed_batch`, or on the batches of `loader`.

    Returns the seconds of each timed step, the part of each it waited for its batch,
    and the last step's result."""
    device = torch.device(settings.device)
    batches = iter(loader) if loader is not None else None
    step_seconds, data_seconds = [], []
    total = settings.warmup + settings.iters
    for step in range(total):
        _synchronize(device)
        start = time.perf_counter()
        if batches is not None:
            batch = next(batches)
            waited = time.perf_counter() - start
            batch = {**batch, "input": batch["input"].to(device)}
            batch["labels"] = batch["labels"].to(device)
        else:
            batch, waited = fixed_batch, 0.0
        result = training_step(
            model, task, batch, optimizer, step=step, total_steps=total,
            precision=settings.tmm_precision, grad_clip=config.optim.grad_clip,
        )  # fmt: skip
        _synchronize(device)
        seconds = time.perf_counter() - start
        phase = "warm-up" if step < settings.warmup else "timed"
        wait_text = f" (data {waited:.3f} s)" if batches is not None else ""
        print(
            f"[bench]   {name}: iteration {step + 1}/{total} {seconds:.3f} s{wait_text} [{phase}]",
            flush=True,
        )
        if step >= settings.warmup:
            step_seconds.append(seconds)
            data_seconds.append(waited)
    return step_seconds, data_seconds, result


def _time_ifm_forward(
    ifm: nn.Module, clips: torch.Tensor, settings: BenchSettings, name: str
) -> list[float]:
    """Seconds of `settings.iters` forward passes of the frozen IFM over the batch (one more
    first, untimed); the IFM runs as in training: no gradient, its own precision."""
    device = clips.device
    seconds = []
    for index in range(settings.iters + 1):
        _synchronize(device)
        start = time.perf_counter()
        ifm(clips)
        _synchronize(device)
        if index > 0:
            seconds.append(time.perf_counter() - start)
    print(f"[bench]   {name}: IFM forward alone {statistics.median(seconds):.3f} s", flush=True)
    return seconds


def _store_loader(config: Config, settings: BenchSettings, pretext: Pretext):
    """The pretext's clips of stored tokens, `batch` per step, batched as training batches
    them (`loader_batches`; held in memory with `data.in_memory`: every video read once
    first, as from a training's second epoch on, then each batch gathered in a thread while
    the step before it runs)."""
    from advise.data import loaders
    from advise.data.datasets import loader_batches
    from advise.data.store import FeatureStore

    store = FeatureStore(config.data.store_path)
    split = loaders.read_split(config.data, "train")
    dataset = loaders.pretrain_dataset(config, split, None, store, pretext.sampler())
    if config.data.in_memory:
        for index in range(len(dataset)):
            dataset[index]
    sampler = torch.utils.data.RandomSampler(
        dataset,
        replacement=True,
        num_samples=settings.batch * (settings.warmup + settings.iters),
        generator=torch.Generator().manual_seed(0),
    )
    loader = loader_batches(
        dataset, sampler, settings.batch, drop_last=False, num_workers=loaders.worker_count(config)
    )
    return loader, store.spec.token_shape[0]


class _MemoryProbe:
    """Peak memory from now on: CUDA allocator peak, or the process's high-water RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            self.before = torch.cuda.memory_allocated(device)
            self.reset = True
            return
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.before = _proc_status_bytes("VmRSS")

    def peak(self) -> tuple[int, str]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - self.before
            return peak, "torch.cuda.max_memory_allocated minus allocated before building"
        high = _proc_status_bytes("VmHWM")
        scope = "since the reset" if self.reset else "over the process's life (no reset)"
        method = f"VmHWM ({scope}) minus VmRSS before building the model"
        return max(high - self.before, 0), method


def _proc_status_bytes(key: str) -> int:
    """A memory line of /proc/self/status in bytes (ru_maxrss where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ the device's peak


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 10) -> dict[str, Any]:
    """Peak FLOP/s of a size^3 fp32 matrix product: the fastest of `repeats` runs (after 2
    warm-up runs), so that other work on a shared machine lowers it as little as possible.

    "mm" is `torch.mm` (the BLAS: MKL on CPU, cuBLAS on CUDA); "conv1x1" is the same product
    as a 1 x 1 convolution, the library the TMM's convolutions run in (oneDNN on CPU, cuDNN).
    On AMD CPUs MKL's sgemm does not use AVX-512 while oneDNN does, so the two differ there;
    on CUDA, cuDNN convolutions use TF32 unless `torch.backends.cudnn.allow_tf32` is off.
    """
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(device)
    right = torch.randn(size, size, generator=generator).to(device)
    image = left.t().reshape(1, size, size, 1)  # [1, C_in, positions, 1]
    kernel = right.t().reshape(size, size, 1, 1)  # [C_out, C_in, 1, 1]
    products = {
        "mm": lambda: torch.mm(left, right),
        "conv1x1": lambda: nn.functional.conv2d(image, kernel),
    }
    result: dict[str, Any] = {"size": size}
    for key, product in products.items():
        seconds = []
        for index in range(repeats + 2):
            _synchronize(device)
            start = time.perf_counter()
            product()
            _synchronize(device)
            if index >= 2:
                seconds.append(time.perf_counter() - start)
        result[f"{key}_flops_per_second"] = 2 * size**3 / min(seconds)
        result[f"{key}_median_flops_per_second"] = 2 * size**3 / statistics.median(seconds)
    return result


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------ the whole run


@dataclass
class BenchResult:
    settings: dict[str, Any]
    environment: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    matmul: dict[str, Any] = field(default_factory=dict)
    goals: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_bench(settings: BenchSettings, out_dir: Path) -> dict[str, Any]:
    """Measure every variant of `settings`; write bench.json and bench.md into `out_dir`."""
    unknown = [name for name in settings.variants if name not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown bench variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if settings.batch < 1 or settings.frames < 1 or settings.iters < 1 or settings.warmup < 0:
        raise ConfigError("bench: need batch, frames and iters >= 1 and warmup >= 0")
    if settings.repeats < 1:
        raise ConfigError(f"bench: repeats must be >= 1, got {settings.repeats}")
    if settings.tmm_precision not in ("fp32", "bf16"):
        raise ConfigError(
            f"bench: tmm_precision must be fp32 or bf16, got {settings.tmm_precision!r}"
        )
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(settings.device)
    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        result = _run(settings, device, out_dir)
    finally:
        torch.set_num_threads(threads_before)
    record = asdict(result)
    atomic_write(out_dir / "bench.json", json.dumps(record, indent=2))
    markdown = render_markdown(record)
    atomic_write(out_dir / "bench.md", markdown)
    print(markdown, flush=True)
    return record


def _run(settings: BenchSettings, device: torch.device, out_dir: Path) -> BenchResult:
    names = list(dict.fromkeys(settings.variants))
    result = BenchResult(settings=asdict(settings), environment=_environment(device))
    result.notes.append(
        "Every IFM is randomly initialised (ifm.random_init=true): no weights are available "
        "here, and the cost of a network does not depend on the values of its weights."
    )
    _say(f"device: {result.environment['device']}, torch threads {torch.get_num_threads()}")
    result.matmul["before"] = matmul_peak(device, settings.peak_size)
    before = result.matmul["before"]
    _say(
        f"{settings.peak_size}^3 fp32 product: torch.mm "
        f"{before['mm_flops_per_second'] / 1e9:.1f} GFLOP/s, as a 1x1 convolution "
        f"{before['conv1x1_flops_per_second'] / 1e9:.1f} GFLOP/s"
    )

    with tempfile.TemporaryDirectory(prefix="advise-bench-") as scratch:
        stores = _count_variants(result, names, settings, Path(scratch))
        runs = _train_variants(names, settings, stores, Path(scratch))
        for name in names:
            result.variants[name].update(_pool_runs(runs[name]))

    result.environment["load_average_after"] = _load_average()
    _add_matmul_peaks(result, device, settings)
    used = next((v for v in result.variants.values() if "torch_threads" in v), None)
    if used is not None:
        result.environment["torch_threads"] = used["torch_threads"]
    _add_ratios(result)
    _add_comparisons(result, settings)
    _add_goals(result)
    result.notes.append(
        "Time: median of the timed iterations (forward, backward, AdamW step). Online variants "
        "and R3D-50 train on a batch already in memory; the store path's time includes waiting "
        + (
            "for its DataLoader, tokens held in memory (every video read once before timing)."
            if settings.in_memory
            else f"for its DataLoader ({settings.workers} worker processes)."
        )
    )
    result.notes.append(_memory_note(device, settings))
    return result


def _environment(device: torch.device) -> dict[str, Any]:
    """What the run ran on, and the machine's load before it."""
    environment = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": _load_average(),
    }
    if device.type == "cuda":  # cuDNN convolutions (the TMM, the 1x1 peak) may run in TF32
        environment["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        environment["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return environment


def _count_variants(
    result: BenchResult, names: list[str], settings: BenchSettings, scratch: Path
) -> dict[str, dict[str, Any]]:
    """Each variant's entry in `result` with its counts; the feature stores the store
    variants need, built once per `_store_key` in `scratch` (returned by key)."""
    stores: dict[str, dict[str, Any]] = {}
    for name in names:
        entry: dict[str, Any] = {"label": VARIANTS[name].label, "kind": VARIANTS[name].kind}
        entry["clip_size"] = clip_size(name, settings)
        entry.update(count_variant(name, settings))
        _say(
            f"{name}: {entry['trainable_params'] / 1e6:.2f} M trainable, "
            f"{entry['macs'] / 1e9:.2f} GMACs per clip (IFM {entry['ifm_macs'] / 1e9:.2f})"
        )
        if VARIANTS[name].kind == "store":
            key = _store_key(name, settings)
            if key not in stores:
                _say(f"{name}: extracting a feature store ({STORE_VIDEOS} fabricated videos)")
                stores[key] = build_store(name, settings, scratch / f"store{len(stores)}")
                _say(f"{name}: store built in {stores[key]['extract_seconds']:.1f} s")
            entry["store"] = {k: v for k, v in stores[key].items() if k != "path"}
        result.variants[name] = entry
    return stores


def _train_variants(
    names: list[str], settings: BenchSettings, stores: dict[str, dict[str, Any]], scratch: Path
) -> dict[str, list[dict[str, Any]]]:
    """`settings.repeats` passes over the variants, one after another; every pass's
    measurement of each variant, by name."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(settings.repeats):
        for name in names:
            store = None
            if VARIANTS[name].kind == "store":
                store = stores[_store_key(name, settings)]
            job = {
                "name": name,
                "settings": asdict(settings),
                "store": store["path"] if store else None,
            }
            passes = f" (pass {repeat + 1}/{settings.repeats})" if settings.repeats > 1 else ""
            _say(f"{name}: training {settings.warmup} + {settings.iters} iterations{passes}")
            measured = _measure(job, settings.isolate, scratch)
            runs[name].append(measured)
            if "error" not in measured:
                _say(
                    f"{name}: median {measured['median_step_seconds']:.3f} s per iteration, "
                    f"peak memory {measured['peak_memory_bytes'] / GIB:.2f} GiB"
                )
    return runs


def _add_matmul_peaks(result: BenchResult, device: torch.device, settings: BenchSettings) -> None:
    """The product timed again after the variants; the peaks are the best of both runs."""
    result.matmul["after"] = matmul_peak(device, settings.peak_size)
    for key in ("mm", "conv1x1"):  # the best of the runs before and after the variants
        result.matmul[f"{key}_peak_flops_per_second"] = max(
            result.matmul[when][f"{key}_flops_per_second"] for when in ("before", "after")
        )
    result.matmul["peak_flops_per_second"] = result.matmul["mm_peak_flops_per_second"]
    result.matmul["size"] = settings.peak_size


def _store_key(name: str, settings: BenchSettings) -> str:
    """Variants whose stores would hold the same tokens share one: same IFM, size, precision."""
    ifm = variant_config(name, settings).ifm
    return f"{ifm.name}@{ifm.img_size}:{ifm.precision}"


def _pool_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's passes as one entry: timed iterations pooled (medians over all of them),
    the highest memory peak; the first failure, if any pass failed."""
    failed = next((run for run in runs if "error" in run), None)
    if failed is not None:
        return failed
    pooled = dict(runs[-1])
    for key in ("step_seconds", "data_seconds", "ifm_forward_seconds"):
        pooled[key] = [value for run in runs for value in run[key]]
    pooled["median_step_seconds"] = statistics.median(pooled["step_seconds"])
    pooled["data_share"] = sum(pooled["data_seconds"]) / sum(pooled["step_seconds"])
    pooled["peak_memory_bytes"] = max(run["peak_memory_bytes"] for run in runs)
    pooled["passes"] = len(runs)
    pooled["median_step_seconds_per_pass"] = [run["median_step_seconds"] for run in runs]
    return pooled


def _measure(job: dict[str, Any], isolate: bool, scratch: Path) -> dict[str, Any]:
    """measure_variant in this process, or in a fresh Python process of its own."""
    if not isolate:
        return measure_variant(job)
    job_file = scratch / f"{job['name']}.job.json"
    result_file = scratch / f"{job['name']}.result.json"
    job_file.write_text(json.dumps(job))
    completed = subprocess.run(
        [sys.executable, "-m", "advise.bench", str(job_file), str(result_file)], check=False
    )
    if completed.returncode != 0 or not result_file.is_file():
        code = completed.returncode
        reason = "killed (out of memory?)" if code in (-9, 137) else f"exit code {code}"
        _say(f"{job['name']}: FAILED ({reason})")
        return {"error": reason}
    return json.loads(result_file.read_text())


def _memory_note(device: torch.device, settings: BenchSettings) -> str:
    if device.type == "cuda":
        return (
            "Memory: torch.cuda.max_memory_allocated during the variant's iterations minus "
            "what was allocated before its model was built (weights, optimiser state, "
            "activations, batch); the CUDA context and allocator cache are not counted."
        )
    where = "in its own process" if settings.isolate else "in the bench's process"
    return (
        f"Memory: each variant runs {where}; peak = high-water RSS (VmHWM, reset via "
        "/proc/self/clear_refs just before the model is built) minus the RSS at that moment: "
        "weights, optimiser state, activations, the batch and, for the store path, its "
        "mapped token pages (DataLoader worker processes not counted)."
    )


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on a shared machine slows every variant."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


# ------------------------------------------------------------------ derived numbers


def _ok(entry: dict[str, Any] | None) -> bool:
    return entry is not None and "error" not in entry and "median_step_seconds" in entry


def _add_ratios(result: BenchResult) -> None:
    """Each variant against R3D-50: time, memory, parameters, MACs (total and trainable)."""
    r3d = result.variants.get("r3d50")
    for name, entry in result.variants.items():
        if name == "r3d50" or not _ok(entry) or not _ok(r3d):
            continue
        entry["vs_r3d50"] = {
            "time": entry["median_step_seconds"] / r3d["median_step_seconds"],
            "memory": entry["peak_memory_bytes"] / max(r3d["peak_memory_bytes"], 1),
            "params": entry["trainable_params"] / r3d["trainable_params"],
            "macs": entry["macs"] / r3d["macs"],
            "trainable_macs": entry["trainable_macs"] / r3d["trainable_macs"],
            "step_macs": entry["step_macs"] / r3d["step_macs"],
        }


def _add_comparisons(result: BenchResult, settings: BenchSettings) -> None:
    """Store path vs online AdViSe with the same IFM and TMM."""
    peak = result.matmul["peak_flops_per_second"]
    conv_peak = result.matmul["conv1x1_peak_flops_per_second"]
    for name, entry in result.variants.items():
        online_name = VARIANTS[name].online
        if online_name is None or not _ok(entry):
            continue
        online = result.variants.get(online_name)
        tmm, ifm = entry["trainable_macs"], entry["ifm_macs_per_clip_at_extraction"]
        tmm_step = entry["trainable_training_macs"]  # forward + backward, counted
        step = entry["median_step_seconds"]
        compute = statistics.median(
            total - wait
            for total, wait in zip(entry["step_seconds"], entry["data_seconds"], strict=True)
        )
        flops = 2 * 3 * tmm * settings.batch  # forward + backward as 3 forwards, every clip
        counted = 2 * tmm_step * settings.batch
        comparison: dict[str, Any] = {
            "store": name,
            "online": online_name,
            "store_step_seconds": step,
            "store_compute_seconds": compute,
            "data_share": entry["data_share"],
            "mac_ratio_forward": (ifm + tmm) / tmm,
            "mac_ratio_training": (ifm + tmm_step) / tmm_step,
            "mac_ratio_training_3x": (ifm + 3 * tmm) / (3 * tmm),
            "achieved_flops_per_second": flops / step,
            "achieved_flops_per_second_compute": flops / compute,
            "achieved_flops_per_second_counted": counted / step,
            "matmul_peak_flops_per_second": peak,
            "conv1x1_peak_flops_per_second": conv_peak,
            "fraction_of_matmul_peak": flops / step / peak,
            "fraction_of_matmul_peak_compute": flops / compute / peak,
            "fraction_of_conv1x1_peak": flops / step / conv_peak,
        }
        if _ok(online):
            speedup = online["median_step_seconds"] / step
            comparison.update(
                online_step_seconds=online["median_step_seconds"],
                speedup=speedup,
                speedup_over_mac_ratio_forward=speedup / comparison["mac_ratio_forward"],
                speedup_over_mac_ratio_training=speedup / comparison["mac_ratio_training"],
            )
            if online.get("ifm_forward_seconds"):
                comparison.update(_speeds_per_mac(online, compute, ifm, tmm_step, settings))
        result.comparisons[name] = comparison


def _speeds_per_mac(
    online: dict[str, Any],
    store_compute: float,
    ifm_macs: int,
    tmm_step_macs: int,
    settings: BenchSettings,
) -> dict[str, float]:
    """Why a speed-up differs from the MACs ratio: the FLOP/s of the IFM's forward (timed
    alone) and of the store's training step without its data wait, and the speed-up those two
    speeds predict, (IFM forward + store compute) / store compute."""
    ifm_seconds = statistics.median(online["ifm_forward_seconds"])
    ifm_speed = 2 * ifm_macs * settings.batch / ifm_seconds
    tmm_speed = 2 * tmm_step_macs * settings.batch / store_compute
    return {
        "ifm_forward_seconds": ifm_seconds,
        "ifm_flops_per_second": ifm_speed,
        "tmm_step_flops_per_second": tmm_speed,
        "ifm_over_tmm_speed": ifm_speed / tmm_speed,
        "speedup_at_measured_speeds": (ifm_seconds + store_compute) / store_compute,
    }


def _add_goals(result: BenchResult) -> None:
    """The acceptance goals, as measured here (never asserted by tests)."""
    cheaper = {}
    for name, entry in result.variants.items():
        if "vs_r3d50" in entry:
            ratios = entry["vs_r3d50"]
            cheaper[name] = {"time": ratios["time"] < 1.0, "memory": ratios["memory"] < 1.0}
    speedups = {}
    for name, comparison in result.comparisons.items():
        if "speedup" in comparison:
            speedups[name] = {
                "forward_ratio_80pct": comparison["speedup_over_mac_ratio_forward"] >= 0.8,
                "training_ratio_80pct": comparison["speedup_over_mac_ratio_training"] >= 0.8,
            }
    result.goals = {"cheaper_than_r3d50": cheaper, "store_speedup_at_least_80pct": speedups}


# ------------------------------------------------------------------ the report


def _number(value: float | None, digits: int = 2) -> str:
    """`digits` decimals; small non-zero values keep 2 significant digits (0.0042)."""
    if value is None:
        return "-"
    if 0 < abs(value) < 10**-digits * 10:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


def render_markdown(record: dict[str, Any]) -> str:
    """bench.md: what ran where, the Table 6 rows with the paper's beside ours, the ratios
    against R3D-50, and the store comparison."""
    lines = _heading_lines(record)
    lines += _cost_lines(record)
    lines += _ratio_lines(record)
    lines += _store_comparison_lines(record)
    lines += _speed_lines(record)
    lines += _goal_lines(record)
    lines += ["", "## Notes", ""] + [f"- {note}" for note in _report_notes(record)]
    return "\n".join(lines) + "\n"


def _heading_lines(record: dict[str, Any]) -> list[str]:
    """The title and what ran where: device, batch, iterations, the machine's load."""
    settings, environment = record["settings"], record["environment"]
    return [
        "# Training cost per iteration (the paper's Table 6)",
        "",
        f"Device: {environment['device']} ({environment['device_type']}), torch "
        f"{environment['torch']}, {environment['torch_threads']} torch threads. Batch: "
        f"{settings['batch']} clips of {settings['frames']} frames (px: frame size); "
        f"{settings['warmup']} warm-up + {settings['iters']} timed iterations. Load average "
        f"(1, 5, 15 min) before {environment.get('load_average_before')}, after "
        f"{environment.get('load_average_after')}, on {environment['cpu_count']} CPUs.",
        "",
    ]


def _cost_lines(record: dict[str, Any]) -> list[str]:
    """The Table 6 rows: every variant's counts, memory and time beside the paper's."""
    rows = []
    for name, entry in record["variants"].items():
        paper = PAPER_TABLE6.get(name)
        failed = "error" in entry
        rows.append(
            [
                entry["label"],
                f"{entry['clip_size']}",
                _number(entry["trainable_params"] / 1e6),
                _number(paper[0], 1) if paper else "",
                _number(entry["ifm_macs"] / 1e9) if entry["kind"] == "online" else "-",
                _number(entry["trainable_macs"] / 1e9),
                _number(entry["step_macs"] / 1e9),
                _number(paper[1], 1) if paper else "",
                "failed" if failed else _number(entry["peak_memory_bytes"] / GIB),
                _number(paper[2], 1) if paper else "",
                entry.get("error", "") or _time_range(entry["step_seconds"]),
                _number(paper[3], 1) if paper else "",
            ]
        )
    header = [
        "method", "px", "params (M)", "paper", "GMACs IFM", "GMACs TMM+head", "GMACs step",
        "paper GFLOPs", "memory (GiB)", "paper (GB)", "time (s): median (min-max)", "paper (s)",
    ]  # fmt: skip
    return [
        markdown_table(rows, header),
        "",
        "GMACs per clip: IFM and TMM + head forward; step = a training step's work (IFM "
        "forward + the trainable part's forward and backward, counted on the meta device). "
        "The paper's GFLOPs are multiply-accumulates; it measured on an A800 GPU with its own "
        "batch and clip, so compare ratios, not absolute numbers.",
    ]


def _ratio_lines(record: dict[str, Any]) -> list[str]:
    """Each variant against R3D-50, ours beside the paper's (none without an R3D-50 run)."""
    ratio_rows = []
    for name, entry in record["variants"].items():
        if "vs_r3d50" not in entry:
            continue
        ratios = entry["vs_r3d50"]
        paper, r3d = PAPER_TABLE6.get(name), PAPER_TABLE6["r3d50"]
        ratio_rows.append(
            [
                entry["label"],
                _number(ratios["time"]),
                _number(ratios["memory"]),
                _number(ratios["params"]),
                _number(ratios["macs"]),
                _number(ratios["trainable_macs"], 3),
                _number(ratios["step_macs"]),
                f"{paper[3] / r3d[3]:.2f} / {paper[2] / r3d[2]:.2f}" if paper else "",
            ]
        )
    if not ratio_rows:
        return []
    header = [
        "vs R3D-50", "time", "memory", "params", "MACs (forward)", "MACs (trainable)",
        "MACs (step)", "paper time / memory",
    ]  # fmt: skip
    return ["", "## Ratios against R3D-50 (below 1: cheaper)", "",
            markdown_table(ratio_rows, header)]  # fmt: skip


def _store_comparison_lines(record: dict[str, Any]) -> list[str]:
    """The store path against online AdViSe: speed-up, MACs ratios, FLOP/s against the peak."""
    comparison_rows = []
    for comparison in record["comparisons"].values():
        store = record["variants"][comparison["store"]]
        comparison_rows.append(
            [
                store["label"],
                _number(comparison.get("online_step_seconds"), 3),
                _number(comparison["store_step_seconds"], 3),
                f"{100 * comparison['data_share']:.1f}%",
                _number(comparison.get("speedup"), 1),
                _number(comparison["mac_ratio_forward"], 1),
                _percent(comparison.get("speedup_over_mac_ratio_forward")),
                _number(comparison["mac_ratio_training"], 1),
                _percent(comparison.get("speedup_over_mac_ratio_training")),
                f"{comparison['achieved_flops_per_second'] / 1e9:.1f}",
                f"{comparison['achieved_flops_per_second_counted'] / 1e9:.1f}",
                _percent(comparison["fraction_of_matmul_peak"]),
                _percent(comparison["fraction_of_conv1x1_peak"]),
            ]
        )
    if not comparison_rows:
        return []
    matmul = record["matmul"]
    header = [
        "store path", "online (s)", "store (s)", "data wait", "speed-up",
        "forward MACs ratio", "speed-up / ratio", "step MACs ratio", "speed-up / ratio",
        "GFLOP/s", "counted", "of mm peak", "of 1x1-conv peak",
    ]  # fmt: skip
    return [
        "",
        "## Training from the feature store vs online AdViSe",
        "",
        markdown_table(comparison_rows, header),
        "",
        "Forward MACs ratio = (IFM + TMM) / TMM per clip. Step MACs ratio = (IFM + TMM "
        "forward and backward) / (TMM forward and backward): the frozen IFM runs forward "
        "only, so this is the speed-up skipping it can give at equal speed per MAC. Data "
        "wait: share of the store path's step time blocked on its DataLoader. GFLOP/s: 2 x "
        "3 x TMM+head MACs per clip x clips / median step time (the data wait included; "
        "'counted': with the forward + backward MACs counted instead of 3 x forward); the "
        "percentages are of the first. "
        f"Peaks of a {matmul['size']}^3 fp32 product on this device: torch.mm "
        f"{matmul['mm_peak_flops_per_second'] / 1e9:.1f} GFLOP/s, as a 1 x 1 convolution "
        f"(the library the TMM runs in) {matmul['conv1x1_peak_flops_per_second'] / 1e9:.1f}"
        " GFLOP/s (fastest of 10 runs, before and after the variants).",
    ]


def _speed_lines(record: dict[str, Any]) -> list[str]:
    """Why the measured speed-up differs from the MACs ratio: the FLOP/s of each side."""
    speed_rows = [
        [
            record["variants"][comparison["store"]]["label"],
            _number(comparison["ifm_forward_seconds"], 3),
            f"{comparison['ifm_flops_per_second'] / 1e9:.1f}",
            _number(comparison["store_compute_seconds"], 3),
            f"{comparison['tmm_step_flops_per_second'] / 1e9:.1f}",
            _number(comparison["ifm_over_tmm_speed"]),
            _number(comparison["mac_ratio_training"], 1),
            _number(comparison["speedup_at_measured_speeds"], 1),
            _number(comparison["speedup"], 1),
        ]
        for comparison in record["comparisons"].values()
        if "ifm_flops_per_second" in comparison
    ]
    if not speed_rows:
        return []
    header = [
        "store path", "IFM forward (s)", "IFM GFLOP/s", "store compute (s)",
        "TMM step GFLOP/s", "IFM / TMM speed", "step MACs ratio",
        "speed-up at these speeds", "measured speed-up",
    ]  # fmt: skip
    return [
        "",
        "## Why the speed-up is not the MACs ratio",
        "",
        markdown_table(speed_rows, header),
        "",
        "IFM forward: the online variant's frozen IFM alone on the same batch. Store "
        "compute: the store path's step without its data wait. GFLOP/s: 2 x MACs per clip "
        "x clips / seconds (the TMM's step MACs counted forward + backward). The MACs ratio "
        "is the speed-up only at equal FLOP/s; at the measured speeds skipping the IFM "
        "gives (IFM forward + store compute) / store compute, which the measured speed-up "
        "misses by the data wait and the noise between runs.",
    ]


def _goal_lines(record: dict[str, Any]) -> list[str]:
    """The acceptance goals as measured here, one line each (none without any)."""
    goals = record["goals"]
    if not (goals["cheaper_than_r3d50"] or goals["store_speedup_at_least_80pct"]):
        return []
    lines = ["", "## Goals (measured here)", ""]
    for name, checks in goals["cheaper_than_r3d50"].items():
        lines.append(
            f"- {record['variants'][name]['label']} cheaper than R3D-50: time "
            f"{_yes(checks['time'])}, memory {_yes(checks['memory'])}"
        )
    for name, checks in goals["store_speedup_at_least_80pct"].items():
        lines.append(
            f"- {record['variants'][name]['label']}: speed-up >= 80% of the MACs ratio: "
            f"step ratio {_yes(checks['training_ratio_80pct'])}, forward ratio "
            f"{_yes(checks['forward_ratio_80pct'])}"
        )
    return lines


def _report_notes(record: dict[str, Any]) -> list[str]:
    """The run's notes, then the precisions every part ran in and how passes were pooled."""
    settings = record["settings"]
    precisions = {
        entry["label"]: entry["ifm_precision"]
        for entry in record["variants"].values()
        if entry.get("ifm_precision")
    }
    notes = list(record["notes"])
    trainable = settings.get("tmm_precision", "fp32")
    trained = (
        "the trainable part (TMM + head; all of R3D-50) trains in fp32"
        if trainable == "fp32"
        else "the trainable part (TMM + head; all of R3D-50) trains under bf16 autocast "
        "(weights and AdamW in fp32)"
    )
    if precisions:
        chosen = settings.get("ifm_precision") or "the presets' `auto`"
        notes.append(
            f"IFM precision ({chosen}): "
            + ", ".join(f"{label} {value}" for label, value in precisions.items())
            + f"; {trained}."
        )
    else:
        notes.append(trained[0].upper() + trained[1:] + ".")
    if settings.get("repeats", 1) > 1:
        notes.append(
            f"{settings['repeats']} passes over the variants, one after another; each "
            "variant's timed iterations are pooled over its passes (medians per pass in "
            "bench.json)."
        )
    return notes


def _time_range(seconds: list[float]) -> str:
    """Median (min-max) of the timed iterations: the spread shows how noisy the device was."""
    median = statistics.median(seconds)
    return f"{median:.3f} ({min(seconds):.3f}-{max(seconds):.3f})"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _worker_main(argv: Sequence[str]) -> int:
    """`python -m advise.bench JOB.json RESULT.json`: one variant in a process of its own,
    with glibc keeping freed memory as every training process does (`keep_freed_memory`)."""
    from advise.jobs import keep_freed_memory

    keep_freed_memory()
    job_file, result_file = (Path(arg) for arg in argv)
    result = measure_variant(json.loads(job_file.read_text()))
    result_file.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
