"""Benchmarks of tinyvmm, each a module run from the repository root: `python3 -m benchmarks.NAME`
(NAME: completions, fw_cfg_bench, pio_exits, virtio_blk), so that this checkout's tinyvmm and
the tests' guest builder (tests/guest_build.py, imported as tests.guest_build) are the ones used."""
