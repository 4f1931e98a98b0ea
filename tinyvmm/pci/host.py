"""PCI configuration mechanism #1 (ports 0xCF8-0xCFF) and the buses a function's BARs decode on.

0xCF8 latches an address (bit 31 enable, bus 23:16, device 15:11, function
10:8, dword register 7:2) on a 32-bit write only, as QEMU's host does; reads of
it return the latch. 0xCFC-0xCFF reach the addressed register at any byte,
word or dword offset. With the enable bit clear, or with no function at that
address, reads return all-ones and writes are dropped; nothing a guest does
here can raise. A byte at 0xCF9 is PIIX's reset control register, which takes
precedence over the address latch as on the real chipset.
"""

from .. import layout
from ..bus import BusError, Device, RegisterDevice, Registers
from .config import PciFunction

TYPE_CHECKING = False           # True for type checkers only: typing stays unimported
if TYPE_CHECKING:
    from typing import TypeVar

    AnyFunction = TypeVar("AnyFunction", bound=PciFunction)

CONFIG_ADDRESS = 0
CONFIG_DATA = 4
CONFIG_ENABLE = 0x80000000
RESET_CONTROL = 1        # port 0xcf9


def config_address(bus: int, slot: int, function: int, register: int = 0) -> int:
    """The value firmware writes to 0xCF8 to reach this function's register."""
    return CONFIG_ENABLE | bus << 16 | slot << 11 | function << 8 | (register & 0xFC)


class PciBuses:
    """Where BARs are mapped: the port and MMIO buses, with guest memory and the
    in-kernel devices kept out of reach. A mapping that would overlap them or
    another device is refused with a trace line, and the BAR stays unmapped until a
    later change frees its address (retry_refused)."""

    def __init__(self, pio, mmio, memory=None, tracer=None):
        self.pio = pio
        self.mmio = mmio
        self.memory = memory
        self.tracer = tracer
        self.refused: list[str] = []
        self.waiting: set[PciFunction] = set()      # functions with a BAR refused
        self._retrying = False

    def _conflict(self, bus: str, address: int, size: int) -> str | None:
        if bus == "mmio":
            return layout.mmio_conflict(address, size, self.memory.regions if self.memory else ())
        return None

    def map(self, function: PciFunction, bar, bus: str, address: int) -> bool:
        """Put a BAR's device on `bus` at `address`; False (and a trace line) if refused."""
        return self.map_range(f"{function.describe()} BAR{bar.index} ({bar.kind}, "
                              f"{bar.size:#x} bytes) at {address:#x}", bus, address, bar.size,
                              bar.device)

    def map_range(self, what: str, bus: str, address: int, size: int, device: Device) -> bool:
        """Put `device` on `bus` ('pio' or 'mmio') at [address, address + size), unless that
        overlaps guest memory, a KVM page or another device; False (and a trace line) if refused."""
        conflict = self._conflict(bus, address, size)
        try:
            if conflict is None:
                (self.pio if bus == "pio" else self.mmio).register(address, size, device)
        except BusError as exc:
            conflict = str(exc)
        if conflict is not None:
            if not self._retrying:          # said once, not again at every retry
                message = f"refused {what}: it overlaps {conflict}"
                self.refused.append(message)
                self._trace(message)
            return False
        self._trace(f"mapped {what}")
        return True

    def unmap(self, bus: str, address: int) -> None:
        (self.pio if bus == "pio" else self.mmio).unregister(address)
        self._trace(f"unmapped {bus} {address:#x}")

    def retry_refused(self) -> None:
        """Map again the BARs refused earlier whose address is free now: called after any
        BAR or command change, as real decoders (and QEMU) take both once apart."""
        if self._retrying or not self.waiting:
            return
        self._retrying = True           # update_mappings below must not recurse here
        try:
            for function in sorted(self.waiting, key=PciFunction.describe):
                self.waiting.discard(function)
                function.update_mappings()      # puts it back if still refused
        finally:
            self._retrying = False

    def trace(self, text: str) -> None:
        self._trace(text)

    def _trace(self, text: str) -> None:
        if self.tracer and "pci" in self.tracer.categories:
            self.tracer.line("pci", text)


class PciHost(RegisterDevice):
    """The host's configuration ports and bus 0's functions, by (slot, function)."""

    name = "pci-config"

    def __init__(self, buses: PciBuses | None = None):
        self.buses = buses
        self.address = 0
        self.functions: dict[tuple[int, int], PciFunction] = {}
        self.reset_control: Registers | None = None     # PIIX's 0xcf9 register, when present

    def add(self, function: "AnyFunction", slot: int, number: int = 0) -> "AnyFunction":
        """Plug `function` in at 00:`slot`.`number`; returns it. ValueError if that address is
        taken or invalid."""
        if not (0 <= slot < 32 and 0 <= number < 8) or (slot, number) in self.functions:
            raise ValueError(f"PCI address 00:{slot:02x}.{number} is invalid or taken")
        function.address = (0, slot, number)
        function.buses = self.buses
        self.functions[(slot, number)] = function
        return function

    def function_at(self, address: int) -> PciFunction | None:
        if not address & CONFIG_ENABLE or (address >> 16) & 0xFF:
            return None
        return self.functions.get(((address >> 11) & 0x1F, (address >> 8) & 7))

    def read_register(self, offset: int, size: int) -> int:
        if offset == RESET_CONTROL and size == 1 and self.reset_control is not None:
            return self.reset_control.read_register(0, 1)
        if offset < CONFIG_DATA:
            return (self.address >> (8 * offset)) & ((1 << (8 * size)) - 1)
        function = self.function_at(self.address)
        if function is None:
            return (1 << (8 * size)) - 1
        return function.read_config((self.address & 0xFC) + offset - CONFIG_DATA, size)

    def write_register(self, offset: int, size: int, value: int) -> None:
        if offset == RESET_CONTROL and size == 1 and self.reset_control is not None:
            self.reset_control.write_register(0, 1, value)
        elif offset == CONFIG_ADDRESS and size == 4:
            self.address = value
        elif offset >= CONFIG_DATA:
            function = self.function_at(self.address)
            if function is not None:
                function.write_config((self.address & 0xFC) + offset - CONFIG_DATA, size, value)
