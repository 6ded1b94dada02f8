"""Rewrite the README's figures (docs/figures/) from a finished `advise ablate` folder.

    python scripts/readme_figures.py ABLATE_OUT [ABLATE_OUT ...] [--out docs/figures]

ABLATE_OUT is the --out of `advise ablate paper` (and of `advise ablate plug-and-play`). From
the first one's base-cell fine-tunings on the temporal task (seed 0): `advise visualize` of a
test video under the PRP-initialised and the scratch TMM (activations.png) and `advise embed`
of the PRP-initialised one (embedding.png); from every grid folder found, its accuracy figure
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

from advise.api import load
from advise.data import loaders
from advise.embed import embed
from advise.visualize import visualize

MAX_WIDTH = 1400  # pixels: a README figure, not a poster


def base_runs(out: Path, task: str = "temporal", seed: int = 0) -> dict[str, Path]:
    """The base cell's fine-tuning checkpoints of `task` and `seed`, by arm."""
    found = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if (row.get("stage") == "finetune" and row.get("task") == task
                and row.get("seed") == seed and "{}" in row.get("cells", [])):  # fmt: skip
            found.setdefault(row["arm"], Path(row["run"]) / "checkpoints" / "last.safetensors")
    return found


def save_png(source: Path, target: Path) -> None:
    """Copy a PNG, scaled down to MAX_WIDTH pixels where wider."""
    image = Image.open(source)
    if image.width > MAX_WIDTH:
        height = round(image.height * MAX_WIDTH / image.width)
        image = image.resize((MAX_WIDTH, height), Image.LANCZOS)
    image.save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ablate_out", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = base_runs(args.ablate_out[0])
    model = load(runs["prp"], device="cpu", overrides=["data.source=video"])
    test = loaders.read_split(model.config.data, "test")
    video = next(record.path for record in test.records)  # the first test video
    with tempfile.TemporaryDirectory() as scratch:
        record = visualize(
            video, [runs["prp"], runs["scratch"]], Path(scratch) / "vis",
            labels=["PRP-initialised TMM", "scratch TMM"], kind="norm",
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
