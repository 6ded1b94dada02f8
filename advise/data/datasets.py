"""Torch datasets: a video record in, decoded and transformed clips out.

Items are decoded lazily: a record holds only a path, a label and a frame range; each
`__getitem__` counts the video's frames (`count_frames`, cached per file in-process), samples
frame numbers, decodes just those frames (`read_frames`, exact) and transforms each clip.

Frame ranges: a record's [start_frame, end_frame) (`VideoRecord.frame_range`, the end clamped
to the file) is the video as far as sampling knows: samplers see a video of end - start frames
and their frame numbers are shifted by start_frame before decoding, so no frame outside the
range is ever read.

Reproducibility: an item's randomness is a pure function of (seed, epoch, index). NumPy
sampling uses `np.random.default_rng([seed, epoch, index])` and torch transforms draw from
torch's CPU generator seeded from it (its state put back after), so the same item comes out the
same in any worker, in any order, and after a resume; call `set_epoch(epoch)` at the start of
every epoch. Tokens held in memory are batched whole (`gather`) from the same draws, from
private generators, so training makes each batch in a thread one ahead (`loader_batches`).

Bad input: a video that fails to decode, or whose range holds no frame, gives a `SkippedVideo`
item (falsy, like None, and naming the file) and a `SkippedVideoWarning`; `collate_clips` drops
such items and reports them in the batch. A video (or range) shorter than a clip is used: it
plays in a loop (`advise.data.sampling`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from advise.data.formats import VideoRecord
from advise.data.sampling import ClipSampler, multiview_indices, segment_indices
from advise.data.sources import Source, VideoSource, VideoTooShortError
from advise.data.video import VideoDecodeError

ClipTransform = Callable[[Tensor], Tensor]  # uint8 [T, 3, H, W] -> float [T, 3, h, w] or [S, ...]


class SkippedVideoWarning(UserWarning):
    """A video was skipped because it could not be decoded or its frame range is empty."""


@dataclass(frozen=True)
class SkippedVideo:
    """The item of a video that could not be used. Falsy, so `if not item` catches it like None.

    `index` is the dataset index, `path` the file, `reason` why (the decode error's message).
    """

    index: int
    path: str
    reason: str

    def __bool__(self) -> bool:
        return False


class _VideoDataset(Dataset):
    """Shared parts: records, seed/epoch randomness, reading through a source with
    skip-and-warn.

    The `source` (`advise.data.sources`: decoded videos by default, or a feature store's
    tokens) says how many frames a video has and reads the sampled frame indices; the
    transform receives what it reads (uint8 frames [T, 3, H, W], or float tokens
    [V, T, D, h, w] with every stored view). Items carry the result as their one `input`, and
    the source's `input_kind` ("frames" or "tokens"). A video the source cannot read is skipped.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        num_frames: int,
        seed: int,
        source: Source | None = None,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.records = list(records)
        self.num_frames = num_frames
        self.seed = seed
        self.epoch = 0
        self.source = source if source is not None else VideoSource(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws `__getitem__` makes (call once per epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def index_videos(self) -> None:
        """Count every video's frames in this process (one decode per file, cached).

        DataLoader workers are forked anew each epoch; indexing in the parent first lets them
        inherit the cache instead of decoding every file again. Bad videos are left for
        `__getitem__` to skip and report.
        """
        self.source.index_videos()

    def _generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _item_of(self, index: int, inputs: Tensor, labels: Tensor) -> dict[str, Any]:
        return {"input": inputs, "input_kind": self.source.kind, "labels": labels, "index": index}

    def _transform_clips(
        self, transform: ClipTransform, clips: list[Tensor], rng: np.random.Generator
    ) -> Tensor:
        """Transform each clip under a torch seed drawn from `rng`: frames [N * S, T, 3, h, w],
        or tokens [N * S, D, T, h, w] channels last (`concat_clips`)."""
        torch_seed = int(rng.integers(2**63 - 1))
        # the CPU generator only, its state put back after: torch.manual_seed would also queue
        # a lazy seeding of every accelerator backend, recording a stack trace each time
        # (~0.3 ms per item), and fork_rng costs more than the transform of a token clip
        generator = torch.default_generator
        saved = generator.get_state()
        try:
            generator.manual_seed(torch_seed)
            outputs = [transform(clip) for clip in clips]
        finally:
            generator.set_state(saved)
        # A transform gives [T, 3, h, w] (one view) or [S, T, 3, h, w] (S views); tokens
        # [D, T, h, w] or [S, D, T, h, w].
        views = [output.unsqueeze(0) if output.ndim == 4 else output for output in outputs]
        return views[0] if len(views) == 1 else concat_clips(views, self.source.kind)

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
        """The item's clips (frame indices each) and labels (one a clip, or one for all)."""
        raise NotImplementedError

    def _item(self, index: int) -> dict[str, Any]:
        rng = self._generator(index)
        clip_indices, labels = self._sample(index, rng)
        frames = self.source.read(index, clip_indices)
        inputs = self._transform_clips(self.transform, frames, rng)
        return self._item_of(index, inputs, torch.tensor(labels, dtype=torch.long))

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedVideo:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} videos")
        try:
            return self._item(index)
        except (VideoDecodeError, VideoTooShortError) as error:
            path = str(self.records[index].path)
            warnings.warn(f"skipping video {error}", SkippedVideoWarning, stacklevel=2)
            return SkippedVideo(index=index, path=path, reason=str(error))

    @property
    def gathers(self) -> bool:
        """Whether batches come gathered whole (`gather`): tokens held in memory, through a
        transform that draws its choices first (`advise.data.store.TrainTokens`)."""
        return hasattr(self.transform, "draws") and getattr(self.source, "in_memory", False)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The items of a batch (the DataLoader asks so when it batches): one `Gathered` batch
        where `gather` makes it, else the items one by one (skipped and warned there)."""
        batch = self.gather(indices) if self.gathers else None
        return [Gathered(batch)] if batch is not None else [self[index] for index in indices]

    def gather(self, indices: Sequence[int]) -> dict[str, Any] | None:
        """The batch of items `indices` in one go (needs `gathers`): the views the transform
        draws gathered in one copy, then its crops and flips, making the very batch
        `collate_clips` makes of the items one by one, from the same random draws. None when
        a video cannot be read: the items are then made one by one (`__getitems__`).

        Uses private generators only, never torch's global one, so it may run in a thread
        beside training (`PrefetchedBatches`)."""
        picks, draws, labels, videos = [], [], [], []
        try:
            for index in indices:
                if not 0 <= index < len(self.records):
                    raise IndexError(f"index {index} out of range for {len(self.records)} videos")
                rng = self._generator(index)
                clip_indices, item_labels = self._sample(index, rng)
                num_views, height, width = self.source.grid(index)
                # the transform's draws, as `_transform_clips` makes them
                generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
                rows = 0
                for frames in clip_indices:
                    for draw in self.transform.draws(num_views, height, width, generator):
                        picks.append((index, frames, draw.view))
                        draws.append(draw)
                        rows += 1
                labels += _clip_labels(item_labels, rows, index)
                videos += [index] * rows
            inputs = self.source.gather(picks)  # [C, D, T, h, w]
        except (VideoDecodeError, VideoTooShortError):
            return None
        if not all(draw.picks_only for draw in draws):  # crops, flips: a clip at a time
            clips = [
                self.transform.apply(clip, draw) for clip, draw in zip(inputs, draws, strict=True)
            ]
            inputs = concat_clips([clip.unsqueeze(0) for clip in clips], self.source.kind)
        return {
            "input": inputs,
            "input_kind": self.source.kind,
            "labels": torch.tensor(labels, dtype=torch.long),
            "index": torch.tensor(list(indices), dtype=torch.long),
            "video_of_clip": torch.tensor(videos, dtype=torch.long),
            "skipped": 0,
            "skipped_paths": [],
        }


@dataclass(frozen=True)
class Gathered:
    """A batch `_VideoDataset.__getitems__` gathered whole; `collate_clips` passes it on."""

    batch: dict[str, Any]


def _clip_labels(labels: Sequence[int], num_clips: int, index: int) -> list[int]:
    """An item's labels, one per clip: a single label repeated, or one label per clip."""
    if len(labels) not in (1, num_clips):
        raise ValueError(f"item {index}: {len(labels)} labels for {num_clips} clips")
    return list(labels) * num_clips if len(labels) == 1 else list(labels)


class PretextDataset(_VideoDataset):
    """A pretext task's clips: the clips its sampler draws from each video, with their labels
    (e.g. playback-rate perception: several clips per video, labelled by speed).

    Item: {"input": float [N, T, 3, H, W] frames or [N, D, T, h, w] tokens (N clips from the
    sampler, each transformed with its own random draw), "input_kind", "labels": long [N] (the
    sampler's labels, e.g. the speed class of `PlaybackRateSampler`), "index": int}. The
    video's own label is not used.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        sampler: ClipSampler,
        transform: ClipTransform,
        seed: int = 0,
        source: Source | None = None,
    ) -> None:
        super().__init__(records, sampler.num_frames, seed, source)
        self.sampler = sampler
        self.transform = transform

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
        clips = self.sampler(self.source.num_frames(index), rng)
        return [indices for indices, _ in clips], [label for _, label in clips]


class ClipDataset(_VideoDataset):
    """One uniformly (TSN) sampled clip per video, labelled by the video's class.

    Frames: `segment_indices` (random within each segment when `train`, segment centres
    otherwise). Item: {"input": float [S, T, 3, H, W] (S = 1 for a [T, 3, H, W] transform, or
    the number of views a view transform makes; tokens from a store), "input_kind",
    "labels": long [1], "index": int}.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        num_frames: int,
        transform: ClipTransform,
        train: bool = True,
        seed: int = 0,
        source: Source | None = None,
    ) -> None:
        super().__init__(records, num_frames, seed, source)
        self.transform = transform
        self.train = train

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
        num_video_frames = self.source.num_frames(index)
        indices = segment_indices(num_video_frames, self.num_frames, rng if self.train else None)
        return [indices], [self.records[index].label]


class MultiViewDataset(_VideoDataset):
    """Multi-view testing: K temporal clips x S spatial views per video.

    Frames: `multiview_indices(num_video_frames, num_frames, num_clips)`; each clip goes
    through `views_transform` (e.g. `test_views`, uint8 [T, 3, H, W] -> [S, T, 3, h, w]).
    Item: {"input": float [K * S, T, 3, h, w] (clip-major: row k * S + s; tokens from a
    store), "input_kind", "labels": long [1], "index": int}; `collate_clips` repeats the label
    for every view.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        num_frames: int,
        num_clips: int,
        views_transform: ClipTransform,
        seed: int = 0,
        source: Source | None = None,
    ) -> None:
        super().__init__(records, num_frames, seed, source)
        self.num_clips = num_clips
        self.views_transform = views_transform

    @property
    def transform(self) -> ClipTransform:
        return self.views_transform

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
        clip_indices = multiview_indices(
            self.source.num_frames(index), self.num_frames, self.num_clips
        )
        return list(clip_indices), [self.records[index].label]


def concat_clips(inputs: Sequence[Tensor], kind: str) -> Tensor:
    """Clips [N_i, ...] of one kind -> [sum N_i, ...], a new tensor. Tokens [N_i, D, T, h, w]
    come out channels last whatever their layouts (torch.cat alone infers the layout from the
    strides of a one-clip tensor's dim 0, which mean nothing, and falls back to contiguous)."""
    if kind != "tokens":
        return torch.cat(list(inputs))
    rows = torch.cat([clips.permute(0, 2, 3, 4, 1) for clips in inputs])  # [sum N, T, h, w, D]
    return rows.permute(0, 4, 1, 2, 3)


def collate_clips(
    items: Sequence[dict[str, Any] | SkippedVideo | Gathered | None],
) -> dict[str, Any]:
    """Batch dataset items, dropping skipped videos (`SkippedVideo` or None); a batch gathered
    whole (`Gathered`) is returned as it is.

    Returns:
        {"input": float [C, T, 3, H, W] frames (all clips of all good items, item by item) or
         [C, D, T, h, w] stored tokens (channels last: `concat_clips`), "input_kind": "frames"
         or "tokens" (the items' own),
         "labels": long [C] (an item's single label is repeated for each of its clips),
         "index": long [B] (dataset index of each good item),
         "video_of_clip": long [C] (dataset index of the video each clip comes from),
         "skipped": int (items dropped), "skipped_paths": list[str] (their files, when known)}.
        With no good item, C = B = 0 and "input" is an empty [0, 0, 3, 0, 0] frames tensor.
    """
    if len(items) == 1 and isinstance(items[0], Gathered):
        return items[0].batch
    good = [item for item in items if isinstance(item, dict)]
    skipped = [item for item in items if not isinstance(item, dict)]
    skipped_paths = [item.path for item in skipped if isinstance(item, SkippedVideo)]
    if not good:
        return {
            "input": torch.empty((0, 0, 3, 0, 0)),
            "input_kind": "frames",
            "labels": torch.empty(0, dtype=torch.long),
            "index": torch.empty(0, dtype=torch.long),
            "video_of_clip": torch.empty(0, dtype=torch.long),
            "skipped": len(skipped),
            "skipped_paths": skipped_paths,
        }
    kinds = {item["input_kind"] for item in good}
    if len(kinds) > 1:
        raise ValueError(f"a batch mixes inputs of kinds {sorted(kinds)}")
    labels, video_of_clip = [], []
    for item in good:
        num_clips = item["input"].shape[0]
        labels += _clip_labels(item["labels"].reshape(-1).tolist(), num_clips, item["index"])
        video_of_clip += [int(item["index"])] * num_clips
    kind = kinds.pop()
    return {
        # [C, T, 3, H, W] frames / [C, D, T, h, w] tokens, channels last
        "input": concat_clips([item["input"] for item in good], kind),
        "input_kind": kind,
        "labels": torch.tensor(labels, dtype=torch.long),
        "index": torch.tensor([int(item["index"]) for item in good], dtype=torch.long),
        "video_of_clip": torch.tensor(video_of_clip, dtype=torch.long),
        "skipped": len(skipped),
        "skipped_paths": skipped_paths,
    }


def test_batches(dataset: Dataset, batch_size: int, num_workers: int = 0) -> Iterator[dict]:
    """The dataset's collated batches in order, for measuring a model: videos indexed first,
    batches whose every video was skipped left out."""
    dataset.index_videos()
    for batch in loader_batches(dataset, range(len(dataset)), batch_size, num_workers=num_workers):
        if batch["labels"].numel():
            yield batch


def loader_batches(
    dataset: Dataset,
    sampler: Iterable[int],
    batch_size: int,
    drop_last: bool = False,
    num_workers: int = 0,
) -> Iterable[dict[str, Any]]:
    """The collated batches of `dataset` in `sampler`'s order, as a DataLoader makes them.
    Batches gathered whole in this process (`_VideoDataset.gathers`, no worker processes)
    come from `PrefetchedBatches`, each made in a thread while the caller works on the one
    before it."""
    if num_workers == 0 and getattr(dataset, "gathers", False):
        return PrefetchedBatches(dataset, sampler, batch_size, drop_last)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,  # type: ignore[arg-type]
        num_workers=num_workers, collate_fn=collate_clips, persistent_workers=False,
    )  # fmt: skip


class PrefetchedBatches:
    """A DataLoader without workers over a dataset that gathers batches whole, but one batch
    ahead: while the caller trains on a batch, a thread gathers the next (`gather` draws from
    private generators only, and its copies and most of its indexing run without the GIL).
    The batches are the DataLoader's, bit for bit: the same chunks of the sampler's order,
    each made from the same draws. A batch that cannot be gathered (a video the store lacks)
    is made item by item in the caller's thread, after the thread's batch is done (items use
    torch's global generator, and read videos into the shared memory)."""

    def __init__(
        self, dataset: Any, sampler: Iterable[int], batch_size: int, drop_last: bool = False
    ) -> None:
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.drop_last = batch_size, drop_last

    def __len__(self) -> int:
        whole, rest = divmod(len(self.sampler), self.batch_size)  # type: ignore[arg-type]
        return whole + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from concurrent.futures import ThreadPoolExecutor, wait

        order = list(self.sampler)
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and chunks and len(chunks[-1]) < self.batch_size:
            chunks.pop()
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="advise-batches") as thread:
            pending = thread.submit(self.dataset.gather, chunks[0])
            for number, chunk in enumerate(chunks):
                batch = pending.result()
                if number + 1 < len(chunks):
                    pending = thread.submit(self.dataset.gather, chunks[number + 1])
                if batch is None:  # item by item, the thread idle meanwhile
                    wait([pending])
                    batch = collate_clips([self.dataset[index] for index in chunk])
                yield batch
