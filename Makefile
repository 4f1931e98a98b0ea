# Entry points for a fresh machine: `make setup`, `make test`, `make lint`, `make bench`,
# `make fuzz-smoke` (every fuzz target for 2 seconds, fuzz/README.md).
# `make test-slow` the tests the default run leaves out (whole-firmware and distribution boots).
.PHONY: setup test test-slow lint bench firmware kernels fuzz-smoke

setup:
	scripts/setup.sh

test:
	.venv/bin/python -m pytest -q

test-slow:
	.venv/bin/python -m pytest -q -m slow

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
