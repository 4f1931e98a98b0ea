"""Fuzz target: the fw_cfg device through its ports (selector, data, DMA address), its MMIO
window and DMA descriptors the input places in guest memory (tinyvmm.fw_cfg.device)."""

import struct

import atheris
from common import (
    FW_CFG_MMIO_BASE,
    GuestMemoryError,
    Platform,
    access,
    check_ram_written,
    guest_address,
    main,
    poke,
    run_ops,
    store,
)

with atheris.instrument_imports():
    from tinyvmm.fw_cfg.device import FW_CFG_DMA_CTL_READ

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
    try:        # what the device will read, wherever the descriptor lies
        control, length, address = struct.unpack(">IIQ", b"".join(platform.memory.views(descriptor, 16)))
    except GuestMemoryError:
        control = 0
    ram, fw_cfg = bytes(platform.ram_backing), platform.fw_cfg
    transfers, errors = fw_cfg.dma_transfers, fw_cfg.dma_errors
    if fdp.ConsumeBool():
        platform.pio.write(0x514, 4, (descriptor >> 32).to_bytes(4, "big"))
        platform.pio.write(0x518, 4, (descriptor & 0xFFFFFFFF).to_bytes(4, "big"))
    else:
        platform.mmio.write(FW_CFG_MMIO_BASE + 16, 8, descriptor.to_bytes(8, "big"))
    assert fw_cfg.dma_transfers == transfers + 1
    # RAM changed only in the control word and, for a READ that succeeded, its buffer: a
    # failed transfer leaves memory untouched (tinyvmm.fw_cfg.device).
    written = [(descriptor, 4)]
    if control & FW_CFG_DMA_CTL_READ and fw_cfg.dma_errors == errors:
        written.append((address, length))
    check_ram_written(platform, ram, written, "a DMA transfer")


OPS = [ports, mmio, dma, poke]


def test_one_input(data: bytes) -> None:
    run_ops(Platform(), atheris.FuzzedDataProvider(data), OPS)


if __name__ == "__main__":
    main(test_one_input, "fw_cfg")
