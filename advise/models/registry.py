"""The table of temporal modules: `tmm.kind` -> a builder.

A builder takes the token width it receives (after the SFU) and the kind's own config section
(`tmm.<kind>`, a dataclass in `advise.config`; None for a kind without one) and returns an
`nn.Module` mapping [B, in_dim, T, h, w] -> [B, out_dim, T', h', w'] that says its `in_dim` and
`out_dim`. A new temporal module is its file, one line here, its config section and a preset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from advise.models.tmm import BottleneckTMM, IdentityTMM

TMM_KINDS: dict[str, Callable[[int, Any], nn.Module]] = {
    "bottleneck": BottleneckTMM.from_config,
    "none": IdentityTMM,  # the average-pooling baseline: the head pools the tokens directly
}
