"""`advise ablate` on tiny grids: the plan shares runs, verdicts follow the stated rule, a killed
grid resumes without redoing finished runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from fabricate import dataset_tree

from advise.ablate import load_grid, plan, verdict
from advise.cli import main
from advise.config import ConfigError, load_config
from advise.models.build import build_frozen_ifm
from advise.models.ifm import IFM_REGISTRY, known_width

TINY = {
    "description": "tiny grid for tests",
    "base": "demo",
    "set": {"ifm.random_init": True, "ifm.img_size": 32, "data.num_workers": 0,
            "data.num_frames": 4, "tmm.bottleneck.hidden": 8, "tmm.bottleneck.out": 16,
            "head.hidden": 16, "optim.warmup_epochs": 0, "eval.num_clips": 1,
            "eval.num_crops": 1, "train.batch_size": 4},
    "pretrain": {"train.epochs": 1, "pretext.prp.clips_per_video": 1},
    "finetune": {"train.epochs": 1},
    "axes": {"tmm.bottleneck.hidden": [8, 12]},
    "tasks": ["temporal"],
    "arms": ["scratch", "prp"],
    "seeds": [0],
    "benchmark": {"task_videos": 20, "train_per_class": 1, "pool_videos": 8,
                  "heldout_videos": 4},
    "findings": [{"name": "wider", "claim": "hidden 12 beats 8", "task": "temporal",
                  "a": {"tmm.bottleneck.hidden": 12}, "b": {}}],
}  # fmt: skip


def write_grid(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def test_the_plan_shares_runs_between_cells(tmp_path):
    grid = load_grid(str(write_grid(tmp_path / "g.yaml", arms=["scratch", "prp", "avgpool"],
                                    seeds=[0, 1])))  # fmt: skip
    specs = plan(grid)
    # the cell hidden=8 is the base cell: one pre-training and one fine-tuning per arm
    pretrains = [spec for spec in specs if spec.stage == "pretrain"]
    assert len(pretrains) == 2 * 2  # (base = hidden 8, hidden 12) x 2 seeds
    finetunes = [spec for spec in specs if spec.stage == "finetune"]
    avgpool = [spec for spec in finetunes if spec.arm == "avgpool"]
    assert len(avgpool) == 2  # one per seed, serving every cell: it has no TMM to vary
    assert all(len(spec.cells) == 3 for spec in avgpool)
    assert len(finetunes) == 2 * (2 * 2 + 1)
    assert len({spec.id for spec in specs}) == len(specs)
    # another pre-training length is another pre-training, the same fine-tuning settings
    longer = load_grid(str(write_grid(tmp_path / "h.yaml", axes={"pretrain.train.epochs": [2]})))
    stages = [(spec.stage, spec.overrides.get("train.epochs")) for spec in plan(longer)]
    assert ("pretrain", 2) in stages and ("finetune", 2) not in stages


def test_pooling_to_the_ifms_own_width_is_the_base_run(tmp_path):
    """sfu.channels at the IFM's width pools nothing: those cells share the base cell's runs
    (Finding 2's 96-channel row), while a narrower width is a run of its own."""
    grid = load_grid(str(write_grid(tmp_path / "g.yaml", axes={"sfu.channels": [96, 48]})))
    specs = plan(grid)
    assert len([spec for spec in specs if spec.stage == "pretrain"]) == 2  # base = 96, 48
    base = [spec for spec in specs if spec.stage == "finetune" and "{}" in spec.cells]
    assert all('{"sfu.channels": 96}' in spec.cells for spec in base)
    # planned with no pooling at full width: a fine-tuning's SFU is the one of the
    # pre-training it starts from (its architecture check compares them as written), also
    # where another grid in the same folder planned that pre-training without the key
    wide = load_grid(str(write_grid(tmp_path / "w.yaml", axes={},
                                    set={**TINY["set"], "sfu.channels": 96})))  # fmt: skip
    pretrains = {spec.id: spec for spec in specs if spec.stage == "pretrain"}
    for spec in plan(wide):
        if spec.init is not None:
            channels = spec.overrides.get("sfu.channels")
            assert channels == pretrains[spec.init].overrides.get("sfu.channels") is None
    assert known_width("mini+mini-vit") == 192 and known_width("mini", layers=[2, 3]) is None


def test_a_figures_base_cell_sits_at_the_base_value_of_its_axis(tmp_path):
    """The base cell sits on an axis at its own value: the grid's setting, a pre-training
    key's, the IFM's width for unpooled channels; unknown (None) where no value is set."""
    from advise.ablate import _base_value

    grid = load_grid(str(write_grid(tmp_path / "g.yaml", axes={
        "tmm.bottleneck.hidden": [12], "pretrain.train.epochs": [2], "sfu.channels": [48],
        "sfu.spatial": [2], "ifm.name": ["mini-vit"]})))  # fmt: skip
    values = {axis: _base_value(grid, axis) for axis in [*grid.axes, "(base)"]}
    assert values == {"tmm.bottleneck.hidden": 8, "pretrain.train.epochs": 1, "sfu.channels": 96,
                      "sfu.spatial": None, "ifm.name": "mini", "(base)": None}  # fmt: skip


@pytest.mark.parametrize("name", sorted(IFM_REGISTRY))
def test_the_registrys_token_width_is_the_built_models(name):
    """`known_width` plans runs from the registry without building a model: each entry's
    width is what its model gives (the large ones built on the meta device: no memory)."""
    config = load_config("demo", {"ifm.random_init": True, "ifm.name": name})
    with torch.device("meta"):
        built = build_frozen_ifm(config.ifm, torch.device("meta"))
    assert built.embed_dim == known_width(name) is not None


def test_a_bad_grid_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="tmm.bottleneck.hiden"):
        load_grid(str(write_grid(tmp_path / "g.yaml", axes={"tmm.bottleneck.hiden": [3]})))
    with pytest.raises(ConfigError, match="unknown arms"):
        load_grid(str(write_grid(tmp_path / "g.yaml", arms=["nope"])))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([60, 62, 61], [50, 51, 52], "reproduced"),  # 10 points, spread 1
        ([50, 51, 52], [60, 62, 61], "refuted"),
        ([60, 40, 50], [52, 48, 49], "inconclusive"),  # 0.3 points, spread 10
        ([50.5, 50.4, 50.6], [50.0, 50.1, 49.9], "inconclusive"),  # beyond 2 SE, under 1 point
        ([60], [50], "inconclusive"),  # one seed: no spread to judge by
    ],
)
def test_the_verdict_rule_on_made_up_numbers(a, b, expected):
    assert verdict(a, b)["verdict"] == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([60.0, 60.5, 59.5], [60.2, 59.8, 60.0], "reproduced"),  # d 0, 2 se 0.67: within 2
        ([60, 70, 50], [60, 61, 59], "inconclusive"),  # d 0 but 2 se 11.6: could be anything
        ([66, 67, 65], [60, 61, 59], "refuted"),  # d 6, 2 se 1.6: beyond 2 for sure
        ([62.5, 63, 62], [60, 61, 59], "inconclusive"),  # d 2.5, 2 se 1.3: 1.2 to 3.8
        ([60, 60], [60], "inconclusive"),  # one seed on a side
    ],
)
def test_the_same_verdict_rule_on_made_up_numbers(a, b, expected):
    assert verdict(a, b, expect="same", tolerance=2.0)["verdict"] == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([50, 51, 52], [60, 62, 61], "reproduced"),  # far lower: not higher
        ([60.0, 60.5, 59.5], [60.2, 59.8, 60.0], "reproduced"),  # the same
        ([66, 67, 65], [60, 61, 59], "refuted"),  # 6 points higher
        ([62.5, 63, 62], [60, 61, 59], "inconclusive"),  # 2.5 higher, 2 se 1.3
    ],
)
def test_the_not_higher_verdict_rule_on_made_up_numbers(a, b, expected):
    assert verdict(a, b, expect="not_higher", tolerance=2.0)["verdict"] == expected


def test_an_unknown_expectation_is_refused(tmp_path):
    from advise.config import ConfigError

    finding = {**TINY["findings"][0], "expect": "lower"}
    with pytest.raises(ConfigError, match="expect must be one of"):
        load_grid(str(write_grid(tmp_path / "g.yaml", findings=[finding])))


def test_a_killed_grid_resumes_without_redoing_finished_runs(tmp_path, capsys):
    grid, out = write_grid(tmp_path / "g.yaml"), tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "advise.cli", "ablate", str(grid), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the grid ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {json.loads(line)["id"]: line for line in results.read_text().splitlines()}
    stamps = {
        run: (out / "runs" / f"{json.loads(line)['stage']}-{run}" / "checkpoints"
              / "last.safetensors").stat().st_mtime_ns
        for run, line in finished.items()
    }  # fmt: skip
    # --report-only: the report of what is finished, and nothing run
    before = results.read_text()
    assert main(["ablate", str(grid), "--out", str(out), "--report-only"]) == 0
    assert results.read_text() == before
    partial = json.loads((out / "results.json").read_text())
    assert (partial["finished"], partial["runs"]) == (len(finished), 6)
    assert f"**Partial: {len(finished)} of 6 runs finished.**" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["ablate", str(grid), "--out", str(out)]) == 0
    assert f"{len(finished)} done" in capsys.readouterr().out
    assert "Partial" not in (out / "report.md").read_text()
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == len({row["id"] for row in rows}) == 6  # 2 pre-trainings, 4 fine-tunings
    for run, stamp in stamps.items():  # finished runs untouched
        stage = json.loads(finished[run])["stage"]
        path = out / "runs" / f"{stage}-{run}" / "checkpoints" / "last.safetensors"
        assert path.stat().st_mtime_ns == stamp
    document = json.loads((out / "results.json").read_text())
    assert len(document["rows"]) == 3 * 2  # cells base, 8 (same runs as base), 12 x 2 arms
    assert document["verdicts"][0]["verdict"] == "inconclusive"  # one seed
    assert "## tmm.bottleneck.hidden" in (out / "report.md").read_text()
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header.startswith("tmm.bottleneck.hidden,task,arm,seed,top1,top1_1view,dacc")
    # a grid with another seed adds only that seed's runs
    capsys.readouterr()
    assert main(["ablate", str(grid), "--out", str(out), "--seeds", "0", "1"]) == 0
    assert "12 runs, 6 done, 6 to run" in capsys.readouterr().out


def test_every_built_in_grid_loads_and_plans():
    from advise.ablate import GRID_DIR, load_grids

    names = sorted(path.stem for path in GRID_DIR.glob("*.yaml"))
    assert {"table5-avgpool", "finding1-spatial", "finding3-depth", "paper"} <= set(names)
    for name in names:
        for part, grid in load_grids(name):
            specs = plan(grid)
            assert specs and all(f.task in grid.tasks for f in grid.findings), (name, part)
    assert [part for part, _ in load_grids("paper")] == [
        "table5-avgpool", "finding1-spatial", "finding3-depth", "finding4-width",
        "finding2-channels", "table4-ifms",
    ]  # fmt: skip


def test_ablate_set_goes_over_the_grids_own_settings_for_every_run(tmp_path, capsys):
    from advise.ablate import load_grids

    def precisions(grids):
        return {spec.overrides["train.precision"] for _, grid in grids for spec in plan(grid)}

    assert precisions(load_grids("paper")) == {"bf16"}  # the paper grids' own `set:`
    fp32 = load_grids("paper", settings={"train.precision": "fp32"})
    assert precisions(fp32) == {"fp32"}
    ids = {spec.id for _, grid in load_grids("table5-avgpool") for spec in plan(grid)}
    assert not ids & {spec.id for _, grid in fp32 for spec in plan(grid)}  # other runs
    grid = write_grid(tmp_path / "g.yaml")
    out = tmp_path / "out"
    assert main(["ablate", str(grid), "--out", str(out), "--set", "train.precison=fp32"]) == 2
    assert "unknown config key 'train.precison'" in capsys.readouterr().err
    assert not out.exists()  # refused before any work


def test_a_task_can_be_any_dataset_the_grid_names(tmp_path, capsys):
    data = dataset_tree("hmdb51", tmp_path / "hmdb")  # another format than the benchmark's
    # PRP pre-trains on it too (`pool`), its accuracy measured on the benchmark's held-out
    grid = write_grid(tmp_path / "g.yaml", axes={}, tasks=["hmdb"],
                      datasets={"hmdb": data, "pool": data}, findings=[])  # fmt: skip
    out = tmp_path / "out"
    assert main(["ablate", str(grid), "--out", str(out), "--jobs", "1"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    finetunes = [row for row in rows if row["stage"] == "finetune"]
    assert sorted(row["arm"] for row in finetunes) == ["prp", "scratch"]
    for row in finetunes:
        config = yaml.safe_load((Path(row["run"]) / "config.yaml").read_text())
        assert (config["data"]["format"], config["data"]["root"]) == ("hmdb51", data["data.root"])
        assert config["data"]["source"].startswith(f"store:{out / 'stores' / 'hmdb-'}")
        assert row["task"] == "hmdb" and row["top1"] is not None
    (pretraining,) = [row for row in rows if row["stage"] == "pretrain"]
    config = yaml.safe_load((Path(pretraining["run"]) / "config.yaml").read_text())
    assert (config["data"]["format"], config["data"]["root"]) == ("hmdb51", data["data.root"])
    assert pretraining["measure"]["videos"] == 4  # the benchmark's held-out pool, in its format
    stored = json.loads(next((out / "stores").glob("hmdb-*/manifest.json")).read_text())
    assert len(stored["videos"]) == 6  # 2 classes x (2 train + 1 test)
    # only what is used, at TINY's size of the held-out pool: a folder of its own
    assert [p.name[: len("pool-heldout-")] for p in (out / "data").iterdir()] == ["pool-heldout-"]
    assert "hmdb prp" in (out / "report.md").read_text()
    # the dataset's keys are part of its runs' identity; the benchmark's folders are not
    moved = {**data, "data.root": str(tmp_path / "elsewhere")}
    again = load_grid(str(write_grid(tmp_path / "h.yaml", axes={}, tasks=["hmdb"],
                                     datasets={"hmdb": moved}, findings=[])))  # fmt: skip
    ids = {row["id"] for row in finetunes}
    assert not ids & {spec.id for spec in plan(again)}
    with pytest.raises(ConfigError, match="named under `datasets:`"):
        load_grid(str(write_grid(tmp_path / "bad.yaml", tasks=["hmdb"])))
    with pytest.raises(ConfigError, match="needs data.root, and takes only"):
        not_data = {"hmdb": {"data.root": "x", "tmm.kind": "conv3d"}}
        load_grid(str(write_grid(tmp_path / "bad.yaml", tasks=["hmdb"], datasets=not_data)))


def test_what_a_grid_may_name_and_set_is_checked_before_any_work(tmp_path):
    tree = {"data.format": "ucf101", "data.root": str(tmp_path / "ucf")}
    cases = [
        ({"datasets": {"held_out": tree}}, "which no task uses"),  # a typo of heldout
        ({"datasets": {"pool": tree, "heldout": tree}}, "same videos as `pool`"),
        ({"datasets": {"pool": {**tree, "data.num_frames": 4}}}, "how clips are cut"),
        ({"set": {**TINY["set"], "data.in_memory": False}}, "ablate sets these"),
        ({"axes": {"train.seed": [1, 2]}}, "seeds under `seeds:`"),
        ({"finetune": {"data.split": 2}}, "name the dataset under `datasets:`"),
        ({"benchmark": {"task_video": 40}}, "unknown `benchmark:` sizes"),
    ]
    for changes, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_grid(str(write_grid(tmp_path / "g.yaml", **changes)))
    with pytest.raises(ConfigError, match="the grid varies it as an axis"):
        load_grid(str(write_grid(tmp_path / "g.yaml")), settings={"tmm.bottleneck.hidden": 16})
    # --set goes over the grid's stage keys too
    grid = load_grid(str(write_grid(tmp_path / "g.yaml")), settings={"train.epochs": 3})
    assert {spec.overrides["train.epochs"] for spec in plan(grid)} == {3}
    # a relative root is next to the grid file
    (tmp_path / "grids").mkdir()
    relative = {"ucf": {**tree, "data.root": "../ucf"}}
    grid = load_grid(str(write_grid(tmp_path / "grids" / "g.yaml", tasks=["ucf"],
                                    datasets=relative)))  # fmt: skip
    assert grid.datasets["ucf"]["data.root"] == str((tmp_path / "ucf").resolve())


def test_a_resized_benchmark_folder_is_other_videos_to_its_runs_and_stores(tmp_path):
    """`benchmark:` sizes are part of what a run reads: another training-set size gives other
    fine-tuning runs, stores and folders, while pre-trainings on the unchanged pool are shared;
    a named held-out set changes only the pre-trainings, whose pretext it measures."""
    from advise.ablate import _benchmark, _Work, load_grids

    small = load_grid(str(write_grid(tmp_path / "small.yaml")))
    more = load_grid(str(write_grid(tmp_path / "more.yaml", benchmark={
        **TINY["benchmark"], "task_videos": 30, "train_per_class": 2})))  # fmt: skip

    def ids(grid, stage):
        return {spec.id for spec in plan(grid) if spec.stage == stage}

    assert ids(small, "pretrain") == ids(more, "pretrain")
    assert not ids(small, "finetune") & ids(more, "finetune")
    (spec,) = [s for s in plan(small) if s.stage == "pretrain" and s.overrides.get(
        "tmm.bottleneck.hidden", 8) == 8]  # fmt: skip
    stores = [{d: _Work(g, tmp_path, {}).store(d, spec) for d in ("pool", "temporal")}
              for g in (small, more)]  # fmt: skip
    assert stores[0]["pool"] == stores[1]["pool"] and stores[0]["temporal"] != stores[1]["temporal"]
    roots = [_benchmark(tmp_path / "data", g, ["temporal"])["temporal"] for g in (small, more)]
    assert roots[0] != roots[1]
    counts = [len((root / "trainlist01.txt").read_text().splitlines()) for root in roots]
    assert counts == [10 * 1, 10 * 2]  # 10 classes, 1 and 2 training videos each
    # the built-in finding2-data asks finding2-channels' question of more videos: its
    # fine-tunings are other runs, its pre-trainings (the same pool) the same ones
    ids = {name: {(s.stage, s.id) for _, g in load_grids(name) for s in plan(g)}
           for name in ("finding2-channels", "finding2-data")}  # fmt: skip
    shared = ids["finding2-channels"] & ids["finding2-data"]
    assert shared and {stage for stage, _ in shared} == {"pretrain"}
    # a named held-out set: other pre-trainings, the same scratch fine-tunings
    heldout = {"data.format": "ucf101", "data.root": str(tmp_path / "ucf")}
    named = load_grid(str(write_grid(tmp_path / "h.yaml", datasets={"heldout": heldout})))
    for stage, changed in (("pretrain", True), ("finetune", False)):
        before = {s.id for s in plan(small) if s.stage == stage and s.arm != "prp"}
        after = {s.id for s in plan(named) if s.stage == stage and s.arm != "prp"}
        assert (before != after) == changed, stage


def test_grids_run_together_each_read_their_own_datasets(tmp_path):
    """Two grids in one command, one pre-training on the benchmark's pool and one on a
    dataset it names `pool`: each reads its own (the benchmark's pool is generated for the
    first though the second names a dataset so)."""
    data = dataset_tree("hmdb51", tmp_path / "hmdb")
    builtin = write_grid(tmp_path / "builtin.yaml", axes={}, arms=["prp"], findings=[])
    named = write_grid(tmp_path / "named.yaml", axes={}, arms=["prp"], findings=[],
                       datasets={"pool": data})  # fmt: skip
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"grids": [str(builtin), str(named)]}))
    out = tmp_path / "out"
    assert main(["ablate", str(both), "--out", str(out), "--jobs", "1"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    roots = {
        yaml.safe_load((Path(row["run"]) / "config.yaml").read_text())["data"]["root"]
        for row in rows if row["stage"] == "pretrain"
    }  # fmt: skip
    assert len(rows) == 4 and data["data.root"] in roots
    (generated,) = roots - {data["data.root"]}
    assert Path(generated).parent == out / "data" and Path(generated).name.startswith("pool-")


def test_an_interaction_compares_the_change_on_two_tasks_seed_by_seed():
    from advise.ablate import Finding

    def row(cell, task, seed, top1):
        return {"cell": json.dumps(cell, sort_keys=True), "task": task, "arm": "prp",
                "seed": seed, "top1": top1, "dacc": None}  # fmt: skip

    pooled = {"sfu.spatial": 1}
    rows = [row({}, "temporal", s, 60 + s) for s in range(3)]
    rows += [row(pooled, "temporal", s, 30 + 2 * s) for s in range(3)]
    rows += [row({}, "spatial", s, 85) for s in range(3)] + [row(pooled, "spatial", s, 84 + s)
                                                             for s in range(3)]  # fmt: skip
    finding = Finding("f1", "claim", "temporal", {}, pooled, versus_task="spatial")
    temporal_drop, spatial_drop = finding.sides(rows)
    assert temporal_drop == [30, 29, 28] and spatial_drop == [1, 0, -1]
    assert verdict(temporal_drop, spatial_drop)["verdict"] == "reproduced"


def test_runs_in_worker_processes_give_the_results_of_runs_in_one(tmp_path, capsys):
    """--jobs 2 (worker processes, fine-tunings waiting for their pre-training) and --jobs 1
    give the same rows and the same checkpoints, bit for bit; each run's output is in its
    RUN/output.log, not on the grid's console."""
    from advise.train.checkpoint import load_checkpoint

    grid = write_grid(tmp_path / "g.yaml", axes={})
    documents = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["ablate", str(grid), "--out", str(out), "--jobs", str(jobs)]) == 0
        console = capsys.readouterr().out
        assert f"{jobs} at a time" in console and "finetune epoch" not in console
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        documents[jobs] = {row["id"]: row for row in rows}
    assert documents[1].keys() == documents[2].keys() and len(documents[1]) == 3
    for run, row in documents[1].items():
        other = documents[2][run]
        assert (row.get("top1"), row.get("measure")) == (other.get("top1"), other.get("measure"))
        folders = [Path(row["run"]), Path(other["run"])]
        assert "epoch 1/1" in (folders[1] / "output.log").read_text()
        one, two = (load_checkpoint(folder / "checkpoints" / "last")[0] for folder in folders)
        assert one.keys() == two.keys()
        assert all(torch.equal(one[key], two[key]) for key in one)


def test_jobs_below_one_is_refused(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml")
    assert main(["ablate", str(grid), "--out", str(tmp_path / "out"), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_product_grid_reports_every_cell_and_draws_a_dacc_heat_map(tmp_path):
    """Table 1's shape (channels x pre-training length), on made-up results: one table of
    every cell, dAcc per cell, and the heat-map figure."""
    from advise.ablate import write_results

    grid = load_grid(str(write_grid(
        tmp_path / "g.yaml", axes={"sfu.channels": [96, 12], "pretrain.train.epochs": [1, 4]},
        product=True, seeds=[0, 1], findings=[],
    )))  # fmt: skip
    specs = plan(grid)
    done = {}
    for spec in specs:
        if spec.stage == "finetune":
            cell = json.loads(spec.cells[0])
            top1 = 50.0 + (10 if cell["sfu.channels"] == 96 else 0) + spec.seed
            if spec.arm == "prp":  # PRP gains 1 point after 1 epoch, 3 after 4
                top1 += 1 if cell["pretrain.train.epochs"] == 1 else 3
            done[spec.id] = {"stage": "finetune", "top1": top1, "top1_1view": top1,
                             "views": "1x1", "seconds": 1.0}  # fmt: skip
    (tmp_path / "out").mkdir()
    document = write_results(grid, specs, done, tmp_path / "out", tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## pretrain.train.epochs x sfu.channels" in report  # (write_grid sorts the keys)
    table = [line for line in report.splitlines() if line.startswith("| pretrain.train.")]
    assert len(table) == 4  # every cell of the product, once
    row = next(line for line in table if "epochs=4, sfu.channels=12 " in line)
    assert "50.5" in row and "53.5" in row and "3.0" in row  # scratch, PRP, dAcc (mean)
    dacc = {(json.loads(r["cell"])["sfu.channels"], json.loads(r["cell"])["pretrain.train.epochs"]):
            r["dacc"] for r in document["rows"] if r["arm"] == "prp"}  # fmt: skip
    assert dacc == {(96, 1): 1.0, (96, 4): 3.0, (12, 1): 1.0, (12, 4): 3.0}
    assert (tmp_path / "out" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_grids_run_together_share_their_common_runs(tmp_path, capsys):
    """A file of grids (as `paper`) runs every grid's missing runs in one go, a run two grids
    share once, and writes each grid's report into OUT/<grid name>."""
    wide = write_grid(tmp_path / "wide.yaml")  # base hidden 8, and 12
    base = write_grid(tmp_path / "base.yaml", axes={})  # its runs are all in `wide`
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"grids": [str(wide), str(base)]}))
    out = tmp_path / "out"
    assert main(["ablate", str(both), "--out", str(out), "--jobs", "1"]) == 0
    console = capsys.readouterr().out
    assert "ablate: 6 runs in 2 grids, 0 done, 6 to run" in console
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len({row["id"] for row in rows}) == 6
    for name, cells in (("wide", 2), ("base", 1)):
        document = json.loads((out / name / "results.json").read_text())
        assert document["finished"] == document["runs"] == 3 * cells
        assert (out / name / "report.md").exists()


def test_runs_of_a_grid_run_before_a_config_key_was_added_are_still_recognised(tmp_path):
    """A run's identity leaves out keys added later while at their default (LATER_KEYS): these
    ids are what commit 36390d5, before `sfu.adapter` existed, gave for this grid, so a grid
    folder it wrote keeps every finished run. The adapter, when set, is another run."""
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump({
        "base": "demo", "set": {"ifm.random_init": True}, "axes": {"sfu.spatial": [4]},
        "tasks": ["temporal"], "arms": ["scratch", "prp"], "seeds": [0],
    }))  # fmt: skip
    ids = {spec.id for spec in plan(load_grid(str(grid_file)))}
    assert ids == {"06f11c5ace2b4789", "59bb88c4666b7574", "5804aa86f80fe0b1",
                   "c2234fcd162038e5", "0cb5a4e613e534f1", "532e862c903d3a02"}  # fmt: skip
    grid_file.write_text(yaml.safe_dump({
        "base": "demo", "set": {"ifm.random_init": True, "sfu.adapter": 32}, "axes": {},
        "tasks": ["temporal"], "arms": ["scratch"], "seeds": [0],
    }))  # fmt: skip
    assert not {spec.id for spec in plan(load_grid(str(grid_file)))} & ids


def test_a_folder_named_like_a_built_in_grid_does_not_hide_it(tmp_path, monkeypatch):
    from advise.ablate import load_grids

    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()  # e.g. the output folder of an earlier `ablate paper`
    (tmp_path / "table5-avgpool").mkdir()
    assert [name for name, _ in load_grids("table5-avgpool")] == ["table5-avgpool"]
    assert len(load_grids("paper")) == 6


def test_a_concatenated_ifms_stores_wait_for_their_parts_stores(tmp_path):
    """The first store of an IFM builds it (a mini IFM trains on first use) and a pair's
    store joins its parts' stores of the same dataset: each store job of a pair starts after
    those, instead of holding a worker while they are made; every other store of an IFM
    follows the one before it."""
    from advise.ablate import _Work, load_grids, store_jobs

    ((_, grid),) = load_grids("table4-ifms")
    roots = {name: tmp_path / name for name in ("pool", "heldout", "spatial", "temporal")}
    work = _Work(grid, tmp_path, roots)
    jobs = store_jobs([(spec, work) for spec in plan(grid)])
    by_ifm: dict[str, list[str]] = {}
    for path, job in jobs.items():
        ifm = json.loads(work.ifm_key(job.args[2]))[0]
        by_ifm.setdefault(ifm, []).append(path)
    assert set(by_ifm) == {"mini", "mini-vit", "mini+mini-vit", "mobilenetv2-in1k",
                           "mini+mobilenetv2-in1k"}  # fmt: skip
    assert all(len(paths) == 4 for paths in by_ifm.values())  # pool, heldout, spatial, temporal
    for ifm, paths in by_ifm.items():
        parts = ifm.split("+") if "+" in ifm else []
        for index, path in enumerate(paths):
            own = (paths[index - 1],) if index else ()
            same_data = tuple(by_ifm[part][index] for part in parts)
            assert jobs[path].after == own + same_data
            assert all(Path(p).name.split("-")[0] == Path(path).name.split("-")[0]
                       for p in same_data)  # fmt: skip
    order = list(jobs)  # one worker runs them in this order
    assert all(order.index(wait) < order.index(path) for path in jobs for wait in jobs[path].after)
