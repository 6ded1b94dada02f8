"""The Python API: a trained model in a few lines.

    import advise
    model = advise.load("runs/demo/spatial/prp")     # a checkpoint, a run folder or an export
    print(model.predict("clip.mp4").classes[:3])     # class names, best first
    tokens = model.features("clip.mp4", layer="tmm") # [views, C, T, h, w]

`load` rebuilds the frozen IFM from the name the checkpoint records and refuses other weights
(their hash is compared), exactly as `advise evaluate` does. Everything here runs on the
checkpoint's own preprocessing and multi-view protocol unless told otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from advise.config import Config, ConfigError
from advise.data.datasets import MultiViewDataset, SkippedVideo, collate_clips
from advise.data.formats import VideoRecord
from advise.data.loaders import views_transform
from advise.data.sampling import multiview_indices
from advise.data.transforms import Preprocessing
from advise.data.video import count_frames, read_frames
from advise.models.advise import AdViSe

LAYERS = ("ifm", "pooled", "tmm")


@dataclass(frozen=True)
class Prediction:
    """The scores of one video: `classes` and `scores` (softmax averaged over `views`), best
    first; `warning` says when the file was cut short and scored on the frames that decode."""

    path: str
    classes: list[str]
    scores: list[float]
    views: str
    warning: str | None = None

    @property
    def label(self) -> str:
        """The best class."""
        return self.classes[0]


@dataclass(frozen=True)
class Skipped:
    """A video `predict_files` could not score, and why."""

    path: str
    reason: str


def read_video(
    path: str | Path, num_frames: int | None = None, stride: int | None = None
) -> Tensor:
    """Frames of a video file as uint8 [T, 3, H, W] (RGB, upright), the input `preprocess` takes.

    `num_frames=None` reads every frame. Otherwise `num_frames` frames: with `stride=None`, one
    from the middle of each of `num_frames` equal segments of the whole video (the test-time
    sampling of training and `advise evaluate`); with a `stride`, `num_frames` frames
    `stride` apart, centred in the video. A video shorter than asked loops. Raises
    `VideoDecodeError` (naming the file) for a file that is missing, damaged or not a video.
    """
    total = count_frames(path)
    if num_frames is None:
        indices = np.arange(total)
    elif num_frames < 1 or (stride is not None and stride < 1):
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
    elif stride is None:
        indices = multiview_indices(total, num_frames, 1)[0]
    else:
        span = (num_frames - 1) * stride + 1
        start = max(0, (total - span) // 2)
        indices = (start + np.arange(num_frames) * stride) % total
    return torch.from_numpy(read_frames(path, indices)).permute(0, 3, 1, 2).contiguous()


class Model:
    """A trained AdViSe model (frozen IFM, SFU, TMM, head) with its config and classes.

    Made by `advise.load`. `network` is the `torch.nn.Module` itself (in eval mode);
    `class_names` are the fine-tuned classes (None for a pre-training checkpoint, which
    offers `features` only); `preprocessing` is the IFM's own (size, mean, std, resize).
    """

    def __init__(
        self,
        network: AdViSe,
        config: Config,
        class_names: list[str] | None,
        stage: str,
        ifm_record: dict[str, Any],
        source: Path,
        device: torch.device,
    ) -> None:
        self.network = network.eval()
        self.config = config
        self.class_names = class_names
        self.stage = stage
        self.ifm_record = ifm_record
        self.source = source
        self.device = device

    def __repr__(self) -> str:
        classes = f"{len(self.class_names)} classes" if self.class_names else "no classes"
        return (
            f"advise.Model({self.source}, {self.stage}, IFM {self.config.ifm.name}, "
            f"{self.config.tmm.kind} TMM, {classes})"
        )

    @property
    def preprocessing(self) -> Preprocessing:
        ifm = self.network.ifm
        return Preprocessing(ifm.img_size, ifm.mean, ifm.std, ifm.interpolation)

    @property
    def views(self) -> tuple[int, int]:
        """(clips, crops) of the checkpoint's multi-view testing (eval.num_clips, num_crops)."""
        return self.config.eval.num_clips, self.config.eval.num_crops

    def preprocess(self, frames: Tensor | np.ndarray, crops: int = 1) -> Tensor:
        """uint8 frames [T, 3, H, W] (as `read_video` gives; [T, H, W, 3] arrays are accepted)
        -> float32 [crops, T, 3, S, S]: short side resized to the IFM's size S, `crops` (1 or
        3) square crops, normalised with the IFM's mean and std."""
        clip = torch.as_tensor(frames)
        if clip.ndim == 4 and clip.shape[1] != 3 and clip.shape[-1] == 3:
            clip = clip.permute(0, 3, 1, 2)
        if clip.ndim != 4 or clip.shape[1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(
                f"frames must be uint8 [T, 3, H, W], got {clip.dtype} {tuple(clip.shape)}"
            )
        return views_transform(self.preprocessing, crops)(clip)

    def _clips(self, video: str | Path | Tensor | np.ndarray, views: tuple[int, int] | None):
        """Normalised clips [K * S, T, 3, S, S] of a file (K temporal x S spatial views) or of
        given frames (one temporal view)."""
        clips, crops = views or self.views
        if isinstance(video, (str, Path)):
            indices = multiview_indices(count_frames(video), self.config.data.num_frames, clips)
            frames = torch.from_numpy(read_frames(video, np.concatenate(indices)))
            frames = frames.permute(0, 3, 1, 2).split(self.config.data.num_frames)
            return torch.cat([self.preprocess(clip, crops) for clip in frames])
        return self.preprocess(video, crops)

    @torch.no_grad()
    def features(
        self,
        video: str | Path | Tensor | np.ndarray,
        layer: str = "tmm",
        views: tuple[int, int] | None = None,
    ) -> Tensor:
        """Features of one video (a file, or uint8 frames [T, 3, H, W]) at `layer`, one row per
        view (V = clips x crops for a file, crops for frames), float32 on the CPU:

        - "ifm": the frozen IFM's tokens [V, D, T, h, w] (D its width, h x w its grid);
        - "pooled": after spatial/channel pooling (SFU) [V, D', T, h', w'];
        - "tmm": the temporal module's output [V, C, T, h', w'], what the head pools.

        Average over views and dims 2-4 for one vector per video.
        """
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        clips = self._clips(video, views).to(self.device)
        tokens = self.network.ifm(clips)
        if layer != "ifm":
            tokens = self.network.sfu(tokens)
        if layer == "tmm":
            tokens = self.network.tmm(tokens)
        return tokens.float().cpu().contiguous()  # (the TMM's is channels last on a CPU)

    def _require_classes(self) -> list[str]:
        if self.class_names is None:
            from advise.train.checkpoint import CheckpointError

            raise CheckpointError(
                f"{self.source} is a {self.stage} checkpoint: it has no action classes to "
                "predict (features work); load a fine-tuned one"
            )
        return self.class_names

    @torch.no_grad()
    def scores(
        self, video: str | Path | Tensor | np.ndarray, views: tuple[int, int] | None = None
    ) -> Tensor:
        """Class probabilities [num_classes] of one video: softmax averaged over its views."""
        self._require_classes()
        logits = self.network(self._clips(video, views).to(self.device))
        return logits.float().softmax(dim=1).mean(0).cpu()

    def predict(
        self,
        video: str | Path | Tensor | np.ndarray,
        views: tuple[int, int] | None = None,
        top: int = 5,
    ) -> Prediction:
        """The `top` classes of one video (a file, or uint8 frames [T, 3, H, W]) and their
        scores, with the checkpoint's multi-view protocol or `views` = (clips, crops).
        Raises `VideoDecodeError` for a file that cannot be read; many files: `predict_files`.
        """
        names = self._require_classes()
        clips, crops = views or self.views
        probs = self.scores(video, (clips, crops))
        path = str(video) if isinstance(video, (str, Path)) else "<frames>"
        warning = _cut_short(video) if isinstance(video, (str, Path)) else None
        return _prediction(path, probs, names, top, f"{clips}x{crops}", warning)

    def predict_files(
        self,
        paths: Iterable[str | Path],
        views: tuple[int, int] | None = None,
        top: int = 5,
        batch_size: int = 4,
        workers: int = 0,
    ) -> Iterator[Prediction | Skipped]:
        """Predictions of many files, in order, one `Prediction` or `Skipped` (with the reason)
        per path: a file that cannot be read never stops the others. `workers` processes
        decode while the model runs; `batch_size` videos share a forward pass."""
        names = self._require_classes()
        clips, crops = views or self.views
        paths = [Path(path) for path in paths]
        dataset = MultiViewDataset(
            [VideoRecord(path, 0) for path in paths],
            self.config.data.num_frames,
            clips,
            views_transform(self.preprocessing, crops),
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate_with_reasons
        )
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # a bad video is a row of the result, not a warning
            for batch, skipped in loader:
                results: dict[int, Prediction | Skipped] = {
                    index: Skipped(str(paths[index]), reason) for index, reason in skipped
                }
                if batch["labels"].numel():
                    logits = self.network(batch["input"].to(self.device)).float().cpu()
                    probs = logits.softmax(dim=1)
                    for index in batch["index"].tolist():
                        mean = probs[batch["video_of_clip"] == index].mean(0)
                        results[index] = _prediction(
                            str(paths[index]), mean, names, top, f"{clips}x{crops}",
                            _cut_short(paths[index]),
                        )  # fmt: skip
                for index in sorted(results):
                    yield results[index]


def _collate_with_reasons(items: Sequence[dict | SkippedVideo]) -> tuple[dict, list]:
    """`collate_clips`, and (dataset index, reason) of each skipped video."""
    skipped = [(item.index, item.reason) for item in items if isinstance(item, SkippedVideo)]
    return collate_clips(items), skipped


def _prediction(
    path: str, probs: Tensor, names: list[str], top: int, views: str, warning: str | None
) -> Prediction:
    scores, indices = probs.topk(min(top, len(names)))
    return Prediction(
        path,
        [names[index] for index in indices.tolist()],
        [round(float(score), 4) for score in scores.tolist()],
        views,
        warning,
    )


def _cut_short(path: str | Path) -> str | None:
    from advise.data.check import cut_short
    from advise.data.video import probe_video

    damage = cut_short(probe_video(path))  # probed when it was read: cached
    return damage and f"{path}: {damage}; scored on the frames that decode"


def load(
    path: str | Path,
    device: str | None = None,
    overrides: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
) -> Model:
    """A trained model from a checkpoint (.safetensors or .json of a pair), a run folder (its
    last checkpoint) or a folder written by `advise export`.

    The frozen IFM is rebuilt from the recorded name and weights (`overrides` as `--set`, e.g.
    "ifm.weights=/path/to/file" on another machine) and refused when its weights hash differs
    from the one the model was trained on (`CheckpointError`). `device` defaults to the
    checkpoint's `train.device` ("auto": CUDA when there is one). `settings` (the dotted keys
    of a --config) and `overrides` may change where data is and how it is tested
    (`advise.runs.EVALUATION_KEYS`), never the model.
    """
    from advise.exported import is_export, read_export

    path = Path(path)
    if is_export(path):
        tensors, state = read_export(path)
    else:
        from advise.runs import find_checkpoint
        from advise.train.checkpoint import load_checkpoint, model_tensors

        path = find_checkpoint(path)
        raw, state = load_checkpoint(path)
        tensors = model_tensors(raw)
    return build_loaded(path, tensors, state, device, overrides, settings)


def build_loaded(
    path: Path,
    tensors: dict[str, Tensor],
    state: dict[str, Any],
    device: str | None = None,
    overrides: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
) -> Model:
    """The `Model` of a checkpoint's model tensors and state (config, stage, classes, IFM)."""
    from advise.models.build import build_frozen_ifm, build_model, resolve_precision
    from advise.pretexts import build_pretext
    from advise.provenance import online_ifm_record
    from advise.runs import RandomInitWarning, checkpoint_config, parse_overrides
    from advise.train.checkpoint import CheckpointError, check_architecture, check_ifm
    from advise.train.engine import resolve_device

    stage = state.get("stage")
    if stage not in ("pretrain", "finetune"):
        raise CheckpointError(f"{path}: not a checkpoint of advise pretrain or finetune")
    config = checkpoint_config(state, settings, parse_overrides(list(overrides)))
    config = config.replace({"data.source": "video"})  # new videos: never in a store
    target = resolve_device(device or config.train.device)
    ifm = build_frozen_ifm(config.ifm, target)
    if config.ifm.random_init:
        warnings.warn(
            f"{path}: IFM {config.ifm.name!r} is randomly initialised: its tokens mean nothing",
            RandomInitWarning,
            stacklevel=3,
        )
    record = online_ifm_record(
        ifm, config.ifm.random_init, resolve_precision(config.ifm.precision, target)
    )
    check_ifm(state, record, path)
    check_architecture(state.get("config"), config, path)
    if stage == "finetune":
        class_names = list(state["class_names"])
        network = build_model(config, len(class_names), ifm)
    else:
        class_names = None
        pretext = build_pretext(config)
        network = build_model(config, len(pretext.class_names), ifm, head=pretext.head)
    try:
        network.load_trainable_state_dict(tensors)
    except ValueError as error:
        raise CheckpointError(f"{path} does not fit the model its config builds: {error}") from None
    return Model(network.to(target), config, class_names, stage, record, path, target)


def video_paths(items: Iterable[str | Path]) -> list[Path]:
    """The videos that command-line arguments name: files as they are, folders searched
    (recursively, video suffixes, sorted) and list files (.txt, .lst, .list, .csv: the first
    field of every line that is not blank or a # comment, relative to the list's folder)."""
    from advise.data.formats import VIDEO_SUFFIXES

    found: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            videos = sorted(
                path
                for path in item.rglob("*")
                if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()
            )
            if not videos:
                raise ConfigError(f"{item}: a folder with no videos in it")
            found.extend(videos)
        elif item.suffix.lower() in LIST_SUFFIXES:
            for line in item.read_text().splitlines():
                entry = line.strip().replace(",", " ").split(maxsplit=1)
                if entry and not entry[0].startswith("#"):
                    listed = Path(entry[0])
                    found.append(listed if listed.is_absolute() else item.parent / listed)
        else:
            found.append(item)
    return found


LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv")
