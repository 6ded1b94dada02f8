"""`advise demo`: the whole method on the built-in benchmark, offline, in minutes on a CPU.

Stages: write the benchmark (pool, spatial, temporal) -> build the mini IFM (trained on stills
once, cached) -> PRP pre-training on the pool -> on each task, fine-tune from the PRP
checkpoint and from scratch, plus the average-pooling baseline and the temporal-kernel-1 TMM
(the paper-measured one) -> multi-view evaluation -> one table, results.json, report.md and a
figure of the training curves.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from advise import __version__
from advise.config import Config, load_config
from advise.files import atomic_write
from advise.jobs import Job, run_jobs, usable_cores
from advise.models.build import build_frozen_ifm
from advise.models.ifm import CombinedIFM, FrozenIFM
from advise.pretexts import Pretext, build_pretext
from advise.report import plot_curves, read_history, results_table
from advise.runs import evaluate_checkpoint, evaluate_pretext, finetune, pretrain

TASKS = ("spatial", "temporal")
# Fine-tuning runs per task: name -> (config overrides, initialise from PRP?)
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "scratch": ({}, False),
    "pretrained": ({}, True),
    "avgpool": ({"tmm.kind": "none"}, False),
    "tmm_t1": ({"tmm.bottleneck.temporal_kernel": 1}, False),
}
# Stage-specific settings on top of the `demo` preset; --quick shortens every stage.
PRETRAIN = {"train.epochs": 30}
FINETUNE = {"train.epochs": 60, "optim.label_smoothing": 0.1}
QUICK = {"train.epochs": 4}
# Low-label fine-tuning: 12 training and 20 test videos per class (10 classes per task).
TASK_VIDEOS, TRAIN_PER_CLASS = 320, 12
HELDOUT_POOL_VIDEOS = 48


class Stopwatch:
    """Seconds per named stage, added up from the jobs that ran it (side by side, they
    overlap: `total` is the wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        """Count `seconds` (timed where the job ran, e.g. in a worker process) under `name`."""
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 2)

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 2)


def _config(root: Path, stage: dict[str, Any], quick: bool, extra: dict[str, Any]) -> Config:
    overrides = {**stage, **(QUICK if quick else {}), **extra, "data.root": str(root)}
    return load_config("demo", overrides)


FEATURES = ("store", "online", "fp16", "int8")  # store = an fp32 feature store


def run_demo(
    out: Path,
    quick: bool = False,
    seed: int = 0,
    features: str = "store",
    workers: int | None = None,
) -> dict[str, Any]:
    """`features`: "store" (default) extracts every video's tokens once into an fp32 feature
    store and trains from it, the same tokens as online to float rounding; "online" decodes
    and encodes frames in every epoch (memoising the IFM's tokens); "fp16" / "int8" train
    from a store of that precision (to measure what quantised tokens cost).

    Every stage is a job (`_jobs`), and they go `workers` at a time in worker processes
    (default: one per usable core from a store, one for "online", whose runs use data
    workers), each as soon as what it needs is done: the videos are written while the mini
    IFM trains. The results do not depend on `workers` (`advise.jobs`)."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    workers = workers or (usable_cores() if features != "online" else 1)

    out.mkdir(parents=True, exist_ok=True)
    # One compute thread per process: more beside another busy process (a run or a data
    # worker) oversubscribe the cores, and OpenMP's spinning then made steps ~10x slower in
    # our measurements on 2 cores.
    torch.set_num_threads(1)
    watch = Stopwatch()
    data, runs = out / "data", out / "runs"
    roots = {name: data / folder for name, folder in DATA_FOLDERS.items()}
    jobs = _jobs(roots, runs, features, quick, seed)
    done: dict[str, Any] = {}
    for job, (result, seconds) in run_jobs(jobs, workers):
        done[job.key] = result
        for stage, value in seconds.items():
            watch.add(stage, value)
        print(f"demo: {job.key}{_result_text(result)} in {sum(seconds.values()):.0f} s",
              flush=True)  # fmt: skip
    base = next(job.args[0] for job in jobs if job.key == "prp")  # its pre-training config
    speed = done["prp"]
    pretext = build_pretext(base)
    results: dict[str, Any] = {"tasks": {}}
    curves: dict[str, dict[str, list]] = {"PRP pre-training": {"prp": read_history(runs / "prp")}}
    for task in TASKS:
        row = {f"{pretext.kind}_{pretext.metric}": round(speed[pretext.metric], 2)}
        evaluations = {name: done[f"{task}/{name}"] for name in VARIANTS}
        histories = {name: read_history(runs / task / name) for name in VARIANTS}
        curves[f"fine-tuning: {task}"] = histories
        row.update({f"{name}_top1": round(e["top1"], 2) for name, e in evaluations.items()})
        row["delta_acc"] = round(row["pretrained_top1"] - row["scratch_top1"], 2)
        row["single_view"] = {
            name: round(evaluation["single_view_top1"], 2)
            for name, evaluation in evaluations.items()
        }
        results["tasks"][task] = row
    figure = plot_curves(curves, out / "training_curves.png")
    # views: the last task's scratch run (every run is evaluated with the same views)
    results.update(
        seconds={**watch.seconds, "total": watch.total()},
        prp_heldout=speed,
        views=evaluations["scratch"]["views"],
        views_combined=evaluations["scratch"]["views_combined"],
        **_run_facts(quick, seed, features),
    )
    return _write_results(out, results, pretext, figure)


DATA_FOLDERS = {"pool": "pool", "spatial": "spatial", "temporal": "temporal",
                "heldout": "pool-heldout"}  # fmt: skip


def _jobs(roots: dict[str, Path], runs: Path, features: str, quick: bool, seed: int) -> list[Job]:
    """The demo as jobs, each after those it needs: the benchmark's videos (per dataset) and
    the mini IFM (trained once, cached) side by side; each dataset's feature store; PRP
    pre-training on the pool; each fine-tuning variant on each task (after PRP where it
    starts from it). Listed in an order that runs them one after another, too, and that puts
    the longest chain first: the mini IFM's training (half the demo on 2 cores) starts at once,
    and the stores PRP reads are extracted before the others."""
    store = features != "online"
    dtype = "fp32" if features == "store" else features
    jobs = [Job("mini IFM", _mini_ifm_job, ())]
    jobs += [Job(f"videos {name}", _videos_job, (name, root, seed)) for name, root in roots.items()]
    sources: dict[str, dict[str, Any]] = {name: {} for name in roots}
    ready = {name: (f"videos {name}", "mini IFM") for name in roots}  # what a run on it needs
    for name in sorted(roots, key=lambda name: name not in ("pool", "heldout")):  # PRP's first
        root = roots[name]
        if store:
            path = root.parent / "stores" / f"{name}-{dtype}"
            config = _config(root, PRETRAIN, quick, {"train.seed": seed})
            jobs.append(Job(f"tokens {name}", _store_job, (config, path, dtype), ready[name]))
            # held in memory: the results of reading the store each time (advise.data.sources)
            sources[name] = {"data.source": f"store:{path}", "data.in_memory": True}
            ready[name] = (f"tokens {name}",)
    base = _config(roots["pool"], PRETRAIN, quick, {"train.seed": seed, **sources["pool"]})
    heldout = _config(roots["heldout"], PRETRAIN, quick, {"train.seed": seed, **sources["heldout"]})
    online = not store
    jobs.append(Job("prp", _pretrain_job, (base, runs / "prp", heldout, online),
                    ready["pool"] + ready["heldout"]))  # fmt: skip
    prp_checkpoint = runs / "prp" / "checkpoints" / "last.safetensors"
    for task, (name, (overrides, from_prp)) in itertools.product(TASKS, VARIANTS.items()):
        extra = {**overrides, "train.seed": seed, **sources[task]}
        config = _config(roots[task], FINETUNE, quick, extra)
        init = prp_checkpoint if from_prp else None
        after = ready[task] + (("prp",) if from_prp else ())
        jobs.append(Job(f"{task}/{name}", _finetune_job,
                        (config, runs / task / name, init, online, task), after))  # fmt: skip
    return jobs


def _result_text(result: Any) -> str:
    if isinstance(result, dict) and ("top1" in result or "speed_acc" in result):
        return f": {result.get('top1', result.get('speed_acc')):.1f}"
    return ""


def _videos_job(name: str, root: Path, seed: int) -> tuple[Path, dict[str, float]]:
    """One dataset of the benchmark (pool, a task, or held-out pool videos of another seed)."""
    from advise.data.synthetic import generate

    started = time.perf_counter()
    if name in TASKS:
        generate(root, name, TASK_VIDEOS, seed=seed, train_per_class=TRAIN_PER_CLASS)
    elif name == "heldout":
        generate(root, "pool", num_videos=HELDOUT_POOL_VIDEOS, seed=seed + 1)
    else:
        generate(root, name, seed=seed)
    return root, {"benchmark": time.perf_counter() - started}


def _mini_ifm_job() -> tuple[Path, dict[str, float]]:
    """The mini IFM's weights: trained on first use, then cached."""
    from advise.mini_ifm import ensure_mini_ifm

    started = time.perf_counter()
    return ensure_mini_ifm(), {"mini_ifm": time.perf_counter() - started}


def _store_job(config: Config, path: Path, dtype: str) -> tuple[Path, dict[str, float]]:
    """A dataset's tokens in a feature store of `dtype` (fp32 for `--features store`)."""
    from advise.runs import extract

    started = time.perf_counter()
    ifm = _frozen_ifm(config, memoize=False)
    with contextlib.redirect_stdout(io.StringIO()):  # its split summary: the runs print theirs
        extract(config, path, dtype=dtype, ifm=ifm, progress=False)
    return path, {"extract": time.perf_counter() - started}


_IFMS: dict[bool, FrozenIFM | CombinedIFM] = {}  # this process's mini IFM, by memoisation


def _frozen_ifm(config: Config, memoize: bool) -> FrozenIFM | CombinedIFM:
    """The frozen mini IFM, built once per process; memoising its tokens per frame where the
    runs decode videos (the demo's transforms are deterministic)."""
    if memoize not in _IFMS:
        _IFMS[memoize] = build_frozen_ifm(config.ifm, torch.device("cpu")).memoize(memoize)
    return _IFMS[memoize]


def _pretrain_job(
    config: Config, run_dir: Path, heldout: Config, online: bool
) -> tuple[dict[str, Any], dict[str, float]]:
    """PRP pre-training on the pool and its speed accuracy on held-out pool videos; with the
    seconds of each. What the run prints goes to RUN/output.log."""
    ifm = _frozen_ifm(config, online)
    with _run_output(run_dir):
        started = time.perf_counter()
        result = pretrain(config, run_dir, ifm=ifm)
        trained = time.perf_counter()
        speed = evaluate_pretext(heldout, result.checkpoint.with_suffix(".safetensors"), ifm=ifm)
    return speed, {"pretrain": trained - started, "evaluate_prp": time.perf_counter() - trained}


def _finetune_job(
    config: Config, run_dir: Path, init: Path | None, online: bool, task: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """Fine-tune one variant (from the PRP checkpoint `init`, or from scratch) and evaluate it
    multi-view; with the seconds of each. What the run prints goes to RUN/output.log."""
    ifm = _frozen_ifm(config, online)
    with _run_output(run_dir):
        started = time.perf_counter()
        result = finetune(config, run_dir, init=init, ifm=ifm)
        trained = time.perf_counter()
        evaluation = evaluate_checkpoint(
            config, result.checkpoint.with_suffix(".safetensors"),
            out_file=run_dir / "eval.json", ifm=ifm,
        )  # fmt: skip
    return evaluation, {
        f"finetune_{task}": trained - started,
        f"evaluate_{task}": time.perf_counter() - trained,
    }


@contextlib.contextmanager
def _run_output(run_dir: Path) -> Iterator[None]:
    """What a run prints, into RUN/output.log (runs side by side would interleave)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "output.log").open("a") as stream:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield


def _run_facts(quick: bool, seed: int, features: str) -> dict[str, Any]:
    """How the demo ran: its options, the machine and the versions."""
    return {
        "quick": quick,
        "seed": seed,
        "features": features,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"advise": __version__, "torch": torch.__version__},
    }


def _write_results(
    out: Path, results: dict[str, Any], pretext: Pretext, figure: Path
) -> dict[str, Any]:
    """Write results.json and report.md into `out`, print the table; returns the document
    written to results.json."""
    flat = {
        task: {k: v for k, v in row.items() if k != "single_view"}
        for task, row in results["tasks"].items()
    }
    # results.json: per task at the top level, as the README documents
    document = {**results["tasks"], **{k: v for k, v in results.items() if k != "tasks"}}
    atomic_write(out / "results.json", json.dumps(document, indent=2))
    table = results_table(flat, pretext)
    atomic_write(out / "report.md", _report(table, results, figure.name))
    print()
    print(table)
    print(f"\nseconds: {json.dumps(results['seconds'])}")
    print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {figure}")
    return document


def _report(table: str, results: dict[str, Any], figure: str) -> str:
    seconds = results["seconds"]
    stages = ", ".join(f"{key} {value:.0f} s" for key, value in seconds.items() if key != "total")
    return f"""# advise demo on the built-in benchmark

Top-1 accuracy (%) on each task's test split, {results["views"]} views per video
({results["views_combined"]}), each video counted once. The IFM is the mini IFM (trained
on still images only, frozen). PRP speed accuracy is measured on held-out pool videos
(chance 25%). Tokens: {results["features"]} (see `advise demo --features`).

{table}

- scratch: kernel-3 TMM + MLP head, randomly initialised.
- PRP init: the same, with the TMM inherited from PRP pre-training on the pool.
- dAcc = PRP init - scratch.
- avg-pool: no TMM (the paper's Table 5 baseline): frame-order invariant.
- TMM t=1: the TMM as the paper measured it (temporal kernel 1): also frame-order invariant.

Total {seconds["total"]:.0f} s; per stage: {stages}.

![training curves]({figure})
"""
