"""Parameter and multiply-accumulate (MAC) counts, the units of the paper's cost tables.

`count_macs` runs one forward pass under `torch.utils.flop_counter.FlopCounterMode`, which
counts convolutions and matrix products (mm, addmm, bmm, attention) as 2 FLOPs per MAC and
ignores normalisation, activations and additions. The paper's "GFLOPs" are such MACs of the
convolution weights only, so the two agree. To count a large module for free, build it and its
inputs on the meta device (`with torch.device("meta"): ...`): the counter needs shapes only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(module: nn.Module, *inputs: Tensor) -> int:
    """Multiply-accumulates of `module(*inputs)` (convolutions and matrix products only).

    The forward runs in eval mode under `torch.no_grad()`, so batch-norm running statistics are
    left untouched; each submodule's train/eval flag is restored afterwards.
    """
    training_flags = {submodule: submodule.training for submodule in module.modules()}
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        for submodule, training in training_flags.items():
            submodule.training = training
    return counter.get_total_flops() // 2


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters once); buffers are not parameters."""
    return sum(
        parameter.numel()
        for parameter in module.parameters()
        if parameter.requires_grad or not trainable_only
    )
