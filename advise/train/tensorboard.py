"""TensorBoard sink: the rows of metrics.jsonl as TensorBoard scalars (optional).

Needs the `tensorboard` package (`pip install tensorboard`, or `pip install advise[tensorboard]`);
it is imported only when a sink is made, so training without one never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advise.plot import normalise_row

# row kind -> (row key, scalar tag); every scalar is at global step row["step"]
TAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "step": (("loss", "train/loss"), ("acc", "train/acc"), ("lr", "train/lr")),
    "epoch": (("loss", "epoch/loss"), ("acc", "epoch/acc"), ("data_share", "epoch/data_share")),
    "val": (("top1", "val/top1"), ("top5", "val/top5")),
}

INSTALL_HINT = "pip install tensorboard (or pip install advise[tensorboard])"


class TensorBoardSink:
    """Writes each metrics row (`write`) as scalars to event files in `log_dir`.

    step rows -> train/loss, train/acc, train/lr; epoch rows -> epoch/loss, epoch/acc,
    epoch/data_share; val rows -> val/top1, val/top5 (accuracies in percent), all at global
    step `record["step"]` and at the row's wall-clock `time` when it has one. A key the row
    lacks (no loss on a step without an update) or a row of another kind is skipped; legacy
    rows (no `kind`) are read as `advise.plot.normalise_row` reads them. Epoch and val rows
    are flushed at once, so a running TensorBoard shows them without waiting.
    """

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                f"train.tensorboard needs the tensorboard package: {INSTALL_HINT} "
                f"(import failed: {error})"
            ) from error
        self.log_dir = Path(log_dir)
        self._writer: Any = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, record: dict[str, Any]) -> None:
        """Add the row's scalars (see the class docstring); a row without `step` is skipped."""
        if self._writer is None:
            raise RuntimeError(f"TensorBoardSink({self.log_dir}) is closed")
        row = normalise_row(record)
        step = row.get("step")
        if not isinstance(step, int):
            return
        walltime = row.get("time")
        for key, tag in TAGS.get(row["kind"], ()):
            value = row.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(tag, float(value), global_step=step, walltime=walltime)
        if row["kind"] in ("epoch", "val"):
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (a second call does nothing)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
