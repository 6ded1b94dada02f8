"""The bottleneck TMM's training step on a CPU in fp32 against bf16 autocast.

    python scripts/tmm_precision.py [--rounds 3] [--steps 4]

One process, one thread, freed memory kept (as in training), channels last (as the TMM runs on
a CPU). For each shape of the paper grids' TMMs on the mini IFM's 8 x 8 x 96 tokens (8 frames,
out 128), two models with the same initial weights train on the same tokens, the precisions
taking turns, a few steps each, over several rounds ("bf16" is `train.precision=bf16`:
autocast for the TMM and head, weights, optimiser and loss in fp32). Prints each shape's
median step in both precisions and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

SHAPES = (  # blocks, hidden, clips a step: what the grids train
    (1, 32, 16),  # the base cell, a fine-tuning step
    (1, 32, 64),  # the base cell, a PRP step (16 videos x 4 clips)
    (8, 32, 16),  # Finding 3's deepest TMM, fine-tuning
    (8, 32, 64),  # ... pre-training
    (1, 128, 16),  # Finding 4's widest, fine-tuning
)


def main() -> None:
    from advise.jobs import keep_freed_memory
    from advise.models.heads import MLPHead
    from advise.models.tmm import BottleneckTMM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps a precision a round")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(1)
    for blocks, hidden, clips in SHAPES:
        generator = torch.Generator().manual_seed(1)
        tokens = torch.randn(clips, 96, 8, 8, 8, generator=generator)
        labels = torch.randint(0, 4, (clips,), generator=generator)
        steps = {}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            tmm = BottleneckTMM(96, hidden=hidden, out=128, blocks=blocks, temporal_kernel=3)
            head = MLPHead(128, 4, hidden=256)
            optimizer = torch.optim.AdamW([*tmm.parameters(), *head.parameters()], lr=1e-4)
            steps[precision] = (tmm, head, optimizer)
        times: dict[str, list[float]] = {precision: [] for precision in steps}
        for _ in range(args.rounds):
            for precision, (tmm, head, optimizer) in steps.items():
                for index in range(args.steps + 2):
                    started = time.perf_counter()
                    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                        logits = head(tmm(tokens))
                    loss = nn.functional.cross_entropy(logits.float(), labels)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    if index >= 2:  # the first steps after a switch not counted
                        times[precision].append(time.perf_counter() - started)
        fp32, bf16 = (1000 * statistics.median(times[precision]) for precision in steps)
        print(
            f"{blocks} block(s), hidden {hidden}, {clips} clips: fp32 {fp32:.1f} ms a step, "
            f"bf16 {bf16:.1f} ms ({fp32 / bf16:.2f}x)"
        )


if __name__ == "__main__":
    main()
