# cloudhpc: `make demo` brings up the quickstart cluster and runs an MPI job on it;
# `make test` runs lint, type checks and the whole test suite (unit + real clusters).
PY := .venv/bin/python
CLI := .venv/bin/cloudhpc

.PHONY: demo test install lint unit integration clean-demo bench

install:
	bash scripts/install.sh

demo: install
	$(CLI) up examples/quickstart.yaml
	$(CLI) status -c quickstart
	$(CLI) submit -c quickstart examples/jobs/mpi_pi.sh --nodes 2 --ntasks-per-node 2 --wait
	@echo "The cluster stays up: try '$(CLI) status', then '$(CLI) down quickstart'."

lint: install
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

test: lint
	$(PY) -m pytest -q tests

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

clean-demo:
	$(CLI) down quickstart

bench: install
	cd bench && ../$(PY) cluster_up.py
	cd bench && ../$(PY) throughput.py
	cd bench && ../$(PY) mpi_pingpong.py
	cd bench && ../$(PY) cold_start.py
	cd bench && ../$(PY) burst.py
	cd bench && ../$(PY) registrations.py
	cd bench && ../$(PY) idle_cpu.py
	cd bench && ../$(PY) staging.py
	cd bench && ../$(PY) export.py
