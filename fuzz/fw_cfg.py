"""Fuzz target: the fw_cfg device through its ports (selector, data, DMA address), its MMIO
window and DMA descriptors the input places in guest memory (tinyvmm.fw_cfg.device)."""

import struct

import atheris
from common import FW_CFG_MMIO_BASE, Platform, access, guest_address, main, poke, run_ops, store

PORTS = [0x510, 0x511, 0x514, 0x518]


def ports(platform, fdp):
    access(platform, fdp, platform.pio, PORTS)


def mmio(platform, fdp):
    access(platform, fdp, platform.mmio, [FW_CFG_MMIO_BASE + offset for offset in (0, 8, 16, 20)])


def dma(platform, fdp):
    """A descriptor (big-endian control, length, address) at one guest address, then the
    write of that address that starts the transfer, through the ports or the MMIO window."""
    descriptor = guest_address(fdp)
    control = fdp.ConsumeIntInRange(0, 0x1F) | fdp.ConsumeIntInRange(0, 0x40) << 16
    length = fdp.PickValueInList([0, 1, 8, 20, 0x1000, fdp.ConsumeIntInRange(0, 1 << 32)]) & 0xFFFFFFFF
    store(platform, descriptor, struct.pack(">IIQ", control, length, guest_address(fdp)))
    if fdp.ConsumeBool():
        platform.pio.write(0x514, 4, (descriptor >> 32).to_bytes(4, "big"))
        platform.pio.write(0x518, 4, (descriptor & 0xFFFFFFFF).to_bytes(4, "big"))
    else:
        platform.mmio.write(FW_CFG_MMIO_BASE + 16, 8, descriptor.to_bytes(8, "big"))


OPS = [ports, mmio, dma, poke]


def test_one_input(data: bytes) -> None:
    run_ops(Platform(), atheris.FuzzedDataProvider(data), OPS)


if __name__ == "__main__":
    main(test_one_input, "fw_cfg")
