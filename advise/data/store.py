"""The feature store: the frozen IFM's tokens of every video, computed once, read many times.

The IFM never changes, so a video's tokens under a deterministic view never change either.
`extract` runs the IFM once over every video of a dataset (every `frame_stride`-th frame, one
or three deterministic spatial views, optionally pooled by the config's SFU) and stores them;
training and evaluation then read tokens instead of decoding and encoding frames
(`data.source=store:PATH`), which removes the IFM from every later epoch and run. A store
extracted without pooling serves every SFU pooling (`sfu.spatial`, `sfu.channels`): the
reader pools its tokens (`pooling_at_read`), which equals pooling before storing (bit for bit
from an fp32 store), so pooling ablations share one extraction.

Layout of a store folder:

    store.json          what the tokens are (`StoreSpec`): IFM name and weights hash, input
                        size, precision, views, frame stride, dtype, pooling, token shape,
                        the IFM blocks read (ifm.layers, ifm.layer_merge)
    videos/0000017.npy  tokens of video 17: [V, T, D, h, w] (V views, T stored frames), fp16,
                        fp32 or int8; memory-mapped on read, so reading any frames of any video
                        touches only those frames (no per-read decompression)
    videos/0000017.scale.npy   int8 only: float32 [V, D] per-channel scales (value = q * scale)
    manifest.json       written when extraction completes: the spec, and per video its path
                        (relative to data.root), label, stored frame count and file; the
                        videos that failed to decode

Opening a store checks it against its manifest: every token file's header (dtype, shape) and
byte size, without reading the tokens. A video whose file is missing, cut or of another shape
is *damaged*: training and evaluation skip it like a video that does not decode (named, and
counted against `data.max_bad_fraction`); rerunning `advise extract` with the same --out
re-extracts exactly the damaged files and rewrites the manifest. A manifest that is not
readable JSON of the expected layout, or does not match the checksum it carries (an edit that
keeps the JSON valid), is a `StoreError` saying so.

Resumable: every file is written by `advise.files.atomic_write` (a temporary name, fsynced and
renamed), so a killed extraction leaves only whole files; a rerun skips them and produces a store
identical to an uninterrupted one (the IFM runs the same frames in the same chunks). Several
processes (`rank`, `world_size`) split the videos between them; the manifest is written once all
are done. `StoreWriter` does the writing; `advise.runs.extract` feeds it the IFM's tokens.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from advise.files import atomic_write
from advise.provenance import json_sha256

STORE_VERSION = 1
DTYPES = ("fp16", "fp32", "int8")
_NUMPY_DTYPES = {"fp16": np.float16, "fp32": np.float32, "int8": np.int8}


class StoreError(ValueError):
    """A store is missing, incomplete, or does not match the config that wants to use it."""


def token_file_problem(file: Path, dtype: str, shape: tuple[int | None, ...]) -> str | None:
    """What is wrong with a stored .npy file, or None: missing, not an .npy, another dtype,
    another shape (None in `shape` accepts any size on that axis), or a byte size other than
    its header promises (cut short by a crash of the disk, or grown). Reads the header only."""
    try:
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                stored_shape, fortran, stored_dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                stored_shape, fortran, stored_dtype = np.lib.format.read_array_header_2_0(handle)
            data_offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        return f"{file} is missing"
    except (OSError, ValueError) as error:  # numpy raises ValueError for a bad header
        return f"{file} is not a readable .npy file ({error})"
    if stored_dtype != np.dtype(dtype) or fortran:
        return (
            f"{file} holds {stored_dtype}{' (Fortran order)' * fortran}, expected {np.dtype(dtype)}"
        )
    if len(stored_shape) != len(shape) or any(
        want is not None and have != want for have, want in zip(stored_shape, shape, strict=False)
    ):
        wanted = "x".join("*" if want is None else str(want) for want in shape)
        return f"{file} holds shape {list(stored_shape)}, expected {wanted}"
    expected = data_offset + int(np.prod(stored_shape)) * stored_dtype.itemsize
    if size != expected:
        return f"{file} is {size} bytes, its header promises {expected}"
    return None


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON, its own "sha256" entry left out: an edit that
    keeps the JSON valid (two videos' paths swapped: each trained under the other's label)
    no longer goes unnoticed."""
    return json_sha256({key: value for key, value in manifest.items() if key != "sha256"})


def read_manifest(store: Path) -> dict[str, Any]:
    """A store's manifest.json, checked: readable JSON, a store manifest, its checksum (when it
    has one: stores extracted before checksums have none) and its version. Raises
    `StoreError` saying what is wrong and how to repair it."""
    path = store / "manifest.json"
    repair = f"rerun `advise extract` with the same --out ({store}) to repair it"
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError
        raise StoreError(f"{path} is damaged ({error}); {repair}") from None
    if not isinstance(manifest, dict) or "version" not in manifest:
        raise StoreError(f"{path} is damaged (not a store manifest); {repair}")
    if "sha256" in manifest and manifest["sha256"] != manifest_checksum(manifest):
        raise StoreError(
            f"{path} does not match its checksum: it was edited or damaged after extraction; "
            f"{repair}"
        )
    if manifest["version"] != STORE_VERSION:
        raise StoreError(
            f"{path}: store version {manifest['version']}, this advise reads {STORE_VERSION}; "
            "extract it again"
        )
    return manifest


def video_problem(
    store: Path, index: int, spec: StoreSpec, frames: int | None = None
) -> str | None:
    """What is wrong with the stored files of video `index` (tokens, and int8 scales), or
    None. `frames` (the manifest's count) is checked when given."""
    file = store / video_file(index)
    problem = token_file_problem(
        file, _NUMPY_DTYPES[spec.dtype], (spec.views, frames, *spec.token_shape)
    )
    if problem is None and spec.dtype == "int8":
        problem = token_file_problem(
            file.with_suffix(".scale.npy"), np.float32, (spec.views, spec.token_shape[0])
        )
    return problem


class DamagedStoreWarning(UserWarning):
    """Some videos' stored tokens are damaged; they are skipped."""


@dataclass(frozen=True)
class StoreSpec:
    """What a store's tokens are; two stores with equal specs hold interchangeable tokens."""

    ifm: str
    weights_hash: str
    random_init: bool
    img_size: int
    precision: str
    interpolation: str
    views: int  # 1 = centre crop; 3 = start / centre / end of the long side
    frame_stride: int  # every frame_stride-th frame of the video is stored
    dtype: str  # fp16 | fp32 | int8 (symmetric, per view and channel)
    # SFU pooling applied before storing (--pool); None = kept whole (any pooling a config
    # asks for is applied as the tokens are read)
    spatial: int | None
    channels: int | None
    token_shape: tuple[int, int, int]  # (D, h, w) as stored
    # ifm.layers / ifm.layer_merge as the config gave them (a store written before they
    # existed holds the last block's tokens: None)
    layers: tuple[int, ...] | None = None
    layer_merge: str = "concat"

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["token_shape"] = list(self.token_shape)
        values["layers"] = None if self.layers is None else list(self.layers)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StoreSpec:
        values = {**SPEC_DEFAULTS, **values}
        layers = values["layers"]
        return cls(**{
            **values,
            "token_shape": tuple(values["token_shape"]),
            "layers": None if layers is None else tuple(int(index) for index in layers),
        })  # fmt: skip


# spec fields added after stores were first written: what a store without them holds
SPEC_DEFAULTS: dict[str, Any] = {"layers": None, "layer_merge": "concat"}


# ------------------------------------------------------------------------------- writing


def quantize_int8(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, T, D, h, w] float -> (int8 of the same shape, float32 scales [V, D]).

    Symmetric per view and channel: scale = max |x| / 127 over (T, h, w), so
    `q * scale` is within scale / 2 of x.
    """
    peak = np.abs(tokens).max(axis=(1, 3, 4)).astype(np.float32)  # [V, D]
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    quantized = np.rint(tokens / scales[:, None, :, None, None])
    return np.clip(quantized, -127, 127).astype(np.int8), scales


def _write_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(path, buffer.getbuffer())


def video_file(index: int) -> str:
    return f"videos/{index:07d}.npy"


def write_video_tokens(store: Path, index: int, tokens: np.ndarray, dtype: str) -> None:
    """Store one video's tokens [V, T, D, h, w] (the scales first, so the token file's
    presence means the video is complete)."""
    path = store / video_file(index)
    if dtype == "int8":
        quantized, scales = quantize_int8(tokens)
        _write_array(path.with_suffix(".scale.npy"), scales)
        _write_array(path, quantized)
    else:
        _write_array(path, tokens.astype(_NUMPY_DTYPES[dtype]))


def encode_views(ifm: nn.Module, sfu: nn.Module, views: Tensor, chunk_frames: int) -> np.ndarray:
    """Normalised views [V, T, 3, H, W] -> tokens [V, T, D, h, w] float32 (pooled by `sfu`).

    Frames go through the IFM `chunk_frames` at a time, always in the same chunks, so the
    result does not depend on anything but the video.
    """
    device = next(ifm.parameters()).device
    num_frames = views.shape[1]
    chunks = []
    for start in range(0, num_frames, chunk_frames):
        frames = views[:, start : start + chunk_frames].to(device)  # [V, t, 3, H, W]
        with torch.no_grad():
            tokens = sfu(ifm(frames))  # [V, D, t, h, w]
        chunks.append(tokens.float().cpu())
    tokens = torch.cat(chunks, dim=2)  # [V, D, T, h, w]
    return tokens.permute(0, 2, 1, 3, 4).contiguous().numpy()  # -> [V, T, D, h, w]


class StoreWriter:
    """Writes one store folder, as process `rank` of `world_size` (each takes every
    world_size-th video).

    `start()` writes store.json, or checks that the store being resumed was started with the
    same spec and data root; `todo(count)` is this process's share of the `count` videos, less
    those already stored whole; `write(index, tokens)` stores one video; `finish(stored)`
    marks the share done; once `all_done()`, `write_manifest(records)` lists every stored video
    and makes the store readable.
    """

    def __init__(
        self, path: Path, spec: StoreSpec, data_root: str, rank: int = 0, world_size: int = 1
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.data_root = data_root  # data.root as configured (recorded absolute)
        self.rank = rank
        self.world_size = world_size

    def _record(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "data_root": _absolute(self.data_root)}

    def start(self, records: Sequence[Any] | None = None) -> None:
        """Write store.json, or check that a store being resumed was started with this spec (one
        started before a spec field existed holds that field's default, `SPEC_DEFAULTS`).
        Removes the temporary files a killed extraction left.

        With `records` (the videos, store index = position), store.json lists each index's
        video (file and frame range), and a resumed store's files stored for another video
        than the one now at their index (another subset first, an edited annotation list) are
        removed, to be extracted again: a file is never listed under another video's name."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "videos").mkdir(exist_ok=True)
        for stale in (self.path / "videos").glob(".*.tmp"):  # half-written by a killed extraction
            stale.unlink(missing_ok=True)
        keys = None if records is None else [self._video_key(record) for record in records]
        if (self.path / "store.json").is_file():
            started = self._check_started()
            if keys is not None:
                self._forget_moved(started, keys)
        else:
            record = self._record() if keys is None else {**self._record(), "videos": keys}
            atomic_write(self.path / "store.json", json.dumps(record, indent=2))

    def _video_key(self, record: Any) -> list[Any]:
        return [_relative_key(record.path, self.data_root), record.start_frame, record.end_frame]

    def _forget_moved(self, started: dict[str, Any], keys: list[list[Any]]) -> None:
        """Remove the stored files of each index whose video is not `keys`' (all of them
        when the store does not say which video each holds), and then a manifest that lists
        them (until the new one, a reader is told the extraction has not finished, never
        served a new video's file under an old name); record `keys`."""
        before = started.get("videos")
        if not isinstance(before, list):
            before = _manifest_keys(self.path)  # started before store.json listed them
        moved = [index for index in range(len(keys))
                 if index >= len(before) or before[index] != keys[index]]  # fmt: skip
        for index in moved:
            file = self.path / video_file(index)
            file.unlink(missing_ok=True)
            file.with_suffix(".scale.npy").unlink(missing_ok=True)
        if any(index < len(before) for index in moved):  # not only videos added at the end
            (self.path / "manifest.json").unlink(missing_ok=True)
        if started.get("videos") != keys:
            record = {**self._record(), "videos": keys}  # (started: the same settings)
            atomic_write(self.path / "store.json", json.dumps(record, indent=2))

    def _check_started(self) -> dict[str, Any]:
        """store.json as started (checked against this writer's spec and data root)."""
        path, record = self.path / "store.json", self._record()
        try:
            started = json.loads(path.read_bytes())
        except ValueError as error:
            finished = _manifest_record(self.path)
            if finished is not None and isinstance(finished["spec"], dict):
                finished["spec"] = {**SPEC_DEFAULTS, **finished["spec"]}
            if finished != record:
                raise StoreError(
                    f"{path} is damaged ({error}): the settings of the store in {self.path} are "
                    "unknown; extract into another --out (or delete that folder)"
                ) from None
            started = record  # a finished store's manifest says what it was: repair it
            atomic_write(path, json.dumps(record, indent=2))
        if not isinstance(started, dict) or not isinstance(started.get("spec"), dict):
            started = {"spec": {}}
        started = {**started, "spec": {**SPEC_DEFAULTS, **started["spec"]}}
        settings = {key: value for key, value in started.items() if key != "videos"}
        if settings != record:
            differences = [
                key for key in record["spec"] if started["spec"].get(key) != record["spec"][key]
            ] + (["data_root"] if started.get("data_root") != record["data_root"] else [])
            raise StoreError(
                f"{self.path} holds a store started with other settings "
                f"({', '.join(differences)} differ); resume with the same ones or choose "
                "another --out"
            )
        return started

    def todo(self, count: int) -> list[int]:
        """This process's videos among `count` that are not stored yet, or stored damaged (a
        file cut by a crash of the disk)."""
        return [
            index
            for index in range(count)
            if index % self.world_size == self.rank
            and video_problem(self.path, index, self.spec) is not None
        ]

    def write(self, index: int, tokens: np.ndarray) -> None:
        """Store the tokens [V, T, D, h, w] (float) of video `index` in the spec's dtype."""
        write_video_tokens(self.path, index, tokens, self.spec.dtype)

    def _done_file(self, rank: int) -> Path:
        return self.path / f"done.{rank}-of-{self.world_size}"

    def finish(self, stored: int) -> None:
        """Mark this process's share done (`stored` of its videos decoded and stored)."""
        atomic_write(self._done_file(self.rank), f"{stored}\n")

    def all_done(self) -> bool:
        """Every process has finished its share."""
        return all(self._done_file(rank).is_file() for rank in range(self.world_size))

    def write_manifest(self, records: Sequence[Any]) -> None:
        """manifest.json: per video of `records` (store index = position) its path relative to
        the data root, frame range (when it has one: `start_frame`, `end_frame`), label,
        stored frame count and file; the videos not stored whole (undecodable, or damaged
        since) are listed as failed."""
        videos, failed = [], []
        for index, record in enumerate(records):
            key = _relative_key(record.path, self.data_root)
            file = self.path / video_file(index)
            if video_problem(self.path, index, self.spec) is not None:
                failed.append(key)
                continue
            frames = int(np.load(file, mmap_mode="r").shape[1])
            entry = {"path": key, "label": record.label, "frames": frames,
                     "file": video_file(index)}  # fmt: skip
            if (record.start_frame, record.end_frame) != (0, None):
                entry.update(start_frame=record.start_frame, end_frame=record.end_frame)
            videos.append(entry)
        manifest = {
            "version": STORE_VERSION,
            "spec": self.spec.to_dict(),
            "data_root": _absolute(self.data_root),
            "videos": videos,
            "failed": failed,
        }
        manifest["sha256"] = manifest_checksum(manifest)
        atomic_write(self.path / "manifest.json", json.dumps(manifest, indent=1))


def _manifest_record(store: Path) -> dict[str, Any] | None:
    """What store.json held, as an intact manifest records it; None without one."""
    try:
        manifest = read_manifest(store)
        return {"spec": manifest["spec"], "data_root": manifest["data_root"]}
    except (StoreError, KeyError):
        return None


def _manifest_keys(store: Path) -> list[Any]:
    """Each index's video [path, start frame, end frame] as an intact manifest lists it (None
    where it lists none); [] without one."""
    try:
        held = {int(Path(entry["file"]).stem): list(_entry_key(entry))
                for entry in read_manifest(store)["videos"]}  # fmt: skip
    except (StoreError, KeyError, TypeError, ValueError):
        return []
    keys: list[Any] = [None] * (max(held, default=-1) + 1)
    for index, key in held.items():
        keys[index] = key
    return keys


def _entry_key(entry: dict[str, Any]) -> tuple[str, int, int | None]:
    """A manifest entry's video: (path, start frame, end frame), the whole file by default."""
    return entry["path"], int(entry.get("start_frame", 0)), entry.get("end_frame")


def _absolute(root: str) -> str:
    """A store records its data root absolute: a relative one would mean another folder as
    soon as the store is used from another working directory."""
    return os.path.abspath(os.path.expanduser(root))


# ------------------------------------------------------------------------------- reading


class FeatureStore:
    """Read a complete store: tokens of any frames of any video, memory-mapped.

    `index_of(path, start_frame, end_frame)` finds a video by its path and frame range (a
    record's: `index_of_record`; two ranges of one file are two videos): its path relative to
    `data_root`, the root the videos are read under now (`data.root`; a dataset tree and its
    store can move together), else relative to the root the store was extracted from, else
    absolute. `read(index,
    frame_indices)` returns float32 tensors [V, T, D, h, w] of those stored frames, all views.
    """

    def __init__(self, path: str | Path, data_root: str | Path | None = None) -> None:
        self.path = Path(path).expanduser()
        self.data_root = None if data_root is None else str(data_root)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            hint = (
                " (extraction has not finished: rerun `advise extract` with the same --out)"
                if (self.path / "store.json").is_file()
                else ""
            )
            raise StoreError(f"{self.path} is not a feature store: no manifest.json{hint}")
        repair = f"rerun `advise extract` with the same --out ({self.path}) to repair it"
        manifest = read_manifest(self.path)
        try:
            self.spec = StoreSpec.from_dict(manifest["spec"])
            self.root = str(manifest["data_root"])
            self.videos = list(manifest["videos"])
            self.failed = list(manifest.get("failed", []))
            self._index = {_entry_key(entry): index for index, entry in enumerate(self.videos)}
            frame_counts = [int(entry["frames"]) for entry in self.videos]
            files = [str(entry["file"]) for entry in self.videos]
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(
                f"{manifest_path} is damaged (missing or malformed {error}); {repair}"
            ) from None
        self.manifest = manifest
        self._open: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        # video index -> what is wrong with its stored files
        self.damaged: dict[int, str] = {}
        for index, (file, frames) in enumerate(zip(files, frame_counts, strict=True)):
            problem = (
                f"{file} is not a store file name"
                if file != video_file(index)
                else video_problem(self.path, index, self.spec, frames)
            )
            if problem is not None:
                self.damaged[index] = problem
        if self.damaged:
            first = next(iter(self.damaged.values()))
            warnings.warn(
                f"feature store {self.path}: the tokens of {len(self.damaged)} of "
                f"{len(self.videos)} videos are damaged and will be skipped (first: {first}); "
                f"{repair}",
                DamagedStoreWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.videos)

    def index_of(
        self, path: str | Path, start_frame: int = 0, end_frame: int | None = None
    ) -> int | None:
        """The store index of a video file's frames [start_frame, end_frame) (the whole file
        by default), or None when the store lacks them."""
        for root in (self.data_root, self.root):
            if root is not None:
                index = self._index.get((_relative_key(path, root), start_frame, end_frame))
                if index is not None:
                    return index
        return None

    def _relative_keys(self, path: str | Path) -> set[str]:
        return {_relative_key(path, root) for root in (self.data_root, self.root) if root}

    def index_of_record(self, record: Any) -> int | None:
        """The store index of a `VideoRecord`'s video and frame range, or None."""
        return self.index_of(record.path, record.start_frame, record.end_frame)

    def check_covers(self, records: Sequence[Any], max_missing_fraction: float) -> None:
        """Refuse to serve a split (its `VideoRecord`s) when more of its videos are missing
        from the store than `max_missing_fraction` (`data.max_bad_fraction`) allows; fewer are
        skipped, warned, like videos that fail to decode. Missing usually means another split
        or data root, or another frame range of the file."""
        paths = [record.path for record in records]
        indices = [self.index_of_record(record) for record in records]
        missing = [str(path) for path, index in zip(paths, indices, strict=True) if index is None]
        damaged = [self.damaged[index] for index in indices if index in self.damaged]
        if len(missing) + len(damaged) <= max_missing_fraction * len(paths):
            return
        if len(damaged) > max_missing_fraction * len(paths):
            raise StoreError(
                f"feature store {self.path}: the tokens of {len(damaged)} of the {len(paths)} "
                f"videos asked for are damaged (data.max_bad_fraction={max_missing_fraction}), "
                f"first: {damaged[0]}; rerun `advise extract` with the same --out to repair it"
            )
        roots = f"it was extracted from {self.root}"
        if self.data_root is not None and _relative_key(self.data_root, self.root) != ".":
            roots += f", the config reads videos under {self.data_root}"
        stored_files = {key[0] for key in self._index}
        ranged = [
            record for record, index in zip(records, indices, strict=True)
            if index is None and self._relative_keys(record.path) & stored_files
        ]  # fmt: skip
        if ranged:
            first = ranged[0]
            roots += (
                f"; {len(ranged)} of them are stored with other frame ranges (first "
                f"{first.path} [{first.start_frame}, {first.end_frame})): the store is found "
                "by file and frame range, and a store made before ranges were recorded holds "
                "each file whole"
            )
        raise StoreError(
            f"feature store {self.path} lacks {len(missing)} of the {len(paths)} videos asked "
            f"for (and {len(damaged)} are damaged; data.max_bad_fraction="
            f"{max_missing_fraction}), first {missing[0]}: {roots}; extract this split into the "
            "store (`advise extract --subset ...`) or point data.root at the tree it was "
            "extracted from"
        )

    def num_frames(self, index: int) -> int:
        """Stored frames of video `index`; raises `VideoDecodeError` when its files are damaged."""
        self._refuse_damaged(index)
        return int(self.videos[index]["frames"])

    def read(self, index: int, frame_indices: Sequence[int] | np.ndarray) -> Tensor:
        """float32 [V, len(frame_indices), D, h, w]: the stored frames, every view.

        Raises `VideoDecodeError` (naming the video and the file) when the video's files are
        damaged, or turn out to be when read (changed since the store was opened, or holding
        non-finite values: an IFM never writes those, flipped bits can)."""
        self._refuse_damaged(index)
        try:
            tokens, scales = self._arrays(index)
            picked = np.asarray(tokens[:, np.asarray(frame_indices, dtype=np.int64)])
        except (OSError, ValueError, IndexError) as error:
            self.damaged[index] = f"{self.path / self.videos[index]['file']}: {error}"
            self._open.pop(index, None)
            self._refuse_damaged(index)
        values = torch.from_numpy(picked).float()  # torch converts fp16 ~5x faster than numpy
        if scales is not None:
            values *= torch.from_numpy(scales)[:, None, :, None, None]
        # Bits flipped in the data can make a NaN, which would score as a win. A sum is 35x
        # cheaper than isfinite().all() here and carries any nan or inf through.
        if not math.isfinite(float(values.sum())):
            self.damaged[index] = (
                f"{self.path / self.videos[index]['file']} holds non-finite values (nan or inf)"
            )
            self._refuse_damaged(index)
        return values

    def _refuse_damaged(self, index: int) -> None:
        if index in self.damaged:
            from advise.data.video import VideoDecodeError

            video = os.path.join(self.data_root or self.root, self.videos[index]["path"])
            raise VideoDecodeError(video, f"stored tokens damaged: {self.damaged[index]}")

    def _arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        if index not in self._open:
            file = self.path / self.videos[index]["file"]
            tokens = np.load(file, mmap_mode="r", allow_pickle=False)
            scales = None
            if self.spec.dtype == "int8":
                scales = np.load(file.with_suffix(".scale.npy"), allow_pickle=False)
            if len(self._open) > 4096:  # bound open memory maps (file handles) per process
                self._open.clear()
            self._open[index] = (tokens, scales)
        return self._open[index]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen their own maps
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    def check_matches(self, expected: StoreSpec, what: str = "this config") -> None:
        """Refuse a store whose tokens are not those `expected` describes, saying what differs.

        Views: a store with 3 views serves 1-view uses too (its centre view), not the reverse.
        Pooling: `expected.spatial` / `expected.channels` are the SFU sizes asked for; an axis
        the store kept whole serves any size that fits it (pooled as it is read,
        `pooling_at_read`), an axis it pooled (`--pool`) only the size it pooled to.
        """
        differences = self._pooling_differences(expected, what)
        for key in (
            "ifm", "weights_hash", "img_size", "frame_stride", "token_shape", "layers",
            "layer_merge",
        ):  # fmt: skip
            have, want = getattr(self.spec, key), getattr(expected, key)
            if have != want:
                if key in SPEC_DEFAULTS:  # named by their config key, lists as written
                    key = f"ifm.{key}"
                    have, want = (list(v) if isinstance(v, tuple) else v for v in (have, want))
                differences.append(f"{key}: store {have!r}, {what} {want!r}")
        if expected.views > self.spec.views:
            differences.append(f"views: store {self.spec.views}, {what} needs {expected.views}")
        if differences:
            raise StoreError(
                f"feature store {self.path} does not match {what}: " + "; ".join(differences)
            )

    def _pooling_differences(self, expected: StoreSpec, what: str) -> list[str]:
        """What keeps the store from serving the SFU pooling `expected` asks for."""
        dim, height, width = self.spec.token_shape
        differences = []
        for key, limit, unit in (
            ("spatial", min(height, width), f"{height}x{width} token grid"),
            ("channels", dim, f"{dim} channels"),
        ):
            have, want = getattr(self.spec, key), getattr(expected, key)
            if have is not None and have != want:
                differences.append(
                    f"sfu.{key}: store {have!r}, {what} {want!r} (the store was extracted with "
                    f"--pool: its tokens are pooled to sfu.{key}={have!r} and serve no other; "
                    f"a store extracted without --pool serves any sfu.{key}, pooled as its "
                    "tokens are read)"
                )
            elif have is None and want is not None and want > limit:
                differences.append(f"sfu.{key}: {what} {want!r} exceeds the store's {unit}")
        return differences


def pooling_at_read(
    stored: StoreSpec, spatial: int | None, channels: int | None
) -> tuple[int | None, int | None]:
    """The SFU sizes (spatial, channels) still to apply to a store's tokens as they are read,
    for a config asking `spatial` / `channels`: its sizes on the axes the store kept whole,
    None on those the store pooled (`--pool`, to the same size: `check_matches`).

    Pooling fp32 tokens as they are read gives the tokens pooling before storing gives, bit
    for bit: the same SFU, summing the same values in the same order (the IFM's output is
    fp32 whatever its precision). fp16 and int8 stores round before pooling instead of after:
    within one fp16 step (int8: one quantisation step) of a store extracted with --pool. A
    store pooled on channels alone and read with spatial pooling reverses the SFU's order
    (spatial, then channels): equal within fp32 rounding, not bit for bit.
    """
    return (
        spatial if stored.spatial is None else None,
        channels if stored.channels is None else None,
    )


def _relative_key(path: str | Path, root: str) -> str:
    path = os.path.abspath(os.path.expanduser(str(path)))
    root = os.path.abspath(os.path.expanduser(root))
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else relative


# ---------------------------------------------------------------------- token transforms


def channels_last_clip(clip: Tensor) -> Tensor:
    """A token clip [D, T, h, w] with D innermost in memory (channels last), copied only where
    it is not laid out so already: the layout of the batches `collate_clips` makes, which the
    TMM computes in on a CPU (`advise.models.tmm.BottleneckTMM`), so batching them needs no
    transposing copy."""
    return clip.unsqueeze(0).contiguous(memory_format=torch.channels_last_3d).squeeze(0)


@dataclass(frozen=True)
class TokenDraw:
    """What a token transform does to one output clip: the stored `view` it takes, the crop
    `box` (top, left, height, width) it resizes back to the whole grid (None: no crop), and
    whether it flips the grid."""

    view: int
    box: tuple[int, int, int, int] | None = None
    flip: bool = False

    @property
    def picks_only(self) -> bool:
        return self.box is None and not self.flip


class TrainTokens:
    """Training augmentation on stored token grids, clip-consistent (one draw per clip).

    [V, T, D, h, w] (every stored view) -> [D, T, h, w]: a random stored view; a random crop
    of the grid covering a fraction of its area in [scale_min, 1] (aspect 3/4..4/3), resized
    back to h x w (bilinear), like RandomResizedCrop on frames; a horizontal flip of the grid
    with p = 0.5 when `flip`. Colour augmentation has no meaning on tokens and is not offered.

    A call is `draws` then `apply`: a batch gathered whole (`_VideoDataset.__getitems__`)
    draws first, copies only the views drawn, then applies the rest.
    """

    def __init__(self, flip: bool = True, scale_min: float = 1.0) -> None:
        self.flip = flip
        self.scale_min = scale_min

    def __call__(self, tokens: Tensor) -> Tensor:
        num_views, _, _, height, width = tokens.shape
        (draw,) = self.draws(num_views, height, width)
        return self.apply(
            tokens[draw.view].permute(1, 0, 2, 3), draw
        )  # [T, D, h, w] -> [D, T, h, w]

    def draws(
        self, num_views: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> list[TokenDraw]:
        """The call's random draws for a [num_views, T, D, height, width] input, from
        `generator` (torch's default one when None), in the call's order."""
        view = int(torch.randint(num_views, (), generator=generator))
        box = self._box(height, width, generator) if self.scale_min < 1.0 else None
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        return [TokenDraw(view, None if box == (0, 0, height, width) else box, flip)]

    def apply(self, clip: Tensor, draw: TokenDraw) -> Tensor:
        """The drawn crop and flip of one view's clip [D, T, h, w], channels last."""
        if draw.box is not None:
            height, width = clip.shape[-2:]
            top, left, crop_h, crop_w = draw.box
            cropped = clip[..., top : top + crop_h, left : left + crop_w]  # [D, T, ch, cw]
            clip = functional.interpolate(
                cropped, size=(height, width), mode="bilinear", align_corners=False
            )  # [D, T, ch, cw] -> [D, T, h, w] (T acts as the batch of 2D maps)
        if draw.flip:
            clip = clip.flip(-1)
        return channels_last_clip(clip)

    def _box(
        self, height: int, width: int, generator: torch.Generator | None
    ) -> tuple[int, int, int, int]:
        area = float(torch.empty(()).uniform_(self.scale_min, 1.0, generator=generator))
        area *= height * width
        log_ratio = float(
            torch.empty(()).uniform_(np.log(3 / 4), np.log(4 / 3), generator=generator)
        )
        crop_h = int(round(np.sqrt(area / np.exp(log_ratio))))
        crop_w = int(round(np.sqrt(area * np.exp(log_ratio))))
        crop_h, crop_w = min(max(crop_h, 1), height), min(max(crop_w, 1), width)
        top = int(torch.randint(height - crop_h + 1, (), generator=generator))
        left = int(torch.randint(width - crop_w + 1, (), generator=generator))
        return top, left, crop_h, crop_w

    def __repr__(self) -> str:
        return f"TrainTokens(flip={self.flip}, scale_min={self.scale_min})"


class TokenViews:
    """Deterministic test views from stored tokens: [V, T, D, h, w] -> [S, D, T, h, w].

    `num_crops` = the stored view count gives every view; 1 gives the centre view (index
    V // 2: the centre crop of a 3-view store, the only view of a 1-view store).
    """

    def __init__(self, num_crops: int = 1) -> None:
        self.num_crops = num_crops

    def __call__(self, tokens: Tensor) -> Tensor:
        num_views = tokens.shape[0]
        if self.num_crops == 1:
            tokens = tokens[num_views // 2 : num_views // 2 + 1]
        elif self.num_crops != num_views:
            raise StoreError(f"{self.num_crops} test crops asked of a {num_views}-view store")
        # [S, T, D, h, w] -> [S, D, T, h, w], channels last (as `channels_last_clip`)
        return tokens.permute(0, 2, 1, 3, 4).contiguous(memory_format=torch.channels_last_3d)

    def draws(
        self, num_views: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> list[TokenDraw]:
        """The stored views a call gives, in order (it draws nothing)."""
        if self.num_crops == 1:
            return [TokenDraw(num_views // 2)]
        if self.num_crops != num_views:
            raise StoreError(f"{self.num_crops} test crops asked of a {num_views}-view store")
        return [TokenDraw(view) for view in range(num_views)]

    def apply(self, clip: Tensor, draw: TokenDraw) -> Tensor:
        return clip

    def __repr__(self) -> str:
        return f"TokenViews(num_crops={self.num_crops})"


class CentreTokens:
    """One deterministic view, [V, T, D, h, w] -> [D, T, h, w] (pretext evaluation)."""

    def __call__(self, tokens: Tensor) -> Tensor:
        return TokenViews(1)(tokens)[0]

    def draws(
        self, num_views: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> list[TokenDraw]:
        return TokenViews(1).draws(num_views, height, width)

    def apply(self, clip: Tensor, draw: TokenDraw) -> Tensor:
        return clip


class FrameViewsDataset(torch.utils.data.Dataset):
    """Every `frame_stride`-th frame of each video, as deterministic views, for extraction.

    Item: {"index": store index, "views": float [V, T, 3, H, W] normalised for the IFM}, or a
    `SkippedVideo` for a video that cannot be decoded (warned, and absent from the store).
    """

    def __init__(self, entries: Sequence[tuple[int, Any]], frame_stride: int, views) -> None:
        self.entries = list(entries)  # (store index, VideoRecord)
        self.frame_stride = frame_stride
        self.views = views

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, position: int) -> dict[str, Any] | Any:
        from advise.data.datasets import SkippedVideo, SkippedVideoWarning
        from advise.data.video import VideoDecodeError, count_frames, read_frames

        index, record = self.entries[position]
        try:
            start, stop = record.frame_range(count_frames(record.path))
            if stop <= start:
                raise VideoDecodeError(record.path, "no frame in its range")
            frames = read_frames(record.path, np.arange(start, stop, self.frame_stride))
        except VideoDecodeError as error:
            warnings.warn(f"skipping video {error}", SkippedVideoWarning, stacklevel=2)
            return SkippedVideo(index=index, path=str(record.path), reason=str(error))
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, H, W, 3] -> [T, 3, H, W]
        return {"index": index, "views": self.views(clip)}  # [V, T, 3, H, W]
