"""Batch prediction throughput: `advise predict FOLDER --out CSV` (the model and the IFM
loaded once, videos decoded by worker processes and batched) against one `advise predict
VIDEO` call per video, for the mini IFM and a ViT-B/16-sized random IFM at 224 px.

    python scripts/predict_throughput.py --out /tmp/throughput [--videos 48] [--single 3]

For each IFM: a one-epoch fine-tuning on the built-in spatial task (the weights do not change
the cost), then the batch command over every video of the task (wall time of the whole
command, start-up included, and the rate it reports itself), then `--single` one-video calls
(median wall time each). Both at the checkpoint's own views (the demo's: 3 clips x 1 crop of
8 frames). Prints a table; also written to OUT/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from advise.data.formats import VIDEO_SUFFIXES
from advise.data.synthetic import generate

IFMS = {  # name -> (label, settings)
    "mini": ("mini (64 px, 8 x 8 x 96 tokens)", ["ifm.name=mini"]),
    "vit-b16": ("ViT-B/16, random (224 px, 14 x 14 x 768 tokens)",
                ["ifm.name=vit-b16", "ifm.random_init=true", "ifm.img_size=224"]),
}  # fmt: skip


def advise(*args: str) -> tuple[float, str]:
    """Run `advise ARGS` in a fresh process; (wall seconds, stderr)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "advise.cli", *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"advise {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=48, help="as `advise synth --videos`")
    parser.add_argument("--single", type=int, default=3, help="one-video calls to time")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ifms", nargs="+", choices=list(IFMS), default=list(IFMS))
    args = parser.parse_args()
    data = generate(args.out / "data", "spatial", args.videos, progress=False)
    videos = sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    results = []
    for name in args.ifms:
        label, settings = IFMS[name]
        run = args.out / f"run-{name}"
        sets = [item for setting in settings for item in ("--set", setting)]
        if not (run / "checkpoints" / "last.safetensors").exists():
            advise("finetune", "--config", "demo", *sets, "--set", f"data.root={data}",
                   "--set", "train.epochs=1", "--set", "optim.warmup_epochs=0",
                   "--out", str(run), "--offline")  # fmt: skip
        seconds, stderr = advise(
            "predict", str(data), "--ckpt", str(run), "--out", str(args.out / "predictions.csv"),
            "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--offline",
        )  # fmt: skip
        summary = stderr.strip().splitlines()[-1]
        singles = [advise("predict", str(video), "--ckpt", str(run), "--offline")[0]
                   for video in videos[: args.single]]  # fmt: skip
        single = statistics.median(singles)
        results.append({
            "ifm": label, "videos": len(videos), "batch_command_seconds": round(seconds, 1),
            "batch_videos_per_second": round(len(videos) / seconds, 2),
            "batch_summary": summary, "single_call_seconds": round(single, 2),
            "single_videos_per_second": round(1 / single, 3),
            "speedup": round(single * len(videos) / seconds, 1),
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    (args.out / "throughput.json").write_text(json.dumps(results, indent=2))
    print("\n| IFM | batch: videos/s (whole command) | one call per video: s each | ratio |")
    print("| --- | --- | --- | --- |")
    for row in results:
        print(f"| {row['ifm']} | {row['batch_videos_per_second']} ({row['videos']} videos in "
              f"{row['batch_command_seconds']} s) | {row['single_call_seconds']} | "
              f"{row['speedup']}x |")  # fmt: skip


if __name__ == "__main__":
    main()
