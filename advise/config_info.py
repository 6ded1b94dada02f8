"""What a config means before anything runs: the data of `advise config`, and the README's table
of every config key.

`describe` resolves a config (preset or YAML, then overrides) and adds what a run derives from
it: the scaled peak lr, steps per epoch, warm-up and total steps, trainable parameters, and
the warnings the run would give. The config is checked before torch is imported, so a typo
costs well under a second. `format_description` is the text the command prints: the resolved
config as YAML, then the derived values and warnings as YAML comments, so the output is itself
a valid config file.

`config_table` is the markdown table of every key (`advise.config.valid_keys`) with its
default and its meaning, the trailing `# comment` of its field in `advise/config.py`. README.md
holds it between TABLE_START and TABLE_END; `python scripts/config_table.py` rewrites it.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from advise import config as config_module
from advise.config import Config, ConfigError, load_config, lookup, resolved_dict

TABLE_START = "<!-- config-table:start -->"
TABLE_END = "<!-- config-table:end -->"


def describe(config_source: str | None, overrides: list[str]) -> dict[str, Any]:
    """The resolved config and what a run derives from it.

    Returns `{"config": nested dict (the chosen kinds' sections only, as saved beside a run),
    "derived": {name: value}, "warnings": [sentence, ...]}`. Derived values that need the
    train split (`train_videos`, `steps_per_epoch`, `warmup_steps`, `total_steps`,
    `finetune_trainable_params`) are the string "unknown (<why>)" when `data.root` is unset or
    cannot be read. Raises `ConfigError` for a bad key or value before importing torch.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(config_source, overrides)  # first: a typo fails before torch loads
    notes = [str(warning.message) for warning in caught]
    derived, run_notes = _derived(config)
    return {"config": resolved_dict(config), "derived": derived, "warnings": notes + run_notes}


def _derived(config: Config) -> tuple[dict[str, Any], list[str]]:
    """The derived values and the warnings of the run's schedule and train split."""
    from advise.runs import summary  # torch from here on
    from advise.train.engine import Schedule
    from advise.train.optim import scaled_lr, schedule_warnings

    optim, train = config.optim, config.train
    derived: dict[str, Any] = {
        "peak_lr": scaled_lr(optim.base_lr, train.batch_size, optim.reference_batch),
        "peak_lr_from": (
            f"optim.base_lr {optim.base_lr:g} x train.batch_size {train.batch_size} "
            f"/ optim.reference_batch {optim.reference_batch}"
        ),
    }
    split, notes, why = _train_split(config)
    if split is None:
        unknown = f"unknown ({why})"
        for name in ("train_videos", "steps_per_epoch", "warmup_steps", "total_steps"):
            derived[name] = unknown
        if 0 < train.epochs <= optim.warmup_epochs:  # covers the run at any steps per epoch
            notes.append(
                f"optim.warmup_epochs={optim.warmup_epochs:g} covers the whole run of "
                f"train.epochs={train.epochs}: the lr never reaches its peak; lower "
                f"optim.warmup_epochs or raise train.epochs"
            )
    else:
        schedule = Schedule.of(len(split.records), optim, train)
        derived["train_videos"] = len(split.records)
        derived["steps_per_epoch"] = schedule.steps_per_epoch
        derived["warmup_steps"] = schedule.warmup_steps
        derived["total_steps"] = schedule.total_steps
        notes += schedule_warnings(
            schedule.total_steps, schedule.warmup_steps, schedule.peak_lr, schedule.min_lr
        )
    counts = summary(config)  # built on the meta device: no weights, no memory
    derived["pretrain_trainable_params"] = counts["trainable_params"]
    derived["finetune_trainable_params"] = (
        summary(config, num_classes=len(split.class_names))["trainable_params"]
        if split is not None
        else f"unknown (needs the train split's classes: {why})"
    )
    derived["frozen_params"] = counts["frozen_params"]
    return derived, notes


def _train_split(config: Config) -> tuple[Any, list[str], str]:
    """(the train split or None, the warnings reading it gave, why it is None)."""
    if not config.data.root:
        return None, [], "data.root is not set"
    from advise.data import loaders
    from advise.data.formats import AnnotationError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            split = loaders.read_split(config.data, "train")
        except (ConfigError, AnnotationError, OSError) as error:
            return None, [], f"data.root not readable: {error}"
    return split, [str(warning.message) for warning in caught], ""


def format_description(description: dict[str, Any]) -> str:
    """The text `advise config` prints: the resolved config as YAML, then a `# derived` and
    a `# warnings` block of YAML comments (the whole text loads as the same config)."""
    resolved = yaml.safe_dump(description["config"], sort_keys=False, default_flow_style=None)
    lines = [resolved.rstrip(), "", "# derived"]
    for name, value in description["derived"].items():
        lines.append(f"#   {name.replace('_', ' ')}: {_derived_text(value)}")
    lines += ["", "# warnings"]
    lines += [f"#   - {message}" for message in description["warnings"]] or ["#   (none)"]
    return "\n".join(lines) + "\n"


def _derived_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def config_table() -> str:
    """Markdown: one row per config key (key | default | meaning), in `valid_keys()` order,
    with a bold row opening each section (its class docstring, if any). The meaning is the
    field's trailing `# comment` in advise/config.py, or the comment lines just above it."""
    comments, docstrings = _source_notes()
    defaults = Config()
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    section = None
    for key, owner, name in _keys():
        prefix = key.rpartition(".")[0]
        if prefix != section:
            section = prefix
            lines.append(f"| **{prefix}** | | {_cell(docstrings.get(owner.__name__, ''))} |")
        default = _cell(f"`{_yaml_text(lookup(defaults, key))}`")
        lines.append(f"| `{key}` | {default} | {_cell(comments.get((owner.__name__, name), ''))} |")
    return "\n".join(lines)


def undocumented_keys() -> list[str]:
    """The keys whose field in advise/config.py has no comment (an empty meaning cell)."""
    comments, _ = _source_notes()
    return [key for key, owner, name in _keys() if not comments.get((owner.__name__, name))]


def _keys(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, type, str]]:
    """(dotted key, the dataclass declaring it, field name) for every key, as `valid_keys`."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            yield from _keys(kind, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, cls, field.name


def _source_notes() -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """From advise/config.py: {(class, field): its comment} and {class: its docstring, one
    line}. A field's comment is its trailing one, else the comment lines right above it."""
    source = Path(config_module.__file__).read_text(encoding="utf-8")
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, alone on its line)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        text = token.string.lstrip("#").strip()
        if token.type == tokenize.COMMENT and not text.startswith(("fmt:", "noqa", "type:")):
            comments[token.start[0]] = (text, not token.line[: token.start[1]].strip())
    fields: dict[tuple[str, str], str] = {}
    docstrings: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docstrings[node.name] = " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            span = range(item.lineno, (item.end_lineno or item.lineno) + 1)
            trailing = [comments[line][0] for line in span if line in comments]
            above, line = [], item.lineno - 1
            while line in comments and comments[line][1]:
                above.insert(0, comments[line][0])
                line -= 1
            fields[(node.name, item.target.id)] = " ".join(trailing or above)
    return fields, docstrings


def _yaml_text(value: Any) -> str:
    """A default as one would write it in YAML or `--set`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml_text(item) for item in value) + "]"
    if isinstance(value, str):
        return value or '""'
    return repr(value)


def _cell(text: str) -> str:
    """`text` safe inside a markdown table cell (a `|` would split the cell)."""
    return text.replace("|", "\\|")


def readme_block(readme: str) -> str:
    """The text between TABLE_START and TABLE_END (without the newlines next to them)."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(
            f"README.md has no {TABLE_START} ... {TABLE_END} block: put the two markers, each on "
            f"its own line, where the config table goes"
        )
    return readme[start + len(TABLE_START) : end].strip("\n")


def with_config_table(readme: str) -> str:
    """`readme` with its config-table block replaced by `config_table()`."""
    readme_block(readme)  # the markers are there
    start = readme.find(TABLE_START) + len(TABLE_START)
    end = readme.find(TABLE_END)
    return f"{readme[:start]}\n{config_table()}\n{readme[end:]}"
