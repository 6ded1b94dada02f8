"""How much of a feature store's token variance the SFU's channel pooling keeps, against PCA.

    python scripts/token_variance.py STORE [--channels 48 24 12] [--every 4]

Reads every `--every`-th video of STORE (an `advise extract` folder, unpooled), treats each
token (one frame, one grid position) as a D-channel sample and prints, for each channel count c:
the share of the tokens' variance kept by the SFU's pooling to c channels (each output the mean
of D/c consecutive channels, spread back over them) and by the best c-dimensional linear
projection (the top c principal components). Finding 2 ("compressing channels loses
information the TMM needs") is about the first; the second says how low-rank the tokens are.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from advise.data.store import FeatureStore
    from advise.models.sfu import SFU

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--channels", type=int, nargs="+", default=[48, 24, 12])
    parser.add_argument("--every", type=int, default=4, help="read every N-th video")
    args = parser.parse_args()

    store = FeatureStore(args.store)
    clips = [
        store.read(index, np.arange(store.num_frames(index)))  # [views, T, D, h, w]
        for index in range(0, len(store), args.every)
    ]
    dim = clips[0].shape[2]
    # [views, T, D, h, w] -> [views*T*h*w, D]: one row a token
    tokens = torch.cat([clip.movedim(2, -1).reshape(-1, dim) for clip in clips]).double()
    centred = tokens - tokens.mean(0)
    total = centred.square().sum().item()
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred).flip(0)  # largest first
    explained = (eigenvalues.cumsum(0) / eigenvalues.sum()).tolist()
    print(f"{args.store}: {len(clips)} videos, {len(tokens)} tokens of {dim} channels")
    print("channels | variance kept by SFU pooling | by the top principal components")
    for channels in args.channels:
        if dim % channels:
            parser.error(f"--channels {channels} does not divide the store's {dim} channels")
        # [N, D] -> [N, D, 1, 1, 1] through the SFU -> [N, c, 1, 1, 1] -> [N, c]
        pooled = SFU(channels=channels)(centred[:, :, None, None, None])[:, :, 0, 0, 0]
        spread = pooled.repeat_interleave(dim // channels, dim=1)  # [N, c] -> [N, D]
        kept = 1 - (centred - spread).square().sum().item() / total
        print(f"{channels:8d} | {kept:28.3f} | {explained[channels - 1]:.3f}")


if __name__ == "__main__":
    main()
