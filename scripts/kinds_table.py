"""Every temporal-module kind and pretext on the built-in benchmark, from the feature store.

For each seed: the demo's benchmark (pool, spatial, temporal; seed 0 data for every seed, so
seeds vary the training only), one fp32 feature store per dataset, then for every TMM kind a
PRP and a BYOL pre-training on the pool and, on each task, fine-tuning from scratch, from PRP
and from BYOL (the avg-pool baseline, tmm.kind=none, has nothing to pre-train), each with the
demo's recipe and its multi-view evaluation. Every run appends one JSON line to
OUT/results.jsonl; a rerun skips what is there. Prints a markdown table of mean (spread) over
the seeds at the end.

Usage: python scripts/kinds_table.py OUT [--seeds 0 1 2] [--kinds bottleneck conv3d ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from advise.demo import (
    FINETUNE,
    HELDOUT_POOL_VIDEOS,
    PRETRAIN,
    TASK_VIDEOS,
    TASKS,
    TRAIN_PER_CLASS,
    _config,
)
from advise.models.build import build_frozen_ifm
from advise.report import spread_text
from advise.runs import evaluate_checkpoint, evaluate_pretext, extract, finetune, pretrain

KINDS = ("bottleneck", "conv3d", "transformer", "swin", "none")
PRETEXTS = ("prp", "byol")
PRESET_OF = {"conv3d": "demo-conv3d", "transformer": "demo-transformer", "swin": "demo-swin"}


def kind_overrides(kind: str) -> dict:
    """The kind's section as its demo preset sets it (bottleneck: the demo's own)."""
    from advise.config import flatten, load_config

    if kind == "none":
        return {"tmm.kind": "none"}
    if kind == "bottleneck":
        return {}
    values = flatten(load_config(PRESET_OF[kind]).to_dict())
    return {key: value for key, value in values.items() if key.startswith(f"tmm.{kind}.")} | {
        "tmm.kind": kind
    }


def byol_overrides() -> dict:
    return {"pretext.kind": "byol", "pretext.byol.dim": 64, "pretext.byol.hidden": 256}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    args = parser.parse_args()
    from advise.data.synthetic import generate
    from advise.mini_ifm import ensure_mini_ifm

    torch.set_num_threads(1)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    roots = {"pool": generate(data / "pool", "pool", seed=0)}
    for task in TASKS:
        roots[task] = generate(
            data / task, task, TASK_VIDEOS, seed=0, train_per_class=TRAIN_PER_CLASS
        )
    roots["heldout"] = generate(data / "pool-heldout", "pool", HELDOUT_POOL_VIDEOS, seed=1)
    ensure_mini_ifm()
    base = _config(roots["pool"], PRETRAIN, False, {})
    ifm = build_frozen_ifm(base.ifm, torch.device("cpu"))
    sources = {}
    for name, root in roots.items():
        store = extract(
            _config(root, PRETRAIN, False, {}), data / "stores" / name, dtype="fp32", ifm=ifm,
            progress=False,
        )  # fmt: skip
        sources[name] = {"data.source": f"store:{store}"}
    results_path = out / "results.jsonl"
    done = set()
    if results_path.exists():
        done = {json.loads(line)["run"] for line in results_path.read_text().splitlines()}

    def record(run: str, **values) -> None:
        with results_path.open("a") as stream:
            stream.write(json.dumps({"run": run, **values}) + "\n")
        done.add(run)
        print(json.dumps({"run": run, **values}), flush=True)

    for seed in args.seeds:
        for kind in args.kinds:
            tmm = kind_overrides(kind)
            inits: dict[str, Path | None] = {"scratch": None}
            for pretext in PRETEXTS if kind != "none" else ():
                extra = {**tmm, **(byol_overrides() if pretext == "byol" else {})}
                run_dir = out / "runs" / f"s{seed}" / kind / pretext
                checkpoint = run_dir / "checkpoints" / "last.safetensors"
                name = f"s{seed}/{kind}/{pretext}"
                if name not in done:
                    config = _config(roots["pool"], PRETRAIN, False, {
                        "train.seed": seed, **extra, **sources["pool"]})  # fmt: skip
                    started = time.perf_counter()
                    pretrain(config, run_dir, ifm=ifm)
                    seconds = time.perf_counter() - started
                    heldout = _config(roots["heldout"], PRETRAIN, False, {
                        "train.seed": seed, **extra, **sources["heldout"]})  # fmt: skip
                    measure = evaluate_pretext(heldout, checkpoint, ifm=ifm)
                    if pretext == "byol":  # kNN needs labels: measured on the spatial task
                        labelled = _config(roots["spatial"], PRETRAIN, False, {
                            "train.seed": seed, **extra, **sources["spatial"]})  # fmt: skip
                        measure = evaluate_pretext(labelled, checkpoint, ifm=ifm)
                    record(name, seed=seed, kind=kind, stage="pretrain", pretext=pretext,
                           seconds=round(seconds, 1), measure=measure)  # fmt: skip
                inits[pretext] = checkpoint
            for task in TASKS:
                for arm, init in inits.items():
                    name = f"s{seed}/{kind}/{task}/{arm}"
                    if name in done:
                        continue
                    run_dir = out / "runs" / f"s{seed}" / kind / task / arm
                    config = _config(roots[task], FINETUNE, False, {
                        "train.seed": seed, **tmm, **sources[task]})  # fmt: skip
                    started = time.perf_counter()
                    result = finetune(config, run_dir, init=init, ifm=ifm)
                    seconds = time.perf_counter() - started
                    evaluation = evaluate_checkpoint(
                        config, result.checkpoint.with_suffix(".safetensors"),
                        out_file=run_dir / "eval.json", ifm=ifm,
                    )  # fmt: skip
                    record(name, seed=seed, kind=kind, task=task, arm=arm,
                           top1=evaluation["top1"], seconds=round(seconds, 1))  # fmt: skip
    print(table(results_path))
    print(pretrain_table(results_path))


def pretrain_table(results_path: Path) -> str:
    """Markdown: per kind, each pretext's own measure on held-out data and its seconds."""
    rows = [json.loads(line) for line in results_path.read_text().splitlines()]
    lines = [
        "| TMM | PRP speed acc (held-out pool) | BYOL kNN top-1 | PRP s | BYOL s | seeds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind in KINDS:
        mine = {p: [r for r in rows if r.get("stage") == "pretrain" and r["kind"] == kind
                    and r["pretext"] == p] for p in PRETEXTS}  # fmt: skip
        if not mine["prp"]:
            continue
        speed = [r["measure"]["speed_acc"] for r in mine["prp"]]
        knn = [r["measure"]["knn_top1"] for r in mine["byol"]]
        seconds = {p: statistics.median(r["seconds"] for r in mine[p]) for p in PRETEXTS if mine[p]}
        lines.append(
            f"| {kind} | {statistics.mean(speed):.1f} | "
            f"{statistics.mean(knn):.1f} | {seconds['prp']:.0f} | "
            f"{seconds.get('byol', float('nan')):.0f} | {len(speed)} |"
        )
    return "\n".join(lines)


def table(results_path: Path) -> str:
    """Markdown: per kind and task, top-1 of each arm and each pretext's dAcc, mean (spread)."""
    rows = [json.loads(line) for line in results_path.read_text().splitlines()]
    finetunes = [row for row in rows if "task" in row]

    lines = [
        "| TMM | task | scratch | PRP init | BYOL init | dAcc PRP | dAcc BYOL | s / run | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind in KINDS:
        for task in TASKS:
            mine = [row for row in finetunes if row["kind"] == kind and row["task"] == task]
            by_arm = {arm: {r["seed"]: r["top1"] for r in mine if r["arm"] == arm}
                      for arm in ("scratch", "prp", "byol")}  # fmt: skip
            deltas = {
                arm: [by_arm[arm][s] - by_arm["scratch"][s] for s in by_arm[arm]
                      if s in by_arm["scratch"]]
                for arm in ("prp", "byol")
            }  # fmt: skip
            if not mine:
                continue
            seconds = statistics.median(row["seconds"] for row in mine)
            lines.append(
                f"| {kind} | {task} | {spread_text(list(by_arm['scratch'].values()))} | "
                f"{spread_text(list(by_arm['prp'].values()))} | "
                f"{spread_text(list(by_arm['byol'].values()))} | "
                f"{spread_text(deltas['prp'])} | {spread_text(deltas['byol'])} | {seconds:.0f} | "
                f"{len(by_arm['scratch'])} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
