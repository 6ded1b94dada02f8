"""Video files: PyAV encoding and exact-frame decoding."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# Codec names as PyAV knows them, by the container they are written into.
CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}


def write_video(path: str | Path, frames: np.ndarray, fps: int = 25, crf: int = 18) -> Path:
    """Encode `frames` ([T, H, W, 3] uint8 RGB) into `path`; the codec follows the suffix.

    H and W must be even (yuv420p). `crf` sets quality for H.264 / VP9 (lower is better).
    """
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"unsupported video suffix {path.suffix!r}; use one of {sorted(CODECS)}")
    height, width = frames.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.options = {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
