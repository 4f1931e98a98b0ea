"""PAM shadow RAM: what the i440FX's PAM registers make of 0xC0000-0xFFFFF.

Each of the 13 segments (tinyvmm.layout.SHADOW_SEGMENTS) takes a two-bit mode
from a nibble of registers 0x59-0x5F (Intel 82441FX datasheet, "PAM"; bit 0 RE
reads DRAM, bit 1 WE writes DRAM):

    0  PCI         reads and writes go to PCI: the firmware's low alias where it
                   reaches (read-only), nothing elsewhere (reads all-ones)
    1  read-only   reads RAM, writes are dropped
    2  write-only  reads the PCI side, writes reach RAM
    3  read/write  plain RAM

KVM memory slots carry what they can: RAM or the ROM alias read-write or
read-only. Accesses no slot serves (a write to a read-only segment, anything
on the PCI side below the ROM alias) exit as MMIO and reach ShadowWindow,
which writes RAM for write-only segments and drops the rest, so all four modes
behave as on the chipset, write-only included. RAM behind a segment keeps its
contents whatever the mode.

One host needs an exception: a KVM that emulates guest code (kvm_pvm) never
returns from a segment load whose descriptor lies in a read-only slot (the CPU
sets the descriptor's accessed bit, a write; QEMU's linuxboot.bin keeps its GDT
in its ROM, which SeaBIOS has made read-only by then). There, ShadowRam is made
with strict_read_only=False and maps read-only segments writable, which is
what QEMU does on every host.
"""

from .. import layout
from ..bus import Device
from ..memory import GuestMemoryError, buffer_address

PAM_PCI = 0
PAM_READ_ONLY = 1
PAM_WRITE_ONLY = 2
PAM_READ_WRITE = 3
PAM_FIRST_REGISTER = 0x59
PAM_LAST_REGISTER = 0x5F
MODE_NAMES = ("pci", "read-only", "write-only", "read-write")


def segment_modes(registers: bytes) -> tuple[int, ...]:
    """The mode of every segment from the bytes of registers 0x59-0x5F (7 bytes)."""
    return tuple((registers[register - PAM_FIRST_REGISTER] >> shift) & 3
                 for _, _, register, shift in layout.SHADOW_SEGMENTS)


def window_layout(modes, firmware_size: int) -> list[tuple[int, int, str | None, str | None]]:
    """(gpa, size, read source, write target) runs of the window, adjacent equal runs merged.

    Sources are 'ram', 'rom' (the firmware's low alias) or None (nothing: the
    access exits and reads all-ones or is dropped).
    """
    rom_low = layout.firmware_rom_low_start(firmware_size)
    runs: list[list] = []
    for (gpa, size, _, _), mode in zip(layout.SHADOW_SEGMENTS, modes):
        pci_side = "rom" if gpa >= rom_low else None
        read = "ram" if mode & 1 else pci_side
        write = "ram" if mode & 2 else None
        if runs and runs[-1][2:] == [read, write] and runs[-1][0] + runs[-1][1] == gpa:
            runs[-1][1] += size
        else:
            runs.append([gpa, size, read, write])
    return [tuple(run) for run in runs]


class ShadowRam:
    """Applies PAM modes to guest memory, and to KVM's memory slots when given them.

    `memory` is the machine's GuestMemory; `ram` and `rom` its backings (RAM's
    host offset equals the guest address here); `slots` a kvm.slots.SlotMap.
    """

    def __init__(self, memory, ram, rom, slots=None, tracer=None, strict_read_only: bool = True):
        self.memory = memory
        self.strict_read_only = strict_read_only
        self.ram = memoryview(ram).cast("B")
        self.rom = memoryview(rom).cast("B")
        self.slots = slots
        self.tracer = tracer
        self.modes = (PAM_PCI,) * len(layout.SHADOW_SEGMENTS)
        self.remaps = 0

    def _view(self, source: str | None, gpa: int, size: int):
        if source == "ram":
            return self.ram[gpa:gpa + size]
        if source == "rom":
            offset = len(self.rom) - (layout.SHADOW_END - gpa)
            return self.rom[offset:offset + size]
        return None

    def set_modes(self, modes) -> None:
        modes = tuple(modes)
        if modes == self.modes:
            return
        self.modes = modes
        self.remaps += 1
        runs = window_layout(modes, len(self.rom))
        self.memory.replace(layout.SHADOW_START, layout.SHADOW_END,
                            [(gpa, size, self._view(read, gpa, size), self._view(write, gpa, size))
                             for gpa, size, read, write in runs])
        if self.slots is not None:
            self.slots.sync(layout.SHADOW_START, layout.SHADOW_END,
                            [(gpa, size, buffer_address(self._view(read, gpa, size)),
                              self._slot_read_only(read, write)) for gpa, size, read, write in runs
                             if read])
        if self.tracer and "pci" in self.tracer.categories:
            self.tracer.line("pci", "PAM " + ", ".join(
                f"{gpa:#x}-{gpa + size - 1:#x} {MODE_NAMES[(read == 'ram') | (write == 'ram') << 1]}"
                for gpa, size, read, write in runs))


    def _slot_read_only(self, read: str, write: str | None) -> bool:
        if read == "ram":
            return write != "ram" and self.strict_read_only
        return True             # the firmware image itself is never written


class ShadowWindow(Device):
    """The MMIO exits of the shadow window: what no memory slot could serve.

    Writes reach RAM where the segment is write-only and are dropped where it
    is read-only or on the PCI side; reads of the PCI side below the firmware
    alias return all-ones.
    """

    name = "shadow-ram"

    def __init__(self, memory):
        self.memory = memory
        self.dropped_writes = 0

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        try:
            return self.memory.read(layout.SHADOW_START + offset, size) * count
        except GuestMemoryError:
            return b"\xff" * (size * count)

    def write(self, offset: int, size: int, data: bytes) -> None:
        try:
            self.memory.write(layout.SHADOW_START + offset, data[-size:])
        except GuestMemoryError:
            self.dropped_writes += 1
