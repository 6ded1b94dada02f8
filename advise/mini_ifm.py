"""The mini IFMs: small timm models trained once on still digit images, then used frozen.

No image foundation model can be downloaded on an offline machine, so the built-in benchmark
ships its own: a narrow ResNet-style network built from timm's ByobNet blocks that maps a
64 x 64 frame to an 8 x 8 grid of 96-dim tokens (about 18 M multiply-accumulates per frame).
A second family, the mini ViT (IFM `mini-vit`), gives the same grid from a transformer: a
hybrid ViT whose patch embedding is a ConvNet trunk of the mini IFM's shape (its own weights),
then timm ViT blocks that mix the tokens by attention, trained by the same recipe on the same
stills. Each is trained only on single stills of the benchmark's kind (`render_stills`: digit
sprite on a textured background, labelled by digit), so it never sees motion: whatever a
temporal module learns about time on top of it, it learns from the pretext task and the video
labels.

The weights are trained on first use and cached as safetensors in ``$XDG_CACHE_HOME/advise``
(default ``~/.cache/advise``) under a name that carries a hash of the recipe, so a changed
recipe trains anew instead of loading stale weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg
from torch import Tensor, nn

from advise.data import synthetic
from advise.files import atomic_write

MINI_IMG_SIZE = 64
# Per-channel statistics of `render_stills` images in [0, 1] (measured on 2000 stills).
MINI_MEAN = (0.48, 0.47, 0.50)
MINI_STD = (0.2, 0.2, 0.2)
MINI_EMBED_DIM = 96
MINI_NUM_CLASSES = 10

# The training recipe; any change here changes the cache file name (see `recipe_tag`).
DEFAULT_STEPS = 1200
DEFAULT_SEED = 0
BATCH_SIZE = 64
PEAK_LR = 3e-3
# the families and their peak learning rates (the ViT's was picked on held-out stills: README)
PEAK_LRS = {"convnet": PEAK_LR, "vit": 1e-3}
FAMILIES = tuple(PEAK_LRS)
FILE_STEMS = {"convnet": "mini_ifm", "vit": "mini_vit"}  # a family's cache file name begins so
WEIGHT_DECAY = 0.01
WARMUP_STEPS = 20
# Curriculum: the share of full-difficulty stills in a batch grows linearly from 0 to 1 over
# these steps; the rest are easy stills (large upright black/white digit, no clutter). From
# the full distribution alone the network sits at chance for many hundreds of steps.
CURRICULUM_STEPS = 250
NUM_EASY_STILLS = 1000
NUM_TRAIN_STILLS = 8000
NUM_HELDOUT_STILLS = 1000
RECIPE_VERSION = 1
TRAIN_THREADS = 1  # part of the recipe: other thread counts give other weights


def _model_config() -> ByoModelCfg:
    # Stem stride 2, then stages of stride 2, 2, 1: a 64 x 64 frame becomes an 8 x 8 grid.
    return ByoModelCfg(
        blocks=(
            ByoBlockCfg(type="basic", d=1, c=32, s=2, br=1.0),
            ByoBlockCfg(type="basic", d=1, c=64, s=2, br=1.0),
            ByoBlockCfg(type="basic", d=1, c=MINI_EMBED_DIM, s=1, br=1.0),
        ),
        stem_type="3x3",
        stem_pool="",
        stem_chs=24,
        num_features=0,
    )


def build_mini_ifm_model() -> nn.Module:
    """The mini IFM architecture, randomly initialised (timm ByobNet).

    ``forward_features``: [B, 3, 64, 64] (normalised with MINI_MEAN / MINI_STD) ->
    [B, 96, 8, 8]; ``forward`` adds a 10-way digit classifier. ``pretrained_cfg`` carries the
    normalisation and input size for the IFM wrapper.
    """
    # zero_init_last=False: with zero-initialised residual branches this narrow net sat at
    # chance for hundreds of steps on the still images; with the default init it learns at once.
    model = ByobNet(_model_config(), num_classes=MINI_NUM_CLASSES, zero_init_last=False)
    model.pretrained_cfg = _pretrained_cfg("advise_mini_ifm")
    model.default_cfg = model.pretrained_cfg
    return model


def _pretrained_cfg(architecture: str) -> dict:
    """The normalisation and input size a mini model carries for the IFM wrapper."""
    return {
        "architecture": architecture,
        "mean": MINI_MEAN,
        "std": MINI_STD,
        "input_size": (3, MINI_IMG_SIZE, MINI_IMG_SIZE),
        "interpolation": "bilinear",
        "num_classes": MINI_NUM_CLASSES,
    }


# The mini ViT: a hybrid ViT (as the ViT paper's R50+ViT): the mini ConvNet's stem and stages,
# trained from their own initial weights, make the 8 x 8 patch embedding, then timm ViT blocks
# mix the tokens by attention; no class token (the tokens are the grid), average-pooled for the
# training classifier. A plain ViT (8 px patches) and one with a 3-convolution stem stayed
# at or below chance on held-out stills under this recipe (README, Table 4 on the benchmark).
VIT_ARCHITECTURE = {"embed_dim": MINI_EMBED_DIM, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0}
VIT_SEED_OFFSET = 1_000_003  # the ViT's trunk does not start from the ConvNet's initial weights


def build_mini_vit_model(img_size: int = MINI_IMG_SIZE) -> nn.Module:
    """The mini ViT, randomly initialised (timm VisionTransformer whose patch embedding is the
    mini ConvNet's trunk, `HybridEmbed`): ``forward_features`` [B, 3, S, S] (normalised with
    MINI_MEAN / MINI_STD; S = `img_size`, 64 as trained) -> [B, (S / 8)^2, 96] patch tokens;
    ``forward`` adds a 10-way digit classifier."""
    from timm.layers import HybridEmbed
    from timm.models.vision_transformer import VisionTransformer

    trunk = ByobNet(_model_config(), num_classes=0, zero_init_last=False)
    model = VisionTransformer(
        img_size=img_size, patch_size=1, class_token=False, global_pool="avg",
        num_classes=MINI_NUM_CLASSES, **VIT_ARCHITECTURE,
        embed_layer=partial(HybridEmbed, backbone=nn.Sequential(trunk.stem, trunk.stages)),
    )  # fmt: skip
    model.pretrained_cfg = _pretrained_cfg("advise_mini_vit")
    model.default_cfg = model.pretrained_cfg
    return model


def build_mini_model(family: str = "convnet", img_size: int = MINI_IMG_SIZE) -> nn.Module:
    """A mini IFM of `family` ("convnet" or "vit"), randomly initialised."""
    if family not in FAMILIES:
        raise ValueError(f"mini IFM family must be one of {FAMILIES}, got {family!r}")
    return build_mini_ifm_model() if family == "convnet" else build_mini_vit_model(img_size)


def recipe_tag(
    steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED, family: str = "convnet"
) -> str:
    """A short hash of everything that decides the trained weights."""
    recipe = {
        "version": RECIPE_VERSION,
        "render_version": synthetic.RENDER_VERSION,
        "architecture": repr(_model_config()),
        "zero_init_last": False,
        "steps": steps,
        "seed": seed,
        "batch_size": BATCH_SIZE,
        "peak_lr": PEAK_LRS[family],
        "weight_decay": WEIGHT_DECAY,
        "warmup_steps": WARMUP_STEPS,
        "curriculum_steps": CURRICULUM_STEPS,
        "stills": (NUM_EASY_STILLS, NUM_TRAIN_STILLS, NUM_HELDOUT_STILLS),
        "mean_std": (MINI_MEAN, MINI_STD),
    }
    if family == "vit":  # the ConvNet's recipe (and cache name) stays as it was
        recipe["architecture"] = {"trunk": repr(_model_config()), "vit": VIT_ARCHITECTURE}
        recipe["seed_offset"] = VIT_SEED_OFFSET
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"s{steps}-{digest[:10]}"


def _to_tensor(images: np.ndarray) -> Tensor:
    """uint8 [N, 64, 64, 3] -> normalised float [N, 3, 64, 64]."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # [N, 3, H, W]
    mean = torch.tensor(MINI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(MINI_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


@torch.no_grad()
def digit_accuracy(model: nn.Module, images: np.ndarray, digits: np.ndarray) -> float:
    """Top-1 digit accuracy of `model` (eval mode) on uint8 stills [N, 64, 64, 3]."""
    model.eval()
    correct = 0
    for start in range(0, len(images), 500):
        logits = model(_to_tensor(images[start : start + 500]))
        correct += int((logits.argmax(1).numpy() == digits[start : start + 500]).sum())
    return correct / max(1, len(images))


def train_mini_ifm(
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
    family: str = "convnet",
) -> nn.Module:
    """Train a mini IFM of `family` on still digit images; returns it in eval mode.

    AdamW (the family's peak lr, PEAK_LRS; linear warm-up, cosine to 0), batch BATCH_SIZE,
    cross-entropy on the main digit, over fixed sets of rendered stills (easy ones first, see
    CURRICULUM_STEPS) with random 0-4 px translations and RGB channel permutations. The
    held-out digit accuracy (full-difficulty stills of digit images the training never used)
    is stored as ``model.heldout_accuracy``.

    Trains on one thread whatever the caller's setting: the weights depend on the thread
    count (a convolution's weight gradient sums in another order on two threads), and every
    caller must get the weights the cache file name promises.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train(steps, seed, progress, family)
    finally:
        torch.set_num_threads(threads)


def _train(steps: int, seed: int, progress: bool, family: str) -> nn.Module:
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    # Short runs (tests) render only as many stills as they can use.
    seen = steps * BATCH_SIZE
    easy_images, easy_digits, _ = synthetic.render_stills(
        rng, min(NUM_EASY_STILLS, seen), "train", easy=True
    )
    hard_images, hard_digits, _ = synthetic.render_stills(rng, min(NUM_TRAIN_STILLS, seen), "train")
    heldout_images, heldout_digits, _ = synthetic.render_stills(
        rng, min(NUM_HELDOUT_STILLS, max(100, seen // 8)), "heldout"
    )
    easy_inputs, easy_labels = _to_tensor(easy_images), torch.from_numpy(easy_digits)
    hard_inputs, hard_labels = _to_tensor(hard_images), torch.from_numpy(hard_digits)

    if family == "vit":
        torch.manual_seed(seed + VIT_SEED_OFFSET)
    model = build_mini_model(family)
    peak = PEAK_LRS[family]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0}],
        lr=peak,
    )
    model.train()
    show = progress and sys.stderr.isatty()
    bar = tqdm(range(steps), desc=f"mini IFM ({family})", disable=not show)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, steps, peak)
        num_hard = round(BATCH_SIZE * min(1.0, step / CURRICULUM_STEPS))
        easy = torch.randint(len(easy_inputs), (BATCH_SIZE - num_hard,), generator=generator)
        hard = torch.randint(len(hard_inputs), (num_hard,), generator=generator)
        images = torch.cat([easy_inputs[easy], hard_inputs[hard]])  # [B, 3, 64, 64]
        labels = torch.cat([easy_labels[easy], hard_labels[hard]])
        images = _augment(images, generator)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    model.heldout_accuracy = digit_accuracy(model, heldout_images, heldout_digits)
    return model


def _learning_rate(step: int, steps: int, peak: float = PEAK_LR) -> float:
    """Linear warm-up over WARMUP_STEPS, then cosine from `peak` to 0."""
    if step < WARMUP_STEPS:
        return peak * (step + 1) / WARMUP_STEPS
    fraction = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return 0.5 * peak * (1 + math.cos(math.pi * fraction))


def _augment(images: Tensor, generator: torch.Generator, max_shift: int = 4) -> Tensor:
    """Random translation (up to `max_shift` px, reflect padding) and RGB channel permutation
    per image: [B, 3, H, W] -> [B, 3, H, W]."""
    size = images.shape[-1]
    padded = F.pad(images, (max_shift,) * 4, mode="reflect")  # [B, 3, H + 2m, W + 2m]
    offsets = torch.randint(2 * max_shift + 1, (len(images), 2), generator=generator).tolist()
    channels = [torch.randperm(3, generator=generator) for _ in range(len(images))]
    return torch.stack(
        [
            padded[i, order, y : y + size, x : x + size]
            for i, ((x, y), order) in enumerate(zip(offsets, channels, strict=True))
        ]
    )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/advise``, or ``~/.cache/advise``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "advise"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (POSIX flock; a no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: the atomic rename still protects us
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mini_ifm_path(
    cache_dir: Path | None = None,
    seed: int = DEFAULT_SEED,
    steps: int = DEFAULT_STEPS,
    family: str = "convnet",
) -> Path:
    """Where the recipe's trained weights (of `family`, `steps` and training seed `seed`) are
    cached (the file may not exist yet)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache_dir / f"{FILE_STEMS[family]}-{recipe_tag(steps, seed, family)}.safetensors"


def cached_mini_ifm(
    cache_dir: Path | None = None, seed: int = DEFAULT_SEED, family: str = "convnet"
) -> Path | None:
    """The cached trained weights of the default recipe, or None (never trains)."""
    path = mini_ifm_path(cache_dir, seed, family=family)
    return path if path.is_file() else None


def ensure_mini_ifm(
    cache_dir: Path | None = None,
    progress: bool = True,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    family: str = "convnet",
) -> Path:
    """Path of the trained mini IFM weights (safetensors), training them on first use.

    The file is ``<cache_dir>/<FILE_STEMS[family]>-<recipe_tag>.safetensors`` and loads
    strictly into `build_mini_model(family)` (classifier included). Concurrent callers wait on
    a lock file and the weights appear by atomic rename, so nobody reads a half-written file.
    """
    path = mini_ifm_path(cache_dir, seed, steps, family)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        return path
    with _file_lock(path.with_suffix(".lock")):
        if path.is_file():  # another process trained it while we waited
            return path
        if progress:
            print(f"Training the mini IFM ({family}) once ({steps} steps); cached at {path}")
        start = time.perf_counter()
        model = train_mini_ifm(steps=steps, seed=seed, progress=progress, family=family)
        metadata = {
            "recipe_tag": recipe_tag(steps, seed, family),
            "heldout_digit_accuracy": f"{model.heldout_accuracy:.4f}",
            "train_seconds": f"{time.perf_counter() - start:.1f}",
        }
        tensors = {name: value.contiguous() for name, value in model.state_dict().items()}
        atomic_write(path, save(tensors, metadata=metadata))
        if progress:
            print(f"Mini IFM held-out still digit accuracy: {model.heldout_accuracy:.3f}")
    return path


def load_mini_ifm(path: Path | None = None, family: str = "convnet") -> nn.Module:
    """The trained mini IFM of `family` in eval mode (from `path`, or `ensure_mini_ifm()`)."""
    model = build_mini_model(family)
    model.load_state_dict(load_file(str(path or ensure_mini_ifm(family=family))), strict=True)
    return model.eval()
