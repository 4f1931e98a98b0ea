# Entry points for a fresh machine: `make setup`, `make test`, `make bench`.
.PHONY: setup test bench firmware kernels

setup:
	scripts/setup.sh

test:
	python3 -m pytest -q

bench:
	python3 -m tinyvmm bench

firmware:
	$(MAKE) -C firmware

kernels:
	$(MAKE) -C kernels
