"""A guest-side fw_cfg client for tests: what firmware does, done through a Bus and a GuestMemory.

It speaks only to bus addresses (ports 0x510/0x511/0x514/0x518, or an MMIO
window), never to the device object, so tests exercise the same path a guest
takes. DMA descriptors are written into guest memory at `scratch`.
"""

import struct

from tinyvmm import layout
from tinyvmm.fw_cfg.device import (
    DMA_DESCRIPTOR,
    FW_CFG_DMA_CTL_READ,
    FW_CFG_DMA_CTL_SELECT,
    MMIO_DATA,
    MMIO_DMA,
    MMIO_SELECTOR,
)
from tinyvmm.fw_cfg.items import FILE_DIR_ENTRY, FW_CFG_FILE_DIR

SELECTOR_PORT = layout.PORTS["fw_cfg"][0]
DATA_PORT = SELECTOR_PORT + 1
DMA_PORT = layout.PORTS["fw_cfg_dma"][0]


class PortClient:
    """fw_cfg through the x86 ports, as SeaBIOS and the linuxboot ROMs use it."""

    def __init__(self, pio, memory=None, scratch: int = 0x1000):
        self.pio = pio
        self.memory = memory
        self.scratch = scratch

    def select(self, key: int) -> None:
        self.pio.write(SELECTOR_PORT, 2, key.to_bytes(2, "little"))

    def read(self, count: int) -> bytes:
        """One `rep insb` of `count` bytes (one exit)."""
        return self.pio.read(DATA_PORT, 1, count)

    def read_bytewise(self, count: int) -> bytes:
        return b"".join(self.pio.read(DATA_PORT, 1) for _ in range(count))

    def dma_signature(self) -> bytes:
        return self.pio.read(DMA_PORT, 4) + self.pio.read(DMA_PORT + 4, 4)

    def start_dma(self, descriptor: int, high: int | None = None) -> None:
        if high is not None:
            self.pio.write(DMA_PORT, 4, high.to_bytes(4, "big"))
        self.pio.write(DMA_PORT + 4, 4, (descriptor & 0xFFFFFFFF).to_bytes(4, "big"))

    def dma(self, control: int, length: int, address: int, descriptor: int | None = None) -> int:
        """Write a descriptor, start it, return the control word the device wrote back."""
        descriptor = self.scratch if descriptor is None else descriptor
        self.memory.write(descriptor, DMA_DESCRIPTOR.pack(control, length, address))
        self.start_dma(descriptor)
        return struct.unpack(">I", self.memory.read(descriptor, 4))[0]

    def dma_read(self, key: int, length: int, address: int) -> int:
        return self.dma(key << 16 | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, length, address)

    def item(self, key: int, size: int) -> bytes:
        self.select(key)
        return self.read(size)

    def file_dir(self) -> list[tuple[str, int, int]]:
        """(name, key, size) of every file, in directory order."""
        self.select(FW_CFG_FILE_DIR)
        count = struct.unpack(">I", self.read(4))[0]
        files = []
        for _ in range(count):
            size, key, _, name = FILE_DIR_ENTRY.unpack(self.read(FILE_DIR_ENTRY.size))
            files.append((name.rstrip(b"\0").decode(), key, size))
        return files

    def find(self, name: str) -> tuple[int, int]:
        for file_name, key, size in self.file_dir():
            if file_name == name:
                return key, size
        raise KeyError(name)


class MmioClient(PortClient):
    """fw_cfg through the MMIO window, as Linux's driver uses it on Arm `virt`."""

    def __init__(self, mmio, base: int, memory=None, scratch: int = 0x1000, width: int = 8):
        super().__init__(None, memory, scratch)
        self.mmio = mmio
        self.base = base
        self.width = width

    def select(self, key: int) -> None:
        self.mmio.write(self.base + MMIO_SELECTOR, 2, key.to_bytes(2, "big"))

    def read(self, count: int) -> bytes:
        chunks = []
        while count > 0:
            width = min(self.width, count)
            width = 1 << (width.bit_length() - 1)        # 8, 4, 2 or 1, as a CPU would
            chunks.append(self.mmio.read(self.base + MMIO_DATA, width))
            count -= width
        return b"".join(chunks)

    def read_bytewise(self, count: int) -> bytes:
        return b"".join(self.mmio.read(self.base + MMIO_DATA, 1) for _ in range(count))

    def dma_signature(self) -> bytes:
        return self.mmio.read(self.base + MMIO_DMA, 8)

    def start_dma(self, descriptor: int, high: int | None = None) -> None:
        if high is None:
            self.mmio.write(self.base + MMIO_DMA, 8, descriptor.to_bytes(8, "big"))
        else:
            self.mmio.write(self.base + MMIO_DMA, 4, high.to_bytes(4, "big"))
            self.mmio.write(self.base + MMIO_DMA + 4, 4,
                            (descriptor & 0xFFFFFFFF).to_bytes(4, "big"))
