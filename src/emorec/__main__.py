"""`python -m emorec`, `torchrun -m emorec` and the `emorec` command: the process entry point."""

from __future__ import annotations

import os
import sys

from emorec.cli import main


def entry() -> None:
    """Run the CLI and end the process with its exit code.

    A torchrun rank (WORLD_SIZE > 1) ends without the interpreter's teardown (`os._exit`, after
    flushing its streams and logs). ProcessGroupGloo's worker threads free a finished collective
    only after the caller has returned from it, and freeing one that holds a tensor Python created
    needs the GIL. When that happens while the interpreter is finalizing, Python ends the thread,
    and the C++ runtime aborts the rank ("terminate called without an active exception", SIGABRT)
    after its output is already complete, so torchrun reports the job failed. It hit about 1 in 30
    two-rank `torchrun -m emorec predict` jobs on 2 loaded cores. The core dump shows a gloo
    worker in ~AsyncBarrierWork -> ~AsyncAllgatherWork -> decref_pyobject -> take_gil ->
    pthread_exit, while the main thread was in Py_FinalizeEx.
    """
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
