"""advise: video self-supervised learning on top of frozen image foundation models.

The Python API (`advise.api`; torch is imported on first use, so the command line's light
commands stay fast):

    import advise
    model = advise.load("runs/demo/spatial/prp")   # checkpoint, run folder or export
    prediction = model.predict("clip.mp4")         # .classes, .scores, best first
    tokens = model.features("clip.mp4", layer="tmm")
    frames = advise.read_video("clip.mp4", num_frames=8)
    advise.export("runs/demo/spatial/prp", "exported/")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Model", "Prediction", "Skipped", "export", "load", "read_video"]

if TYPE_CHECKING:
    from advise.api import Model, Prediction, Skipped, load, read_video
    from advise.exported import export


def __getattr__(name: str) -> Any:
    if name == "export":
        from advise.exported import export

        return export
    if name in __all__:
        from advise import api

        return getattr(api, name)
    raise AttributeError(f"module 'advise' has no attribute {name!r}")
