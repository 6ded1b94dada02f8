"""AdamW with linear warm-up and a cosine decay, as in the paper's configuration.

The schedule is a pure function of the optimisation step (`lr_at`), so a resumed run computes
the same learning rate as an uninterrupted one without any scheduler state to save.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# The batch size a base learning rate refers to (the linear scaling rule of Goyal et al. 2017,
# with the reference of 256 samples used by MAE-style configurations).
REFERENCE_BATCH = 256


def scaled_lr(base_lr: float, batch_size: int, reference_batch: int = REFERENCE_BATCH) -> float:
    """Learning rate for `batch_size` by the linear scaling rule.

    `lr = base_lr * batch_size / reference_batch`: a base rate tuned for `reference_batch`
    samples per step is scaled in proportion to the actual global batch (all devices together).
    Example: base 1e-3 at batch 32 -> 1.25e-4.
    """
    if batch_size < 1 or reference_batch < 1:
        raise ValueError(
            f"batch_size and reference_batch must be >= 1, got {batch_size} and {reference_batch}"
        )
    return base_lr * batch_size / reference_batch


def lr_at(
    step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0
) -> float:
    """Learning rate at optimisation step `step` (0-based).

    - Warm-up, `step < warmup_steps`: linear from 0 at step 0 towards `peak_lr`
      (`peak_lr * step / warmup_steps`).
    - Then a half cosine from `peak_lr` at `warmup_steps` down to `min_lr` at `total_steps`.
    - `step >= total_steps`: `min_lr`.

    `warmup_steps` larger than `total_steps` is clipped to `total_steps` (a short run then
    never reaches `peak_lr`); `warmup_steps=0` starts the cosine at `peak_lr` directly.
    """
    if step < 0 or total_steps < 1 or warmup_steps < 0:
        raise ValueError(
            "need step >= 0, total_steps >= 1, warmup_steps >= 0; got "
            f"step={step}, total_steps={total_steps}, warmup_steps={warmup_steps}"
        )
    warmup_steps = min(warmup_steps, total_steps)
    if step >= total_steps:
        return min_lr
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(
    params_named: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed AdamW group.

    Parameters with at most one dimension (biases, norm scales and shifts) get no weight decay;
    matrices and convolution kernels get `weight_decay`. Frozen parameters
    (`requires_grad=False`, e.g. the image model) and repeats of a shared parameter are left
    out. Groups keep parameter names (torch stores them as `param_names`), which lets a resumed
    optimiser check that it holds the same parameters. Empty groups are dropped.
    """
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for name, param in params_named:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if param.ndim <= 1 else decay).append((name, param))
    groups = [
        {"params": decay, "weight_decay": weight_decay, "group_name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group_name": "no_decay"},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(
    params_named: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `params_named` (e.g. `model.named_parameters()`).

    Weight decay applies to weights only, not to biases and norm parameters (see
    `parameter_groups`). `lr` is the starting rate; the training loop overwrites it every step
    with `set_lr(optimizer, lr_at(...))`.
    """
    groups = parameter_groups(params_named, weight_decay)
    if not groups:
        raise ValueError("build_optimizer: no trainable parameters (all are frozen or none given)")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of `optimizer` to `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
