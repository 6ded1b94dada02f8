"""`advise visualize`: where a temporal module looks (the paper's Figure 7), frame by frame.

For one video, each model's activation map on its centre clip: rows of the figure are the
IFM's own last-layer tokens and one row per checkpoint; columns are the clip's frames. A map
is, per token, either

- "norm": the L2 norm over channels of the TMM's output [C, T, h, w] (for the IFM row: of its
  tokens), or
- "cam": a gradient-weighted class-activation map through the head (Grad-CAM on the TMM's
  output: channels weighted by the mean gradient of the predicted class's logit, summed,
  negative parts cut). For the IFM row "cam" is the norm, as the IFM has no head.

Each row's map is scaled to [0, 1] over the whole clip (so a row's changes over time show),
up-sampled to the frame and laid over it. Written as a PNG grid and an animated GIF.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from advise.api import Model, load, read_video
from advise.files import atomic_write

MAPS = ("norm", "cam")


@dataclass
class Row:
    """One row of the figure: its label and its map [T, h, w] (float, not yet scaled)."""

    label: str
    activation: Tensor


def clip_of(model: Model, video: str | Path) -> tuple[Tensor, Tensor]:
    """(normalised clip [1, T, 3, S, S], the same frames for display [T, S, S, 3] in [0, 1]):
    the test-time centre clip of `video` (num_frames segment centres, centre crop)."""
    frames = read_video(video, num_frames=model.config.data.num_frames)
    clip = model.preprocess(frames)  # [1, T, 3, S, S]
    prep = model.preprocessing
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    shown = (clip[0] * std + mean).clamp(0, 1).permute(0, 2, 3, 1)
    return clip, shown


def ifm_map(model: Model, clip: Tensor) -> Tensor:
    """Norm over channels of the IFM's tokens of `clip`: [T, h, w]."""
    with torch.no_grad():
        tokens = model.network.ifm(clip.to(model.device))
    return tokens[0].float().norm(dim=0).cpu()


def activation_map(model: Model, clip: Tensor, kind: str = "norm") -> Tensor:
    """The map [T, h, w] of `model`'s TMM output for `clip` [1, T, 3, S, S] (see module doc)."""
    if kind not in MAPS:
        raise ValueError(f"map must be one of {MAPS}, got {kind!r}")
    network = model.network
    with torch.no_grad():
        features = network.tmm(network.sfu(network.ifm(clip.to(model.device)))).float()
    if kind == "norm":
        return features[0].norm(dim=0).cpu()
    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = network.head(features)
        score = logits[0, int(logits[0].argmax())]
        (gradient,) = torch.autograd.grad(score, features)
    weights = gradient.mean(dim=(2, 3, 4), keepdim=True)
    return (weights * features).sum(dim=1)[0].clamp(min=0).detach().cpu()


def _scaled(activation: Tensor) -> Tensor:
    low, high = activation.min(), activation.max()
    return (activation - low) / (high - low) if high > low else torch.zeros_like(activation)


def overlays(rows: list[Row], shown: Tensor, alpha: float = 0.5) -> np.ndarray:
    """uint8 [rows + 1, T, S, S, 3]: the frames, then each row's map (jet) laid over them."""
    from matplotlib import colormaps

    size = shown.shape[1]
    colour = colormaps["jet"]
    images = [shown.numpy()]
    for row in rows:
        scaled = _scaled(row.activation)[:, None]  # [T, 1, h, w]
        up = F.interpolate(scaled, size=(size, size), mode="bilinear", align_corners=False)
        heat = colour(up[:, 0].numpy())[..., :3]  # [T, S, S, 3]
        images.append((1 - alpha) * shown.numpy() + alpha * heat)
    return (np.clip(np.stack(images), 0, 1) * 255 + 0.5).astype(np.uint8)


def save_grid(images: np.ndarray, labels: list[str], path: Path) -> None:
    """The PNG grid: one row per entry of `images` [R, T, S, S, 3], labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advise.report import save_figure

    num_rows, num_frames = images.shape[:2]
    figure, axes = plt.subplots(
        num_rows, num_frames, figsize=(1.3 * num_frames + 1.2, 1.3 * num_rows), squeeze=False
    )
    for row in range(num_rows):
        for frame in range(num_frames):
            axis = axes[row, frame]
            axis.imshow(images[row, frame])
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"frame {frame + 1}", fontsize=8)
        axes[row, 0].set_ylabel(labels[row], fontsize=8, rotation=0, ha="right", va="center")
    figure.tight_layout()
    save_figure(figure, path)


def save_gif(images: np.ndarray, path: Path, scale: int = 2, frame_ms: int = 250) -> None:
    """An animated GIF: at each time step, the rows side by side (scaled up `scale` times)."""
    from PIL import Image

    strips = np.concatenate(list(images), axis=2)  # [T, S, R * S, 3]
    pictures = [
        Image.fromarray(strip).resize(
            (strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST
        )
        for strip in strips
    ]
    buffer = io.BytesIO()
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0
    )
    atomic_write(path, buffer.getvalue())


def peak_in_box(
    activation: Tensor, boxes: np.ndarray, frame_size: tuple[int, int], crop: int
) -> tuple[float, float]:
    """(hit rate, chance rate) of a map [T, h, w] against boxes [T, 4] (x0, y0, x1, y1) in the
    original frames' pixels (frame_size = (H, W)), over frames whose box is not empty.

    A frame's hit: the centre of its map's peak token, mapped back through the test view
    (short side resized to `crop`, centre crop), lies in the box. Chance: the share of the
    map's tokens whose centres lie in the box (what a peak at a random token would score)."""
    height, width = frame_size
    scale = crop / min(height, width)
    left, top = (width * scale - crop) / 2, (height * scale - crop) / 2
    _, rows, columns = activation.shape
    ys = ((torch.arange(rows) + 0.5) * crop / rows + top) / scale  # token centres, frame px
    xs = ((torch.arange(columns) + 0.5) * crop / columns + left) / scale
    hits, chance, counted = 0, 0.0, 0
    for frame, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        if x1 <= x0 or y1 <= y0:
            continue
        inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        peak = int(activation[frame].argmax())
        hits += bool(inside.reshape(-1)[peak])
        chance += float(inside.float().mean())
        counted += 1
    return hits / max(counted, 1), chance / max(counted, 1)


def visualize(
    video: str | Path,
    checkpoints: list[str | Path],
    out: str | Path,
    labels: list[str] | None = None,
    kind: str = "norm",
) -> dict[str, Any]:
    """Write DIR/activations.png, DIR/activations.gif and DIR/activations.json (each row's
    peak token per frame, and each model's prediction) for `video` under each checkpoint."""
    from advise.plot import run_labels

    if labels is not None and len(labels) != len(checkpoints):
        raise ValueError(f"--labels: {len(labels)} labels for {len(checkpoints)} checkpoints")
    labels = labels or run_labels([_run_of(Path(path)) for path in checkpoints])
    models = [load(path, device="cpu") for path in checkpoints]
    clip, shown = clip_of(models[0], video)
    rows = [Row(f"IFM {models[0].config.ifm.name}", ifm_map(models[0], clip))]
    for label, model in zip(labels, models, strict=True):
        if model.preprocessing != models[0].preprocessing:
            raise ValueError(f"{model.source}: another IFM preprocessing than {models[0].source}")
        rows.append(Row(label, activation_map(model, clip, kind)))
    images = overlays(rows, shown)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(images, ["frames", *[row.label for row in rows]], out / "activations.png")
    save_gif(images, out / "activations.gif")
    record = {
        "video": str(video),
        "map": kind,
        "rows": [
            {
                "label": row.label,
                "grid": list(row.activation.shape[1:]),
                "peaks": [int(frame.argmax()) for frame in row.activation],
            }
            for row in rows
        ],  # fmt: skip
        "predictions": [
            {"label": label, **_top(model, clip)}
            for label, model in zip(labels, models, strict=True)
            if model.class_names
        ],  # fmt: skip
    }
    atomic_write(out / "activations.json", json.dumps(record, indent=2))
    return record


def _top(model: Model, clip: Tensor, top: int = 3) -> dict[str, list]:
    """The model's best classes for the figure's clip."""
    with torch.no_grad():
        probs = model.network(clip.to(model.device)).float().softmax(dim=1)[0].cpu()
    scores, indices = probs.topk(min(top, len(probs)))
    return {
        "classes": [model.class_names[index] for index in indices.tolist()],
        "scores": [round(float(score), 4) for score in scores],
    }


def _run_of(path: Path) -> Path:
    """The run folder of a checkpoint file (its label), or the folder given."""
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent
