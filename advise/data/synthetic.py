"""The built-in benchmark: procedurally rendered digit videos in the UCF101 layout.

Handwritten digit sprites (scikit-learn's bundled 8 x 8 digits, upscaled and coloured) move
over smooth, periodic noise textures seen through a jittering, panning camera, with distractor
sprites, occluding bars and pixel noise. Three tasks share one renderer:

- ``spatial``: 10 classes, label = which digit; the motion is a random motion program
  (like UCF101: appearance decides).
- ``temporal``: 10 classes = 5 time-reversal pairs of motion programs; the digit is random
  (like Diving48: motion decides). Class ``2k + 1`` is rendered as class ``2k`` with its frame
  order reversed, so both classes have the same distribution of frames and a model that
  ignores frame order is capped near 50%.
- ``pool``: unlabeled videos for playback-rate perception. Every motion is a smooth periodic
  function with period exactly the video length, so clips whose indices wrap around the end
  (mod the length) see no seam that could give the playback rate away.

Everything is a pure function of a ``numpy.random.Generator``; :func:`generate` derives one per
video from ``(seed, task, class, index)`` and writes H.264 ``.mp4`` files.
"""

from __future__ import annotations

import json
import math
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from advise.files import atomic_write

FRAME_SIZE = 64
FPS = 25
# Side of the square periodic background texture, in pixels (the camera window wraps around it).
TEXTURE_SIZE = 128
# Side of the upscaled digit image the sprites are sampled from, in pixels.
ATLAS_SIZE = 32
# Bump when the renderer's output changes, so cached trees and manifests are rebuilt.
RENDER_VERSION = 1

TASKS: dict[str, tuple[str, ...]] = {
    "spatial": tuple(f"Digit{digit}" for digit in range(10)),
    # Class 2k is a motion program, class 2k + 1 its exact time reversal.
    "temporal": (
        "MoveLeft",
        "MoveRight",
        "MoveUp",
        "MoveDown",
        "CircleClockwise",
        "CircleAnticlockwise",
        "Grow",
        "Shrink",
        "FadeIn",
        "FadeOut",
    ),
    "pool": ("unlabeled",),
}
NUM_FRAMES = {"spatial": 32, "temporal": 32, "pool": 96}
# Total number of videos `generate` writes when `num_videos` is None.
DEFAULT_NUM_VIDEOS = {"spatial": 360, "temporal": 360, "pool": 200}
# Fraction of each class's videos that go to the training list (16 of 36 by default); the rest
# are test videos. The demo's point is a low-label fine-tuning split.
TRAIN_FRACTION = 4 / 9
# Stable integers mixed into every video's seed.
_TASK_CODES = {"spatial": 1, "temporal": 2, "pool": 3}
MANIFEST_NAME = "synthetic.json"

# Motion programs: index k of the temporal pairs; class 2k plays it forwards, 2k + 1 backwards.
PROGRAMS = ("move_x", "move_y", "circle", "scale", "fade")

# Magnitudes of the motion programs over a whole 32-frame video: (low, high) of a uniform draw.
# Tuned with the mini IFM's 8 x 8 tokens and 8 sampled frames: a kernel-3 temporal module
# trained from scratch on 16 videos per class reaches about 65-70% top-1 on `temporal`, while
# frame-order-invariant models stay below 20% (they cannot even tell the pairs apart well).
MOVE_PIXELS = (14.0, 28.0)  # total displacement of the main sprite
CIRCLE_RADIANS = (4.5, 7.0)  # angle swept along a circular path
CIRCLE_RADIUS = (8.0, 14.0)  # radius of that path, in pixels
SCALE_LOG_RATIO = (0.5, 1.0)  # log(final size / initial size)
FADE_OPACITY = (0.5, 0.9)  # opacity change
CAMERA_PAN_PIXELS = 4.0  # the camera pans up to this many pixels, in any direction
CAMERA_JITTER_PIXELS = 0.35  # standard deviation of per-frame camera shake
SPRITE_JITTER_PIXELS = 0.25  # standard deviation of per-frame sprite shake
# Mixed motion in a scene: probabilities of (nothing, a distractor sprite performing a program
# of another pair, the main sprite also performing a weaker program of another pair).
MIXED_MOTION_P = (0.5, 0.25, 0.25)
SECONDARY_SCALE = 0.5
OCCLUDER_P = 0.2
STILL_OCCLUDER_P = 0.15
DISTRACTOR_P = 0.8  # probability of a distractor digit in a still
# How far a sprite colour may stray from grey (luminance contrast does the work; strong
# random hues slow the mini IFM's learning a lot).
COLOUR_SATURATION = 0.25
SPRITE_CONTRAST = (0.45, 0.7)  # mean-intensity difference between sprite and background
STILL_ANGLE = 0.6  # the main digit of a still is rotated by up to this many radians
NOISE_STD = (0.01, 0.03)  # per-pixel Gaussian noise, in [0, 1] intensity units
MAIN_SIZE = (18.0, 28.0)  # side of the main digit sprite, in pixels
DISTRACTOR_SIZE = (8.0, 12.0)
# Token cells of the mini IFM's 8 x 8 grid, and the visible sprite fraction that labels one.
TOKEN_CELL = 8
TOKEN_COVERAGE = 0.08
BACKGROUND_LABEL = 10


# ------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------


def _linear_resize_matrix(size_out: int, size_in: int) -> np.ndarray:
    """[size_out, size_in] matrix of bilinear (half-pixel centred) interpolation weights."""
    positions = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    positions = np.clip(positions, 0, size_in - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    fraction = positions - low
    weights = np.zeros((size_out, size_in))
    weights[np.arange(size_out), low] += 1 - fraction
    weights[np.arange(size_out), high] += fraction
    return weights


@lru_cache(maxsize=1)
def digit_atlas() -> tuple[np.ndarray, np.ndarray]:
    """All scikit-learn digits as sprite alpha masks.

    Returns (alphas [N, A + 2, A + 2] float32 in [0, 1] with a 1-pixel zero border so that
    bilinear sampling outside the sprite gives 0, labels [N] int64), A = ATLAS_SIZE.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images / 16.0  # [N, 8, 8] in [0, 1]
    resize = _linear_resize_matrix(ATLAS_SIZE, 8)
    upscaled = np.einsum("ai,nij,bj->nab", resize, images, resize)  # [N, A, A]
    # Sharpen the blurry upscale into a stroke with soft edges.
    alphas = np.clip((upscaled - 0.2) / 0.45, 0.0, 1.0)
    alphas = np.pad(alphas, ((0, 0), (1, 1), (1, 1))).astype(np.float32)
    return alphas, digits.target.astype(np.int64)


def _digit_index(rng: np.random.Generator, digit: int | None, subset: str = "all") -> int:
    """Index into `digit_atlas()` of a random image (of `digit`, when given).

    `subset`: "all", "train" (images whose index is not 4 mod 5) or "heldout" (4 mod 5); the
    mini IFM trains on "train" and reports its accuracy on "heldout".
    """
    _, labels = digit_atlas()
    candidates = np.arange(len(labels))
    if subset == "train":
        candidates = candidates[candidates % 5 != 4]
    elif subset == "heldout":
        candidates = candidates[candidates % 5 == 4]
    elif subset != "all":
        raise ValueError(f"subset must be 'all', 'train' or 'heldout', got {subset!r}")
    if digit is not None:
        candidates = candidates[labels[candidates] == digit]
    return int(rng.choice(candidates))


def periodic_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Smooth random colour texture [size, size, 3] float32, periodic in both axes.

    Low-pass filtered white noise (filtered in the Fourier domain, hence seamlessly tileable)
    at two scales, mixed into colour around a random base colour.
    """
    frequencies_y = np.fft.fftfreq(size)[:, None]
    frequencies_x = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(frequencies_y, frequencies_x)  # [size, size // 2 + 1]
    field = np.zeros((4, size, size))
    for cutoff, weight in ((rng.uniform(0.015, 0.05), 1.0), (rng.uniform(0.08, 0.25), 0.5)):
        spectrum = np.fft.rfft2(rng.standard_normal((4, size, size)))
        layer = np.fft.irfft2(spectrum * np.exp(-((radius / cutoff) ** 2)), s=(size, size))
        field += weight * layer / (layer.std(axis=(1, 2), keepdims=True) + 1e-8)
    base = rng.uniform(0.2, 0.8, size=3)
    luminance_contrast = rng.uniform(0.03, 0.1)
    colour_contrast = rng.uniform(0.0, 0.06)
    texture = (
        base
        + luminance_contrast * field[0][..., None]
        + colour_contrast * np.moveaxis(field[1:], 0, -1)
    )
    return np.clip(texture, 0.0, 1.0).astype(np.float32)


def _camera_window(texture: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Bilinear 64 x 64 windows of a periodic texture.

    texture [P, P, 3]; offsets [T, 2] (x, y) of the window's top-left corner in texture pixels
    (any real value; wraps around). Returns [T, 64, 64, 3] float32.
    """
    size = texture.shape[0]
    tiled = np.tile(texture, (2, 2, 1))  # [2P, 2P, 3]: every wrapped window is a plain slice
    corner = np.floor(offsets).astype(np.int64) % size  # [T, 2]
    fraction = (offsets - np.floor(offsets)).astype(np.float32)  # [T, 2]
    patch = np.stack(
        [tiled[y : y + FRAME_SIZE + 1, x : x + FRAME_SIZE + 1] for x, y in corner]
    )  # [T, 65, 65, 3]
    fx = fraction[:, 0, None, None, None]
    fy = fraction[:, 1, None, None, None]
    top = patch[:, :-1, :-1] * (1 - fx) + patch[:, :-1, 1:] * fx
    bottom = patch[:, 1:, :-1] * (1 - fx) + patch[:, 1:, 1:] * fx
    return top * (1 - fy) + bottom * fy


_PIXEL_CENTRES = np.arange(FRAME_SIZE, dtype=np.float32) + 0.5
# Half the diagonal of a unit square: a sprite of side s never reaches beyond s * this.
_SPRITE_REACH = 0.7072


def _sample_sprite_alpha(
    alpha_image: np.ndarray,
    centres: np.ndarray,
    sizes: np.ndarray,
    angles: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha of one sprite in every frame, by inverse affine mapping and bilinear sampling.

    alpha_image [A + 2, A + 2] (zero border); centres [T, 2] (x, y) on screen in pixels;
    sizes [T] sprite side in pixels; angles [T] radians, increasing = clockwise on screen.
    Only a square box of side B around the sprite is computed in each frame. Returns
    (alpha [T, B, B] float32 in [0, 1], rows [T, B], columns [T, B]): the box's pixel indices.
    """
    atlas = alpha_image.shape[0] - 2
    box = min(FRAME_SIZE, int(math.ceil(2 * _SPRITE_REACH * sizes.max())) + 2)
    corner = np.floor(centres - box / 2).astype(np.int64)
    corner = np.clip(corner, 0, FRAME_SIZE - box)  # [T, 2]; off-screen parts are not drawn
    columns = corner[:, 0, None] + np.arange(box)  # [T, B]
    rows = corner[:, 1, None] + np.arange(box)  # [T, B]
    dx = (columns + 0.5 - centres[:, 0, None]).astype(np.float32)[:, None, :]  # [T, 1, B]
    dy = (rows + 0.5 - centres[:, 1, None]).astype(np.float32)[:, :, None]  # [T, B, 1]
    cosine = np.cos(angles).astype(np.float32)[:, None, None]
    sine = np.sin(angles).astype(np.float32)[:, None, None]
    scale = (atlas / sizes).astype(np.float32)[:, None, None]
    # Rotate the screen offset back by the sprite's angle, then scale into atlas pixels;
    # +1 skips the zero border, +atlas/2 - 0.5 moves the origin to the atlas's top-left pixel.
    u = (cosine * dx + sine * dy) * scale + (atlas / 2 - 0.5 + 1)  # [T, B, B]
    v = (-sine * dx + cosine * dy) * scale + (atlas / 2 - 0.5 + 1)
    u = np.clip(u, 0.0, atlas + 1 - 1e-4)
    v = np.clip(v, 0.0, atlas + 1 - 1e-4)
    u0 = u.astype(np.int64)
    v0 = v.astype(np.int64)
    fu = u - u0
    fv = v - v0
    u1 = np.minimum(u0 + 1, atlas + 1)
    v1 = np.minimum(v0 + 1, atlas + 1)
    top = alpha_image[v0, u0] * (1 - fu) + alpha_image[v0, u1] * fu
    bottom = alpha_image[v1, u0] * (1 - fu) + alpha_image[v1, u1] * fu
    return top * (1 - fv) + bottom * fv, rows, columns


class _Sprite:
    """Per-frame state of one digit sprite in world coordinates.

    centre [T, 2] (x, y) pixels; size [T] pixels; angle [T] radians (clockwise);
    opacity [T] in [0, 1]; colour [3]; digit_index into `digit_atlas()`.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        num_frames: int,
        size_range: tuple[float, float],
        background_colour: np.ndarray,
        digit: int | None = None,
        subset: str = "all",
    ) -> None:
        self.digit_index = _digit_index(rng, digit, subset)
        self.centre = np.tile(rng.uniform(20.0, 44.0, size=2), (num_frames, 1))
        self.size = np.full(num_frames, rng.uniform(*size_range))
        self.angle = np.full(num_frames, rng.uniform(-0.35, 0.35))
        self.opacity = np.full(num_frames, rng.uniform(0.75, 1.0))
        self.colour = _contrasting_colour(rng, background_colour)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour whose mean intensity differs from `background`'s by SPRITE_CONTRAST."""
    background_level = float(background.mean())
    direction = 1.0 if background_level < 0.5 else -1.0
    if rng.random() < 0.25 and 0.3 < background_level < 0.7:
        direction = -direction
    target = np.clip(background_level + direction * rng.uniform(*SPRITE_CONTRAST), 0.02, 0.98)
    hue = rng.uniform(0.0, 1.0, size=3)
    colour = target + rng.uniform(0.0, COLOUR_SATURATION) * (hue - hue.mean())
    return np.clip(colour, 0.0, 1.0)


def _warped_time(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Centred normalised time in [-0.5, 0.5] with a random monotone acceleration, [T]."""
    tau = np.linspace(-0.5, 0.5, num_frames)
    acceleration = rng.uniform(-0.8, 0.8)
    return tau + acceleration * (tau**2 - 1 / 12)


def _apply_program(
    sprite: _Sprite,
    program: str,
    rng: np.random.Generator,
    strength: float = 1.0,
    sign: float = 1.0,
) -> None:
    """Add one motion program to `sprite` (in place), in its forward direction when sign=1.

    Forward directions: move_x left, move_y up, circle clockwise (on screen, y down), scale
    grow, fade in. `strength` multiplies the magnitude drawn from the module's ranges. Motions
    are centred on the middle frame, so reversing time only flips their direction.
    """
    time = sign * _warped_time(rng, len(sprite.size))  # [T]
    if program == "move_x":
        sprite.centre[:, 0] -= strength * rng.uniform(*MOVE_PIXELS) * time
    elif program == "move_y":
        sprite.centre[:, 1] -= strength * rng.uniform(*MOVE_PIXELS) * time
    elif program == "circle":
        # Along an arc around the sprite's start position; the angle grows clockwise on screen.
        swept = strength * rng.uniform(*CIRCLE_RADIANS)
        radius = strength * rng.uniform(*CIRCLE_RADIUS)
        heading = rng.uniform(0.0, 2 * math.pi) + swept * time  # [T]
        sprite.centre += radius * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    elif program == "scale":
        sprite.size *= np.exp(strength * rng.uniform(*SCALE_LOG_RATIO) * time)
    elif program == "fade":
        change = strength * rng.uniform(*FADE_OPACITY)
        start = rng.uniform(0.1, max(0.1, 1.0 - change) + 1e-6)  # the faint end
        sprite.opacity = np.clip(start + change / 2 + change * time, 0.05, 1.0)
    else:
        raise ValueError(f"unknown motion program {program!r}; expected one of {PROGRAMS}")


def _composite(
    frames: np.ndarray, sprite: _Sprite, camera: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw `sprite` over `frames` [T, 64, 64, 3] in place; camera [T, 2] is the view offset.

    Returns the sprite's alpha over the whole frame, [T, 64, 64] float32.
    """
    alphas, _ = digit_atlas()
    shake = rng.normal(0.0, SPRITE_JITTER_PIXELS, size=sprite.centre.shape)
    alpha, rows, columns = _sample_sprite_alpha(
        alphas[sprite.digit_index], sprite.centre - camera + shake, sprite.size, sprite.angle
    )
    alpha = (alpha * sprite.opacity[:, None, None].astype(np.float32))[..., None]  # [T, B, B, 1]
    frame_index = np.arange(len(frames))[:, None, None]
    box = (frame_index, rows[:, :, None], columns[:, None, :])
    frames[box] = frames[box] * (1.0 - alpha) + alpha * sprite.colour.astype(np.float32)
    full_alpha = np.zeros(frames.shape[:3], dtype=np.float32)
    full_alpha[box] = alpha[..., 0]
    return full_alpha


def _draw_occluder(
    frames: np.ndarray, rng: np.random.Generator, camera: np.ndarray, texture: np.ndarray
) -> np.ndarray:
    """A world-fixed opaque bar (horizontal or vertical, 4-8 px wide) across the view.

    Returns its coverage, broadcastable to [T, 64, 64, 1].
    """
    width = rng.uniform(4.0, 8.0)
    position = rng.uniform(12.0, 52.0)
    vertical = rng.random() < 0.5
    screen = position - camera[:, 0 if vertical else 1]  # [T]
    distance = np.abs(_PIXEL_CENTRES[None, :] - screen[:, None])  # [T, 64]
    coverage = np.clip(width / 2 - distance + 0.5, 0.0, 1.0).astype(np.float32)
    coverage = coverage[:, None, :, None] if vertical else coverage[:, :, None, None]
    colour = np.clip(texture.mean(axis=(0, 1)) + rng.uniform(-0.35, 0.35, size=3), 0.0, 1.0)
    frames *= 1.0 - coverage
    frames += coverage * colour.astype(np.float32)
    return coverage


def _finish(
    frames: np.ndarray, rng: np.random.Generator, gain: np.ndarray | None = None
) -> np.ndarray:
    """Global brightness gain [T] (optional), i.i.d. pixel noise, quantise to uint8."""
    if gain is not None:
        frames *= gain.astype(np.float32)[:, None, None, None]
    noise_std = rng.uniform(*NOISE_STD)
    frames += noise_std * rng.standard_normal(size=frames.shape, dtype=np.float32)
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------


def _linear_camera(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Camera offsets [T, 2] around 0: a linear pan of up to CAMERA_PAN_PIXELS, plus shake."""
    heading = rng.uniform(0.0, 2 * math.pi)
    pan = rng.uniform(0.0, CAMERA_PAN_PIXELS) * np.array([math.cos(heading), math.sin(heading)])
    tau = np.linspace(-0.5, 0.5, num_frames)[:, None]
    shake = rng.normal(0.0, CAMERA_JITTER_PIXELS, size=(num_frames, 2))
    return pan * tau + shake


def _render_motion_scene(
    rng: np.random.Generator,
    num_frames: int,
    program: int,
    sign: float,
    digit: int | None,
) -> np.ndarray:
    """A scene whose main sprite performs motion program `program` (index into PROGRAMS).

    sign=1 plays it forwards (left, up, clockwise, grow, fade in), -1 backwards. Mixed motion
    (MIXED_MOTION_P): nothing else, a smaller distractor digit performing a random program of
    another pair in a random direction, or a weaker (SECONDARY_SCALE) program of another pair
    added to the main sprite. Returns ([T, 64, 64, 3] uint8, the main sprite's alpha
    [T, 64, 64]).
    """
    texture = periodic_texture(rng)
    texture_start = rng.uniform(0.0, TEXTURE_SIZE, size=2)
    camera = _linear_camera(rng, num_frames)
    frames = _camera_window(texture, camera + texture_start)
    background_colour = texture.mean(axis=(0, 1))
    others = [index for index in range(len(PROGRAMS)) if index != program]

    mixed = rng.choice(3, p=MIXED_MOTION_P)  # 0 none, 1 distractor, 2 secondary motion
    sprites = []
    if mixed == 1:
        distractor = _Sprite(rng, num_frames, DISTRACTOR_SIZE, background_colour)
        distractor.centre[:] = rng.uniform(8.0, 56.0, size=2)
        _apply_program(distractor, PROGRAMS[rng.choice(others)], rng, 1.0, rng.choice([-1, 1]))
        sprites.append(distractor)
    main = _Sprite(rng, num_frames, MAIN_SIZE, background_colour, digit=digit)
    if mixed == 2:
        secondary = PROGRAMS[rng.choice(others)]
        _apply_program(main, secondary, rng, SECONDARY_SCALE, rng.choice([-1, 1]))
    _apply_program(main, PROGRAMS[program], rng, 1.0, sign)
    sprites.append(main)
    alphas = [_composite(frames, sprite, camera, rng) for sprite in sprites]
    if rng.random() < OCCLUDER_P:
        _draw_occluder(frames, rng, camera, texture)
    return _finish(frames, rng), alphas[-1]


def _periodic_wave(
    rng: np.random.Generator, num_frames: int, amplitude: float, max_cycles: int = 3
) -> np.ndarray:
    """amplitude * sin(2 pi k t / T + phase), k in 1..max_cycles: exactly T-periodic, [T]."""
    cycles = rng.integers(1, max_cycles + 1)
    phase = rng.uniform(0.0, 2 * math.pi)
    return amplitude * np.sin(2 * math.pi * cycles * np.arange(num_frames) / num_frames + phase)


def _render_periodic_scene(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """A pool scene: every motion has period exactly `num_frames` (a seamless loop).

    Sprite positions, angles, sizes and opacities, the camera position and the brightness are
    sums of sinusoids with integer cycle counts per video (or whole turns for spins); only the
    pixel noise and shake are drawn per frame (i.i.d.). Returns ([T, 64, 64, 3] uint8, the
    main sprite's alpha [T, 64, 64]).
    """
    texture = periodic_texture(rng)
    texture_start = rng.uniform(0.0, TEXTURE_SIZE, size=2)
    camera = np.stack(
        [_periodic_wave(rng, num_frames, rng.uniform(0.0, 5.0)) for _ in range(2)], axis=1
    )
    camera += rng.normal(0.0, CAMERA_JITTER_PIXELS, size=camera.shape)
    frames = _camera_window(texture, camera + texture_start)
    background_colour = texture.mean(axis=(0, 1))

    num_distractors = rng.choice([0, 1, 2], p=[0.3, 0.5, 0.2])
    sprites = []
    for index in range(num_distractors + 1):
        is_main = index == num_distractors
        size_range = MAIN_SIZE if is_main else DISTRACTOR_SIZE
        sprite = _Sprite(rng, num_frames, size_range, background_colour)
        speed = rng.uniform(0.3, 1.0)  # a per-sprite speed factor, so speed is not given away
        for axis in range(2):
            sprite.centre[:, axis] += _periodic_wave(rng, num_frames, speed * rng.uniform(2, 14))
        if rng.random() < 0.3:
            turns = rng.choice([-1, 1])
            sprite.angle += 2 * math.pi * turns * np.arange(num_frames) / num_frames
        else:
            sprite.angle += _periodic_wave(rng, num_frames, speed * rng.uniform(0.0, 0.8))
        sprite.size *= np.exp(_periodic_wave(rng, num_frames, speed * rng.uniform(0.0, 0.3)))
        opacity_swing = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else 0.0
        sprite.opacity = np.clip(
            sprite.opacity - opacity_swing + _periodic_wave(rng, num_frames, opacity_swing),
            0.05,
            1.0,
        )
        sprites.append(sprite)
    alphas = [_composite(frames, sprite, camera, rng) for sprite in sprites]
    gain = 1.0 + _periodic_wave(rng, num_frames, rng.uniform(0.0, 0.1))
    return _finish(frames, rng, gain), alphas[-1]


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


def render_video(task: str, class_index: int, rng: np.random.Generator) -> np.ndarray:
    """Render one video of `task`'s class `class_index`: [T, 64, 64, 3] uint8, RGB.

    T = NUM_FRAMES[task] (32, 32, 96). Pure: the frames are a function of the generator's state.
    For ``temporal``, class 2k + 1 with a generator in the same state as for class 2k gives
    exactly the frames of class 2k in reverse order.
    """
    return render_video_with_boxes(task, class_index, rng)[0]


def render_video_with_boxes(
    task: str, class_index: int, rng: np.random.Generator, threshold: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """`render_video`, and where the main sprite (the labelled digit, or the pool's main
    sprite) was drawn: boxes [T, 4] int64 (x0, y0, x1, y1; x1, y1 exclusive) around its pixels
    of opacity above `threshold`, (0, 0, 0, 0) in a frame where it is not visible. The same
    generator state gives the same frames as `render_video`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    num_classes = len(TASKS[task])
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class_index must be in [0, {num_classes}) for {task!r}")
    num_frames = NUM_FRAMES[task]
    if task == "pool":
        frames, alpha = _render_periodic_scene(rng, num_frames)
    elif task == "spatial":
        program = int(rng.integers(len(PROGRAMS)))
        sign = float(rng.choice([-1.0, 1.0]))
        frames, alpha = _render_motion_scene(rng, num_frames, program, sign, digit=class_index)
    else:
        frames, alpha = _render_motion_scene(rng, num_frames, class_index // 2, 1.0, digit=None)
        if class_index % 2:
            frames, alpha = frames[::-1].copy(), alpha[::-1]
    return frames, _boxes(alpha > threshold)


def _boxes(masks: np.ndarray) -> np.ndarray:
    """[T, H, W] bool -> [T, 4] (x0, y0, x1, y1) bounding boxes, zeros where a mask is empty."""
    boxes = np.zeros((len(masks), 4), dtype=np.int64)
    for index, mask in enumerate(masks):
        rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if len(rows):
            boxes[index] = (columns[0], rows[0], columns[-1] + 1, rows[-1] + 1)
    return boxes


def render_still(rng: np.random.Generator, subset: str = "all") -> tuple[np.ndarray, int]:
    """One still image like a video frame, for training the mini IFM: ([64, 64, 3] uint8, digit).

    The main digit sprite (the label) over a texture, with a smaller distractor digit (80%),
    random size, angle, opacity and colour, an occluding bar (15%) and pixel noise. `subset`
    picks the digit images ("all", "train", "heldout": a fixed 4:1 split of scikit-learn's).
    """
    image, digit, _ = _render_still(rng, periodic_texture(rng), subset)
    return image, digit


def render_stills(
    rng: np.random.Generator,
    count: int,
    subset: str = "all",
    num_textures: int = 64,
    easy: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` stills as `render_still` draws them, sharing `num_textures` background textures
    (the expensive part) for speed.

    `easy` draws a large, upright, fully opaque black or white digit with no distractor or
    occluder (a curriculum start for the mini IFM). Returns (images [N, 64, 64, 3] uint8,
    digits [N] int64 (the main digit), token_labels [N, 8, 8] int64): for each 8 x 8-pixel
    cell the digit (0-9) of the sprite that covers it most visibly, or BACKGROUND_LABEL (10)
    when no sprite covers at least TOKEN_COVERAGE of it.
    """
    textures = [periodic_texture(rng) for _ in range(min(count, num_textures))]
    images = np.empty((count, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    digits = np.empty(count, dtype=np.int64)
    grid = FRAME_SIZE // TOKEN_CELL
    token_labels = np.empty((count, grid, grid), dtype=np.int64)
    for index in range(count):
        texture = textures[int(rng.integers(len(textures)))]
        images[index], digits[index], token_labels[index] = _render_still(
            rng, texture, subset, easy
        )
    return images, digits, token_labels


def _render_still(
    rng: np.random.Generator, texture: np.ndarray, subset: str, easy: bool = False
) -> tuple[np.ndarray, int, np.ndarray]:
    camera = rng.uniform(0.0, TEXTURE_SIZE, size=(1, 2))
    frame = _camera_window(texture, camera)
    background_colour = texture.mean(axis=(0, 1))
    sprites = []
    if not easy and rng.random() < DISTRACTOR_P:
        distractor = _Sprite(rng, 1, DISTRACTOR_SIZE, background_colour, subset=subset)
        distractor.centre[:] = rng.uniform(8.0, 56.0, size=2)
        sprites.append(distractor)
    main = _Sprite(rng, 1, MAIN_SIZE, background_colour, subset=subset)
    if easy:
        main.size[:] = rng.uniform(24.0, 28.0)
        main.angle[:] = 0.0
        main.opacity[:] = 1.0
        main.colour = np.full(3, 0.0 if background_colour.mean() > 0.5 else 1.0)
    else:
        # Wider ranges than a video's start state: videos rotate, scale and fade their sprites.
        main.angle[:] = rng.uniform(-STILL_ANGLE, STILL_ANGLE)
        main.size *= math.exp(rng.uniform(-0.2, 0.2))
        main.opacity[:] = rng.uniform(0.7, 1.0)
    sprites.append(main)
    zero_camera = np.zeros((1, 2))
    visible = []  # per sprite, the alpha left visible by what is drawn over it: [64, 64]
    for sprite in sprites:
        alpha = _composite(frame, sprite, zero_camera, rng)[0]
        visible = [earlier * (1.0 - alpha) for earlier in visible] + [alpha]
    if not easy and rng.random() < STILL_OCCLUDER_P:
        coverage = _draw_occluder(frame, rng, zero_camera, texture)[0, ..., 0]
        visible = [alpha * (1.0 - coverage) for alpha in visible]
    _, labels = digit_atlas()
    grid = FRAME_SIZE // TOKEN_CELL
    cells = np.stack(visible).reshape(len(sprites), grid, TOKEN_CELL, grid, TOKEN_CELL)
    cells = cells.mean(axis=(2, 4))  # [S, 8, 8] visible fraction per cell
    sprite_digits = labels[[sprite.digit_index for sprite in sprites]]
    token_labels = np.where(
        cells.max(axis=0) >= TOKEN_COVERAGE, sprite_digits[cells.argmax(axis=0)], BACKGROUND_LABEL
    )
    return _finish(frame, rng)[0], int(labels[main.digit_index]), token_labels


def video_rng(seed: int, task: str, class_index: int, index: int) -> np.random.Generator:
    """The generator for video `index` of class `class_index` of `task` under `seed`."""
    return np.random.default_rng([seed, _TASK_CODES[task], class_index, index])


def split_counts(task: str, num_videos: int, train_per_class: int | None = None) -> tuple[int, int]:
    """(train, test) videos per class for `num_videos` in total.

    Labelled tasks: num_videos // num_classes per class (at least 2), of which
    `train_per_class` (default round(TRAIN_FRACTION * n), at least 1) train and the rest test
    (at least 1). pool: all train.
    """
    if task == "pool":
        return num_videos, 0
    per_class = max(2, num_videos // len(TASKS[task]))
    if train_per_class is None:
        train_per_class = round(TRAIN_FRACTION * per_class)
    train = min(per_class - 1, max(1, train_per_class))
    return train, per_class - train


def generate(
    out_dir: str | Path,
    task: str,
    num_videos: int | None = None,
    seed: int = 0,
    progress: bool = True,
    train_per_class: int | None = None,
) -> Path:
    """Write `task`'s videos in the UCF101 layout under `out_dir` and return `out_dir`.

    Layout: ``<Class>/v_<Class>_<index>.mp4`` (H.264, 64 x 64, 25 fps), ``classInd.txt``
    (``1 ClassName``, 1-based), ``trainlist01.txt`` (``Class/name.mp4 N``), ``testlist01.txt``
    (``Class/name.mp4``). In each class the first videos (see `split_counts`;
    `train_per_class` overrides the default 4/9 share) are training videos, the rest test
    videos. ``pool`` has one class ``unlabeled``, every video in the training list.
    A manifest (``synthetic.json``) is written last; a rerun with the same arguments on a
    complete tree returns at once.
    """
    from tqdm import tqdm

    from advise.data.video import write_video

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    num_videos = DEFAULT_NUM_VIDEOS[task] if num_videos is None else int(num_videos)
    if num_videos < 1:
        raise ValueError(f"num_videos must be positive, got {num_videos}")
    out_dir = Path(out_dir)
    class_names = TASKS[task]
    train_per_class, test_per_class = split_counts(task, num_videos, train_per_class)
    manifest = {
        "task": task,
        "seed": seed,
        "num_videos": num_videos,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "num_frames": NUM_FRAMES[task],
        "render_version": RENDER_VERSION,
    }
    manifest_path = out_dir / MANIFEST_NAME
    relative_paths = [
        [f"{name}/v_{name}_{index:04d}.mp4" for index in range(train_per_class + test_per_class)]
        for name in class_names
    ]
    if _is_complete(out_dir, manifest, relative_paths):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)

    jobs = [
        (class_index, index)
        for class_index in range(len(class_names))
        for index in range(train_per_class + test_per_class)
    ]
    for class_index, index in tqdm(
        jobs, desc=f"synth {task}", disable=not progress or not sys.stderr.isatty()
    ):
        frames = render_video(task, class_index, video_rng(seed, task, class_index, index))
        write_video(out_dir / relative_paths[class_index][index], frames, fps=FPS)

    _write_text(out_dir / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(class_names)])
    train_lines, test_lines = [], []
    for class_index, paths in enumerate(relative_paths):
        train_lines += [f"{path} {class_index + 1}" for path in paths[:train_per_class]]
        test_lines += paths[train_per_class:]
    _write_text(out_dir / "trainlist01.txt", train_lines)
    _write_text(out_dir / "testlist01.txt", test_lines)
    _write_text(manifest_path, [json.dumps(manifest, indent=2)])
    return out_dir


def _write_text(path: Path, lines: list[str]) -> None:
    atomic_write(path, "".join(line + "\n" for line in lines))


def _is_complete(out_dir: Path, manifest: dict, relative_paths: list[list[str]]) -> bool:
    """True when `out_dir` holds the same manifest and every listed file exists."""
    try:
        if json.loads((out_dir / MANIFEST_NAME).read_text()) != manifest:
            return False
    except (OSError, ValueError):
        return False
    names = ["classInd.txt", "trainlist01.txt", "testlist01.txt"]
    names += [path for paths in relative_paths for path in paths]
    return all((out_dir / name).is_file() for name in names)
