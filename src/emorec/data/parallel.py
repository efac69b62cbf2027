"""Map a function over many files in a process pool, in order, with a tqdm bar on stderr."""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def start_method() -> str:
    import multiprocessing as mp

    # fork starts workers cheaply on Linux; macOS and Windows are only safe with spawn.
    return "fork" if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods() else "spawn"


def map_with_progress(fn: Callable[[T], R], items: Sequence[T], workers: int = 2, desc: str = "",
                      progress: bool = True, min_per_worker: int = 64) -> list[R]:
    """[fn(x) for x in items], in `workers` processes when there is enough work to pay for them.

    Chunks are large (per-item work can be ~0.1 ms for small images) so the inter-process cost stays
    below the work itself, yet small enough that the bar moves.
    """
    from tqdm import tqdm

    workers = max(1, min(workers, os.cpu_count() or 1, len(items) // min_per_worker or 1))
    results: list[R] = []
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1:
            for x in items:
                results.append(fn(x))
                bar.update(1)
            return results
        import multiprocessing as mp

        chunk = max(1, min(512, len(items) // (workers * 16)))
        with mp.get_context(start_method()).Pool(workers) as pool:
            for r in pool.imap(fn, items, chunksize=chunk):
                results.append(r)
                bar.update(1)
    return results
