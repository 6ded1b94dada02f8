"""The one builder that turns the config into modules."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advise.config import Config, ConfigError, IFMConfig
from advise.models.advise import AdViSe
from advise.models.heads import LinearHead, MLPHead
from advise.models.ifm import CombinedIFM, FrozenIFM, build_ifm
from advise.models.registry import TMM_KINDS
from advise.models.sfu import SFU


def resolve_precision(precision: str, device: torch.device) -> str:
    """The IFM's precision: `auto` -> bf16 where the device runs it natively, else fp32.

    Native bf16: CUDA GPUs that support it, and CPUs with AVX512-BF16 or AMX instructions.
    Elsewhere bf16 is emulated: on a CPU without them autocast made a ViT-B/16 forward 7x
    slower than fp32, while on an AVX512-BF16 CPU it ran 3.3x faster (see README). The TMM
    and head always run in fp32; the run records the precision used.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX)."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in ("avx512_bf16", "amx_bf16", "amx_tile"))


def build_frozen_ifm(config: IFMConfig, device: torch.device) -> FrozenIFM | CombinedIFM:
    """The frozen IFM of `config`. A random initialisation (only on request) is seeded, so
    every process builds the same weights and checkpoints can verify them by hash."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ifm = build_ifm(
            config.name,
            img_size=config.img_size,
            weights=config.weights,
            random_init=config.random_init,
            precision=resolve_precision(config.precision, device),
            layers=config.layers,
            layer_merge=config.layer_merge,
        )
    return ifm.to(device)


def build_model(
    config: Config,
    num_classes: int,
    ifm: FrozenIFM | CombinedIFM | None,
    token_dim: int | None = None,
    head: Callable[[int], nn.Module | None] | None = None,
) -> AdViSe:
    """IFM -> SFU -> TMM -> head, sized from the token width.

    `ifm` is built by the caller (it is shared between runs in the demo, and absent when the
    model only ever sees stored tokens); the width is read from it once, or given as
    `token_dim` (the channels of stored tokens) when there is no IFM. `head`, given the TMM's
    output width, may return a head of its own (a pretext's); by default, and where it returns
    None, the config's head with `num_classes` outputs.
    """
    if ifm is None and token_dim is None:
        raise ValueError("build_model needs the IFM or token_dim (the width sizes the TMM)")
    sfu_config, tmm_config = config.sfu, config.tmm
    in_dim = token_dim if ifm is None else ifm.embed_dim
    if sfu_config.channels is not None and sfu_config.channels > in_dim:
        raise ConfigError(
            f"sfu.channels must be in [1, {in_dim}] (the token width of ifm.name="
            f"{config.ifm.name}), got {sfu_config.channels}"
        )
    if ifm is not None and sfu_config.spatial is not None:
        grid = min(ifm.grid_size())
        if sfu_config.spatial > grid:
            raise ConfigError(
                f"sfu.spatial must be in [1, {grid}] (the token grid of ifm.name="
                f"{config.ifm.name} at {ifm.img_size} px), got {sfu_config.spatial}"
            )
    has_sfu = any(
        size is not None for size in (sfu_config.spatial, sfu_config.channels, sfu_config.adapter)
    )
    sfu = (
        SFU(sfu_config.spatial, sfu_config.channels, sfu_config.adapter, in_dim)
        if has_sfu
        else nn.Identity()
    )
    width = sfu.out_dim(in_dim) if has_sfu else in_dim
    tmm = TMM_KINDS[tmm_config.kind](width, getattr(tmm_config, tmm_config.kind, None))
    width = tmm.out_dim
    custom_head = head(width) if head is not None else None
    head_module = custom_head if custom_head is not None else build_head(config, width, num_classes)
    if tmm_config.frozen:  # linear probing: only the head learns; AdViSe keeps these in eval
        sfu.requires_grad_(False)
        tmm.requires_grad_(False)
    return AdViSe(ifm, sfu, tmm, head_module)


def build_head(config: Config, in_dim: int, num_classes: int) -> nn.Module:
    if config.head.kind == "linear":
        return LinearHead(in_dim, num_classes, dropout=config.head.dropout)
    return MLPHead(in_dim, num_classes, hidden=config.head.hidden, dropout=config.head.dropout)
