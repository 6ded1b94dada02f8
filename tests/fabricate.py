"""Tiny real video datasets for end-to-end tests (moving-square clips, UCF101 layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from advise.data.video import write_video


def moving_square(num_frames: int, size: int, velocity: tuple[int, int], seed: int) -> np.ndarray:
    """[T, size, size, 3] uint8: a bright square moving at `velocity` px/frame over noise."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(num_frames, size, size, 3), dtype=np.uint8)
    y, x = rng.integers(0, size, 2)
    for t in range(num_frames):
        top, left = (y + velocity[0] * t) % (size - 8), (x + velocity[1] * t) % (size - 8)
        frames[t, top : top + 8, left : left + 8] = (230, 200, 40)
    return frames


def ucf_tree(
    root: Path,
    classes: tuple[str, ...] = ("Left", "Right"),
    train_per_class: int = 3,
    test_per_class: int = 2,
    num_frames: int = 24,
    size: int = 32,
) -> Path:
    """A UCF101-layout tree of .mp4 files: class c moves horizontally at +-(c+1) px/frame."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classInd.txt").write_text(
        "".join(f"{i + 1} {name}\n" for i, name in enumerate(classes))
    )
    train, test = [], []
    for label, name in enumerate(classes):
        velocity = (0, (label + 1) * (1 if label % 2 else -1))
        for i in range(train_per_class + test_per_class):
            relative = f"{name}/v_{name}_g{i:02d}.mp4"
            frames = moving_square(num_frames, size, velocity, seed=label * 100 + i)
            write_video(root / relative, frames, fps=25)
            if i < train_per_class:
                train.append(f"{relative} {label + 1}\n")
            else:
                test.append(f"{relative}\n")
    (root / "trainlist01.txt").write_text("".join(train))
    (root / "testlist01.txt").write_text("".join(test))
    return root


def tiny_config(path: Path, **sections) -> Path:
    """A YAML config over the demo preset with a random-init mini IFM at 32 px, tiny TMM."""
    values = {
        "base": "demo",
        "ifm": {"random_init": True, "img_size": 32},
        "tmm": {"hidden": 8, "out": 16},
        "head": {"hidden": 16},
        "data": {"num_workers": 0, "num_frames": 4, "stride": 1},
        "pretext": {"clips_per_video": 2},
        "optim": {"base_lr": 0.5, "warmup_epochs": 1},
        "train": {"epochs": 2, "batch_size": 2, "log_every": 1, "threads": 1},
        "eval": {"num_clips": 2, "num_crops": 1, "batch_size": 2},
    }
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path
