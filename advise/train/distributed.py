"""Data-parallel training across processes (DDP), launched by torchrun.

`torchrun --nproc_per_node=N -m advise.cli pretrain ...` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK in their environment; `init_from_env` joins them into one process
group (NCCL on CUDA, gloo on CPU). Everything else asks this module who it is:

- `train.batch_size` stays the GLOBAL batch: every step, the processes split one global batch
  of the (seed, epoch) order between them (`rank_slice`), so N processes see exactly the
  batches one process would, and the linear learning-rate scaling is unchanged.
- Only rank 0 writes logs, checkpoints and result files; all ranks resume from the same
  checkpoint.
- `SyncBatchNorm` (`train.sync_bn=true`) computes batch-norm statistics over the global
  batch. torch's own `nn.SyncBatchNorm` runs on GPUs only; `GlobalBatchNorm` here does the
  same on CPU (gloo) with a differentiable all-reduce, so a CPU run can match one process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the torchrun process group when launched with WORLD_SIZE > 1; returns whether
    this is a distributed run. NCCL when CUDA is available, gloo otherwise."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU (LOCAL_RANK) in a distributed CUDA run."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank_slice(items: Sequence[int], batch_size: int) -> list[int]:
    """This rank's share of an ordered list cut into global batches of `batch_size`: from
    every batch, the rank-th of `world_size` equal parts (contiguous)."""
    size = world_size()
    if batch_size % size:
        raise ValueError(f"train.batch_size={batch_size} must be divisible by {size} processes")
    part = batch_size // size
    start = rank() * part
    return [
        item
        for offset in range(0, len(items), batch_size)
        for item in items[offset + start : offset + start + part]
    ]


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of `values` over all processes (float64 on CPU: gloo)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's `value`, in rank order (picklable objects)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every process."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics cover the global batch of all processes.

    Sums and squared sums per channel are all-reduced (differentiably, so gradients flow
    through the statistics as in one process); in eval mode, or in a single process, it is
    ordinary batch norm. Same parameters and buffers as the layer it replaces, so state
    dicts and checkpoints are interchangeable.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        count = torch.tensor([input.numel() / channels], dtype=input.dtype)
        stats = torch.cat([input.sum(dims), (input * input).sum(dims), count])
        with warnings.catch_warnings():  # deprecated in favour of a collective without autograd
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(stats)  # sum over processes, with a gradient
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels : 2 * channels] / total - mean * mean  # biased, as batch norm
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 0.1
                unbiased = var * total / (total - 1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = [1, channels] + [1] * (input.dim() - 2)
        normalised = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every trainable batch-norm layer of `module` computing global-batch statistics: torch's
    SyncBatchNorm on GPUs, `GlobalBatchNorm` elsewhere.

    Only plain BatchNorm1d/2d/3d layers with trainable parameters are converted: a frozen
    IFM's layers stay as they are (always in eval mode, and subclasses such as timm's
    BatchNormAct2d carry an activation a plain replacement would drop)."""
    kind = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm
    return _convert(module, kind)


_PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _convert(module: nn.Module, kind: type[_BatchNorm]) -> nn.Module:
    trainable = any(parameter.requires_grad for parameter in module.parameters(recurse=False))
    if type(module) in _PLAIN_BATCH_NORMS and trainable:
        converted = kind(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        converted.load_state_dict(module.state_dict())
        converted.to(next(module.parameters()).device)
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        setattr(module, name, _convert(child, kind))
    return module
