"""`emorec predict` under torchrun: each rank predicts its shard of the inputs (`shards.py`) into
a part file, and rank 0 merges the parts into the one output, in input order, written to a
temporary file and renamed into place.

The parts keep each image's labels with their probabilities at full precision (or why the image
was skipped), and the merge writes them through the same `PredictionWriter` a single process
uses, so the output has the same columns and rows. A killed job started again with the same
command goes on from the parts (`part_files.py`) in OUTPUT.parts/, which is deleted once the
output is in place.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emorec.data.inputs import Failure
from emorec.part_files import JsonLinesPart, PartsFolder, raise_unseen, read_json_lines
from emorec.prediction_rows import Prediction, PredictionWriter
from emorec.serving.predict import predict_paths
from emorec.shards import Shard, barrier, gather


@dataclass
class ShardedPrediction:
    """What a sharded prediction did. `written` and `failures` (unreadable images, in input order)
    cover the whole job and are known on rank 0 only; `speeds` holds each rank's (images, seconds)
    of this session, `resumed` the rows found in the parts from an earlier session."""

    written: int = 0
    failures: list[Failure] = field(default_factory=list)
    speeds: list[tuple[int, float]] = field(default_factory=list)
    resumed: int = 0


def parts_folder_of(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


def inputs_digest(paths: list[Path]) -> str:
    """Hash of the input list: parts of another list must not be merged into this one's output."""
    h = hashlib.sha256()
    for path in paths:
        h.update(f"{path}\n".encode())
    return h.hexdigest()


def predict_sharded(predictor, paths: list[Path], output: str | Path, shard: Shard, *, model_id: dict[str, Any],
                    top_k: int = 3, tta: bool | str = False, batch_size: int = 32,
                    progress: bool = True) -> ShardedPrediction:
    """Predict this rank's shard of `paths` into its part and, on rank 0, merge every part into
    `output` (.csv or .jsonl). Every rank must call it with the same arguments; `model_id` names
    the model for the parts' job (with the inputs, ranks, top-k and TTA: what must match for a
    restarted job to reuse them)."""
    from tqdm import tqdm

    output = Path(output)
    job = {"world_size": shard.world_size, "inputs": len(paths), "inputs_sha256": inputs_digest(paths),
           "top_k": top_k, "tta": tta, "output": output.name, **model_id}
    parts = PartsFolder(parts_folder_of(output), job, shard)
    parts.claim()
    mine = shard.positions(len(paths))
    part = JsonLinesPart(parts.path(), mine, batch_size)
    todo = mine[part.done:]
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    predictions = predict_paths(predictor, [paths[i] for i in todo], top_k, tta, batch_size)
    try:
        with tqdm(total=len(todo), desc=f"predict (rank 0 of {shard.world_size})", leave=False, dynamic_ncols=True,
                  disable=not (progress and shard.is_main)) as bar:
            # predict_paths decodes and runs batch_size images at a time from the start of `todo`;
            # writing the same batches keeps the parts batch-aligned for an exact resume.
            for i, item in zip(todo, predictions):
                records.append({"i": i, "skipped": item.reason} if isinstance(item, Failure) else
                               {"i": i, "top": [[label, p] for label, p in item.top]})
                if len(records) == batch_size:
                    part.append(records)
                    bar.update(len(records))
                    records = []
            part.append(records)
            bar.update(len(records))
    finally:
        predictions.close()  # its decoding threads end here, not at interpreter exit
        part.close()
    done = gather((len(todo), time.perf_counter() - started, part.done))  # every part is complete
    result = ShardedPrediction(speeds=[(n, s) for n, s, _ in done], resumed=sum(d for *_, d in done))
    if shard.is_main:
        result.written, result.failures = merge_parts(parts, paths, output, top_k)
        parts.remove()
    barrier()  # the ranks leave the process group together, as the trainer's do
    return result


def merge_parts(parts: PartsFolder, paths: list[Path], output: Path, top_k: int) -> tuple[int, list[Failure]]:
    """Write every rank's records to `output` in input order; (rows written, failures)."""
    world = parts.shard.world_size
    for rank in range(world):
        if not parts.path(rank).is_file():
            raise_unseen(parts.path(rank))
    readers = [read_json_lines(parts.path(rank)) for rank in range(world)]
    tmp = output.with_name(f".{output.stem}.merging{output.suffix}")  # the suffix tells the writer the format
    written, failures = 0, []
    try:
        with PredictionWriter(tmp, top_k) as writer:
            for i, path in enumerate(paths):
                record = next(readers[i % world], None)
                if record is None or record["i"] != i:
                    raise_unseen(parts.path(i % world))
                if "skipped" in record:
                    failures.append(Failure(str(path), record["skipped"]))
                else:
                    writer.write(Prediction(str(path), [(label, p) for label, p in record["top"]]))
                    written += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for reader in readers:
            reader.close()
    os.replace(tmp, output)
    return written, failures
