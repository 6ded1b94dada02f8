"""`advise export`: a trained model as a self-contained folder another person can use.

    DIR/model.safetensors   the SFU, TMM and head tensors ("sfu.*", "tmm.*", "head.*"), as
                            `AdViSe.trainable_state_dict` names them; no optimiser state
    DIR/config.json         what rebuilds and checks the model (see `record`)
    DIR/README.md           the model card
    DIR/tokens_to_logits.pt optional (--torchscript): TorchScript of tokens -> logits

The two main files vouch for each other: config.json records the sha256 of model.safetensors,
and model.safetensors carries, in its metadata, the model part of config.json (config,
classes, IFM, preprocessing). `read_export` refuses a folder where either was edited or
swapped, naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from advise import __version__
from advise.config import flatten
from advise.files import atomic_write
from advise.train.checkpoint import CheckpointError

FORMAT = "advise-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TORCHSCRIPT = "tokens_to_logits.pt"
# the parts of config.json that model.safetensors vouches for
BOUND_KEYS = ("stage", "class_names", "config", "ifm", "preprocessing")


class ExportError(CheckpointError):
    """An exported model folder that is incomplete, edited or not one (exit 2)."""


def is_export(path: str | Path) -> bool:
    """Whether `path` is a folder `advise export` wrote (it holds config.json of our format)."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT
    except (ValueError, UnicodeDecodeError):
        return False


def export(checkpoint: str | Path, out: str | Path, torchscript: bool = False) -> dict[str, Any]:
    """Write the export of a checkpoint (or run folder) to `out`; returns config.json's record.

    The model is loaded (`advise.load`: its IFM rebuilt and checked) before anything is
    written, so a checkpoint that cannot be used is never exported. Evaluation results found
    beside the checkpoint (its run folder's eval-*.json) go into the record and the card.
    """
    from advise.api import load
    from advise.runs import evaluation_folder

    model = load(checkpoint, device="cpu")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; --out names a folder")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ExportError(f"--out {out} is a folder with other files in it; name a new folder")
    state = model.network.trainable_state_dict()
    tensors = {key: value.detach().cpu() for key, value in state.items()}
    bound = _bound_record(model)
    data = safetensors.torch.save(
        {key: value.contiguous() for key, value in tensors.items()},
        metadata={"format": FORMAT, "model": json.dumps(bound, sort_keys=True)},
    )
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "advise_version": __version__,
        **bound,
        "input": _input_contract(model),
        "weights": {
            "file": WEIGHTS,
            "sha256": hashlib.sha256(data).hexdigest(),
            "tensors": {key: list(value.shape) for key, value in tensors.items()},
        },
        "evaluations": _evaluations(evaluation_folder(model.source)),
        "source": str(model.source),
    }
    out.mkdir(parents=True, exist_ok=True)
    if torchscript:
        record["torchscript"] = _torchscript(model, out / TORCHSCRIPT)
    atomic_write(out / WEIGHTS, data)
    atomic_write(out / CONFIG, json.dumps(record, indent=2))
    atomic_write(out / "README.md", model_card(record))
    return record


def _bound_record(model: Any) -> dict[str, Any]:
    prep = model.preprocessing
    return {
        "stage": model.stage,
        "class_names": model.class_names,
        "config": model.config.to_dict(),
        "ifm": {key: model.ifm_record[key] for key in ("name", "weights_hash", "random_init")},
        "preprocessing": {
            "size": prep.size,
            "mean": list(prep.mean),
            "std": list(prep.std),
            "interpolation": prep.interpolation,
        },
    }


def _input_contract(model: Any) -> dict[str, Any]:
    """The shapes each entry point takes, measured on one blank clip."""
    size, frames = model.preprocessing.size, model.config.data.num_frames
    with torch.no_grad():
        tokens = model.network.ifm(torch.zeros(1, frames, 3, size, size))
    return {
        "frames": f"float32 [B, T, 3, {size}, {size}], normalised with preprocessing.mean/std; "
        f"trained with T = {frames}",
        "tokens": f"float32 [B, {tokens.shape[1]}, T, {tokens.shape[3]}, {tokens.shape[4]}]: "
        f"the IFM's tokens, input of the SFU",
        "views": f"{model.views[0]} clips x {model.views[1]} crops, softmax averaged",
    }


def _evaluations(folder: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(folder.glob("eval-*.json")):
        try:
            result = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
        if "top1" in result:
            keys = ("views", "top1", "top5", "single_view_top1", "num_videos")
            found.append({"file": path.name, **{key: result.get(key) for key in keys}})
    return found


class _TokensToLogits(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.sfu, self.tmm, self.head = network.sfu, network.tmm, network.head

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.tmm(self.sfu(tokens)))


def _torchscript(model: Any, path: Path) -> dict[str, Any]:
    """Trace tokens -> logits; check it against the model on other tokens than the trace's."""
    size, frames = model.preprocessing.size, model.config.data.num_frames
    with torch.no_grad():
        shape = model.network.ifm(torch.zeros(1, frames, 3, size, size)).shape
        part = _TokensToLogits(model.network).eval()
        generator = torch.Generator().manual_seed(0)
        example = torch.randn((2, *shape[1:]), generator=generator)
        check = torch.randn((3, *shape[1:]), generator=generator)  # other tokens, batch size
        traced = torch.jit.trace(part, example)
        difference = float((traced(check) - part(check)).abs().max())
    if difference > 1e-5:
        raise ExportError(f"the TorchScript trace differs from the model by {difference:.2e}")
    traced.save(str(path))
    return {"file": TORCHSCRIPT, "input": list(shape[1:]), "max_abs_difference": difference}


def read_export(folder: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(model tensors, state) of an exported folder, after checking its two files agree.

    The state is what `advise.api.build_loaded` takes (stage, class_names, config, ifm).
    Raises `ExportError` naming what differs when config.json and model.safetensors disagree.
    """
    folder = Path(folder)
    record = json.loads((folder / CONFIG).read_text())
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ExportError(f"{folder} has no {WEIGHTS}")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise ExportError(f"{folder} was exported by a newer advise (format "
                          f"{record['format_version']}); upgrade advise")  # fmt: skip
    data = weights.read_bytes()
    try:
        with safetensors.safe_open(str(weights), "pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same refusal
        raise ExportError(f"{weights} is not a safetensors file: {error}") from None
    bound = json.loads(metadata.get("model", "{}"))
    differ = _differences({key: record.get(key) for key in BOUND_KEYS}, bound)
    if differ:
        raise ExportError(
            f"{folder}: {CONFIG} and {WEIGHTS} disagree ({'; '.join(differ[:6])}"
            f"{'; ...' if len(differ) > 6 else ''}): one of them was edited or replaced; "
            "export the checkpoint again"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.get("weights", {}).get("sha256"):
        raise ExportError(
            f"{folder}: {WEIGHTS} has sha256 {digest[:12]}, but {CONFIG} was written for "
            f"{str(record.get('weights', {}).get('sha256'))[:12]}: the weights were changed "
            "after export"
        )
    tensors = safetensors.torch.load(data)
    state = {key: record[key] for key in ("stage", "class_names", "config", "ifm")}
    return tensors, state


def _differences(written: dict[str, Any], vouched: dict[str, Any]) -> list[str]:
    """'key: config.json X, model.safetensors Y' for every dotted key whose values differ."""
    left, right = flatten(written), flatten(vouched)
    return [
        f"{key}: {CONFIG} {left.get(key)!r}, {WEIGHTS} {right.get(key)!r}"
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    ]


def model_card(record: dict[str, Any]) -> str:
    """README.md of an exported folder, from its config.json record."""
    config, ifm = record["config"], record["ifm"]
    data, classes = config["data"], record["class_names"]
    named = f"{', '.join((classes or [])[:10])}{' ...' if len(classes or []) > 10 else ''}"
    random_note = "; randomly initialised: the tokens mean nothing" if ifm["random_init"] else ""
    lines = [
        f"# advise model: {config['tmm']['kind']} temporal module on {ifm['name']}",
        "",
        f"Exported by advise {record['advise_version']} from `{record['source']}`.",
        "",
        "## What it is",
        f"- Stage: {record['stage']}"
        + (
            f", {len(classes)} classes: {named}"
            if classes
            else " (pre-training: features only, no action classes)"
        ),  # fmt: skip
        f"- Trained on: `{data['format']}` data at `{data['root']}`, "
        f"{data['num_frames']} frames per clip; pre-text: {config['pretext']['kind']}.",
        f"- Needs the frozen IFM `{ifm['name']}` with weights {ifm['weights_hash'][:16]} "
        f"(sha256 prefix){random_note}. "
        "advise rebuilds it by name and refuses other weights.",
        f"- Input: {record['input']['frames']}; or {record['input']['tokens']}.",
        f"- Testing: {record['input']['views']}.",
        "",
        "## Evaluation",
    ]
    if record["evaluations"]:
        lines += [
            "| file | views | top-1 | top-5 | 1-view top-1 | videos |",
            "|---|---|---|---|---|---|",
        ]
        for row in record["evaluations"]:
            lines.append(
                f"| {row['file']} | {row['views']} | {_number(row['top1'])} | "
                f"{_number(row['top5'])} | {_number(row['single_view_top1'])} | "
                f"{row['num_videos']} |"
            )
    else:
        lines.append("No evaluation was found beside the checkpoint (run `advise evaluate`).")
    lines += [
        "",
        "## Intended use",
        "Action recognition on videos like its training data, and research on temporal "
        "modules over frozen image models. Its accuracy on other data is unmeasured. The IFM's "
        "own licence and its training data's terms apply.",
        "",
        "## Use",
        "```python",
        "import advise",
        'model = advise.load("THIS_FOLDER")',
        'print(model.predict("clip.mp4"))',
        "```",
        'Without advise: `safetensors.torch.load_file("model.safetensors")` gives the SFU, TMM '
        "and head tensors (`sfu.*`, `tmm.*`, `head.*`); `config.json` holds the resolved config "
        "that sizes them and the IFM's preprocessing.",
    ]
    if "torchscript" in record:
        script = record["torchscript"]
        lines += [
            "",
            f"`{script['file']}`: TorchScript of tokens {script['input']} (per clip) -> logits; "
            f"`torch.jit.load` it. It matched the model to {script['max_abs_difference']:.1e}.",
        ]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"
