"""Fuzz target: the legacy ISA devices on their ports: the 16550 UART (0x3F8), the i8042
keyboard controller (0x60/0x64), the CMOS/RTC (0x70/0x71), port 0x92 and the POST port."""

import atheris
from common import Platform, access, main, run_ops

PORTS = [0x3F8, 0x3FC, 0x60, 0x64, 0x70, 0x92, 0x80]


def ports(platform, fdp):
    access(platform, fdp, platform.pio, PORTS)


OPS = [ports]


def test_one_input(data: bytes) -> None:
    run_ops(Platform(), atheris.FuzzedDataProvider(data), OPS)


if __name__ == "__main__":
    main(test_one_input, "legacy")
