"""The process entry point: a torchrun rank ends without the interpreter's teardown, its output intact."""

from __future__ import annotations

import os
import subprocess
import sys

# Runs `python -m emorec ARGS` with an atexit hook: the hook runs only when the interpreter tears down.
PROGRAM = ("import atexit, runpy, sys; atexit.register(lambda: print('teardown ran', file=sys.stderr)); "
           "sys.argv = ['emorec', *sys.argv[1:]]; runpy.run_module('emorec', run_name='__main__')")


def run(*args: str, world_size: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    if world_size:
        env["WORLD_SIZE"] = world_size
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_torchrun_rank_skips_the_teardown_and_keeps_its_output_and_exit_code():
    alone, rank = run("models", world_size=None), run("models", world_size="2")
    assert alone.returncode == rank.returncode == 0
    assert "teardown ran" in alone.stderr and "teardown ran" not in rank.stderr
    assert "faces" in rank.stdout and rank.stdout == alone.stdout  # flushed before the process ended

    failed = run("export", "/no/such/run", world_size="2")
    assert failed.returncode not in (0, None) and "emorec: error:" in failed.stderr
    assert "teardown ran" not in failed.stderr
