# Entry points for a fresh machine: `make setup`, `make test`, `make lint`, `make bench`,
# `make fuzz-smoke` (every fuzz target for 2 seconds, fuzz/README.md).
.PHONY: setup test lint bench firmware kernels fuzz-smoke

setup:
	scripts/setup.sh

test:
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check tinyvmm tests benchmarks examples fuzz
	.venv/bin/mypy

fuzz-smoke:
	.venv/bin/python fuzz/run.py --seconds 2 --fresh

bench:
	.venv/bin/python -m tinyvmm bench

firmware:
	$(MAKE) -C firmware

kernels:
	$(MAKE) -C kernels
