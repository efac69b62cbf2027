"""Per-rank part files of a sharded job (`shards.py`): appended and flushed a batch at a time,
resumed after a kill, read back by rank 0 to merge.

A part holds one record per input of its rank's shard, in shard order, readable or not (an
unreadable image gets a record saying so), so a part is always a prefix of its shard and resuming
is skipping as many inputs as the part has good records. A record is good when it is whole and
names the input expected at its place; the first that is not (a line torn by a kill, the zeros a
crash can leave behind) ends the part, and the file is cut there before new records follow.
Resuming also starts at a batch boundary: the ranks then run the very batches of an uninterrupted
run, so the numbers, not just the rows, come out the same.

Folder:
    job.json                      what the parts belong to: ranks, inputs, model, settings
    [NAME.]rank-00001-of-00004.EXT  rank 1's records: JSON lines (`.jsonl`) or fixed-size binary
                                  records of a numpy structured dtype (`.bin`)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emorec.errors import EmorecError
from emorec.shards import Shard, broadcast_object

JOB_FILE = "job.json"


class PartsFolder:
    """The folder of one sharded job's parts; `job` is what must match for old parts to be reused
    (plain JSON data: the world size, the inputs' hash, the model, the settings)."""

    def __init__(self, folder: str | Path, job: dict[str, Any], shard: Shard):
        self.folder = Path(folder)
        self.job = json.loads(json.dumps(job))  # as it reads back from job.json: lists, not tuples
        self.shard = shard

    def claim(self) -> None:
        """Start the job, or go on with the parts already there. Rank 0 alone looks at the folder
        and every rank gets its verdict: refused (EmorecError naming the folder and the fix) when
        the parts belong to another job. A rank whose own job differs from rank 0's (it sees
        another input list) refuses as well, rather than writing rows for other images."""
        verdict = self._check_or_start() if self.shard.is_main else None
        verdict, main_job = broadcast_object((verdict, self.job))
        if verdict:
            raise EmorecError(verdict)
        if main_job != self.job:
            raise EmorecError(f"rank {self.shard.rank} sees another job than rank 0 (its {', '.join(_differ(main_job, self.job))} "
                              "differ); give every rank the same inputs, e.g. one --inputs-from list on a shared file system")

    def _check_or_start(self) -> str | None:
        job_file = self.folder / JOB_FILE
        if job_file.is_file():
            try:
                old = json.loads(job_file.read_text())
            except ValueError:
                old = {}
            if old == self.job:
                return None
            return (f"{self.folder} holds the parts of another job (its {', '.join(_differ(old, self.job))} differ); "
                    f"run the command that started it to resume it, or delete {self.folder} to start this one")
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*rank-*"):  # parts without a job.json: from nothing known
            stale.unlink()
        tmp = job_file.with_name(JOB_FILE + ".tmp")
        tmp.write_text(json.dumps(self.job, indent=1))
        os.replace(tmp, job_file)
        return None

    def path(self, rank: int | None = None, name: str = "", suffix: str = ".jsonl") -> Path:
        """Rank `rank`'s (default: this rank's) part file, `name` telling apart several parts of a rank."""
        rank = self.shard.rank if rank is None else rank
        prefix = f"{name}." if name else ""
        return self.folder / f"{prefix}rank-{rank:05d}-of-{self.shard.world_size:05d}{suffix}"

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _differ(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) or ["settings"]


class _Part:
    """An open part: cut to its good records, aligned down to a batch boundary, open for appending."""

    def __init__(self, path: Path, ends: Sequence[int], batch_size: int):
        """`ends[n]`: the byte offset where good record n ends."""
        self.path = path
        self.done = len(ends) - len(ends) % batch_size
        keep = ends[self.done - 1] if self.done else 0
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.truncate(keep)
        self.file = open(path, "ab")

    def _write(self, data: bytes) -> None:
        # Flushed per batch: a killed process loses at most the batch in flight.
        self.file.write(data)
        self.file.flush()

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class JsonLinesPart(_Part):
    """A rank's records as JSON lines, each with `"i"`: the index of its input in the job."""

    def __init__(self, path: str | Path, expected: Sequence[int], batch_size: int):
        path = Path(path)
        ends: list[int] = []
        if path.is_file():
            with open(path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n") or len(ends) >= len(expected) or _index(line) != expected[len(ends)]:
                        break
                    ends.append((ends[-1] if ends else 0) + len(line))
        super().__init__(path, ends, batch_size)

    def append(self, records: list[dict[str, Any]]) -> None:
        self._write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode())


def _index(line: bytes) -> int | None:
    try:
        return json.loads(line).get("i")
    except (ValueError, AttributeError):
        return None


def read_json_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a finished part, in order."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


class ArrayPart(_Part):
    """A rank's records as fixed-size binary records of `dtype` (numpy structured, with a `"row"`
    field: the index of its input), for vectors too large to write as text."""

    def __init__(self, path: str | Path, dtype: np.dtype, expected: Sequence[int], batch_size: int):
        path = Path(path)
        whole = min(path.stat().st_size // dtype.itemsize if path.is_file() else 0, len(expected))
        good = 0
        if whole:
            rows = np.memmap(path, dtype=dtype, mode="r", shape=(whole,))["row"]
            matches = rows == np.asarray(expected[:whole])
            good = whole if matches.all() else int(np.argmin(matches))
            del rows
        super().__init__(path, range(dtype.itemsize, (good + 1) * dtype.itemsize, dtype.itemsize), batch_size)

    def append(self, records: np.ndarray) -> None:
        self._write(records.tobytes())


def read_array_part(path: str | Path, dtype: np.dtype, count: int) -> np.ndarray:
    """The `count` records of a finished part, memory-mapped; EmorecError when it holds fewer
    (rank 0 cannot see what another rank wrote)."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size < count * dtype.itemsize:
        raise_unseen(path)
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def raise_unseen(path: Path) -> None:
    raise EmorecError(f"rank 0 cannot see all of {path}, which another rank wrote; put the output on a file system "
                      "every node shares (the same path on each)")
