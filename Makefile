# Two commands on a fresh machine: `make run` (the service, embedded) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Where torch comes from. Empty: pip's default, which on a fresh Linux x86_64 machine is PyPI's
# CUDA build (several GB of nvidia-* wheels) and on this project's dev/CI machines a local CPU
# wheel. `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU build.
TORCH_INDEX ?=
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: run test test-fast install bench compose-check gpu-check gpu-wheels clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so no dependency can pull another build
	$(BIN)/python -m pip install -q torch==2.13.0 $(TORCH_INDEX_ARG)
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/descent up

# Test processes keep their compiled (and assertion-rewritten) modules in __pycache__ even where
# the environment says not to (PYTHONDONTWRITEBYTECODE): otherwise each of them compiles the whole
# suite again, 3-4 s a process.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

# Two processes (a module's tests stay together: its servers and stacks are built once), given
# the modules longest first as they last ran (tests/conftest.py orders them; xdist would otherwise
# put the modules of few tests, the longest among them, last); a test process that dies fails the
# run at once rather than leaving its tests to wait.
test: $(STAMP)
	$(PYTEST) -q -n 2 --dist loadfile --no-loadscope-reorder --max-worker-restart 0 --durations=25

# Everything but the suites that start servers, worker processes or builds (marker `integration`)
# and the in-process tests that take seconds each (marker `slow`); `make test` runs them all.
test-fast: $(STAMP)
	$(PYTEST) -q -m "not integration and not slow" -n 2

# One table of ratios measured in this run (needs PostgreSQL + Redis, and psql); the per-benchmark
# scripts (benchmarks/engine.py, e2e.py, sweep.py, burst.py, history_export.py, waiters.py) run alone too.
bench: $(STAMP)
	$(BIN)/python benchmarks/table.py

compose-check:
	docker-compose config -q
	docker-compose --profile gpu config -q

# The GPU path on a machine with CUDA (without CUDA: the CPU half, saying so); gpu-wheels first
# fetches, on a machine with network, the runtime packages a bare CUDA machine lacks into .whl/.
gpu-check:
	scripts/gpu_check.sh

gpu-wheels: $(STAMP)
	scripts/fetch_gpu_wheels.sh

clean:
	rm -rf $(VENV) .descent
