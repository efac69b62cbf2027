"""Run under torchrun by test_distributed_predict.py:

    distributed_predict_worker.py K ARGS...   `emorec predict ARGS` whose rank 1 dies after K rows

Rank 1 exits with os._exit (no clean-up, buffered rows lost, as under kill -9) when its K-th row
comes out of the model, after writing half a record at the end of its part, as a kill in the
middle of a write leaves it.
"""

from __future__ import annotations

import os
import sys

import emorec.serving.distributed_predict as distributed_predict
from emorec.cli import main


def die_after(rows: int, output: str) -> None:
    real = distributed_predict.predict_paths

    def predict_paths(*args, **kwargs):
        for n, item in enumerate(real(*args, **kwargs)):
            if n == rows:
                [part] = distributed_predict.parts_folder_of(output).glob("rank-00001-*")
                with open(part, "ab") as f:
                    f.write(b'{"i":99,"top":[["ang')
                os._exit(1)
            yield item

    distributed_predict.predict_paths = predict_paths


if __name__ == "__main__":
    rows, args = int(sys.argv[1]), sys.argv[2:]
    if os.environ["RANK"] == "1":
        die_after(rows, args[args.index("--output") + 1])
    raise SystemExit(main(args))
