"""`emorec` command line: a thin layer over the library API.

Each sub-module registers its sub-commands and imports the heavy library code (torch, timm)
only inside the handler, so `emorec --help` and `emorec data check` start quickly.
"""

from __future__ import annotations

import argparse
import os
import sys

from emorec import __version__
from emorec.errors import EmorecError

# Sub-command modules, in the order they appear in `emorec --help`.
_COMMAND_MODULES = ("data", "train", "fit", "evaluate", "predict", "export", "explain", "serve", "features", "models")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="emorec", description="Train, evaluate and serve image emotion classifiers.")
    parser.add_argument("--version", action="version", version=f"emorec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"emorec.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads its OpenMP runtime: spinning waits make every parallel op wait for a
    # descheduled sibling thread on a busy machine. Measured on 2 shared cores at load 8-11:
    # head-only epochs on Emotion6 took 33-43 s spinning and 1.2-1.8 s passive. An explicit
    # OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EmorecError as e:
        print(f"emorec: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("emorec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
