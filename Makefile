# Entry points for a fresh machine: `make setup`, `make test`, `make bench`.
.PHONY: setup test bench firmware kernels

setup:
	scripts/setup.sh

test:
	.venv/bin/python -m pytest -q

bench:
	.venv/bin/python -m tinyvmm bench

firmware:
	$(MAKE) -C firmware

kernels:
	$(MAKE) -C kernels
