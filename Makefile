# Two entry points a new user needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/datasets/emotion6
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench models clean

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

# Without ../shared (and no DATA= given) the demo runs the built-in models on sample photos;
# a DATA= that does not exist is an error, never a quiet switch to something else.
demo: $(STAMP)
ifeq ($(origin DATA),file)
	@if [ -e "$(DATA)" ]; then $(BIN)/emorec demo --data "$(DATA)"; else \
	  echo "$(DATA) not found: running the built-in models on sample photos (DATA=PATH trains on your data)"; \
	  $(BIN)/emorec demo --builtin; fi
else
	$(BIN)/emorec demo --data "$(DATA)"
endif

# Re-create the built-in models from ../shared with their cards' commands (hours on a CPU; resumable).
models: $(STAMP)
	$(BIN)/emorec models build faces
	$(BIN)/emorec models build photos

test: $(STAMP)
	# one BLAS thread per process: two xdist workers on 2 cores, more threads only thrash
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
