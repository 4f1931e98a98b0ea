# Entry points for a fresh machine: `make setup`, `make test`, `make lint`, `make bench`.
.PHONY: setup test lint bench firmware kernels

setup:
	scripts/setup.sh

test:
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check tinyvmm tests benchmarks examples
	.venv/bin/mypy

bench:
	.venv/bin/python -m tinyvmm bench

firmware:
	$(MAKE) -C firmware

kernels:
	$(MAKE) -C kernels
