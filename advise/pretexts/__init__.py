"""The table of pretext tasks: `pretext.kind` -> the class that is that pretext.

A pretext is one object, built from the resolved config, that owns everything the rest of
advise asks of a self-supervised task:

- `sampler()`: its clip sampler, `(num_video_frames, rng) -> [(frame indices [T], label)]`,
  the clips one video gives per training item (`advise.data.datasets.PretextDataset`);
- `class_names`: the names of the classes its head predicts (empty when it predicts none);
- `head(in_dim)`: its own head on the temporal module's output, or None for the config's head
  with one output per class;
- `task()`: its loss and training step (`advise.train.tasks`), with any state it keeps;
- `evaluate(model, config, run)`: its own measure of a pre-trained model, a dict whose
  `metric` entry is the headline number, labelled `metric_label` in tables.

A new pretext is its file here, one line in `PRETEXTS`, its section in `advise.config`
(`pretext.<kind>.*`) and a preset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from torch import nn

from advise.pretexts.byol import BYOLPretext
from advise.pretexts.prp import PlaybackRatePretext

if TYPE_CHECKING:
    from advise.config import Config
    from advise.data.sampling import ClipSampler
    from advise.train.tasks import Task


class Pretext(Protocol):
    kind: ClassVar[str]
    metric: ClassVar[str]  # the key of `evaluate`'s headline number, e.g. "speed_acc"
    metric_label: ClassVar[str]  # its name in tables, e.g. "PRP speed acc"
    class_names: list[str]

    def sampler(self) -> ClipSampler: ...

    def head(self, in_dim: int) -> nn.Module | None: ...

    def task(self) -> Task: ...

    def evaluate(self, model: nn.Module, config: Config, run: Any) -> dict[str, Any]: ...


PRETEXTS: dict[str, type] = {
    "prp": PlaybackRatePretext,
    "byol": BYOLPretext,
}


def build_pretext(config: Config) -> Pretext:
    """The pretext task `config.pretext.kind` picks, set up from its section."""
    return PRETEXTS[config.pretext.kind](config)
