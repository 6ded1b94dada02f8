"""Crash-safe checkpoints: tensors in safetensors, everything else in JSON, nothing pickled.

A checkpoint is a pair of files sharing a stem: `<stem>.safetensors` (every tensor: model,
optimiser moments, ...) and `<stem>.json` (the JSON-serialisable state: step, config, RNG
states, ...). The two files are bound to each other both ways: the JSON records the sha256 of
the tensor file, and the tensor file's safetensors metadata records the step and the sha256 of
the state's canonical JSON (`state_sha256`). Loading checks both, so an edited step, a JSON
swapped in from another checkpoint, or altered tensors are refused with a message saying which
files disagree and on what; a pair is never mixed.

Each file is written by `advise.files.atomic_write`: to a temporary file in the same folder,
flushed, fsynced and renamed over the old one (`os.replace`, atomic on POSIX), and the folder
is fsynced. The JSON is written last, so:

- a crash before the tensor file is renamed leaves the previous checkpoint intact;
- a crash between the two renames leaves a torn pair (new tensors, old JSON). Before a save
  replaces a pair, the pair is kept as `<stem>.previous.*` (hard links, no copy); a torn pair
  is recognised by its JSON still being the kept one, and loading then falls back to the kept
  pair with a warning. Any other disagreement is refused: falling back there would hide an
  edit or damage.

Every interleaving of a kill with one save or several in a row leaves the newest pair whose
save finished loadable (tests/test_train_checkpoint.py kills saves at each link and rename).

A run may still be saving while another process loads (a DDP worker orphaned by a killed
launcher, an evaluation of a run in progress): the reader can then see the JSON of one save and
the tensors of the next. Loading therefore notes each file's identity (inode, links, size,
times) and both JSONs' bytes before reading, and reads again when a refused pair changed on
disk meanwhile; only a disagreement that stays put is reported (or recognised as torn).

Version 1 checkpoints (written before the binding) carry no metadata to check the JSON
against; they still load, with a warning, and the next save of a resumed run binds them.

Also here: `rng_state` / `set_rng_state` (python, numpy, torch), a flat tensors + JSON form
of an optimiser's state (`optimizer_to_tensors` / `optimizer_from_tensors`), and what a run's
checkpoint holds beyond the bits: the model's tensors (`model_tensors`, `part_tensors`) and the
checks of its recorded stage, IFM, classes, architecture and data against a run
(`check_stage`, `check_ifm`, `check_classes`, `check_architecture`, `check_resumable`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor

from advise.files import atomic_write
from advise.provenance import json_sha256

FORMAT = "advise-checkpoint"
FORMAT_VERSION = 2  # 2: tensor metadata binds the JSON state (state_sha256, step)
READABLE_VERSIONS = (1, 2)  # 1: unbound, loaded with a warning
TENSOR_SUFFIX = ".safetensors"
STATE_SUFFIX = ".json"


class CheckpointError(ValueError):
    """A checkpoint is missing, torn (interrupted save), corrupt, or does not fit."""


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(tensor file, JSON file) of the checkpoint named by `path`.

    `path` is the stem (`runs/x/checkpoints/last`) or either file of the pair.
    """
    path = Path(path)
    if path.suffix in (TENSOR_SUFFIX, STATE_SUFFIX):
        path = path.with_suffix("")
    return Path(f"{path}{TENSOR_SUFFIX}"), Path(f"{path}{STATE_SUFFIX}")


def save_checkpoint(path_stem: str | Path, tensors: dict[str, Tensor], state: dict) -> Path:
    """Write `<path_stem>.safetensors` (tensors) and `<path_stem>.json` (state) atomically.

    tensors: name -> tensor (any device and dtype safetensors supports; saved as CPU copies).
    state: JSON-serialisable dict (checked before anything is written). Creates the folder if
    needed and returns the JSON path. See the module docstring for crash behaviour and for how
    the two files are bound to each other.
    """
    tensor_path, state_path = checkpoint_paths(path_stem)
    # the state as loading will see it (tuples become lists, keys strings); fails on a state
    # that is not JSON before touching disk
    loaded_state = json.loads(_to_json(state))
    metadata = {
        "format": FORMAT,
        "version": str(FORMAT_VERSION),
        "state_sha256": json_sha256(loaded_state),
    }
    if isinstance(loaded_state.get("step"), int):
        metadata["step"] = str(loaded_state["step"])
    data = safetensors.torch.save(_prepare_tensors(tensors), metadata=metadata)
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tensor_sha256": hashlib.sha256(data).hexdigest(),
        "tensor_bytes": len(data),
        "state": state,
    }
    record_text = _to_json(record)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    kept_tensor_path, kept_state_path = checkpoint_paths(_previous(path_stem))
    # A torn pair (its JSON is still the kept one) is not kept: the kept pair is the intact one.
    if (
        tensor_path.is_file()
        and state_path.is_file()
        and not _same_bytes(state_path, kept_state_path)
    ):
        _atomic_link(tensor_path, kept_tensor_path)
        _atomic_link(state_path, kept_state_path)
    atomic_write(tensor_path, data)
    atomic_write(state_path, record_text)
    return state_path


def link_checkpoint(source: str | Path, target: str | Path) -> None:
    """Make the checkpoint `target` the same pair as `source` (hard links, replaced
    atomically; a copy where links are not possible): e.g. `best` as the `last` just saved,
    without writing it again. Later saves of `source` replace its files by rename, so
    `target` keeps this content."""
    pairs = zip(checkpoint_paths(source), checkpoint_paths(target), strict=True)
    for source_file, target_file in pairs:  # tensors first: the JSON binds them
        _atomic_link(source_file, target_file)


def _same_bytes(first: Path, second: Path) -> bool:
    try:
        return _read(first) == _read(second)
    except OSError:
        return False


def _previous(path: str | Path) -> Path:
    tensor_path, _ = checkpoint_paths(path)
    return tensor_path.with_suffix("").with_name(tensor_path.with_suffix("").name + ".previous")


def _atomic_link(source: Path, target: Path) -> None:
    """Make `target` another name of `source`'s content, replacing `target` atomically."""
    temporary = target.with_name(f".{target.name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by a killed save
    try:
        os.link(source, temporary)
    except OSError:  # file systems without hard links: copy
        atomic_write(target, source.read_bytes())
        return
    try:
        os.replace(temporary, target)
    finally:
        # gone once renamed; but rename(2) does nothing when both names are already one file
        # (the pair kept again after a kill between the two links), leaving it behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Read and verify a checkpoint pair; returns (tensors, state).

    `path` is the stem or either file of the pair. Tensors are placed on `device`. Raises
    `CheckpointError` when a file is missing, the JSON is unreadable, or the two files are not
    one checkpoint: the tensor file is not the one the JSON records (sha256), or the JSON state
    is not the one the tensor file was written with (step, state sha256). The one exception is
    a pair torn by an interrupted save (its JSON still equals the kept `<stem>.previous.json`):
    then the kept pair is loaded, verified the same way, with a warning. A pair that changes
    while it is read (a run still saving to it) is read again, up to `_READ_ATTEMPTS` times.
    """
    for _ in range(_READ_ATTEMPTS):
        before = _files_version(path)
        try:
            tensors, state, torn = _load_newest_intact(path, device)
        except CheckpointError as error:
            if _files_version(path) == before:
                raise
            changing = error
            continue
        if torn is not None and _files_version(path) != before:
            changing = torn  # a save in progress, not an interrupted one: read its end
            continue
        if torn is not None:
            warnings.warn(
                f"{torn} The newest pair is torn by an interrupted save; loaded the previous "
                f"checkpoint {_previous(path)} instead.",
                stacklevel=2,
            )
        return tensors, state
    raise CheckpointError(
        f"{changing}. {checkpoint_paths(path)[1]} changed on each of {_READ_ATTEMPTS} reads: a "
        "run is still saving to it; stop that run (or wait for it) and load again"
    ) from changing


_READ_ATTEMPTS = 20


def _load_newest_intact(
    path: str | Path, device: str | torch.device
) -> tuple[dict, dict, CheckpointError | None]:
    """(tensors, state, None) of the pair at `path`, or of the kept pair with the error that
    refused the newest when that one is torn (its JSON is still the kept one)."""
    try:
        tensors, state = _load_pair(path, device)
        return tensors, state, None
    except CheckpointError as error:
        previous = _previous(path)
        state_path, kept_state_path = checkpoint_paths(path)[1], checkpoint_paths(previous)[1]
        if not _same_bytes(state_path, kept_state_path):
            raise
        tensors, state = _load_pair(previous, device)
        return tensors, state, error


def _files_version(path: str | Path) -> tuple:
    """What any link or rename of a save changes: each file of the pair and of the kept pair
    (inode, link count, size, times) and both JSONs' bytes (times are coarse and inode numbers
    reused, but a save never writes a JSON it wrote before while the tensors differ)."""
    tensor_path, state_path = checkpoint_paths(path)
    kept_tensor_path, kept_state_path = checkpoint_paths(_previous(path))
    version: list = []
    for file in (tensor_path, state_path, kept_tensor_path, kept_state_path):
        try:
            stat = os.stat(file)
        except OSError:
            version.append(None)
            continue
        version.append(
            (stat.st_ino, stat.st_nlink, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        )
    for file in (state_path, kept_state_path):
        try:
            version.append(_read(file))
        except OSError:
            version.append(None)
    return tuple(version)


def _read(path: Path) -> bytes:
    """A file's bytes: the one way loading reads the files of a pair."""
    return path.read_bytes()


_warned_unbound: set[Path] = set()


def _load_pair(path: str | Path, device: str | torch.device) -> tuple[dict, dict]:
    tensor_path, state_path = checkpoint_paths(path)
    if not state_path.is_file():
        if not tensor_path.is_file():
            raise CheckpointError(
                f"no checkpoint at {path}: expected the pair {tensor_path.name} (tensors) and "
                f"{state_path.name} (state) in {tensor_path.parent}; both are missing"
            )
        raise CheckpointError(
            f"{path}: the checkpoint's state file {state_path} is missing (its tensors "
            f"{tensor_path.name} exist)"
        )
    try:
        record = json.loads(_read(state_path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{state_path} is not valid JSON ({error}): corrupt") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{state_path} is not an advise checkpoint (no format {FORMAT!r})")
    version = record.get("version")
    if version not in READABLE_VERSIONS or "tensor_sha256" not in record or "state" not in record:
        raise CheckpointError(
            f"{state_path}: unsupported checkpoint version {version!r} "
            f"(this advise reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    if not tensor_path.is_file():
        raise CheckpointError(f"{tensor_path} is missing (its state file {state_path} exists)")
    data = _read(tensor_path)
    metadata = _safetensors_metadata(data)
    state = record["state"]
    bound = metadata is not None and "state_sha256" in metadata
    disagreement = _state_disagreement(state, metadata, state_path, tensor_path) if bound else ""
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["tensor_sha256"]:
        raise CheckpointError(
            f"{tensor_path} does not match {state_path}: "
            + (
                f"{disagreement}; they are not one checkpoint (the JSON was edited or swapped "
                "in from another checkpoint, or a save was interrupted)"
                if disagreement
                else f"sha256 {digest[:16]}..., expected {record['tensor_sha256'][:16]}... "
                f"({len(data)} bytes, expected {record.get('tensor_bytes')}). The pair is torn "
                "(a save was interrupted) or the tensor file is corrupt or altered"
            )
            + f"; use an earlier checkpoint{_kept_hint(path)}"
        )
    if disagreement:
        raise CheckpointError(
            f"{state_path} does not match {tensor_path}: {disagreement}; the JSON state was "
            "edited or belongs to another checkpoint. Resuming from it would mix two "
            f"checkpoints; use an earlier checkpoint{_kept_hint(path)}"
        )
    if not bound:
        if version != 1:
            raise CheckpointError(
                f"{tensor_path} does not match {state_path}: the JSON is a version {version} "
                "checkpoint, but the tensor file carries no state_sha256 to bind it"
            )
        if state_path not in _warned_unbound:
            _warned_unbound.add(state_path)
            warnings.warn(
                f"{state_path} is a version 1 checkpoint: its JSON state is not bound to "
                f"{tensor_path.name}, so an edit to the JSON (e.g. its step) cannot be detected; "
                "loaded as written (a resumed run's next save binds it)",
                stacklevel=4,
            )
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # the hash matched, so the file was written this way
        raise CheckpointError(f"{tensor_path}: unreadable safetensors ({error})") from error
    if torch.device(device).type != "cpu":
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
    return tensors, state


def _safetensors_metadata(data: bytes) -> dict[str, str] | None:
    """The `__metadata__` of a safetensors file's header (8-byte little-endian length, then
    JSON), read without loading tensors; None when the header is unreadable or has none."""
    if len(data) < 8:
        return None
    header_length = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


def _state_disagreement(
    state: Any, metadata: dict[str, str], state_path: Path, tensor_path: Path
) -> str:
    """What the JSON state and the tensor file's binding metadata disagree on ("" if nothing)."""
    written_step = metadata.get("step")
    json_step = state.get("step") if isinstance(state, dict) else None
    if written_step is not None and str(json_step) != written_step:
        return (
            f"{state_path.name} says step {json_step} but {tensor_path.name} was written at "
            f"step {written_step}"
        )
    digest = json_sha256(state)
    if digest != metadata["state_sha256"]:
        return (
            f"{state_path.name}'s state (sha256 {digest[:16]}...) is not the state "
            f"{tensor_path.name} was written with (sha256 {metadata['state_sha256'][:16]}...)"
        )
    return ""


def _kept_hint(path: str | Path) -> str:
    kept_tensor_path, kept_state_path = checkpoint_paths(_previous(path))
    if kept_tensor_path.is_file() and kept_state_path.is_file():
        return f" (the pair kept before the last save is {_previous(path)}.*)"
    return ""


def _to_json(value: Any) -> str:
    try:
        return json.dumps(value, indent=1)
    except (TypeError, ValueError) as error:
        raise TypeError(f"checkpoint state must be JSON-serialisable: {error}") from error


def _prepare_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; entries sharing memory are copied (safetensors
    refuses shared storage, e.g. tied weights)."""
    prepared: dict[str, Tensor] = {}
    seen_storage: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, Tensor):
            raise TypeError(f"checkpoint tensors must map str -> Tensor, got {name!r}")
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in seen_storage:
            tensor = tensor.clone()
        seen_storage.add(tensor.untyped_storage().data_ptr())
        prepared[name] = tensor
    return prepared


# ---------------------------------------------------------------------------- RNG states


def _encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def rng_state() -> dict:
    """The global random states of python `random`, numpy (`np.random.*`) and torch, as JSON.

    CUDA generator states are included when CUDA has been initialised in this process.
    Byte states are base64 text; numpy's MT19937 key is stored little-endian uint32.
    """
    python_version, python_internal, python_gauss = random.getstate()
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_cached = np.random.get_state()
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [_encode_bytes(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return {
        "python": {
            "version": python_version,
            "internal": list(python_internal),
            "gauss_next": python_gauss,
        },
        "numpy": {
            "kind": numpy_kind,
            "keys": _encode_bytes(np.asarray(numpy_keys, dtype="<u4").tobytes()),
            "pos": int(numpy_pos),
            "has_gauss": int(numpy_has_gauss),
            "cached_gaussian": float(numpy_cached),
        },
        "torch": _encode_bytes(torch.get_rng_state().numpy().tobytes()),
        "cuda": cuda,
    }


def set_rng_state(state: dict) -> None:
    """Restore the random states saved by `rng_state`.

    CUDA states are restored for as many devices as both the saved state and this machine
    have (with a warning when the counts differ); none are needed on a CPU-only machine.
    """
    try:
        python = state["python"]
        python_state = (python["version"], tuple(python["internal"]), python["gauss_next"])
        numpy_state = state["numpy"]
        numpy_keys = np.frombuffer(_decode_bytes(numpy_state["keys"]), dtype="<u4").astype(
            np.uint32
        )
        torch_state = _bytes_tensor(state["torch"])
        cuda_states = [_bytes_tensor(text) for text in state.get("cuda", [])]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"malformed RNG state in checkpoint: {error!r}") from error
    random.setstate(python_state)
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_keys,
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(torch_state)
    if cuda_states and torch.cuda.is_available():
        device_count = torch.cuda.device_count()
        if device_count != len(cuda_states):
            warnings.warn(
                f"checkpoint holds RNG states for {len(cuda_states)} CUDA devices, this machine "
                f"has {device_count}; restoring the first {min(device_count, len(cuda_states))}",
                stacklevel=2,
            )
        for device_index, cuda_state in enumerate(cuda_states[:device_count]):
            torch.cuda.set_rng_state(cuda_state, device_index)


def _bytes_tensor(text: str) -> Tensor:
    return torch.frombuffer(bytearray(_decode_bytes(text)), dtype=torch.uint8)


# ------------------------------------------------------------------------ optimiser state

# Parameter-group entries that are lists in torch; other sequences (betas) are tuples.
_LIST_GROUP_KEYS = ("params", "param_names")


def optimizer_to_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer."
) -> tuple[dict[str, Tensor], dict]:
    """Split `optimizer.state_dict()` into flat tensors and a JSON-serialisable dict.

    Tensors are named `<prefix>state.<param index>.<name>` (e.g. `optimizer.state.3.exp_avg`;
    AdamW also keeps `step` as a tensor) and `<prefix>param_groups.<group>.<key>` for a
    tensor-valued hyper-parameter. The meta dict holds the parameter groups (lr, betas, eps,
    weight decay, parameter indices and names) and non-tensor per-parameter values. Save the
    tensors next to the model's (the prefix keeps names apart) and the meta in the JSON state.
    """
    state_dict = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    state_meta: dict[str, dict] = {}
    for index, values in state_dict["state"].items():
        entry: dict[str, list | dict] = {"tensors": [], "values": {}}
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}state.{index}.{name}"] = value
                entry["tensors"].append(name)
            else:
                entry["values"][name] = value
        state_meta[str(index)] = entry
    groups_meta = []
    for group_index, group in enumerate(state_dict["param_groups"]):
        group_meta: dict[str, Any] = {}
        tensor_keys = []
        for key, value in group.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}param_groups.{group_index}.{key}"] = value
                tensor_keys.append(key)
            elif isinstance(value, tuple):
                group_meta[key] = list(value)
            else:
                group_meta[key] = value
        groups_meta.append({"values": group_meta, "tensors": tensor_keys})
    meta = {
        "class": type(optimizer).__name__,
        "prefix": prefix,
        "state": state_meta,
        "param_groups": groups_meta,
    }
    _to_json(meta)  # fail here, not at save time, on an exotic hyper-parameter
    return tensors, meta


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict
) -> None:
    """Load into `optimizer` the state split by `optimizer_to_tensors` (inverse operation).

    `optimizer` must be built the same way over the same parameters (same groups, sizes and,
    where recorded, parameter names); otherwise `CheckpointError` says what differs. Extra
    entries in `tensors` (e.g. the model's) are ignored. The restored state is exact: moments,
    step counts and every hyper-parameter of every group.
    """
    if meta.get("class") != type(optimizer).__name__:
        raise CheckpointError(
            f"checkpoint holds a {meta.get('class')} state, the optimiser is "
            f"{type(optimizer).__name__}"
        )
    prefix = meta["prefix"]
    try:
        state = {
            int(index): {
                **entry["values"],
                **{name: tensors[f"{prefix}state.{index}.{name}"] for name in entry["tensors"]},
            }
            for index, entry in meta["state"].items()
        }
        param_groups = []
        for group_index, group_meta in enumerate(meta["param_groups"]):
            group = {
                key: value
                if key in _LIST_GROUP_KEYS or not isinstance(value, list)
                else tuple(value)
                for key, value in group_meta["values"].items()
            }
            for key in group_meta["tensors"]:
                group[key] = tensors[f"{prefix}param_groups.{group_index}.{key}"]
            param_groups.append(group)
    except KeyError as error:
        raise CheckpointError(f"optimiser state incomplete: missing tensor {error}") from error
    _check_same_parameters(optimizer.state_dict()["param_groups"], param_groups)
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def _check_same_parameters(current: list[dict], saved: list[dict]) -> None:
    if len(current) != len(saved):
        raise CheckpointError(
            f"optimiser has {len(current)} parameter groups, the checkpoint {len(saved)}"
        )
    for group_index, (now, then) in enumerate(zip(current, saved, strict=True)):
        if len(now["params"]) != len(then["params"]):
            raise CheckpointError(
                f"optimiser group {group_index} has {len(now['params'])} parameters, "
                f"the checkpoint {len(then['params'])}"
            )
        names_now, names_then = now.get("param_names"), then.get("param_names")
        if names_now is not None and names_then is not None and names_now != names_then:
            first = next(
                i for i, (a, b) in enumerate(zip(names_now, names_then, strict=True)) if a != b
            )
            raise CheckpointError(
                f"optimiser group {group_index} parameter {first} is {names_now[first]!r}, "
                f"the checkpoint's is {names_then[first]!r}"
            )


# ------------------------------------------------------------- what a run's checkpoint holds


def model_tensors(tensors: dict[str, Tensor], prefix: str = "model.") -> dict[str, Tensor]:
    """The tensors saved under `prefix` ("model." for the trainable model state), without it."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def part_tensors(tensors: dict[str, Tensor], parts: tuple[str, ...]) -> dict[str, Tensor]:
    """The model tensors of the named parts only (e.g. ("sfu", "tmm"): what `--init` inherits),
    named as in the model's state dict."""
    prefixes = tuple(f"{part}." for part in parts)
    return {key: value for key, value in model_tensors(tensors).items() if key.startswith(prefixes)}


def check_stage(state: dict, path: str | Path, stage: str, purpose: str) -> None:
    """Refuse a checkpoint written by another stage than `stage` ("pretrain", "finetune");
    `purpose` ends the message ("evaluate a fine-tuned one")."""
    if state.get("stage") != stage:
        raise CheckpointError(f"{path} is a {state.get('stage')} checkpoint; {purpose}")


def check_ifm(state: dict, current: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint trained on tokens of another IFM than `current` (a run's IFM
    record: name and weights hash are compared)."""
    recorded = state.get("ifm", {})
    for key in ("name", "weights_hash"):
        if recorded.get(key) != current[key]:
            raise CheckpointError(
                f"{path} was trained on IFM {recorded.get('name')!r} (weights "
                f"{str(recorded.get('weights_hash'))[:12]}), but this run uses {current['name']!r} "
                f"(weights {current['weights_hash'][:12]})"
            )


def check_classes(state: dict, class_names: list[str], path: str | Path) -> None:
    """Refuse a checkpoint trained on other classes, or the same in another order."""
    recorded = state.get("class_names")
    if recorded != class_names:
        raise CheckpointError(
            f"{path} was trained on {len(recorded or [])} classes "
            f"({', '.join((recorded or [])[:3])}, ...) but the dataset has {len(class_names)} "
            f"({', '.join(class_names[:3])}, ...): class names must match in order"
        )


def check_resumable(path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """--resume continues the run it finds at `path`, with the same settings, classes and data,
    or not at all. `meta` is what the resumed run would record (config, class_names, data
    manifest). Only the keys of `RESUMABLE_KEYS` may differ from the run's config; returns
    the run's config changes so far, these included (each with the step it applies from)."""
    from advise.config import ConfigError

    if not checkpoint_paths(path)[1].exists():
        raise ConfigError(f"--resume: no run to resume in {path.parent.parent} (no {path}.json)")
    _, state = load_checkpoint(path)
    check_architecture(state.get("config"), meta["config"], path, "--resume: ")  # names kinds
    changes = config_changes(state.get("config") or {}, meta["config"])
    refused = [change for change in changes if not resumable_key(change["key"])]
    if refused:
        raise ConfigError(
            f"--resume: the run in {path.parent.parent} was trained with other settings: "
            + "; ".join(f"{c['key']}: run {c['old']!r}, now {c['new']!r}" for c in refused)
            + ". Resume with --out alone (the run's own config), or start a new run with "
            f"another --out; a resume may change only {', '.join(RESUMABLE_KEYS)}"
        )
    check_classes(state, meta["class_names"], path)
    manifest = meta["data"]
    recorded = state.get("data") or {}
    for key in ("annotation_sha256", "videos", "quarantine"):
        if key in recorded and recorded[key] != manifest[key]:
            raise ConfigError(
                f"--resume: the data changed since {path} was written ({key} differs: "
                f"annotation files edited, videos added or removed, or another quarantine "
                f"list); start a new run with another --out"
            )
    step = state.get("step", 0)
    return state.get("config_changes", []) + [{"step": step, **change} for change in changes]


# what a resumed run may change: how long it trains and how the work is done, never what a
# step computes (train.epochs stretches the schedule of the steps still to come)
RESUMABLE_KEYS = (
    "train.epochs", "train.log_every", "train.checkpoint_every", "train.checkpoint_seconds",
    "train.eval_every",
    "train.tensorboard", "train.threads", "train.device", "data.num_workers", "data.in_memory",
    "data.root", "eval.*",
)  # fmt: skip


def resumable_key(key: str) -> bool:
    from advise.config import matches_any

    return matches_any(key, RESUMABLE_KEYS)


def config_changes(recorded: dict, current: Any) -> list[dict[str, Any]]:
    """Every key whose value differs between a recorded config dict and `current` (a `Config`
    or its dict): [{"key", "old", "new"}]. Keys only one of them knows are not compared."""
    from advise.config import Config, flatten, migrate

    then = flatten(migrate(recorded))
    now = current.to_dict() if isinstance(current, Config) else migrate(current)
    now = flatten(json.loads(_to_json(now)))  # as a checkpoint records it: tuples are lists
    return [
        {"key": key, "old": then[key], "new": now[key]}
        for key in now
        if key in then and then[key] != now[key]
    ]


# settings that change what the trainable parts compute or their shapes (with the TMM kind's
# section); the IFM's tokens are bound by name and weights hash, and by which blocks they are
ARCHITECTURE_KEYS = (
    "ifm.layers", "ifm.layer_merge", "sfu.spatial", "sfu.channels", "sfu.adapter", "head.kind",
    "head.hidden",
)  # fmt: skip


def check_architecture(
    recorded: dict | None,
    current: Any,
    path: str | Path,
    context: str = "",
    parts: tuple[str, ...] = ("sfu", "tmm", "head"),
    bind_ifm: bool = True,
) -> None:
    """Refuse a checkpoint whose trainable parts were built with other settings than
    `current` (a `Config` or its dict) would build: a kind is named, not a list of shapes.

    `recorded` is the checkpoint's config dict (None for a checkpoint without one: nothing to
    check); `parts` limits the check (an `--init` inherits the SFU and TMM, not the head);
    without `bind_ifm` the IFM's blocks are not compared (a TMM transplanted to another IFM).
    """
    from advise.config import Config, flatten, migrate

    if recorded is None:
        return
    then = flatten(migrate(recorded))
    now = flatten(current.to_dict() if isinstance(current, Config) else migrate(current))
    kind_then, kind_now = then.get("tmm.kind", "bottleneck"), now["tmm.kind"]
    if "tmm" in parts and kind_then != kind_now:
        raise CheckpointError(
            f"{context}{path} holds a tmm.kind={kind_then} temporal module, but this config "
            f"builds tmm.kind={kind_now}; set tmm.kind={kind_then} (and its tmm.{kind_then}.* "
            f"section as in that run's config.yaml) or use a tmm.kind={kind_now} checkpoint"
        )
    sections = (*parts, "ifm") if bind_ifm else parts
    keys = [key for key in ARCHITECTURE_KEYS if key.split(".")[0] in sections]
    if "tmm" in parts:
        keys += sorted(key for key in now if key.startswith(f"tmm.{kind_now}."))
    differ = [
        f"{key}: checkpoint {then[key]!r}, config {now[key]!r}"
        for key in keys
        if key in then and then[key] != now[key]
    ]
    if differ:
        raise CheckpointError(
            f"{context}{path} was built with other model settings than this config: "
            + "; ".join(differ)
        )
