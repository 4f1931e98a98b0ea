"""The fw_cfg device: selector, data offset and DMA engine, plus its three bus-facing faces.

The state machine (FwCfg) behaves as QEMU's hw/nvram/fw_cfg.c does, as a guest
sees it. The faces are thin: FwCfgIoPorts (0x510 selector, 0x511 data),
FwCfgDmaPorts (0x514/0x518) and FwCfgMmio (the Arm `virt` register layout). Every guest-supplied address goes
through GuestMemory, and a transfer checks its whole guest range before it
copies anything, so a bad descriptor sets ERROR and leaves memory untouched.

The DMA engine ignores PCI bus mastering (tinyvmm.pci.config): fw_cfg is not a
PCI function but a platform device at fixed ports, with no command register
whose MASTER bit could gate it; QEMU's fw_cfg DMA likewise runs whatever any
PCI command register says, and firmware uses it before it enumerates PCI.
"""

import struct
import time

from ..bus import Device
from ..memory import GuestMemoryError, buffer_address, copy_into
from .items import (
    FW_CFG_ENTRY_MASK,
    FW_CFG_ID,
    FW_CFG_SIGNATURE,
    FW_CFG_SIGNATURE_BYTES,
    FW_CFG_VERSION,
    FW_CFG_VERSION_DMA,
    FwCfgItems,
    key_name,
)

TYPE_CHECKING = False           # True for type checkers only
if TYPE_CHECKING:
    from collections.abc import Callable

# DMA control bits (qemu_fw_cfg.h)
FW_CFG_DMA_CTL_ERROR = 0x01
FW_CFG_DMA_CTL_READ = 0x02
FW_CFG_DMA_CTL_SKIP = 0x04
FW_CFG_DMA_CTL_SELECT = 0x08
FW_CFG_DMA_CTL_WRITE = 0x10

DMA_SIGNATURE = b"QEMU CFG"          # what the DMA address register reads as, byte by byte
DMA_DESCRIPTOR = struct.Struct(">IIQ")  # FWCfgDmaAccess: control, length, address (big-endian)

# MMIO register offsets (QEMU's Arm `virt` layout)
MMIO_DATA = 0
MMIO_DATA_WIDTH = 8
MMIO_SELECTOR = 8
MMIO_DMA = 16
MMIO_SIZE = 0x18

_EMPTY = memoryview(b"")
_ZEROS = memoryview(bytes(1 << 20))


def _descriptor_bytes(memory, descriptor: int) -> tuple[memoryview | bytes, memoryview | None]:
    """The 16 descriptor bytes as a read gets them, and a writable view of its control word
    when the whole descriptor lies in one region whose reads and writes reach the same bytes
    (RAM: the common case). A shadow segment that PAM reads from one side and writes to the
    other (the PCI side, or nothing) is read where the guest would read it; GuestMemoryError
    where nothing can be read."""
    try:
        view = memory.view(descriptor, DMA_DESCRIPTOR.size, True)
        if buffer_address(view) == buffer_address(memory.view(descriptor, DMA_DESCRIPTOR.size)):
            return view, view[:4]
    except GuestMemoryError:
        pass
    return b"".join(memory.views(descriptor, DMA_DESCRIPTOR.size)), None


def _zero_fill(view: memoryview) -> None:
    for start in range(0, len(view), len(_ZEROS)):
        chunk = view[start:start + len(_ZEROS)]
        chunk[:] = _ZEROS[:len(chunk)]


class FwCfg:
    """One fw_cfg device: what is selected, where reading stands, and the DMA engine.

    `memory` is the GuestMemory DMA works on (None: every transfer fails).
    `tracer`, if its categories include "fw_cfg", gets each select, data read and
    transfer through tracer.fw_cfg(event, text).
    """

    def __init__(self, items: FwCfgItems, memory=None, dma_enabled: bool = True, tracer=None):
        self.items = items
        self.memory = memory
        self.dma_enabled = dma_enabled
        # Like QEMU's device realize: the device itself provides these two.
        items.add_item(FW_CFG_SIGNATURE, FW_CFG_SIGNATURE_BYTES, replace=True)
        items.add_u32(FW_CFG_ID, FW_CFG_VERSION | (FW_CFG_VERSION_DMA if dma_enabled else 0),
                      replace=True)
        self.dma_transfers = 0                   # transfers started, for timelines and tests
        self.dma_bytes = 0                       # item bytes moved by DMA READ and WRITE
        self.dma_errors = 0                      # transfers that ended with the error bit
        self._trace: Callable[[str, str], object] | None = None
        self.on_select: Callable[[int], object] | None = None   # called with each key selected
        if tracer is not None and "fw_cfg" in getattr(tracer, "categories", ()):
            self._trace = tracer.fw_cfg
            # Only a traced device pays for timing the data-port hot path: the method is
            # swapped on this instance rather than tested on every read.
            self.read_data = self._read_data_traced     # type: ignore[method-assign]
        self.reset()

    def reset(self) -> None:
        self._dma_address = 0
        self.select(FW_CFG_SIGNATURE)

    # --- selector and data register ---------------------------------------------
    def select(self, key: int) -> None:
        """Make `key` current and rewind to its first byte (also for keys with nothing behind them)."""
        key &= 0xFFFF
        self.selected = key
        self._offset = 0
        if key & FW_CFG_ENTRY_MASK >= self.items.max_entry:
            entry = None                         # out of range: QEMU's FW_CFG_INVALID
        else:
            entry = self.items.lookup(key)
            if entry is not None and entry.on_select is not None:
                entry.on_select(entry)
        self._entry = entry
        self._data = entry.data if entry is not None else _EMPTY
        self._length = len(self._data)
        if self.on_select is not None:
            self.on_select(key)
        if self._trace:
            what = entry.name if entry is not None else (
                "invalid" if key & FW_CFG_ENTRY_MASK >= self.items.max_entry else "unpopulated")
            self._trace("select", f"key {key:#06x} ({what}) size {self._length}")

    @property
    def offset(self) -> int:
        return self._offset

    def read_data(self, count: int) -> bytes:
        """The next `count` bytes of the selected item; 0 past its end, where the offset stops."""
        offset = self._offset
        end = offset + count
        if end <= self._length:
            self._offset = end
            return self._data[offset:end].tobytes()
        if offset >= self._length:
            return bytes(count)
        self._offset = self._length
        return self._data[offset:].tobytes() + bytes(end - self._length)

    def _read_data_traced(self, count: int) -> bytes:
        assert self._trace is not None          # installed only with a tracer
        start = time.perf_counter_ns()
        offset = self._offset
        data = FwCfg.read_data(self, count)
        moved = self._offset - offset
        self._trace("read", f"key {self.selected:#06x} ({self._name()}) offset {offset} "
                            f"length {count} moved {moved} in {_micros(start)} us")
        return data

    def _name(self) -> str:
        return self._entry.name if self._entry is not None else key_name(self.selected)

    # --- DMA address register -------------------------------------------------------
    def read_dma_register(self, offset: int, size: int) -> bytes:
        """Reads give the "QEMU CFG" signature, the bytes at `offset`, whatever the alignment: QEMU
        splits a misaligned access into aligned ones, and every read of the register is valid.
        Bytes past the register read as 0."""
        return DMA_SIGNATURE[offset:offset + size].ljust(max(size, 0), b"\0")

    def write_dma_register(self, offset: int, data: bytes) -> None:
        """A big-endian write: the high half stores, the low half (or all 8 bytes) starts a transfer."""
        size = len(data)
        if size == 4 and offset == 0:
            self._dma_address = int.from_bytes(data, "big") << 32
        elif size == 4 and offset == 4:
            self.dma_transfer(self._dma_address | int.from_bytes(data, "big"))
        elif size == 8 and offset == 0:
            self.dma_transfer(int.from_bytes(data, "big"))

    # --- DMA transfer -------------------------------------------------------------
    def dma_transfer(self, descriptor: int) -> int:
        """Run the transfer described at guest address `descriptor`; returns the control written back."""
        start = time.perf_counter_ns() if self._trace else 0
        self._dma_address = 0                    # every transfer starts from a clean register
        memory = self.memory
        try:
            if memory is None:
                raise GuestMemoryError("this fw_cfg has no guest memory")
            raw, control_view = _descriptor_bytes(memory, descriptor)
        except GuestMemoryError:
            self.dma_transfers += 1
            self._store_control(descriptor, FW_CFG_DMA_CTL_ERROR)
            if self._trace:
                self._trace("dma", f"descriptor at {descriptor:#x} unreadable: ERROR "
                                   f"in {_micros(start)} us")
            return FW_CFG_DMA_CTL_ERROR
        control, length, address = DMA_DESCRIPTOR.unpack(raw)
        if control & FW_CFG_DMA_CTL_SELECT:
            self.select(control >> 16)
        offset = self._offset
        if control & FW_CFG_DMA_CTL_READ:      # READ wins over WRITE
            op, (status, moved) = "read", self._dma_read(address, length)
        elif control & FW_CFG_DMA_CTL_WRITE:
            op, (status, moved) = "write", self._dma_write(address, length)
        elif control & FW_CFG_DMA_CTL_SKIP:
            op, status = "skip", 0
            moved = min(length, max(self._length - offset, 0))
            self._offset = offset + moved
        else:
            op, status, moved = "none", 0, 0
        if control_view is not None:
            control_view[:] = status.to_bytes(4, "big")
        else:
            self._store_control(descriptor, status)
        self.dma_transfers += 1
        if status:
            self.dma_errors += 1
        if op in ("read", "write"):
            self.dma_bytes += moved
        if self._trace:
            self._trace("dma", f"{op} key {self.selected:#06x} ({self._name()}) offset {offset} "
                               f"address {address:#x} length {length} moved {moved} "
                               f"{'ERROR' if status else 'ok'} in {_micros(start)} us")
        return status

    def _dma_read(self, address: int, length: int) -> tuple[int, int]:
        if length == 0:
            return 0, 0
        offset = self._offset
        count = min(length, max(self._length - offset, 0))
        # QEMU moves the offset past the item bytes even when the copy fails.
        self._offset = offset + count
        try:
            views = self.memory.views(address, length, True)
        except GuestMemoryError:
            return FW_CFG_DMA_CTL_ERROR, 0
        source = self._data[offset:offset + count]
        done = 0
        for view in views:
            take = max(0, min(len(view), count - done))
            if take:
                copy_into(view, source[done:done + take])  # the one copy, item to guest RAM
                done += take
            if take < len(view):
                _zero_fill(view[take:])                  # past the end of the item reads as 0
        return 0, count

    def _dma_write(self, address: int, length: int) -> tuple[int, int]:
        if length == 0:
            return 0, 0
        entry, offset = self._entry, self._offset
        if entry is None or offset >= self._length:
            return FW_CFG_DMA_CTL_ERROR, 0
        count = min(length, self._length - offset)
        self._offset = offset + count                    # as QEMU, even when refused
        # All or nothing: a write must fit the item, and read-only items refuse it.
        if not entry.writable or count != length:
            return FW_CFG_DMA_CTL_ERROR, 0
        try:
            views = self.memory.views(address, length)
        except GuestMemoryError:
            return FW_CFG_DMA_CTL_ERROR, 0
        target, start = self._data, offset
        for view in views:
            target[offset:offset + len(view)] = view
            offset += len(view)
        if entry.on_write is not None and entry.on_write(start, target[start:offset].tobytes()) is False:
            return FW_CFG_DMA_CTL_ERROR, count          # the host refused it
        return 0, count

    def _store_control(self, descriptor: int, value: int) -> None:
        """Write the final control word back, if the descriptor's control field is writable RAM."""
        if self.memory is None:
            return
        try:
            views = self.memory.views(descriptor, 4, True)
        except GuestMemoryError:
            return
        raw = value.to_bytes(4, "big")
        done = 0
        for view in views:
            view[:] = raw[done:done + len(view)]
            done += len(view)


def _micros(start_ns: int) -> str:
    return f"{(time.perf_counter_ns() - start_ns) / 1000:.1f}"


# --- bus-facing devices ---------------------------------------------------------------
class FwCfgIoPorts(Device):
    """x86 ports 0x510-0x511: a 16-bit write selects; 1-byte reads at either port give data.

    As in QEMU, 1-byte writes (data-register writes) are ignored and wider
    reads are invalid accesses that read as 0.
    """

    name = "fw_cfg"

    def __init__(self, fw_cfg: FwCfg):
        self.fw_cfg = fw_cfg

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        if size == 1:
            return self.fw_cfg.read_data(count)  # a whole `rep insb` exit as one slice
        return bytes(size * count)

    def write(self, offset: int, size: int, data: bytes) -> None:
        if size == 2 and offset == 0:
            for i in range(0, len(data) - 1, 2):
                self.fw_cfg.select(data[i] | data[i + 1] << 8)


class FwCfgDmaPorts(Device):
    """x86 ports 0x514-0x51b: the big-endian DMA address; the write to 0x518 starts a transfer."""

    name = "fw_cfg_dma"

    def __init__(self, fw_cfg: FwCfg):
        self.fw_cfg = fw_cfg

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        return self.fw_cfg.read_dma_register(offset, size) * count

    def write(self, offset: int, size: int, data: bytes) -> None:
        for i in range(0, len(data) - size + 1, size):
            self.fw_cfg.write_dma_register(offset, bytes(data[i:i + size]))


class FwCfgMmio(Device):
    """The MMIO window: data at +0 (1 to 8 bytes), selector at +8 and DMA at +16, both big-endian."""

    name = "fw_cfg_mmio"

    def __init__(self, fw_cfg: FwCfg, dma_enabled: bool = True):
        self.fw_cfg = fw_cfg
        self.dma_enabled = dma_enabled

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        fw_cfg = self.fw_cfg
        if offset == MMIO_DATA and size <= MMIO_DATA_WIDTH:
            return b"".join(fw_cfg.read_data(size) for _ in range(count))
        if self.dma_enabled and offset >= MMIO_DMA:
            return fw_cfg.read_dma_register(offset - MMIO_DMA, size) * count
        return bytes(size * count)               # selector reads and the gap read as 0

    def write(self, offset: int, size: int, data: bytes) -> None:
        if offset == MMIO_SELECTOR and size == 2:
            for i in range(0, len(data) - 1, 2):
                self.fw_cfg.select(data[i] << 8 | data[i + 1])
        elif self.dma_enabled and offset >= MMIO_DMA:
            for i in range(0, len(data) - size + 1, size):
                self.fw_cfg.write_dma_register(offset - MMIO_DMA, bytes(data[i:i + size]))
