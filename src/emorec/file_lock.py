"""One process at a time: an advisory lock on a file, for work that processes sharing a folder
must not do at once.

Used where several processes on one machine share a folder: a feature cache that two `emorec
fit` processes sharing a search would both extract (the second waits and then reads it; without
the lock both extracted every image, benchmarks/bench_fit_workers.py showed it), and the end of
such a search, where both would replace OUTPUT/best/ and write its test report into one folder.
`flock` is dropped by the kernel when its holder dies, so a killed process never leaves a stale
lock. Where `fcntl` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

POLL_S = 0.5


@contextmanager
def exclusive(lock_file: Path, on_wait: Callable[[], None] | None = None,
              give_up: Callable[[float], None] | None = None) -> Iterator[None]:
    """Hold the lock on `lock_file` (created if needed) for the block. While another process
    holds it, wait: `on_wait()` is called once when waiting starts, `give_up(waited_s)` at each
    poll and may raise to stop waiting (a deadline)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, one writer is up to the user
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        started, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait()
                told = True
                if give_up is not None:
                    give_up(time.monotonic() - started)
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def cache_writer_lock(root: Path, log: Callable[[str], None], give_up: Callable[[float], None] | None = None):
    """The lock of cache folder `root` (the file `.<name>.lock` beside it), logging once while waiting."""
    return exclusive(root.parent / f".{root.name}.lock",
                     lambda: log(f"another process is extracting into {root}: waiting for it to finish"), give_up)
