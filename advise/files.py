"""Crash-safe file writing: the one helper every file a reader must see whole goes through."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | bytearray | memoryview | str) -> None:
    """Replace `path` by `data` so that readers see the old or the new content, never a part,
    even after a crash or a power cut. A str is written as UTF-8; a memoryview (e.g. of a
    `BytesIO`) is written without a copy.

    The data goes to a temporary file in the same folder (`.<name>.<random>.tmp`), flushed
    and fsynced, is renamed over `path` (`os.replace`, atomic on POSIX), and the folder is
    fsynced so that the rename is durable. A failure removes the temporary file. The new file
    gets the permissions a plain `open(path, "w")` would give it (0o666 less the umask).
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary, descriptor = _create_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new file beside `path` that no other writer can be using (created exclusively)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def fsync_directory(folder: str | Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
