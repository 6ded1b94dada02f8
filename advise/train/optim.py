"""AdamW with linear warm-up and a cosine decay, as in the paper's configuration.

The schedule is a pure function of the optimisation step (`lr_at`), so a resumed run computes
the same learning rate as an uninterrupted one without any scheduler state to save.
"""

from __future__ import annotations

import bisect
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


def schedule_warnings(
    total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float
) -> list[str]:
    """What is wrong with a run's learning rates (`lr_at` at steps 0..total_steps-1), one
    sentence each for `warnings.warn`; empty when nothing is. Steps are named from 1, as the
    training log counts them.

    - A warm-up of at least `total_steps`: the lr never reaches `peak_lr`.
    - Steps whose lr is exactly 0: their optimiser step leaves the weights as they are. With
      any warm-up this includes the first step, as `lr_at` ramps up from 0 at step 0; that
      step alone, in a run whose warm-up ends, is the schedule working as meant (MAE's
      warm-up starts from 0 too) and is not warned about.
    - A `peak_lr` of 0.

    A run of no steps (`total_steps=0`, e.g. `train.epochs=0`) gets none. A few dozen `lr_at`
    calls, however long the run.
    """
    if total_steps < 1:
        return []
    found = []
    if warmup_steps >= total_steps:
        highest = lr_at(total_steps - 1, total_steps, warmup_steps, peak_lr, min_lr)
        found.append(
            f"the warm-up of {warmup_steps} steps covers the whole run of {total_steps} "
            f"{_steps(total_steps)}: the lr never reaches its peak {peak_lr:.2e} (the last step "
            f"trains at {highest:.2e}); lower optim.warmup_epochs or raise train.epochs"
        )
    zero = _zero_lr_steps(total_steps, warmup_steps, peak_lr, min_lr)
    if zero == [range(0, 1)] and 0 < warmup_steps < total_steps and peak_lr:
        zero = []  # only the linear warm-up's first step (as MAE's): expected, not a mistake
    if zero:
        count = sum(len(steps) for steps in zero)
        names = ", ".join(
            str(steps.start + 1) if len(steps) == 1 else f"{steps.start + 1}-{steps.stop}"
            for steps in zero
        )
        why = " (the linear warm-up starts from 0)" if zero[0].start == 0 and warmup_steps else ""
        verb = "trains" if count == 1 else "train"
        found.append(
            f"{_steps(count)} {names} of {total_steps} {verb} at lr 0{why}: the optimiser "
            f"leaves the weights as they are"
        )
    if peak_lr == 0:
        found.append(
            "the peak lr is 0 (optim.base_lr x train.batch_size / optim.reference_batch): "
            "raise optim.base_lr"
        )
    return found


def _steps(count: int) -> str:
    return "step" if count == 1 else "steps"


def _zero_lr_steps(
    total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float
) -> list[range]:
    """The steps (0-based ranges) at which `lr_at` gives exactly 0.

    The lr is monotone within each phase (the linear warm-up; the half cosine, falling from
    `peak_lr` to `min_lr`, or rising when `min_lr` is the larger), so a phase's zero steps are
    all of it, a run at one of its ends, or none; a bisection finds where such a run ends.
    """

    def is_zero(step: int) -> bool:
        return lr_at(step, total_steps, warmup_steps, peak_lr, min_lr) == 0

    warmup = min(warmup_steps, total_steps)
    found: list[range] = []
    for phase in (range(0, warmup), range(warmup, total_steps)):
        if not phase:
            continue
        first, last = is_zero(phase[0]), is_zero(phase[-1])
        if first and last:
            zero = phase
        elif first:  # zero up to the first non-zero step
            end = bisect.bisect_left(phase, True, key=lambda step: not is_zero(step))
            zero = phase[:end]
        elif last:  # zero from the first zero step on
            zero = phase[bisect.bisect_left(phase, True, key=is_zero) :]
        else:
            continue
        if found and found[-1].stop == zero.start:  # one run across both phases
            zero = range(found.pop().start, zero.stop)
        found.append(zero)
    return found
