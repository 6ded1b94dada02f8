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
from advise.models.tmm_conv3d import Conv3dTMM
from advise.models.tmm_swin import SwinTMM
from advise.models.tmm_transformer import TransformerTMM

TMM_KINDS: dict[str, Callable[[int, Any], nn.Module]] = {
    "bottleneck": BottleneckTMM.from_config,
    "conv3d": Conv3dTMM.from_config,
    "transformer": TransformerTMM.from_config,
    "swin": SwinTMM.from_config,
    "none": IdentityTMM,  # the average-pooling baseline: the head pools the tokens directly
}
