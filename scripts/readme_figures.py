"""Rewrite the README's figures (docs/figures/) from a finished `advise ablate` folder.

    python scripts/readme_figures.py ABLATE_OUT [ABLATE_OUT ...] [--out docs/figures]

ABLATE_OUT is the --out of `advise ablate plug-and-play` (and of `advise ablate paper`). From
the fine-tunings of `--grid` (default plug-same-width, run into the first ABLATE_OUT) on the
temporal task (seed 0): `advise visualize` of the first test video that the PRP-initialised
TMM classifies correctly, under it, the transplanted and the scratch TMM (activations.png),
and `advise embed` of the PRP-initialised one (embedding.png); from every grid folder found,
its accuracy figure
(ablate-GRID.png; a product grid's holds its dAcc heat-map). Run it with the cache
(XDG_CACHE_HOME) the grid ran with, so the mini IFM's weights are the grid's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from advise.ablate import load_grid, plan
from advise.api import load
from advise.data import loaders
from advise.embed import embed
from advise.visualize import visualize

MAX_WIDTH = 1400  # pixels: a README figure, not a poster


def base_runs(out: Path, grid: str, task: str = "temporal", seed: int = 0) -> dict[str, Path]:
    """The base cell's fine-tuning checkpoints of `grid` (run into `out`) on `task` with
    `seed`, by arm (the runs the grid's plan names)."""
    found = {}
    for spec in plan(load_grid(grid)):
        if (spec.stage == "finetune" and spec.task == task and spec.seed == seed
                and "{}" in spec.cells):  # fmt: skip
            run = out / "runs" / f"finetune-{spec.id}" / "checkpoints" / "last.safetensors"
            if not run.exists():
                raise SystemExit(f"{run} is missing: run `advise ablate {grid} --out {out}`")
            found[spec.arm] = run
    return found


def save_png(source: Path, target: Path) -> None:
    """Copy a PNG, scaled down to MAX_WIDTH pixels where wider, in 256 colours."""
    image = Image.open(source)
    if image.width > MAX_WIDTH:
        height = round(image.height * MAX_WIDTH / image.width)
        image = image.resize((MAX_WIDTH, height), Image.LANCZOS)
    image.convert("RGB").quantize(256).save(target, optimize=True)  # a palette: small files
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ablate_out", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument(
        "--grid",
        default="plug-same-width",
        help="the grid (run into the first ABLATE_OUT) whose checkpoints to show",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = base_runs(args.ablate_out[0], args.grid)
    arms = [arm for arm in ("prp", "transplant", "scratch") if arm in runs]
    labels = {"prp": "PRP-initialised TMM", "transplant": "transplanted TMM",
              "scratch": "scratch TMM"}  # fmt: skip
    model = load(runs["prp"], device="cpu", overrides=["data.source=video"])
    test = loaders.read_split(model.config.data, "test")
    video = next(
        record.path
        for record in test.records
        if model.predict(record.path).classes[0] == test.class_names[record.label]
    )  # the first test video the PRP-initialised TMM gets right
    with tempfile.TemporaryDirectory() as scratch:
        record = visualize(
            video, [runs[arm] for arm in arms], Path(scratch) / "vis",
            labels=[labels[arm] for arm in arms], kind="norm",
        )  # fmt: skip
        print(f"activations of {video}: {json.dumps(record['predictions'])}")
        save_png(Path(scratch) / "vis" / "activations.png", args.out / "activations.png")
        numbers = embed(model, Path(scratch) / "embed")
        print(f"embedding of {runs['prp']}: kNN top-1 {numbers['knn_top1']}")
        save_png(Path(scratch) / "embed" / "embedding.png", args.out / "embedding.png")
    for out in args.ablate_out:
        for figure in sorted(out.glob("*/accuracy.png")):
            save_png(figure, args.out / f"ablate-{figure.parent.name}.png")
    shutil.rmtree(args.out / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
