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


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock (`locked_folder`)."""

    def __init__(self, folder: Path, holder: str) -> None:
        super().__init__(
            f"{folder} is in use by another advise process ({holder}); wait for it to end, "
            "stop it, or choose another --out"
        )
        self.folder, self.holder = folder, holder


LOCK_NAME = ".advise.lock"


@contextlib.contextmanager
def locked_folder(folder: str | Path):
    """Hold an exclusive lock on `folder` (created if needed) for the `with` block.

    The lock is the OS's (`flock` on `folder/.advise.lock`): it dies with the process that
    holds it, so a killed run never leaves a stale lock behind. A second holder fails at once
    with `FolderBusy`, naming the first one's PID (written in the lock file). The lock file
    itself stays: an unlocked file means nothing.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip()
            raise FolderBusy(folder, holder or "PID unknown") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"PID {os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
