"""The machine's memory and I/O map: every guest-physical address and port lives here.

Guest-physical memory (RAM of R bytes, firmware image of F bytes, 64 KiB <= F <= 256 KiB):

    0x0000_0000  0x0000_03ff  interrupt vector table                       RAM
    0x0000_0400  0x0000_04ff  BIOS data area                               RAM
    0x0000_0500  0x0009_fbff  conventional memory (BIOS stack at 0x7000)   RAM
    0x0009_fc00  0x0009_ffff  extended BIOS data area (1 KiB)              RAM, e820 reserved
    0x000a_0000  0x000b_ffff  VGA window: not backed, accesses exit as MMIO
    0x000c_0000  ROM_LOW-1    option ROM area, written by the BIOS         RAM, e820 reserved
    ROM_LOW      0x000f_ffff  last min(F, 128 KiB) of the firmware image   read-only alias
    0x0010_0000  LOW_END-1    extended memory (kernel at 1 MiB)            RAM
    LOW_END      0xfeff_bfff  hole below 4 GiB (I/O APIC 0xfec0_0000, local APIC 0xfee0_0000,
                              optional fw_cfg MMIO window)
    0xfeff_c000  0xfeff_ffff  KVM identity-map page + TSS pages            e820 reserved
    4 GiB - F    4 GiB - 1    firmware image                               read-only
    4 GiB        ...          RAM above LOW_RAM_MAX, when R > LOW_RAM_MAX  RAM

LOW_END = min(R, LOW_RAM_MAX). The RAM backing is one host mapping of R bytes;
guest RAM above LOW_RAM_MAX sits at 4 GiB.

I/O ports are listed in PORTS; `python -m tinyvmm.layout --asm` prints the
same facts as GNU as symbols for the firmware (firmware/layout.inc).
"""

from collections import namedtuple

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- memory ---------------------------------------------------------------
IVT_START = 0x0
BDA_START = 0x400
BIOS_STACK_TOP = 0x7000          # real-mode stack of the BIOS and its ROMs (SS = 0)
EBDA_START = 0x9FC00
EBDA_SIZE = 1 * KiB
VGA_START = 0xA0000
VGA_END = 0xC0000
OPTION_ROM_START = 0xC0000
OPTION_ROM_ALIGN = 2 * KiB
HIGH_MEMORY_START = 1 * MiB
LOW_RAM_MAX = 3 * GiB            # RAM beyond this moves above 4 GiB
FOUR_GIB = 4 * GiB
IOAPIC_START = 0xFEC00000
LAPIC_START = 0xFEE00000
KVM_IDENTITY_MAP_START = 0xFEFFC000  # one page, before any vCPU exists
KVM_TSS_START = 0xFEFFD000           # three pages
KVM_PRIVATE_SIZE = 0x4000

FIRMWARE_MIN_SIZE = 64 * KiB
FIRMWARE_MAX_SIZE = 256 * KiB
FIRMWARE_LOW_ALIAS_MAX = 128 * KiB

RAM_MIN_SIZE = 2 * MiB
RAM_MAX_SIZE = 64 * GiB
PAGE_SIZE = 4 * KiB

# e820 types (Linux/QEMU numbering)
E820_RAM = 1
E820_RESERVED = 2

# --- I/O ports: name -> (first port, number of ports) ---------------------
PORTS = {
    "i8042": (0x60, 5),          # data 0x60, status/command 0x64 (0x61 is the in-kernel PIT speaker)
    "cmos": (0x70, 2),
    "post": (0x80, 1),
    "port92": (0x92, 1),
    "debugexit": (0xE9, 1),      # second debug console (Bochs convention)
    "milestone_linux": (0xF4, 1),
    "milestone_fw": (0xF5, 1),
    "com1": (0x3F8, 8),
    "debugcon": (0x402, 1),      # SeaBIOS debug console
    "fw_cfg": (0x510, 2),        # selector 0x510 (16-bit), data 0x511
    "fw_cfg_dma": (0x514, 8),    # DMA address, big-endian, high half at 0x514
}

COM1_IRQ = 4

# Boot milestones written to the milestone ports (qboot's benchmark values).
MILESTONE_FW_START = 1           # port 0xf5: firmware entry
MILESTONE_LINUX_START_FWCFG = 2
MILESTONE_LINUX_START_BOOT = 3   # port 0xf4: the ROM jumps to the kernel's real-mode entry
MILESTONE_PVH_BOOT = 4
MILESTONE_DO_BOOT = 5            # port 0xf4: the BIOS hands over to the boot ROM
MILESTONE_START_KERNEL = 6
MILESTONE_INIT = 7


class Region(namedtuple("Region", "name gpa size kind host_offset")):
    """A guest-physical range: gpa, size, kind ('ram' or 'rom'), host offset into its backing."""
    __slots__ = ()

    @property
    def end(self) -> int:
        return self.gpa + self.size


def firmware_rom_low_start(firmware_size: int) -> int:
    return HIGH_MEMORY_START - min(firmware_size, FIRMWARE_LOW_ALIAS_MAX)


def memory_regions(ram_size: int, firmware_size: int) -> list[Region]:
    """The guest-physical regions backed by memory, in address order.

    RAM regions' host_offset is into the RAM backing; ROM regions' into the
    firmware image.
    """
    rom_low = firmware_rom_low_start(firmware_size)
    low_end = min(ram_size, LOW_RAM_MAX)
    regions = [
        Region("conventional", 0, VGA_START, "ram", 0),
        Region("option-rom", OPTION_ROM_START, rom_low - OPTION_ROM_START, "ram", OPTION_ROM_START),
        Region("bios-low", rom_low, HIGH_MEMORY_START - rom_low, "rom",
               firmware_size - (HIGH_MEMORY_START - rom_low)),
        Region("extended", HIGH_MEMORY_START, low_end - HIGH_MEMORY_START, "ram", HIGH_MEMORY_START),
        Region("bios-high", FOUR_GIB - firmware_size, firmware_size, "rom", 0),
    ]
    if ram_size > LOW_RAM_MAX:
        regions.append(Region("high", FOUR_GIB, ram_size - LOW_RAM_MAX, "ram", LOW_RAM_MAX))
    return [r for r in regions if r.size > 0]


def e820_map(ram_size: int, firmware_size: int) -> list[tuple[int, int, int]]:
    """The e820 table the guest sees: (address, length, type), sorted."""
    low_end = min(ram_size, LOW_RAM_MAX)
    entries = [
        (0, EBDA_START, E820_RAM),
        (EBDA_START, EBDA_SIZE, E820_RESERVED),
        (OPTION_ROM_START, HIGH_MEMORY_START - OPTION_ROM_START, E820_RESERVED),
        (HIGH_MEMORY_START, low_end - HIGH_MEMORY_START, E820_RAM),
        (KVM_IDENTITY_MAP_START, KVM_PRIVATE_SIZE, E820_RESERVED),
        (FOUR_GIB - firmware_size, firmware_size, E820_RESERVED),
    ]
    if ram_size > LOW_RAM_MAX:
        entries.append((FOUR_GIB, ram_size - LOW_RAM_MAX, E820_RAM))
    return entries


def check(ram_size: int, firmware_size: int) -> None:
    """Raise ValueError unless the sizes give a consistent map."""
    if not RAM_MIN_SIZE <= ram_size <= RAM_MAX_SIZE:
        raise ValueError(f"RAM size {ram_size:#x} outside {RAM_MIN_SIZE // MiB} MiB .. "
                         f"{RAM_MAX_SIZE // GiB} GiB")
    if ram_size % PAGE_SIZE:
        raise ValueError(f"RAM size {ram_size:#x} is not a multiple of 4 KiB")
    if not FIRMWARE_MIN_SIZE <= firmware_size <= FIRMWARE_MAX_SIZE or firmware_size % (64 * KiB):
        raise ValueError(f"firmware image of {firmware_size} bytes: it must be 64, 128, 192 "
                         "or 256 KiB")
    regions = memory_regions(ram_size, firmware_size)
    for a, b in zip(regions, regions[1:]):
        if a.end > b.gpa:
            raise ValueError(f"layout overlap: {a.name} and {b.name}")
    ports = sorted(PORTS.values())
    for (a, n), (b, _) in zip(ports, ports[1:]):
        if a + n > b:
            raise ValueError(f"port overlap at {b:#x}")


def asm_symbols() -> str:
    """The constants firmware needs, as GNU as `.set` lines."""
    lines = ["/* Generated by `python -m tinyvmm.layout --asm`; do not edit. */"]
    consts = {
        "BIOS_STACK_TOP": BIOS_STACK_TOP, "EBDA_START": EBDA_START, "EBDA_SIZE": EBDA_SIZE,
        "OPTION_ROM_START": OPTION_ROM_START, "OPTION_ROM_ALIGN": OPTION_ROM_ALIGN,
        "HIGH_MEMORY_START": HIGH_MEMORY_START, "COM1_IRQ": COM1_IRQ,
        "MILESTONE_FW_START": MILESTONE_FW_START,
        "MILESTONE_LINUX_START_BOOT": MILESTONE_LINUX_START_BOOT,
        "MILESTONE_DO_BOOT": MILESTONE_DO_BOOT,
    }
    for name, (port, _) in PORTS.items():
        consts[f"PORT_{name.upper()}"] = port
    for name, value in consts.items():
        lines.append(f".set {name}, {value:#x}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--asm"]:
        sys.stdout.write(asm_symbols())
    else:
        print(__doc__)
