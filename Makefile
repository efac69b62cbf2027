# Two entry points a new user needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/datasets/emotion6
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision pinned to the builds that lie on the CI machine's disk; installed first so that
	# `pip install -e .` (torch>=2.4) keeps them instead of resolving a newer release
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	# MTCNN face detector; --no-deps: its metadata pins an old torch (see pyproject's faces-no-deps)
	$(BIN)/pip install -q --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/emorec demo --data "$(DATA)"

test: $(STAMP)
	# one BLAS thread per process: two xdist workers on 2 cores, more threads only thrash
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
