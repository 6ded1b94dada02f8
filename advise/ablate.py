"""`advise ablate`: a grid of configurations over seeds on the built-in benchmark, as one
resumable command, with tables and computed verdicts.

A grid (a YAML file, or a name in `advise/ablations/`) holds a base preset, axes of config
keys, the tasks, the arms per cell and the seeds:

    base: demo                     # the preset every run starts from
    set: {}                        # dotted keys for every run
    pretrain: {train.epochs: 30}   # dotted keys for pre-training runs only
    finetune: {train.epochs: 60}   # ... and for fine-tuning runs only
    axes: {sfu.spatial: [8, 4, 2]} # one at a time around the base, unless product: true
    tasks: [spatial, temporal]
    arms: [scratch, prp, avgpool]  # scratch | prp | avgpool | linear | transplant
    seeds: [0, 1, 2]
    findings: [...]                # see `Finding`
    transplant: {ifm.name: mini}   # arm transplant: its TMM is pre-trained with these keys
    datasets: {hmdb: {data.format: hmdb51, data.root: /data/hmdb51}}  # a task of its own
    benchmark: {train_per_class: 48}  # the built-in benchmark's sizes (`benchmark_sizes`)

A task is a built-in family of the benchmark (`spatial`, `temporal`) or a dataset the grid
names under `datasets:`, given by the `data.*` keys that say which videos it is
(`DATASET_KEYS`; any format advise reads). `datasets:` may also name `pool` (the videos PRP
pre-trains on) and `heldout` (those its pretext accuracy is measured on) to replace the
benchmark's. A named dataset's keys, its root included, and the sizes of a resized benchmark
folder are part of its runs' identity (`dataset_identity`); the benchmark's folders are not.

The `transplant` arm fine-tunes a TMM pre-trained on another IFM's tokens (the pre-training
of the cell with the grid's `transplant` keys on top), inheriting the TMM alone
(`finetune --transplant`; `sfu.adapter` bridges another token width).

An axis key `pretrain.KEY` varies pre-training only (e.g. `pretrain.train.epochs`), `finetune.KEY`
fine-tuning only; any other key both (the fine-tuned TMM is inherited, so they must agree).
Runs are identified by their resolved config (and, for a pre-trained arm, by the pre-training
run they start from): a pre-training is done once per distinct config and seed and shared by
every cell that uses it; a finished run is never redone, a killed one is resumed, and a changed
grid adds only the runs it lacks. Every run is an ordinary run folder under OUT/runs.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import json
import math
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from advise.config import ConfigError, load_config
from advise.files import atomic_write
from advise.jobs import Job, run_jobs
from advise.report import spread_text

GRID_DIR = Path(__file__).parent / "ablations"
ARMS = ("scratch", "prp", "avgpool", "linear", "transplant")
BUILTIN_TASKS = ("spatial", "temporal")
# what an arm changes in the fine-tuning config, and whether it starts from pre-training
ARM_SETTINGS: dict[str, tuple[dict[str, Any], bool]] = {
    "scratch": ({}, False),
    "prp": ({}, True),
    "avgpool": ({"tmm.kind": "none"}, False),
    "linear": ({"tmm.frozen": True, "head.kind": "linear"}, True),
    "transplant": ({}, True),  # from the pre-training of the grid's `transplant` keys
}
EXPECTATIONS = ("higher", "same", "not_higher")
PATH_KEYS = ("data.root", "data.source")  # where the data is: not part of a run's identity
# keys the runner sets for every run (where its tokens are, how often it saves, its seed): a
# grid or `--set` giving them is refused
RUNNER_KEYS = ("data.root", "data.source", "data.in_memory", "train.checkpoint_seconds",
               "train.seed")  # fmt: skip
# the keys that say which videos a dataset is (a grid's `datasets:` gives only these; how clips
# are cut from them is the grid's `set:` and axes, the same for every dataset)
DATASET_KEYS = ("data.format", "data.root", "data.annotations", "data.test_annotations",
                "data.split", "data.split_seed", "data.test_fraction", "data.quarantine",
                "data.max_bad_fraction")  # fmt: skip
# the built-in benchmark: each dataset's folder under DIR/data and the `benchmark:` sizes it
# depends on
BENCHMARK_FOLDERS = {"pool": "pool", "heldout": "pool-heldout", "spatial": "spatial",
                     "temporal": "temporal"}  # fmt: skip
BENCHMARK_SIZE_KEYS = {"pool": ("pool_videos",), "heldout": ("heldout_videos",),
                       "spatial": ("task_videos", "train_per_class"),
                       "temporal": ("task_videos", "train_per_class")}  # fmt: skip
# keys added to the config after grids were first run, left out of a run's identity while at
# their default: a grid folder written before they existed keeps its finished runs
LATER_KEYS = {"sfu.adapter": None, "train.checkpoint_seconds": 0.0}


@dataclass(frozen=True)
class Finding:
    """A claim the grid tests: `metric` ("top1" of `arm`, or "dacc": prp - scratch) on `task`
    is higher in cell `a` than in cell `b` (each a dict of axis values, {} = the base cell);
    `arm_b` compares another arm on the b side (e.g. the TMM against avgpool). With
    `expect: same` the claim is instead that a and b do not differ by more than `tolerance`
    points; with `not_higher`, that a is not above b by more than `tolerance` (e.g. "more
    blocks do not help the spatial task": worse or equal)."""

    name: str
    claim: str
    task: str
    a: dict[str, Any]
    b: dict[str, Any]
    metric: str = "top1"
    arm: str = "prp"
    arm_b: str | None = None
    # an interaction: compare the change a - b on `task` with the same change on this task
    # ("pooling hurts the temporal task more than the spatial one"), seed by seed
    versus_task: str | None = None
    expect: str = "higher"  # higher | same | not_higher
    tolerance: float = 2.0  # points; with expect: same or not_higher

    def __post_init__(self) -> None:
        if self.expect not in EXPECTATIONS:
            raise ConfigError(
                f"finding {self.name!r}: expect must be one of {EXPECTATIONS}, got {self.expect!r}"
            )

    def sides(self, rows: list[dict]) -> tuple[list[float], list[float]]:
        """The per-seed values the verdict compares: (a, b), or with `versus_task` (the
        change on `task`, the change on `versus_task`)."""
        arm_b = self.arm_b or self.arm
        if self.versus_task is None:
            return (_values(rows, self.a, self.task, self.arm, self.metric),
                    _values(rows, self.b, self.task, arm_b, self.metric))  # fmt: skip

        def change(task: str) -> dict[int, float]:
            a = _by_seed(rows, self.a, task, self.arm, self.metric)
            b = _by_seed(rows, self.b, task, arm_b, self.metric)
            return {seed: a[seed] - b[seed] for seed in a if seed in b}

        here, there = change(self.task), change(self.versus_task)
        seeds = sorted(set(here) & set(there))
        return [here[s] for s in seeds], [there[s] for s in seeds]


@dataclass(frozen=True)
class Grid:
    base: str
    axes: dict[str, list[Any]]
    tasks: list[str]
    arms: list[str]
    seeds: list[int]
    common: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    product: bool = False
    findings: list[Finding] = field(default_factory=list)
    benchmark: dict[str, int] = field(default_factory=dict)  # sizes (tests shrink them)
    description: str = ""
    transplant: dict[str, Any] = field(default_factory=dict)  # the transplant arm's source
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> data.* keys
    settings: dict[str, Any] = field(default_factory=dict)  # `ablate --set`: over every key

    def cells(self) -> list[dict[str, Any]]:
        """Axis values of every cell: the base cell ({}) and one cell per axis value, or the
        full product; cells equal to another are listed once."""
        if self.product and self.axes:
            keys = list(self.axes)
            found = [
                dict(zip(keys, values, strict=True))
                for values in itertools.product(*self.axes.values())
            ]
        else:
            found = [{}] + [{key: value} for key, values in self.axes.items() for value in values]
        unique: list[dict[str, Any]] = []
        for cell in found:
            if cell not in unique:
                unique.append(cell)
        return unique


def _grid_file(source: str) -> Path:
    """The YAML file `source` names: a file path, else a built-in grid's name (a folder named
    like a built-in grid, an earlier run's output say, is not a grid)."""
    if Path(source).is_file():
        return Path(source)
    path = GRID_DIR / f"{source}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in GRID_DIR.glob("*.yaml")))
        raise ConfigError(f"no grid file or built-in grid named {source!r}; grids: {names}")
    return path


def load_grid(
    source: str, seeds: list[int] | None = None, settings: dict[str, Any] | None = None
) -> Grid:
    """A grid from a name in `advise/ablations/` or a YAML path; `seeds` replaces its seeds,
    `settings` (dotted keys) go over its `set:`, `pretrain:` and `finetune:` for every run
    (`ablate --set`; a key the grid varies is refused). Every key is checked against the
    config now, before any work."""
    path = _grid_file(source)
    values = yaml.safe_load(path.read_text()) or {}
    known = {
        "base",
        "set",
        "pretrain",
        "finetune",
        "axes",
        "tasks",
        "arms",
        "seeds",
        "product",
        "findings",
        "benchmark",
        "description",
        "transplant",
        "datasets",
    }
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown grid keys {unknown}; a grid has {sorted(known)}")
    grid = Grid(
        base=values.get("base", "demo"),
        axes={key: list(v) for key, v in (values.get("axes") or {}).items()},
        tasks=list(values.get("tasks", BUILTIN_TASKS)),
        arms=list(values.get("arms", ["scratch", "prp"])),
        seeds=list(seeds if seeds is not None else values.get("seeds", [0])),
        common={**(values.get("set") or {}), **(settings or {})},
        settings=dict(settings or {}),
        pretrain=dict(values.get("pretrain") or {}),
        finetune=dict(values.get("finetune") or {}),
        product=bool(values.get("product", False)),
        findings=[Finding(**finding) for finding in values.get("findings") or []],
        benchmark=dict(values.get("benchmark") or {}),
        description=str(values.get("description", "")).strip(),
        transplant=dict(values.get("transplant") or {}),
        datasets=_datasets(values.get("datasets"), path),
    )
    _check_grid(grid, path)
    return grid


def _datasets(values: Any, path: Path) -> dict[str, dict[str, Any]]:
    """The grid's `datasets:`, each a mapping of dotted `data.*` keys."""
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ConfigError(
            f"{path}: `datasets:` maps each name to its data.* keys, e.g. "
            f"{{hmdb: {{data.format: hmdb51, data.root: /data/hmdb51}}}}; got {values!r}"
        )
    datasets = {str(name): dict(keys) for name, keys in values.items()}
    for keys in datasets.values():  # a relative root: next to the grid file, as its author sees
        root = keys.get("data.root")
        if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
            keys["data.root"] = str((path.parent / root).resolve())
    return datasets


def _check_grid(grid: Grid, path: Path) -> None:
    """Arms and tasks known, and every configuration of the grid a valid config."""
    bad_arms = sorted(set(grid.arms) - set(ARMS))
    if bad_arms:
        raise ConfigError(f"{path}: unknown arms {bad_arms}; arms are {', '.join(ARMS)}")
    if "transplant" in grid.arms and not grid.transplant:
        raise ConfigError(
            f"{path}: arm transplant needs `transplant:`, the keys of the pre-training its TMM "
            f"comes from (e.g. {{ifm.name: mini}})"
        )
    bad_tasks = sorted(set(grid.tasks) - set(BUILTIN_TASKS) - set(grid.datasets))
    if bad_tasks:
        raise ConfigError(
            f"{path}: unknown tasks {bad_tasks}; a task is one of {BUILTIN_TASKS} or a dataset "
            f"named under `datasets:` (e.g. datasets: {{{bad_tasks[0]}: {{data.format: ucf101, "
            f"data.root: /data/...}}}})"
        )
    unused = sorted(set(grid.datasets) - set(grid.tasks) - {"pool", "heldout"})
    if unused:
        raise ConfigError(
            f"{path}: `datasets:` names {unused}, which no task uses; a dataset named there is "
            f"a task (listed under `tasks:`), `pool` or `heldout`"
        )
    for name, keys in grid.datasets.items():
        bad_keys = sorted(set(keys) - set(DATASET_KEYS))
        if bad_keys or "data.root" not in keys:
            raise ConfigError(
                f"{path}: dataset {name!r} needs data.root, and takes only the keys that say "
                f"which videos it is ({', '.join(DATASET_KEYS)}); how clips are cut goes "
                f"under `set:` or `axes:`; got {bad_keys or sorted(keys)}"
            )
        for stage in ("pretrain", "finetune"):
            load_config(grid.base, {**stage_overrides(grid, {}, stage), **keys})
    if "heldout" in grid.datasets and grid.datasets["heldout"] == grid.datasets.get("pool"):
        raise ConfigError(
            f"{path}: `heldout` names the same videos as `pool`: PRP's accuracy would be measured "
            f"on the videos it pre-trains on"
        )
    _check_keys(grid, path)
    for cell in grid.cells():
        for stage in ("pretrain", "finetune"):
            load_config(grid.base, stage_overrides(grid, cell, stage))  # raises on a bad key
        if grid.transplant:
            load_config(grid.base, {**stage_overrides(grid, cell, "pretrain"), **grid.transplant})


def _check_keys(grid: Grid, path: Path) -> None:
    """No key the runner sets, no key of which videos a dataset is outside `datasets:`, no
    `--set` of a key the grid varies, known benchmark sizes."""
    given = {"`set:` (or --set)": grid.common, "`pretrain:`": grid.pretrain,
             "`finetune:`": grid.finetune, "`axes:`": grid.axes,
             "`transplant:`": grid.transplant}  # fmt: skip
    for place, keys in given.items():
        bare = {key.removeprefix("pretrain.").removeprefix("finetune."): key for key in keys}
        which = sorted(
            k for b, k in bare.items() if b in DATASET_KEYS and b != "data.max_bad_fraction"
        )
        if which:
            raise ConfigError(
                f"{path}: {which} under {place} say which videos a dataset is: name the dataset "
                f"under `datasets:` with them (a store and runs of its own)"
            )
        owned = sorted(k for b, k in bare.items() if b in RUNNER_KEYS)
        if owned:
            raise ConfigError(
                f"{path}: {owned} under {place}: ablate sets these for every run itself "
                f"(where its tokens are, checkpoints; seeds under `seeds:`)"
            )
    varied = sorted(k for k in grid.settings
                    if {k, f"pretrain.{k}", f"finetune.{k}"} & set(grid.axes))  # fmt: skip
    if varied:
        raise ConfigError(
            f"{path}: --set {', '.join(varied)}: the grid varies it as an axis; change the axis "
            f"in the grid file instead"
        )
    sizes = sorted(set(grid.benchmark) - set(benchmark_sizes({})))
    if sizes:
        raise ConfigError(
            f"{path}: unknown `benchmark:` sizes {sizes}; sizes are "
            f"{', '.join(benchmark_sizes({}))}"
        )


def benchmark_sizes(sizes: dict[str, int]) -> dict[str, int]:
    """The built-in benchmark's sizes with a grid's `benchmark:` over the defaults (the demo's)."""
    from advise.data.synthetic import DEFAULT_NUM_VIDEOS
    from advise.demo import HELDOUT_POOL_VIDEOS, TASK_VIDEOS, TRAIN_PER_CLASS

    defaults = {
        "task_videos": TASK_VIDEOS,
        "train_per_class": TRAIN_PER_CLASS,
        "pool_videos": DEFAULT_NUM_VIDEOS["pool"],
        "heldout_videos": HELDOUT_POOL_VIDEOS,
    }
    return {**defaults, **sizes}


def dataset_identity(grid: Grid, dataset: str) -> dict[str, Any] | None:
    """What makes `dataset` these videos beyond its name, for its runs' identity and its
    stores' names: the keys of a dataset the grid names; for a folder of the built-in
    benchmark, the sizes the grid changes from the defaults (None at the defaults, so the
    identity of a grid run before sizes could change stays)."""
    if dataset in grid.datasets:
        return grid.datasets[dataset]
    defaults = benchmark_sizes({})
    changed = {key: grid.benchmark[key] for key in BENCHMARK_SIZE_KEYS[dataset]
               if key in grid.benchmark and grid.benchmark[key] != defaults[key]}  # fmt: skip
    return {"benchmark": changed} if changed else None


def _resolved(base: str, overrides: dict[str, Any]) -> Any:
    """`load_config(base, overrides)`, each distinct one resolved once per process (a base
    file once per version of it): planning asks for the same configs many times (~8 ms each)."""
    version = Path(base).stat().st_mtime_ns if Path(base).is_file() else None
    return _resolved_text(base, version, json.dumps(overrides, sort_keys=True))


@functools.lru_cache(maxsize=4096)
def _resolved_text(base: str, version: int | None, overrides: str) -> Any:
    return load_config(base, json.loads(overrides))


def stage_overrides(grid: Grid, cell: dict[str, Any], stage: str) -> dict[str, Any]:
    """The dotted overrides of one stage ("pretrain" or "finetune") of a cell: the grid's
    common keys, the stage's keys, the cell's keys that apply to the stage, then `--set`'s."""
    other = "finetune" if stage == "pretrain" else "pretrain"
    own = {}
    for key, value in cell.items():
        if key.startswith(f"{stage}."):
            own[key[len(stage) + 1 :]] = value
        elif not key.startswith(f"{other}."):
            own[key] = value
    return {**grid.common, **getattr(grid, stage), **own, **grid.settings}


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: its stage, the dataset it trains on, its overrides, the
    pre-training run it starts from, and the labels it is reported under."""

    id: str
    stage: str
    dataset: str  # pool, a task (spatial, temporal or a dataset the grid names)
    overrides: dict[str, Any]
    init: str | None  # id of the pre-training run
    seed: int
    cells: tuple[str, ...] = ()  # JSON of every cell it serves
    task: str = ""
    arm: str = ""
    transplant: bool = False  # its init is a pre-training on another IFM: the TMM alone


def run_id(
    grid: Grid,
    stage: str,
    dataset: str,
    overrides: dict,
    init: str | None,
    transplant: bool = False,
) -> str:
    """A run's identity: its resolved config (paths left out), stage, dataset and init (and
    whether the init is transplanted)."""
    config = _resolved(grid.base, overrides).to_dict()
    for key in PATH_KEYS:
        section, name = key.split(".")
        config[section].pop(name, None)
    for key, default in LATER_KEYS.items():
        section, name = key.split(".")
        if config[section].get(name) == default:
            config[section].pop(name, None)
    identity = [stage, dataset, init, config] + (["transplant"] if transplant else [])
    # a named dataset's keys, root included (the benchmark's folders are not), or the sizes of a
    # resized benchmark folder; a pre-training's pretext accuracy is measured on `heldout`
    for name in _Work.datasets(stage, dataset):
        keys = dataset_identity(grid, name)
        if keys is not None:
            identity.append({name: keys})
    return _digest(json.dumps(identity, sort_keys=True, default=str), 16)


def _digest(text: str, length: int = 8) -> str:
    """A short stable name for `text` (run ids, store and folder names)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def unpooled_at_width(grid: Grid, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with `sfu.channels` at the IFM's own width set to none: such pooling pools
    nothing (the SFU passes the tokens unchanged), so the cell's runs are the base cell's
    (Finding 2's 96-channel row), and a fine-tuning checks the SFU of the pre-training it
    starts from against the same value."""
    from advise.models.ifm import known_width

    config = _resolved(grid.base, overrides)
    channels = config.sfu.channels
    if channels is not None and channels == known_width(config.ifm.name, config.ifm.layers):
        return {**overrides, "sfu.channels": None}
    return overrides


def plan(grid: Grid) -> list[RunSpec]:
    """Every run the grid needs, pre-training first, each once (shared between cells)."""
    runs: dict[str, RunSpec] = {}
    finetunes: list[RunSpec] = []
    for seed, cell in itertools.product(grid.seeds, grid.cells()):
        label = json.dumps(cell, sort_keys=True)
        own = unpooled_at_width(
            grid, {**stage_overrides(grid, cell, "pretrain"), "train.seed": seed}
        )
        pretrainings = {False: (own, run_id(grid, "pretrain", "pool", own, None))}
        if "transplant" in grid.arms:  # the TMM's pre-training on the source IFM
            source = unpooled_at_width(grid, {**own, **grid.transplant})
            pretrainings[True] = (source, run_id(grid, "pretrain", "pool", source, None))
        for task, arm in itertools.product(grid.tasks, grid.arms):
            extra, pretrained = ARM_SETTINGS[arm]
            transplant = arm == "transplant"
            pre, pre_id = pretrainings[transplant]
            if pretrained and pre_id not in runs:
                runs[pre_id] = RunSpec(pre_id, "pretrain", "pool", pre, None, seed, (label,))
            overrides = {**stage_overrides(grid, cell, "finetune"), **extra, "train.seed": seed}
            if "tmm.kind" in extra:  # another kind: the cell's tmm.<kind>.* keys do not apply
                overrides = {
                    k: v
                    for k, v in overrides.items()
                    if not k.startswith("tmm.") or k in ("tmm.kind", "tmm.frozen")
                }
            overrides = unpooled_at_width(grid, overrides)
            init = pre_id if pretrained else None
            fid = run_id(grid, "finetune", task, overrides, init, transplant)
            finetunes.append(
                RunSpec(
                    fid, "finetune", task, overrides, init, seed, (label,), task, arm, transplant
                )
            )
    merged: dict[str, RunSpec] = {}
    for spec in finetunes:  # one run serves every cell that resolves to it (e.g. avgpool)
        if spec.id in merged:
            known = merged[spec.id]
            spec = RunSpec(**{**known.__dict__, "cells": known.cells + spec.cells})
        merged[spec.id] = spec
    return list(runs.values()) + list(merged.values())


# -- verdicts -----------------------------------------------------------------------------

VERDICT_RULE = (
    "with n seeds a side, the difference of means d = a - b has the standard error "
    "se = sqrt(var_a / n_a + var_b / n_b). A claim that a is higher is reproduced when "
    "d > max(2 se, 1 point), refuted when d < -max(2 se, 1 point), inconclusive otherwise. A "
    "claim that a and b are the same (within a tolerance t, 2 points unless the finding says) "
    "is reproduced when |d| + 2 se <= t, refuted when |d| - 2 se > t, inconclusive otherwise; "
    "a claim that a is not higher (by more than t) is reproduced when d + 2 se <= t, refuted "
    "when d - 2 se > t. Fewer than 2 seeds on either side are inconclusive"
)


def verdict(
    a: list[float], b: list[float], expect: str = "higher", tolerance: float = 2.0
) -> dict[str, Any]:
    """The verdict on "a > b" (`expect` "higher"), "a = b within `tolerance` points"
    ("same") or "a <= b + `tolerance`" ("not_higher") from per-seed values (`VERDICT_RULE`)."""
    result: dict[str, Any] = {"mean_a": _mean(a), "mean_b": _mean(b), "n_a": len(a), "n_b": len(b)}
    if len(a) < 2 or len(b) < 2:
        return {**result, "difference": None, "margin": None, "verdict": "inconclusive"}
    difference = statistics.mean(a) - statistics.mean(b)
    error = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    if expect in ("same", "not_higher"):
        margin = 2 * error
        excess = abs(difference) if expect == "same" else difference
        outcome = (
            "reproduced"
            if excess + margin <= tolerance
            else "refuted"
            if excess - margin > tolerance
            else "inconclusive"
        )
    else:
        margin = max(2 * error, 1.0)
        outcome = (
            "reproduced"
            if difference > margin
            else "refuted"
            if difference < -margin
            else "inconclusive"
        )
    return {
        **result,
        "difference": round(difference, 2),
        "margin": round(margin, 2),
        "verdict": outcome,
    }


def _mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 2) if values else None


# -- running -------------------------------------------------------------------------------


def load_grids(
    source: str, seeds: list[int] | None = None, settings: dict[str, Any] | None = None
) -> list[tuple[str, Grid]]:
    """The grids `source` names, each with its name (a file's stem): itself, or, for a file of
    `grids: [NAME, ...]` (e.g. `paper`), each of those (a built-in name, or a path); `seeds`
    and `settings` as in `load_grid`, for each."""
    values = yaml.safe_load(_grid_file(source).read_text())
    if isinstance(values, dict) and "grids" in values:
        return [(Path(name).stem, load_grid(name, seeds, settings)) for name in values["grids"]]
    return [(Path(source).stem, load_grid(source, seeds, settings))]


def run_ablation(
    grid: Grid, out: Path, shared: Path | None = None, jobs: int = 1
) -> dict[str, Any]:
    """`run_ablations` of one grid, its results in `out` (and its runs in `shared`, default
    `out`); returns its results document."""
    return run_ablations([(grid, out)], shared or out, jobs)[0]


def run_ablations(
    grids: list[tuple[Grid, Path]], shared: Path, jobs: int = 1, run: bool = True
) -> list[dict]:
    """Run every missing run of the grids (resumable), `jobs` at a time, then write each
    grid's results.csv, results.json, report.md and figures into its folder. The videos,
    stores, run folders and the finished-run log live in `shared`: a run two grids have in
    common (a base cell, a pre-training) runs once. Returns each grid's results document.
    Without `run`, nothing runs: the reports are written from the runs finished so far.

    Each run trains on one thread, from its feature store held in memory; with `jobs` > 1 the
    runs go to that many worker processes, pre-trainings first (a fine-tuning starts once its
    pre-training is done). A run's result does not depend on `jobs`: each run is seeded by its
    config alone."""
    import torch

    torch.set_num_threads(1)
    done = _read_rows(shared / "results.jsonl")
    plans = [(grid, out, plan(grid)) for grid, out in grids]
    if not run:
        return _write_all(plans, done, shared)
    needed: dict[str, tuple[RunSpec, _Work]] = {}
    for grid, _, specs in plans:
        # the benchmark's folders this grid reads (another grid may name one of them)
        used = {name for spec in specs for name in _Work.datasets(spec.stage, spec.dataset)}
        work = _Work(grid, shared, _benchmark(shared / "data", grid, sorted(used)))
        for spec in specs:
            needed.setdefault(spec.id, (spec, work))
    todo = [(s, w) for s, w in needed.values() if s.id not in done and s.stage == "pretrain"]
    todo += [(s, w) for s, w in needed.values() if s.id not in done and s.stage == "finetune"]
    grids_text = f" in {len(grids)} grids" if len(grids) > 1 else ""
    print(
        f"ablate: {len(needed)} runs{grids_text}, {len(needed) - len(todo)} done, {len(todo)} "
        f"to run, {jobs} at a time",
        flush=True,
    )
    stores = store_jobs(todo)
    waits = {spec.id for spec, _ in todo} | set(stores)
    runs = []
    for spec, work in todo:
        needs = [
            str(work.store(dataset, spec)) for dataset in work.datasets(spec.stage, spec.dataset)
        ]
        after = tuple(key for key in [*needs, spec.init] if key in waits)
        runs.append(Job(spec.id, _run_one, (spec, work), after))
    number = 0
    for job, row in run_jobs(list(stores.values()) + runs, jobs):
        if job.key in stores:
            print(f"ablate: tokens of {job.key} in {row['seconds']:.0f} s", flush=True)
            continue
        number, spec = number + 1, job.args[0]
        _append_row(shared / "results.jsonl", row)
        done[spec.id] = row
        eta = _eta(todo, done, jobs)
        print(
            f"ablate: run {number}/{len(todo)} {spec.stage} {spec.dataset} {spec.arm or ''} "
            f"seed {spec.seed}{_cell_text(spec)}: {_result_text(row)} in {row['seconds']:.0f} s;"
            f" ETA {eta / 60:.1f} min",
            flush=True,
        )
    return _write_all(plans, done, shared)


def store_jobs(todo: list[tuple[RunSpec, _Work]]) -> dict[str, Job]:
    """A job per store that a run to do reads and is not whole, by path, in an order that puts
    every job after those it waits for. The stores of one IFM run one after another (its
    first builds the IFM, training a mini IFM on first use: a job needing that IFM at the same
    time would only wait for it, holding a worker), and each store of a concatenation ("a+b")
    after its parts' stores of the same dataset, which it joins where that is exact
    (`advise.runs.joinable_parts`)."""
    stores: dict[str, Job] = {}
    chain: dict[str, list[str]] = {}  # IFM key -> its store jobs, in order
    joined: set[str] = set()  # the stores of concatenations
    for spec, work in todo:
        for dataset in work.datasets(spec.stage, spec.dataset):
            path, key = work.store(dataset, spec), work.ifm_key(spec)
            if str(path) in stores or (path / "manifest.json").exists():  # (once all stored)
                continue
            parts = [str(part) for part in work.part_stores(dataset, spec)]
            after = tuple(chain.get(key, [])[-1:]) + tuple(parts)
            stores[str(path)] = Job(str(path), _extract, (work, dataset, spec), after)
            chain.setdefault(key, []).append(str(path))
            if parts:
                joined.add(str(path))
    ordered = [job for job in stores.values() if job.key not in joined]
    ordered += [job for job in stores.values() if job.key in joined]
    # a part store already whole is no job to wait for
    return {job.key: replace(job, after=tuple(k for k in job.after if k in stores))
            for job in ordered}  # fmt: skip


def _write_all(
    plans: list[tuple[Grid, Path, list[RunSpec]]], done: dict[str, dict], shared: Path
) -> list[dict]:
    """`write_results` of every grid; their results documents."""
    documents = []
    for grid, out, specs in plans:
        out.mkdir(parents=True, exist_ok=True)
        documents.append(write_results(grid, specs, done, out, shared))
    return documents


def _eta(todo: list[tuple[RunSpec, _Work]], done: dict[str, dict], jobs: int) -> float:
    """Seconds left: each stage's runs to do times the mean of its finished ones (the other
    stage's mean while none is), over `jobs` at a time."""
    means = {}
    for stage in ("pretrain", "finetune"):
        seconds = [done[s.id]["seconds"] for s, _ in todo if s.id in done and s.stage == stage]
        means[stage] = statistics.mean(seconds) if seconds else None
    left = [spec.stage for spec, _ in todo if spec.id not in done]
    known = [mean for mean in means.values() if mean is not None]
    fallback = statistics.mean(known) if known else 0.0
    return sum(means[stage] or fallback for stage in left) / jobs


def _cell_text(spec: RunSpec) -> str:
    """The cells a fine-tuning serves (" @ sfu.spatial=4"), when not only the base."""
    cells = [json.loads(label) for label in spec.cells]
    names = [", ".join(f"{k}={v}" for k, v in cell.items()) for cell in cells if cell]
    return f" @ {'; '.join(names)}" if names else ""


def _result_text(row: dict[str, Any]) -> str:
    """A finished run's result for its progress line: "top-1 87.5" or the pretext measure."""
    if "top1" in row:
        return f"top-1 {row['top1']:.1f}"
    measure = row.get("measure") or {}
    counts = ("clips", "videos")
    values = [f"{key} {value:.1f}" for key, value in measure.items() if key not in counts]
    return ", ".join(values) or "done"


def _benchmark(data: Path, grid: Grid, names: list[str]) -> dict[str, Path]:
    """The built-in benchmark's folders among the datasets `names` ("pool", "heldout" and the
    tasks; those the grid names under `datasets:` are not the benchmark's), at the grid's
    sizes: a folder resized from the defaults is a folder of its own. Seed 0: seeds vary
    training, not data."""
    from advise.data.synthetic import generate

    sizes = benchmark_sizes(grid.benchmark)
    roots = {}
    for name in names:
        if name in grid.datasets:
            continue
        folder = BENCHMARK_FOLDERS[name]
        identity = dataset_identity(grid, name)
        if identity is not None:
            folder += "-" + _digest(json.dumps(identity, sort_keys=True))
        if name == "pool":
            roots[name] = generate(data / folder, "pool", sizes["pool_videos"], progress=False)
        elif name == "heldout":
            roots[name] = generate(
                data / folder, "pool", sizes["heldout_videos"], seed=1, progress=False
            )
        else:
            roots[name] = generate(data / folder, name, sizes["task_videos"], progress=False,
                                   train_per_class=sizes["train_per_class"])  # fmt: skip
    return roots


_IFMS: dict[str, Any] = {}  # the frozen IFMs this process built, by `_Work.ifm`'s key


class _Work:
    """What the runs of one grid share: the frozen IFMs (built once per process) and the fp32
    feature stores (extracted once per dataset and IFM, each by a job of its own). Sent to
    worker processes as it is; the IFMs are built there."""

    def __init__(self, grid: Grid, out: Path, roots: dict[str, Path]) -> None:
        self.grid, self.out, self.roots = grid, out, roots

    def ifm_key(self, spec: RunSpec) -> str:
        """What the run's tokens depend on: its IFM's name, size, layers, random init."""
        config = _resolved(self.grid.base, spec.overrides).ifm
        return json.dumps(
            [config.name, config.img_size, config.layers, config.layer_merge, config.random_init]
        )

    def ifm(self, spec: RunSpec) -> Any:
        """The run's frozen IFM (a mini IFM is trained once on first use, then cached)."""
        import torch

        from advise.models.build import build_frozen_ifm

        key = self.ifm_key(spec)
        if key not in _IFMS:
            config = load_config(self.grid.base, spec.overrides).ifm
            _IFMS[key] = build_frozen_ifm(config, torch.device("cpu"))
        return _IFMS[key]

    @staticmethod
    def datasets(stage: str, dataset: str) -> list[str]:
        """The datasets a run of `stage` on `dataset` reads: its own, and for a pre-training the
        held-out pool its pretext is measured on."""
        return [dataset] + (["heldout"] if stage == "pretrain" else [])

    def data(self, dataset: str) -> dict[str, Any]:
        """The `data.*` keys that read `dataset`: the grid's for a dataset it names, else the
        benchmark folder's root (the base preset's format)."""
        if dataset in self.grid.datasets:
            return self.grid.datasets[dataset]
        return {"data.root": str(self.roots[dataset])}

    def store(self, dataset: str, spec: RunSpec) -> Path:
        """Where `dataset`'s tokens for the run's IFM are stored (once extracted)."""
        key = self.ifm_key(spec)
        identity = dataset_identity(self.grid, dataset)
        if identity is not None:  # another definition under the name: another store
            key += json.dumps(identity, sort_keys=True)
        return self.out / "stores" / f"{dataset}-{_digest(key)}"

    def part_stores(self, dataset: str, spec: RunSpec) -> list[Path]:
        """Where `dataset`'s tokens of each part of the run's concatenated IFM ("a+b") are
        stored; [] for a single IFM."""
        name = _resolved(self.grid.base, spec.overrides).ifm.name
        if "+" not in name:
            return []
        parts = [replace(spec, overrides={**spec.overrides, "ifm.name": part})
                 for part in name.split("+")]  # fmt: skip
        return [self.store(dataset, part) for part in parts]

    def sources(self, spec: RunSpec) -> dict[str, str]:
        """`data.source` of each dataset the run reads."""
        return {
            dataset: f"store:{self.store(dataset, spec)}"
            for dataset in self.datasets(spec.stage, spec.dataset)
        }


def _extract(work: _Work, dataset: str, spec: RunSpec) -> dict[str, Any]:
    """Extract (or finish extracting) `dataset`'s fp32 tokens for `spec`'s IFM; a job."""
    from advise.runs import extract

    started = time.perf_counter()
    ifm_keys = {k: v for k, v in spec.overrides.items() if k.startswith("ifm.")}
    settings = {**work.grid.common, **ifm_keys, **work.data(dataset)}
    config = load_config(work.grid.base, settings)
    path = work.store(dataset, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f"{path.name}.log").open("a") as stream:
        with redirect_stdout(stream), redirect_stderr(stream):
            extract(config, path, dtype="fp32", ifm=work.ifm(spec), progress=False,
                    parts=work.part_stores(dataset, spec))  # fmt: skip
    return {"seconds": round(time.perf_counter() - started, 1), "store": str(path)}


def _run_one(spec: RunSpec, work: _Work) -> dict[str, Any]:
    """Train (resuming a killed run) and evaluate one run; its results row. What the run
    prints goes to RUN/output.log (the grid's own lines stay readable with several jobs)."""
    run_dir = work.out / "runs" / f"{spec.stage}-{spec.id}"
    if run_dir.exists() and not (run_dir / "checkpoints" / "last.json").exists():
        shutil.rmtree(run_dir)  # killed before its first checkpoint: start again
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "output.log"
    with log.open("a") as stream, redirect_stdout(stream), redirect_stderr(stream):
        try:
            return _train_and_evaluate(spec, work, run_dir)
        except Exception as error:
            raise RuntimeError(
                f"{spec.stage} run {run_dir} failed ({type(error).__name__}: {error}); its "
                f"output is in {log}"
            ) from error


def _train_and_evaluate(spec: RunSpec, work: _Work, run_dir: Path) -> dict[str, Any]:
    from advise.runs import evaluate_checkpoint, evaluate_pretext, finetune, pretrain

    grid, out = work.grid, work.out
    ifm = work.ifm(spec)
    sources = work.sources(spec)

    def settings(dataset: str) -> dict[str, Any]:
        # in memory: the same results as reading the store each time (advise.data.sources)
        return {
            **spec.overrides,
            **work.data(dataset),
            "data.source": sources[dataset],
            "data.in_memory": True,
            # a killed grid loses at most the last 20 s of a run (saving each epoch of a short
            # run cost ~4% of it); not part of a run's identity: it changes no computed bit
            "train.checkpoint_seconds": 20,
        }

    config = load_config(grid.base, settings(spec.dataset))
    resume = (run_dir / "checkpoints" / "last.json").exists()
    started = time.perf_counter()
    row: dict[str, Any] = {
        "id": spec.id,
        "stage": spec.stage,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "init": spec.init,
        "run": str(run_dir),
    }
    if spec.stage == "pretrain":
        pretrain(config, run_dir, resume=resume, ifm=ifm)
        row["measure"] = evaluate_pretext(
            load_config(grid.base, settings("heldout")),
            run_dir / "checkpoints" / "last.safetensors",
            ifm=ifm,
        )
    else:
        init = out / "runs" / f"pretrain-{spec.init}" / "checkpoints" / "last.safetensors"
        result = finetune(
            config, run_dir, init=init if spec.init else None, resume=resume, ifm=ifm,
            transplant=spec.transplant,
        )  # fmt: skip
        checkpoint = result.checkpoint.with_suffix(".safetensors")
        evaluation = evaluate_checkpoint(  # (a grid's report draws what is read; the
            config, checkpoint, ifm=ifm, out_file=run_dir / "eval.json", figure=False
        )  # confusion matrix of each run is in its eval.json)
        row.update(
            task=spec.task,
            arm=spec.arm,
            cells=list(spec.cells),
            top1=evaluation["top1"],
            top1_1view=evaluation["single_view_top1"],
            views=evaluation["views"],
        )
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Finished runs by id (a torn last line, from a kill, is ignored)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["id"]] = row
    return rows


def _append_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as stream:
        stream.write(json.dumps(row) + "\n")
        stream.flush()


# -- results -------------------------------------------------------------------------------


def table_rows(grid: Grid, specs: list[RunSpec], done: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per (cell, task, arm, seed) of the grid with its numbers (a shared run appears
    under every cell it serves), plus dAcc = prp - scratch of the same cell and seed."""
    rows = []
    for spec in specs:
        if spec.stage != "finetune" or spec.id not in done:
            continue
        result = done[spec.id]
        for label in spec.cells:
            rows.append(
                {
                    "cell": label,
                    "task": spec.task,
                    "arm": spec.arm,
                    "seed": spec.seed,
                    "top1": result["top1"],
                    "top1_1view": result["top1_1view"],
                    "views": result["views"],
                    "seconds": result["seconds"],
                }
            )
    by_key = {(r["cell"], r["task"], r["arm"], r["seed"]): r for r in rows}
    for row in rows:
        scratch = by_key.get((row["cell"], row["task"], "scratch", row["seed"]))
        row["dacc"] = (
            round(row["top1"] - scratch["top1"], 2) if row["arm"] == "prp" and scratch else None
        )
    return rows


def _by_seed(rows: list[dict], cell: dict, task: str, arm: str, metric: str) -> dict[int, float]:
    label, column = json.dumps(cell, sort_keys=True), "dacc" if metric == "dacc" else "top1"
    wanted = "prp" if metric == "dacc" else arm
    return {r["seed"]: r[column] for r in rows if r["cell"] == label and r["task"] == task
            and r["arm"] == wanted and r[column] is not None}  # fmt: skip


def _values(rows: list[dict], cell: dict, task: str, arm: str, metric: str) -> list[float]:
    label = json.dumps(cell, sort_keys=True)
    column = "dacc" if metric == "dacc" else "top1"
    wanted = "prp" if metric == "dacc" else arm
    return [
        r[column]
        for r in rows
        if r["cell"] == label and r["task"] == task and r["arm"] == wanted and r[column] is not None
    ]


def write_results(
    grid: Grid, specs: list[RunSpec], done: dict[str, dict], out: Path, shared: Path
) -> dict[str, Any]:
    """results.csv and results.json (one row per cell, task, arm and seed), report.md with a
    table per axis and a verdict per finding, and a figure of accuracy against each axis."""
    rows = table_rows(grid, specs, done)
    verdicts = [
        {
            "name": f.name,
            "claim": f.claim,
            "task": f.task,
            "metric": f.metric,
            "arm": f.arm,
            "arm_b": f.arm_b or f.arm,
            "a": f.a,
            "b": f.b,
            "versus_task": f.versus_task,
            "expect": f.expect,
            "tolerance": f.tolerance if f.expect != "higher" else None,
            **verdict(*f.sides(rows), f.expect, f.tolerance),
        }
        for f in grid.findings
    ]
    pretraining = [done[s.id] for s in specs if s.stage == "pretrain" and s.id in done]
    document = {
        "rows": rows,
        "verdicts": verdicts,
        "verdict_rule": VERDICT_RULE,
        "pretraining": pretraining,
        "runs": len(specs),
        "finished": sum(s.id in done for s in specs),
    }
    used = [done[s.id] for s in specs if s.id in done]
    document["seconds"] = {
        stage: round(sum(r["seconds"] for r in used if r["stage"] == stage), 1)
        for stage in ("pretrain", "finetune")
    }
    atomic_write(out / "results.json", json.dumps(document, indent=2))
    atomic_write(out / "results.csv", _csv(rows, list(grid.axes)))
    figure = plot_grid(grid, rows, out / "accuracy.png") if rows else None
    text = report(grid, rows, verdicts)
    if document["finished"] < document["runs"]:  # --report-only on a grid not yet done
        title, rest = text.split("\n", 1)
        text = (f"{title}\n\n**Partial: {document['finished']} of {document['runs']} runs "
                f"finished.**\n{rest}")  # fmt: skip
    text += (
        f"\nTraining and evaluation time of these runs: pre-training "
        f"{document['seconds']['pretrain']:.0f} s, fine-tuning "
        f"{document['seconds']['finetune']:.0f} s (runs shared with other grids counted "
        f"here too).\n"
    )
    if figure:
        text += f"\n![accuracy]({figure.name})\n"
    atomic_write(out / "report.md", text)
    return document


def plot_grid(grid: Grid, rows: list[dict], path: Path) -> Path:
    """Top-1 against each axis (one panel per axis and task; a line per arm, mean over seeds
    with the min-max range as a band); a grid without axes gets bars per task and arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advise.report import save_figure

    if grid.product and len(grid.axes) == 2:
        return _plot_product(grid, rows, path)
    axes = list(grid.axes) or ["(base)"]
    figure, panels = plt.subplots(
        len(axes), len(grid.tasks), squeeze=False, figsize=(4.2 * len(grid.tasks), 3.2 * len(axes))
    )
    for row_index, axis in enumerate(axes):
        # the base cell at its own value (a listed value equal to it is the same runs)
        base = _base_value(grid, axis)
        values = [value for value in grid.axes.get(axis, []) if value != base]
        cells = [{}] + list(_unique([{axis: value} for value in values]))
        names = ["base" if base is None else f"{base}\n(base)"]
        names += [f"{cell[axis]}" for cell in cells[1:]]
        for column, task in enumerate(grid.tasks):
            panel = panels[row_index][column]
            for number, arm in enumerate(grid.arms):
                values = [_values(rows, cell, task, arm, "top1") for cell in cells]
                means = [statistics.mean(v) if v else float("nan") for v in values]
                if len(cells) > 1:
                    x = list(range(len(cells)))
                    (line,) = panel.plot(x, means, marker="o", label=arm)
                    panel.fill_between(
                        x,
                        [min(v) if v else float("nan") for v in values],
                        [max(v) if v else float("nan") for v in values],
                        alpha=0.2,
                        color=line.get_color(),
                    )
                else:
                    low, high = (min(values[0]), max(values[0])) if values[0] else (0, 0)
                    panel.bar(
                        number,
                        means[0],
                        yerr=[[means[0] - low], [high - means[0]]],
                        label=arm,
                        capsize=4,
                    )
            if len(cells) > 1:
                longest = max(len(line) for name in names for line in name.splitlines())
                slanted = longest > 8  # IFM names would overlap
                panel.set_xticks(
                    range(len(cells)), names, rotation=25 if slanted else 0,
                    ha="right" if slanted else "center", fontsize=8 if slanted else None,
                )  # fmt: skip
                panel.set_xlabel(axis)
            else:
                panel.set_xticks(range(len(grid.arms)), grid.arms)
            panel.set_title(f"{task}")
            panel.set_ylabel("top-1 (%)")
            panel.grid(alpha=0.3)
            panel.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    return path


def _base_value(grid: Grid, axis: str) -> Any:
    """The base cell's value of an axis key, e.g. 1 for tmm.bottleneck.blocks, 96 for the mini
    IFM's unpooled sfu.channels; None where it is unset and unknown (sfu.spatial: no pooling)
    or the axis is no key ("(base)", the axis of a grid without axes)."""
    from advise.config import lookup
    from advise.models.ifm import known_width

    stage = "pretrain" if axis.startswith("pretrain.") else "finetune"
    try:
        config = load_config(grid.base, stage_overrides(grid, {}, stage))
        value = lookup(config, axis.removeprefix(f"{stage}."))
    except (AttributeError, ConfigError):
        return None
    if value is None and axis == "sfu.channels":
        value = known_width(config.ifm.name, config.ifm.layers)
    return value


def _plot_product(grid: Grid, rows: list[dict], path: Path) -> Path:
    """A two-axis product grid (e.g. channels x pre-training length, the paper's Table 1):
    per task, a heat-map of the mean dAcc (PRP - scratch) over the two axes, numbers written
    in, and top-1 of each arm against the first axis, a line per value of the second."""
    import matplotlib.pyplot as plt

    from advise.report import save_figure

    (rows_key, row_values), (columns_key, column_values) = grid.axes.items()
    dacc = "prp" in grid.arms and "scratch" in grid.arms
    figure, panels = plt.subplots(
        len(grid.tasks), 2 if dacc else 1, squeeze=False, figsize=(10, 3.6 * len(grid.tasks))
    )
    for index, task in enumerate(grid.tasks):
        lines = panels[index][-1]
        for arm, column_value in itertools.product(grid.arms, column_values):
            means = [
                _mean(_values(rows, {rows_key: r, columns_key: column_value}, task, arm, "top1"))
                for r in row_values
            ]
            lines.plot(
                range(len(row_values)),
                [float("nan") if m is None else m for m in means],
                marker="o",
                label=f"{arm}, {columns_key}={column_value}",
            )
        lines.set_xticks(range(len(row_values)), [str(v) for v in row_values])
        lines.set(xlabel=rows_key, ylabel="top-1 (%)", title=f"{task}: top-1")
        lines.grid(alpha=0.3)
        lines.legend(fontsize=7)
        if not dacc:
            continue
        heat = panels[index][0]
        table = [
            [
                _mean(_values(rows, {rows_key: r, columns_key: c}, task, "prp", "dacc"))
                for c in column_values
            ]
            for r in row_values
        ]
        values = [[float("nan") if v is None else v for v in row] for row in table]
        limit = max([abs(v) for row in table for v in row if v is not None] or [1.0])
        image = heat.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for (r, c), value in ((rc, table[rc[0]][rc[1]]) for rc in itertools.product(
            range(len(row_values)), range(len(column_values)))):  # fmt: skip
            dark = value is not None and abs(value) > limit / 2
            heat.text(c, r, "-" if value is None else f"{value:+.1f}", ha="center", va="center",
                      color="white" if dark else "black")  # fmt: skip
        heat.set_xticks(range(len(column_values)), [str(v) for v in column_values])
        heat.set_yticks(range(len(row_values)), [str(v) for v in row_values])
        heat.set(xlabel=columns_key, ylabel=rows_key, title=f"{task}: dAcc (PRP - scratch)")
        figure.colorbar(image, ax=heat, label="points")
    figure.tight_layout()
    save_figure(figure, path)
    return path


def _csv(rows: list[dict], axes: list[str]) -> str:
    handle = io.StringIO(newline="")
    columns = [*axes, "task", "arm", "seed", "top1", "top1_1view", "dacc", "views", "seconds"]
    writer = csv.DictWriter(handle, columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        cell = json.loads(row["cell"])
        writer.writerow({**{axis: cell.get(axis, "base") for axis in axes}, **row})
    return handle.getvalue()


def report(grid: Grid, rows: list[dict], verdicts: list[dict]) -> str:
    """Markdown: a table per axis (mean and min-max over seeds per task and arm), verdicts."""
    lines = [f"# advise ablate: {grid.description or grid.base}", ""]
    columns = [(task, arm) for task in grid.tasks for arm in grid.arms]
    columns += [(task, "dAcc") for task in grid.tasks if "prp" in grid.arms]
    header = "| cell | " + " | ".join(f"{task} {arm}" for task, arm in columns) + " |"
    for axis, cells in _tables(grid):
        lines += [f"## {axis}", "", header, "|" + " --- |" * (len(columns) + 1)]
        for cell in cells:
            texts = [
                spread_text(
                    _values(rows, cell, task, "prp", "dacc")
                    if arm == "dAcc"
                    else _values(rows, cell, task, arm, "top1")
                )
                for task, arm in columns
            ]
            name = ", ".join(f"{k}={v}" for k, v in cell.items()) or "base"
            lines.append(f"| {name} | " + " | ".join(texts) + " |")
        lines.append("")
    lines += ["## Findings", "", f"Rule: {VERDICT_RULE}.", ""]
    lines += [
        "| finding | claim | a | b | expect | mean a | mean b | a - b | 2 se or margin | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        expect = {
            "higher": "a > b",
            "same": f"\\|a - b\\| <= {v['tolerance']}",
            "not_higher": f"a - b <= {v['tolerance']}",
        }[v["expect"]]
        lines.append(
            f"| {v['name']} | {v['claim']} | {_side(v, 'a')} | {_side(v, 'b')} | {expect} | "
            f"{v['mean_a']} | {v['mean_b']} | {v['difference']} | {v['margin']} | "
            f"**{v['verdict']}** |"
        )
    return "\n".join(lines) + "\n"


def _tables(grid: Grid) -> list[tuple[str, list[dict[str, Any]]]]:
    """The report's tables: (title, cells) per axis around the base cell, or for a product
    grid one table of every cell."""
    if grid.product and grid.axes:
        return [(" x ".join(grid.axes), grid.cells())]
    return [
        (axis, list(_unique([{}] + [{axis: value} for value in grid.axes.get(axis, [])])))
        for axis in list(grid.axes) or ["(base)"]
    ]


def _unique(cells: list[dict]) -> Iterator[dict]:
    seen: list[dict] = []
    for cell in cells:
        if cell not in seen:
            seen.append(cell)
            yield cell


def _side(finding: dict, side: str) -> str:
    """One side of a finding: e.g. "prp top1 @ sfu.spatial=1", or for an interaction the
    change from a to b on one task."""

    def where(cell: dict) -> str:
        return ", ".join(f"{key}={value}" for key, value in cell.items()) or "base"

    measure = "dAcc" if finding["metric"] == "dacc" else f"{finding['arm']} top1"
    if finding["versus_task"]:
        task = finding["task"] if side == "a" else finding["versus_task"]
        return f"{task}: {measure} @ {where(finding['a'])} - @ {where(finding['b'])}"
    arm = finding["arm"] if side == "a" else finding["arm_b"]
    measure = "dAcc" if finding["metric"] == "dacc" else f"{arm} top1"
    return f"{measure} @ {where(finding[side])}"
