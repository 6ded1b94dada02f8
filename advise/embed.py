"""`advise embed`: what a model's features separate, as a t-SNE picture and a kNN number.

For every video of the test split (and of the train split, the kNN's memory), one centre clip
(1 clip x 1 crop) gives two vectors: the IFM's tokens averaged over time and space ("ifm",
[D]) and the TMM's output averaged the same way ("tmm", [C], what the head pools). For each
kind: the kNN top-1 (each test video takes the class of its nearest train video by cosine, as
BYOL's measure does) and a 2-D t-SNE of the test videos coloured by class.

Written: DIR/embedding.png (the two t-SNE panels, kNN top-1 in their titles),
DIR/features.safetensors (the raw vectors and labels of both splits; class names in its
metadata) and DIR/embedding.json (the numbers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor
from torch.nn import functional as F

from advise.api import Model
from advise.files import atomic_write

KINDS = ("ifm", "tmm")


def split_features(model: Model, subset: str) -> tuple[dict[str, Tensor], Tensor, list[str]]:
    """({"ifm": [N, D], "tmm": [N, C]}, labels [N], class names) of `subset`'s videos."""
    from advise.data import loaders
    from advise.data.datasets import test_batches
    from advise.models.heads import global_average_pool
    from advise.runs import Setup
    from advise.train.tasks import batch_tokens

    config = model.config
    split = loaders.read_split(config.data, subset)
    run = Setup(config, model.device, model.network.ifm)
    dataset = loaders.eval_dataset(config, split, run.frame_preprocessing, 1, 1, None)
    network = model.network.eval()
    vectors: dict[str, list[Tensor]] = {kind: [] for kind in KINDS}
    labels = []
    with torch.no_grad():
        for batch in test_batches(dataset, config.eval.batch_size, config.data.num_workers):
            tokens = batch_tokens(network, batch, model.device)
            vectors["ifm"].append(global_average_pool(tokens).float().cpu())
            temporal = network.tmm(network.sfu(tokens))
            vectors["tmm"].append(global_average_pool(temporal).float().cpu())
            labels.append(batch["labels"])
    if not labels:
        raise ValueError(f"no {subset} video of {config.data.root} could be read")
    return (
        {kind: torch.cat(rows) for kind, rows in vectors.items()},
        torch.cat(labels),
        split.class_names,
    )


def knn_top1(bank: Tensor, bank_labels: Tensor, queries: Tensor, labels: Tensor) -> float:
    """Percent of `queries` whose nearest `bank` row (cosine) has their label."""
    nearest = (F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T).argmax(dim=1)
    return 100.0 * float((bank_labels[nearest] == labels).float().mean())


def tsne(vectors: Tensor, seed: int = 0) -> Tensor:
    """2-D t-SNE of [N, D] (perplexity 30, or less for few points), [N, 2]."""
    from sklearn.manifold import TSNE

    count = len(vectors)
    if count < 3:
        return torch.zeros(count, 2)
    perplexity = float(min(30.0, max(1.0, (count - 1) / 3)))
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        vectors.double().numpy()
    )
    return torch.from_numpy(points).float()


def plot_embedding(
    points: dict[str, Tensor],
    labels: Tensor,
    class_names: list[str],
    titles: dict[str, str],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advise.report import save_figure

    figure, axes = plt.subplots(1, len(points), figsize=(5.2 * len(points) + 1.8, 5))
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for axis, (kind, xy) in zip(axes, points.items(), strict=True):
        for index, name in enumerate(class_names):
            chosen = labels == index
            if chosen.any():
                axis.scatter(xy[chosen, 0], xy[chosen, 1], s=14, color=colours(index % 20),
                             label=name)  # fmt: skip
        axis.set_title(titles[kind], fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    figure.tight_layout()
    save_figure(figure, path)


def embed(model: Model, out: str | Path) -> dict[str, Any]:
    """Write the embedding files of `model` on its config's data (see the module doc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    test, test_labels, class_names = split_features(model, "test")
    train, train_labels, _ = split_features(model, "train")
    knn = {kind: knn_top1(train[kind], train_labels, test[kind], test_labels) for kind in KINDS}
    points = {kind: tsne(test[kind]) for kind in KINDS}
    names = {"ifm": f"IFM tokens ({model.config.ifm.name}, D={test['ifm'].shape[1]})",
             "tmm": f"TMM output (C={test['tmm'].shape[1]})"}  # fmt: skip
    titles = {kind: f"{names[kind]}\nkNN top-1 {knn[kind]:.1f}%" for kind in KINDS}
    plot_embedding(points, test_labels, class_names, titles, out / "embedding.png")
    splits = (("test", test), ("train", train))
    tensors = {f"{kind}_{subset}": rows[kind] for subset, rows in splits for kind in KINDS}
    tensors |= {"labels_test": test_labels, "labels_train": train_labels}
    data = safetensors.torch.save(tensors, metadata={"class_names": json.dumps(class_names)})
    atomic_write(out / "features.safetensors", data)
    record = {
        "checkpoint": str(model.source),
        "data": str(model.config.data.root),
        "test_videos": len(test_labels),
        "train_videos": len(train_labels),
        "knn_top1": knn,
        "chance": 100.0 / len(class_names),
    }
    atomic_write(out / "embedding.json", json.dumps(record, indent=2))
    return record
