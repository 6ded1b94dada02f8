"""Independent runs at once: a few worker processes, each training on one thread.

`advise ablate` and `advise demo` hand their runs here. A run's result depends only on its own
config (every run seeds itself), so running several at once changes what each run computes not
at all, only the wall time; a fine-tuning waits for the pre-training it starts from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Job:
    """One run: `function(*args)` (a module-level function: worker processes import it by
    name), started once every job named in `after` has finished."""

    key: str
    function: Callable[..., Any]
    args: tuple[Any, ...]
    after: tuple[str, ...] = ()


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_jobs(jobs: list[Job], workers: int) -> Iterator[tuple[Job, Any]]:
    """(job, its result) for every job, as each finishes. With `workers` <= 1 in this process,
    in list order (which must put every job after those it waits for); else in `workers`
    processes, starting the waiting job listed first whenever a process is free. A job that
    raises stops the rest: the jobs running finish, no other starts."""
    if workers <= 1:
        for job in jobs:
            yield job, job.function(*job.args)
        return
    import concurrent.futures as futures
    import multiprocessing

    waiting = list(jobs)
    unfinished = {job.key for job in jobs}
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
    with futures.ProcessPoolExecutor(workers, context, initializer=_worker_start) as pool:
        running: dict[futures.Future, Job] = {}
        while waiting or running:
            ready = [job for job in waiting if not unfinished.intersection(job.after)]
            for job in ready[: workers - len(running)]:
                waiting.remove(job)
                running[pool.submit(job.function, *job.args)] = job
            if not running:
                raise ValueError(f"jobs wait for jobs never run: {[j.key for j in waiting]}")
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                unfinished.discard(job.key)
                yield job, future.result()


def _worker_start() -> None:
    """A worker computes on one thread (the others run beside it) and dies with the process
    that started it: a killed `ablate` leaves no run going on in the background, so resuming
    it finds every run folder free."""
    import torch

    torch.set_num_threads(1)
    keep_freed_memory()
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks of up to 32 MiB for reuse, instead of handing each
    large one back to the OS and page-faulting fresh memory in at the next allocation.

    A TMM step on the CPU allocates and frees megabyte-sized activations dozens of times; by
    default glibc serves many of them by mmap, so every step zero-fills new pages. Keeping them
    makes the demo's training step ~20% faster on one thread (scripts/alloc_step.py measures
    it). Only where and how memory is reused changes, never a computed bit. Does nothing on a
    C library without mallopt (macOS, musl)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)  # (its largest allowed value)
    mallopt(m_trim_threshold, 256 << 20)  # free memory kept at the heap's top before trimming
