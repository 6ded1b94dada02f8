"""Where a dataset's frames come from: decoded videos, or a feature store's stored tokens.

A source answers the two questions a dataset asks of a video: how many frames it has, and
what these frame indices hold. `VideoSource` decodes the files (frames: uint8 [T, 3, H, W]
per clip); `StoreSource` reads what `advise extract` stored (tokens: float [V, T, D, h, w] per
clip, every stored view; pooled by the config's SFU where the store kept them whole). The
dataset samples the same frame indices from either, so a run from a store sees the frames a
run from videos would. `kind` names what a source's clips are
("frames" or "tokens"); items and batches carry it beside their one `input`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from advise.data.formats import VideoRecord
from advise.data.video import VideoDecodeError, count_frames, read_frames


class VideoTooShortError(Exception):
    """A record's frame range holds no frame."""


class Source(Protocol):
    kind: ClassVar[str]  # "frames" or "tokens"

    def num_frames(self, index: int) -> int:
        """Frames the samplers see for record `index`."""

    def read(self, index: int, clip_indices: Sequence[np.ndarray]) -> list[Tensor]:
        """Each clip's frames (indices count from the record's first frame)."""

    def index_videos(self) -> None:
        """Count every video's frames in this process before data workers fork."""


class VideoSource:
    """Decoded video files: each record's frame range of its file."""

    kind = "frames"

    def __init__(self, records: Sequence[VideoRecord]) -> None:
        self.records = list(records)

    def num_frames(self, index: int) -> int:
        """The length of the record's frame range (end clamped to the file)."""
        record = self.records[index]
        num_file_frames = count_frames(record.path)
        start, stop = record.frame_range(num_file_frames)
        if stop == start:  # a range shorter than a clip loops (advise.data.sampling)
            where = ""
            if (start, stop) != (0, num_file_frames):
                where = f" in frames [{start}, {stop}) of {num_file_frames}"
            raise VideoTooShortError(
                f"{record.path}: only 0 frames{where}, a clip needs at least 1"
            )
        return stop - start

    def read(self, index: int, clip_indices: Sequence[np.ndarray]) -> list[Tensor]:
        """Decode the union of the clips' frames once; uint8 [T, 3, H, W] per clip."""
        record = self.records[index]
        lengths = [len(indices) for indices in clip_indices]
        file_indices = np.concatenate(clip_indices) + record.start_frame
        frames = read_frames(record.path, file_indices)  # [sum T, H, W, 3]
        frames_tensor = torch.from_numpy(frames).permute(0, 3, 1, 2)  # -> [sum T, 3, H, W]
        return list(torch.split(frames_tensor, lengths))

    def index_videos(self) -> None:
        """One decode per file, cached in-process; bad videos are left for reads to report."""
        for record in self.records:
            try:
                count_frames(record.path)
            except VideoDecodeError:
                pass


class StoreSource:
    """A feature store's tokens of the records' videos (`advise.data.store.FeatureStore`),
    pooled by `pool` (an `advise.models.sfu.SFU`, [B, D, T, h, w] -> [B, c, T, s, s]) as they
    are read, when given: the pooling a config asks of a store that kept its tokens whole.

    Pooling here, before the token augmentation, makes a clip what a store extracted with
    that pooling (`--pool`) serves, bit for bit from an fp32 store, so a run trains the same
    whether its store was pooled before or after storing (the grid crop and flip act on the
    pooled grid in both); and the batches are smaller. The model's SFU then sees tokens
    already pooled to its sizes, which it passes unchanged (each output the mean of one input).
    """

    kind = "tokens"

    def __init__(
        self,
        store: Any,
        records: Sequence[VideoRecord],
        pool: Callable[[Tensor], Tensor] | None = None,
        in_memory: bool = False,
    ) -> None:
        self.store = store
        self.records = list(records)
        self.store_indices = [store.index_of_record(record) for record in self.records]
        self.pool = pool
        self.in_memory = in_memory
        # with in_memory: every video read so far, each [V, T, s, s, c] (channels last), a view
        # of `_rows`, which holds them all one after another as rows [V * T, s, s, c] (so a
        # batch of clips from many videos is one gather: `gather`)
        self.kept: dict[int, Tensor] = {}
        self._rows: Tensor | None = None
        self._first_row: dict[int, int] = {}  # store index -> its first row in `_rows`
        self._free_row = 0

    def _store_index(self, index: int) -> int:
        store_index = self.store_indices[index]
        if store_index is None:
            raise VideoDecodeError(self.records[index].path, "not in the feature store")
        return store_index

    def num_frames(self, index: int) -> int:
        return self.store.num_frames(self._store_index(index))

    def read(self, index: int, clip_indices: Sequence[np.ndarray]) -> list[Tensor]:
        """float [V, T, D, h, w] per clip: every stored view of the clip's frames ([V, T, c,
        s, s] when pooled as read)."""
        store_index = self._store_index(index)
        if self.in_memory:
            whole = self._whole(store_index)  # [V, T, h, w, D]
            # one copy of whole frames per clip, as [V, T, D, h, w] views of channels-last data:
            # the layout the token transforms keep and the TMM computes in on a CPU
            return [
                whole.index_select(1, torch.as_tensor(i, dtype=torch.long)).permute(0, 1, 4, 2, 3)
                for i in clip_indices
            ]
        clips = [self.store.read(store_index, indices) for indices in clip_indices]
        return clips if self.pool is None else [self._pooled(clip) for clip in clips]

    def _whole(self, store_index: int) -> Tensor:
        """Every frame of the video, pooled, [V, T, h, w, D] (channels last): read once, then
        kept."""
        if store_index not in self.kept:
            tokens = self.store.read(store_index, np.arange(self.store.num_frames(store_index)))
            tokens = tokens if self.pool is None else self._pooled(tokens)
            tokens = tokens.permute(0, 1, 3, 4, 2)  # [V, T, D, h, w] -> [V, T, h, w, D]
            if self._rows is None:  # room for every record's video (each stored once)
                stored = {i for i in self.store_indices if i is not None}
                total = tokens.shape[0] * sum(self._stored_frames(i) for i in stored)
                self._rows = torch.empty((total, *tokens.shape[2:]), dtype=tokens.dtype)
            first, count = self._free_row, tokens.shape[0] * tokens.shape[1]
            rows = self._rows[first : first + count]
            rows.view(tokens.shape).copy_(tokens)
            self._first_row[store_index], self._free_row = first, first + count
            self.kept[store_index] = rows.view(tokens.shape)
        return self.kept[store_index]

    def grid(self, index: int) -> tuple[int, int, int]:
        """(views, height, width) of record `index`'s tokens as read, with `in_memory` (raises
        `VideoDecodeError` as `read` does)."""
        views, _, height, width, _ = self._whole(self._store_index(index)).shape
        return views, height, width

    def _stored_frames(self, store_index: int) -> int:
        try:
            return self.store.num_frames(store_index)
        except VideoDecodeError:  # damaged: never kept
            return 0

    def gather(self, picks: Sequence[tuple[int, np.ndarray, int]]) -> Tensor:
        """The clips `picks` names, (record index, frame indices [T], stored view) each, as
        one batch float [C, D, T, h, w] (channels last), in one copy: what reading each clip
        and picking its view gives, batched by `concat_clips`. Needs `in_memory`; raises
        `VideoDecodeError` for a video it cannot read, as `read` does."""
        if not picks:
            raise ValueError("gather needs at least one clip")
        lengths = {len(frames) for _, frames, _ in picks}
        if len(lengths) != 1:
            raise ValueError(f"clips of one batch differ in length: {sorted(lengths)}")
        length = lengths.pop()
        firsts, sizes = [], []  # per clip: the first row of its view, the video's frame count
        for index, _, view in picks:
            store_index = self._store_index(index)
            views, frame_count = self._whole(store_index).shape[:2]
            if not 0 <= view < views:
                raise IndexError(f"view {view} of video {index}, which has {views}")
            firsts.append(self._first_row[store_index] + view * frame_count)
            sizes.append(frame_count)
        frames = np.concatenate([np.asarray(frames, dtype=np.int64) for _, frames, _ in picks])
        if frames.min() < 0 or (frames >= np.repeat(sizes, length)).any():  # one check a batch
            raise IndexError("a clip's frame index lies outside its video")
        assert self._rows is not None  # (kept by `_whole`)
        picked = self._rows.index_select(0, torch.from_numpy(np.repeat(firsts, length) + frames))
        # [C * T, h, w, D] -> [C, T, h, w, D] -> [C, D, T, h, w]
        return picked.view(len(picks), length, *picked.shape[1:]).permute(0, 4, 1, 2, 3)

    def _pooled(self, tokens: Tensor) -> Tensor:  # [V, T, D, h, w] -> [V, T, c, s, s]
        with torch.no_grad():
            # [V, T, D, h, w] -> [V, D, T, h, w], the SFU's layout (as in extraction)
            pooled = self.pool(tokens.permute(0, 2, 1, 3, 4))  # -> [V, c, T, s, s]
        return pooled.permute(0, 2, 1, 3, 4).contiguous()  # -> [V, T, c, s, s]

    def index_videos(self) -> None:
        pass  # stored frame counts are in the store's manifest


def source_of(
    records: Sequence[VideoRecord],
    store: Any = None,
    pool: Callable[[Tensor], Tensor] | None = None,
    in_memory: bool = False,
) -> Source:
    """The records' videos decoded, or their tokens in `store` when one is given (pooled by
    `pool` as they are read, when given, and kept in memory with `in_memory`; see
    `StoreSource`)."""
    if store is None:
        return VideoSource(records)
    return StoreSource(store, records, pool, in_memory)
