"""`python -m emorec` and `torchrun -m emorec` entry point."""

from emorec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
