"""The bottleneck TMM's training step on a CPU in the standard layout against channels last.

    python scripts/tmm_layout.py [--shape demo|paper] [--batch 64] [--rounds 5]

One process, one thread, freed memory kept (as in training). Each round times both layouts'
steps one after the other on the same model and tokens: "standard" runs the TMM's blocks on
contiguous tokens (how every TMM ran before channels last), "channels last" the TMM itself.
Prints each layout's median step over all rounds and their ratio. Shapes: "demo" (96-channel
8 x 8 mini IFM tokens, 8 frames, hidden 32, out 128: the PRP step of the demo and the paper
grids, 16 videos x 4 clips = 64 clips) and "paper" (768-channel 14 x 14 tokens, 8 frames,
hidden 256, out 1024: variant A-B/16-256).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

SHAPES = {  # tokens [D, T, h, w], hidden, out
    "demo": ((96, 8, 8, 8), 32, 128),
    "paper": ((768, 8, 14, 14), 256, 1024),
}


def main() -> None:
    from advise.jobs import keep_freed_memory
    from advise.models.heads import MLPHead
    from advise.models.tmm import BottleneckTMM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="demo")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="timed steps a layout a round")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    token_shape, hidden, out = SHAPES[args.shape]
    tmm = BottleneckTMM(token_shape[0], hidden=hidden, out=out, blocks=1, temporal_kernel=3)
    head = MLPHead(out, 4, hidden=256)
    optimizer = torch.optim.AdamW([*tmm.parameters(), *head.parameters()], lr=1e-4)
    tokens, labels = torch.randn(args.batch, *token_shape), torch.randint(0, 4, (args.batch,))
    layouts = {
        "standard": lambda: head(tmm.blocks(tokens)),
        "channels last": lambda: head(tmm(tokens)),
    }
    times: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name, forward in layouts.items():
            for index in range(args.steps + 2):
                started = time.perf_counter()
                loss = nn.functional.cross_entropy(forward(), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if index >= 2:  # the first steps after a switch not counted
                    times[name].append(time.perf_counter() - started)
    standard, last = (1000 * statistics.median(times[name]) for name in layouts)
    print(
        f"{args.shape} TMM, batch {args.batch}, 1 thread, {args.rounds} rounds x {args.steps} "
        f"steps: standard {standard:.1f} ms a step, channels last {last:.1f} ms "
        f"({standard / last:.2f}x)"
    )


if __name__ == "__main__":
    main()
