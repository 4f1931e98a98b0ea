"""One PCI function's 256-byte configuration space: a type-0 header, BARs, capabilities.

Register offsets and bit meanings follow the PCI Local Bus Specification 3.0,
section 6.1-6.2 (names as in Linux's pci_regs.h). Which bits firmware may write
follows QEMU's PCI core, since SeaBIOS and qboot are written against it:
command I/O, memory, bus master, SERR and INTx-disable; cache line size and
interrupt line; every byte from 0x40 up (a device narrows that); the status
error bits are write-1-to-clear. Everything else is read-only, writes to it
are ignored.

A BAR is sized the usual way (write all-ones, read back ~(size - 1) with the
type bits) and is decoded on the buses only while the command register's
matching enable bit is set; PciFunction keeps the bus registration in step.
A BAR refused because it overlapped another device's (firmware moving BARs one
register write at a time) is tried again after every BAR or command change of
any function (PciBuses.retry_refused), so it decodes once the addresses differ.

Bus mastering: a function may reach guest memory (DMA) only while COMMAND.MASTER
is set. A DMA-capable function asks bus_master_enabled() before each access and
learns of changes through bus_master_changed(); a function without DMA ignores it.
"""

from collections import namedtuple

TYPE_CHECKING = False           # True for type checkers only: host imports this module
if TYPE_CHECKING:
    from .host import PciBuses

# --- type-0 header (pci_regs.h names) ----------------------------------------
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CLASS_DEVICE = 0x0A
PCI_CACHE_LINE_SIZE = 0x0C
PCI_LATENCY_TIMER = 0x0D
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D
PCI_CONFIG_HEADER_END = 0x40
PCI_CONFIG_SPACE_SIZE = 0x100

PCI_COMMAND_IO = 0x0001
PCI_COMMAND_MEMORY = 0x0002
PCI_COMMAND_MASTER = 0x0004
PCI_COMMAND_SERR = 0x0100
PCI_COMMAND_INTX_DISABLE = 0x0400

PCI_STATUS_INTERRUPT = 0x0008
PCI_STATUS_CAP_LIST = 0x0010
PCI_STATUS_ERRORS = 0xF900       # parity, signalled/received aborts, SERR, detected parity: RW1C

PCI_HEADER_TYPE_MULTI_FUNCTION = 0x80

PCI_BASE_ADDRESS_SPACE_IO = 0x01
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08
PCI_BAR_COUNT = 6

# The subsystem IDs QEMU gives its devices; SeaBIOS recognises QEMU by them on 00:00.0.
QEMU_SUBSYSTEM_VENDOR = 0x1AF4
QEMU_SUBSYSTEM = 0x1100


class PciConfigError(ValueError):
    """A device model that cannot be built (a BAR or capability that does not fit)."""


class Bar(namedtuple("Bar", "index size kind prefetchable device")):
    """A base address register: kind 'io', 'mem32' or 'mem64'; size a power of two in bytes.

    `device` (a tinyvmm.bus.Device) serves accesses at offsets into the BAR.
    """
    __slots__ = ()

    @property
    def type_bits(self) -> int:
        if self.kind == "io":
            return PCI_BASE_ADDRESS_SPACE_IO
        bits = PCI_BASE_ADDRESS_MEM_TYPE_64 if self.kind == "mem64" else 0
        return bits | (PCI_BASE_ADDRESS_MEM_PREFETCH if self.prefetchable else 0)


class PciFunction:
    """A function's configuration space and its BARs' mapping.

    Subclasses set their registers in __init__ (through set_byte/set_word/...
    and the masks) and react to firmware writes in config_written().
    """

    name = "pci-function"

    def __init__(self, vendor: int, device: int, class_code: int, revision: int = 0,
                 header_type: int = 0, subsystem: tuple[int, int] | None = (
                     QEMU_SUBSYSTEM_VENDOR, QEMU_SUBSYSTEM),
                 interrupt_pin: int = 0):
        self.config = bytearray(PCI_CONFIG_SPACE_SIZE)
        self.wmask = bytearray(PCI_CONFIG_SPACE_SIZE)       # bits firmware may write
        self.w1cmask = bytearray(PCI_CONFIG_SPACE_SIZE)     # bits a 1 clears
        self.bars: dict[int, Bar] = {}
        self.mapped: dict[int, tuple[str, int]] = {}        # BAR index -> (bus, address)
        self.buses: PciBuses | None = None                  # once plugged in
        self.address: tuple[int, int, int] | None = None    # (bus, slot, function), once plugged in
        self._last_capability: int | None = None
        self._capabilities_end = PCI_CONFIG_HEADER_END
        self.set_word(PCI_VENDOR_ID, vendor)
        self.set_word(PCI_DEVICE_ID, device)
        self.set_byte(PCI_REVISION_ID, revision)
        self.set_byte(PCI_CLASS_PROG, class_code & 0xFF)
        self.set_word(PCI_CLASS_DEVICE, class_code >> 8)
        self.set_byte(PCI_HEADER_TYPE, header_type)
        if subsystem is not None:
            self.set_word(PCI_SUBSYSTEM_VENDOR_ID, subsystem[0])
            self.set_word(PCI_SUBSYSTEM_ID, subsystem[1])
        self.set_byte(PCI_INTERRUPT_PIN, interrupt_pin)
        self.set_wmask(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
                       | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)
        self.set_wmask(PCI_CACHE_LINE_SIZE, 1, 0xFF)
        self.set_wmask(PCI_INTERRUPT_LINE, 1, 0xFF)
        self.w1cmask[PCI_STATUS:PCI_STATUS + 2] = PCI_STATUS_ERRORS.to_bytes(2, "little")
        self.set_wmask(PCI_CONFIG_HEADER_END, PCI_CONFIG_SPACE_SIZE - PCI_CONFIG_HEADER_END,
                       (1 << (8 * (PCI_CONFIG_SPACE_SIZE - PCI_CONFIG_HEADER_END))) - 1)

    # --- building ------------------------------------------------------------
    def set_byte(self, offset: int, value: int) -> None:
        self.config[offset] = value

    def set_word(self, offset: int, value: int) -> None:
        self.config[offset:offset + 2] = value.to_bytes(2, "little")

    def set_dword(self, offset: int, value: int) -> None:
        self.config[offset:offset + 4] = value.to_bytes(4, "little")

    def get(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset:offset + size], "little")

    def set_wmask(self, offset: int, size: int, mask: int) -> None:
        self.wmask[offset:offset + size] = mask.to_bytes(size, "little")

    def add_bar(self, index: int, size: int, kind: str, device, prefetchable: bool = False) -> Bar:
        """Declare BAR `index` of `size` bytes; it reads as its type bits until firmware assigns it."""
        if kind not in ("io", "mem32", "mem64"):
            raise PciConfigError(f"BAR kind {kind!r}: expected io, mem32 or mem64")
        slots = 2 if kind == "mem64" else 1
        if not 0 <= index <= PCI_BAR_COUNT - slots:
            raise PciConfigError(f"BAR {index} ({kind}) does not fit in BAR0-BAR5")
        if any(i in self.bars or (i - 1 in self.bars and self.bars[i - 1].kind == "mem64")
               for i in range(index, index + slots)):
            raise PciConfigError(f"BAR {index} is already in use")
        smallest = 4 if kind == "io" else 16
        if size < smallest or size & (size - 1) or (kind == "io" and size > 256) or size > 1 << 40:
            raise PciConfigError(f"BAR size {size:#x} for {kind}: a power of two, at least "
                                 f"{smallest}" + (" and at most 256" if kind == "io" else ""))
        bar = Bar(index, size, kind, prefetchable, device)
        self.bars[index] = bar
        offset = PCI_BASE_ADDRESS_0 + 4 * index
        width = 4 * slots
        self.config[offset:offset + width] = bar.type_bits.to_bytes(width, "little")
        mask = ((1 << (8 * width)) - 1) & ~(size - 1) & ~(3 if kind == "io" else 0xF)
        self.set_wmask(offset, width, mask)
        return bar

    def add_capability(self, cap_id: int, body: bytes, writable: bytes | None = None,
                       offset: int | None = None) -> int:
        """Append a capability (ID, next pointer, then `body`) to the list; returns its offset.

        `writable` is the write mask of the body (default: read-only).
        """
        if offset is None:
            offset = (self._capabilities_end + 3) & ~3
        end = offset + 2 + len(body)
        if offset < PCI_CONFIG_HEADER_END or end > PCI_CONFIG_SPACE_SIZE:
            raise PciConfigError(f"capability {cap_id:#x} of {len(body) + 2} bytes does not fit "
                                 f"at {offset:#x}")
        self.config[offset] = cap_id
        self.config[offset + 1] = 0
        self.config[offset + 2:end] = body
        self.wmask[offset:end] = bytes(end - offset)
        if writable is not None:
            self.wmask[offset + 2:offset + 2 + len(writable)] = writable
        if self._last_capability is None:
            self.config[PCI_CAPABILITY_LIST] = offset
            self.config[PCI_STATUS] |= PCI_STATUS_CAP_LIST
        else:
            self.config[self._last_capability + 1] = offset
        self._last_capability = offset
        self._capabilities_end = max(self._capabilities_end, end)
        return offset

    # --- firmware access -----------------------------------------------------
    def read_config(self, offset: int, size: int) -> int:
        """A `size`-byte read (1, 2 or 4) at `offset`; bytes past 0xFF read as all-ones."""
        data = self.config[offset:offset + size]
        return int.from_bytes(bytes(data) + b"\xff" * (size - len(data)), "little")

    def write_config(self, offset: int, size: int, value: int) -> None:
        """A `size`-byte write at `offset`, through the write and write-1-to-clear masks."""
        end = min(offset + size, PCI_CONFIG_SPACE_SIZE)
        config, wmask, w1c = self.config, self.wmask, self.w1cmask
        master = self.bus_master_enabled()
        changed = False
        for i in range(offset, end):
            byte = (value >> (8 * (i - offset))) & 0xFF
            new = (config[i] & ~wmask[i]) | (byte & wmask[i])
            new &= ~(byte & w1c[i])
            if new != config[i]:
                config[i] = new & 0xFF
                changed = True
        if offset < PCI_BASE_ADDRESS_0 + 4 * PCI_BAR_COUNT and end > PCI_COMMAND:
            self.update_mappings()
            if self.buses is not None:
                self.buses.retry_refused()      # a BAR moved away may free another's address
        if master != self.bus_master_enabled():
            self.bus_master_changed(not master)
        self.config_written(offset, end - offset, changed)

    def config_written(self, offset: int, size: int, changed: bool) -> None:
        """Hook for device registers beyond the header (PAM, PIRQ routes, PM base)."""

    def bus_master_enabled(self) -> bool:
        """May the function reach guest memory now (COMMAND.MASTER)?"""
        return bool(self.config[PCI_COMMAND] & PCI_COMMAND_MASTER)

    def bus_master_changed(self, enabled: bool) -> None:
        """Hook: COMMAND.MASTER was set or cleared. A DMA-capable function holds its work
        while it is clear and takes it up again here."""

    def trace(self, text: str) -> None:
        """A line in the 'pci' trace about this function, once plugged in."""
        if self.buses is not None:
            self.buses.trace(f"{self.describe()}: {text}")

    def reset(self) -> None:
        """Command register and BARs back to their reset values; mappings go."""
        master = self.bus_master_enabled()
        self.set_word(PCI_COMMAND, 0)
        if master:
            self.bus_master_changed(False)
        for bar in self.bars.values():
            width = 8 if bar.kind == "mem64" else 4
            offset = PCI_BASE_ADDRESS_0 + 4 * bar.index
            self.config[offset:offset + width] = bar.type_bits.to_bytes(width, "little")
        self.update_mappings()
        if self.buses is not None:
            self.buses.retry_refused()

    # --- BAR decoding ----------------------------------------------------------
    def bar_address(self, bar: Bar) -> int | None:
        """Where the BAR decodes now, or None (decode disabled, unassigned, or out of range)."""
        command = self.get(PCI_COMMAND, 2)
        offset = PCI_BASE_ADDRESS_0 + 4 * bar.index
        if bar.kind == "io":
            if not command & PCI_COMMAND_IO:
                return None
            address = self.get(offset, 4) & ~0x3
            limit = 0x10000
        else:
            if not command & PCI_COMMAND_MEMORY:
                return None
            address = self.get(offset, 8 if bar.kind == "mem64" else 4) & ~0xF
            limit = 1 << (64 if bar.kind == "mem64" else 32)
        # Address 0 is "not assigned"; a BAR still holding the sizing pattern runs past the top.
        if address == 0 or address + bar.size > limit:
            return None
        return address

    def update_mappings(self) -> None:
        """Register each BAR where it now decodes, and unregister it where it no longer does."""
        if self.buses is None:
            return
        for index, bar in self.bars.items():
            address = self.bar_address(bar)
            bus = "pio" if bar.kind == "io" else "mmio"
            wanted = None if address is None else (bus, address)
            if self.mapped.get(index) == wanted:
                continue
            if index in self.mapped:
                self.buses.unmap(*self.mapped.pop(index))
            if address is not None and self.buses.map(self, bar, bus, address):
                self.mapped[index] = (bus, address)
            if address is not None and index not in self.mapped:
                self.buses.waiting.add(self)    # refused: tried again on the next change
            self.bar_moved(bar, address if index in self.mapped else None)


    def bar_moved(self, bar: Bar, address: int | None) -> None:
        """Hook called after update_mappings (un)mapped `bar`: where it decodes now, or None.
        Also called when a mapping was refused, so it may repeat None."""

    def describe(self) -> str:
        bus, slot, function = self.address or (0, 0, 0)
        return f"{bus:02x}:{slot:02x}.{function} {self.name}"
