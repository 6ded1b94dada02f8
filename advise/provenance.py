"""What a result was computed from: hashes that tie records to what they describe, the data
manifest, the environment, the IFM behind the tokens, and the run record that checkpoints,
run.json and eval.json carry."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from advise import __version__
from advise.data.formats import FORMATS, AnnotatedSplit
from advise.files import atomic_write

if TYPE_CHECKING:
    from advise.config import Config
    from advise.data.store import FeatureStore
    from advise.models.ifm import CombinedIFM, FrozenIFM


def json_sha256(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of `value`: sorted keys, no spaces, ASCII. Equal
    for a value and the same value read back from any JSON file layout."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    """Package versions and the machine, so a result can be traced to what produced it."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("torch", "torchvision", "timm", "av", "numpy", "safetensors"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "advise": __version__,
        "python": platform.python_version(),
        "packages": packages,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "git": git_commit(),
    }


@functools.cache
def git_commit() -> dict[str, Any] | None:
    """The commit of the checkout advise runs from (and whether it has uncommitted changes),
    or None when it is installed from a package (or git is missing)."""
    import subprocess

    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def data_manifest(config: Config, split: AnnotatedSplit) -> dict[str, Any]:
    """What a number was computed on: format, root, counts per class, missing videos, the
    quarantine list (hash, entries), and a sha256 of every annotation file the split was read
    from, the files that define the class labels (the format's `label_files`) included."""
    from advise.data.check import read_quarantine

    data_format = FORMATS[config.data.format]
    counts = split.counts()
    files = {file for file, _ in split.origins} | {split.source}
    folder = Path(split.source).parent  # where the files that define the labels sit
    files |= {str(folder / name) for name in data_format.label_files if (folder / name).is_file()}
    quarantine = None
    if config.data.quarantine:
        path = Path(config.data.quarantine).expanduser()
        quarantine = {
            "file": str(path),
            "sha256": file_sha256(path),
            "listed": len(read_quarantine(path)),
        }
    return {
        "format": config.data.format,
        "root": config.data.root,
        "split": config.data.split if data_format.splits else None,
        "source": split.source,
        "videos": counts.videos,
        "classes": counts.classes,
        "per_class": counts.per_class,
        "missing": counts.missing,
        "quarantine": quarantine,
        "annotation_sha256": {
            file: file_sha256(Path(file)) for file in sorted(files) if Path(file).is_file()
        },
    }


def online_ifm_record(
    ifm: FrozenIFM | CombinedIFM, random_init: bool, precision: str
) -> dict[str, Any]:
    """The IFM that computes a run's tokens as it runs (`precision` as resolved on its device)."""
    return {
        "name": ifm.name,
        "weights_hash": ifm.weights_hash(),
        "random_init": random_init,
        "precision": precision,
        "img_size": ifm.img_size,
        "features": "online",
    }


def store_ifm_record(store: FeatureStore) -> dict[str, Any]:
    """The IFM whose tokens a feature store holds, and how they were stored (stored views are
    fixed, which can change an evaluation)."""
    spec = store.spec
    return {
        "name": spec.ifm,
        "weights_hash": spec.weights_hash,
        "random_init": spec.random_init,
        "precision": spec.precision,
        "img_size": spec.img_size,
        "features": f"store:{store.path}",
        "store": {"views": spec.views, "frame_stride": spec.frame_stride, "dtype": spec.dtype,
                  "spatial": spec.spatial, "channels": spec.channels},
    }  # fmt: skip


def run_meta(
    stage: str,
    class_names: list[str],
    ifm_record: dict[str, Any],
    config: Config,
    split: AnnotatedSplit,
) -> dict[str, Any]:
    """The record of a training run (saved in its checkpoints' state): stage, classes, IFM,
    data manifest, resolved config, environment and versions."""
    return {
        "stage": stage,
        "class_names": class_names,
        "ifm": ifm_record,
        "data": data_manifest(config, split),
        "config": config.to_dict(),
        "environment": environment(),
        "advise_version": __version__,
        "torch_version": torch.__version__,
    }


def write_run_record(out_dir: Path, meta: dict[str, Any]) -> None:
    """run.json: what a run is made of (`run_meta` without the config, which config.yaml
    holds), for people; checkpoints carry the same record."""
    record = {key: value for key, value in meta.items() if key != "config"}
    atomic_write(out_dir / "run.json", json.dumps(record, indent=2))
