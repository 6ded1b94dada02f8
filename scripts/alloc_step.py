"""The demo TMM's training step with glibc's default malloc against `keep_freed_memory`.

    python scripts/alloc_step.py [--batch 16] [--rounds 3]

Each round runs the step in two fresh processes, one thread each, one after the other (default
allocator, then kept memory), and prints both medians and their ratio; alternating rounds
average out drift on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
from torch import nn


def step_milliseconds(batch: int, keep: bool, steps: int = 40) -> float:
    """Median milliseconds of one SGD step of the demo's TMM and head on random tokens."""
    from advise.jobs import keep_freed_memory
    from advise.models.heads import MLPHead
    from advise.models.tmm import BottleneckTMM

    if keep:
        keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(
        BottleneckTMM(96, hidden=32, out=128, blocks=1, temporal_kernel=3),
        MLPHead(128, 10, hidden=256),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tokens, labels = torch.randn(batch, 96, 8, 8, 8), torch.randint(0, 10, (batch,))
    times = []
    for index in range(steps + 5):
        started = time.perf_counter()
        loss = nn.functional.cross_entropy(model(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index >= 5:  # warm-up steps not counted
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(step_milliseconds(args.batch, args.child == "kept"))
        return
    results: dict[str, list[float]] = {"default": [], "kept": []}
    for _ in range(args.rounds):
        for name in results:
            command = [sys.executable, __file__, "--batch", str(args.batch), "--child", name]
            results[name].append(float(subprocess.check_output(command, text=True)))
    default, kept = (statistics.median(results[name]) for name in results)
    print(
        f"batch {args.batch}, 1 thread, {args.rounds} rounds: default malloc {default:.1f} ms "
        f"per step, freed memory kept {kept:.1f} ms ({default / kept:.2f}x)"
    )


if __name__ == "__main__":
    main()
