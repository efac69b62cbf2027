"""One writer per feature cache: processes extracting the same cache on one machine take turns.

Why: two `emorec fit` processes sharing a search (`--storage`, same OUTPUT and cache folder) both
start with the same extraction; without a lock each extracted every image (the two-process run of
benchmarks/bench_fit_workers.py did), and two writers into one cache folder could leave a mixed
one. The one that waits then finds the finished cache and reads it. An advisory `flock` on a file
beside the cache folder: the kernel drops it when its holder dies, so a killed extraction never
leaves a stale lock behind. Where `fcntl` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

POLL_S = 0.5


@contextmanager
def cache_writer_lock(root: Path, log: Callable[[str], None],
                      give_up: Callable[[float], None] | None = None) -> Iterator[None]:
    """Hold the lock of cache folder `root` (the file `.<name>.lock` beside it) for the block.
    While another process holds it, wait, logging once; `give_up(waited_s)` is called at each
    poll and may raise to stop waiting (the extraction's deadline)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, one writer is up to the user
        yield
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a+") as handle:
        started, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    log(f"another process is extracting into {root}: waiting for it to finish")
                    told = True
                if give_up is not None:
                    give_up(time.monotonic() - started)
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
