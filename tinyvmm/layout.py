"""The machine's memory and I/O map: every guest-physical address and port lives here.

Guest-physical memory (RAM of R bytes, firmware image of F bytes, 64 KiB <= F <= 16 MiB):

    0x0000_0000  0x0000_03ff  interrupt vector table                       RAM
    0x0000_0400  0x0000_04ff  BIOS data area                               RAM
    0x0000_0500  0x0009_fbff  conventional memory (BIOS stack at 0x7000)   RAM
    0x0009_a000  0x0009_fbff  a direct boot's ACPI or MP tables            e820 ACPI data or
                              (BOOT_TABLES_*)                              reserved
    0x0009_fc00  0x0009_ffff  extended BIOS data area (1 KiB; a direct     RAM, e820 reserved
                              boot's RSDP or MP pointer at its start)
    0x000a_0000  0x000b_ffff  VGA window: not backed, accesses exit as MMIO
    0x000c_0000  0x000f_ffff  shadow window, 13 PAM segments (SHADOW_SEGMENTS): each shows the
                              PCI side (the last min(F, 128 KiB) of the firmware image from
                              ROM_LOW up, nothing below it) or the RAM behind it, as the i440FX
                              PAM registers say; at reset, the PCI side       e820 reserved
    0x0010_0000  LOW_END-1    extended memory (kernel at 1 MiB)            RAM
    LOW_END      0xfebf_ffff  PCI memory window (32-bit BARs)
    0xfec0_0000               I/O APIC; 0xfee0_0000 local APIC (in KVM); optional fw_cfg MMIO
    0xfeff_c000  0xfeff_ffff  KVM identity-map page + TSS pages            e820 reserved
    4 GiB - F    4 GiB - 1    firmware image, or pflash unit 0             read-only
    ... - S1     4 GiB - F-1  pflash unit 1 (F + S1 <= 16 MiB)             read-only
    4 GiB        ...          RAM above LOW_END, when R > LOW_END          RAM

LOW_END = low_ram_end(R): R below 3.5 GiB, else 3 GiB, as QEMU's pc machine has it. The RAM
backing is one host mapping of R bytes; guest RAM above LOW_END sits at 4 GiB.

I/O ports are listed in PORTS; the PCI I/O window (PCI_IO_START up) holds the I/O
BARs. The PIIX4 power-management block (64 ports, with ACPI only) sits where the
firmware programs it: ACPI_PM_BASE 0x600 for tinyvmm's BIOS, a direct boot, qboot
and SeaBIOS with an ACPI table loader; 0xb000 for OVMF.
`python -m tinyvmm.layout --asm` prints the same facts as GNU as symbols for the
firmware (firmware/layout.inc).
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
SHADOW_START = 0xC0000           # the PAM-controlled window
SHADOW_END = 0x100000
HIGH_MEMORY_START = 1 * MiB
# RAM below 4 GiB, as QEMU's pc machine splits it: all of it when there is less than
# LOW_RAM_LIMIT, else LOW_RAM_MAX, the rest above 4 GiB (gigabyte-aligned; low_ram_end()).
LOW_RAM_LIMIT = 0xE0000000       # 3.5 GiB: QEMU's max-ram-below-4g
LOW_RAM_MAX = 3 * GiB
FOUR_GIB = 4 * GiB
IOAPIC_START = 0xFEC00000
LAPIC_START = 0xFEE00000
KVM_IDENTITY_MAP_START = 0xFEFFC000  # one page, before any vCPU exists
KVM_TSS_START = 0xFEFFD000           # three pages
KVM_PRIVATE_SIZE = 0x4000

FIRMWARE_MIN_SIZE = 64 * KiB
FIRMWARE_MAX_SIZE = 16 * MiB     # ends at 0xff00_0000, just above the KVM pages
FIRMWARE_SIZE_STEP = 64 * KiB
FIRMWARE_LOW_ALIAS_MAX = 128 * KiB

# The PCI I/O window (QEMU's pc machine): I/O BARs above the legacy ISA ports. 32-bit memory
# BARs go between the end of low RAM and the I/O APIC (the map above).
PCI_IO_START = 0x1000
PCI_IO_END = 0x10000
# Bus 0: 00:00.0 i440FX, 00:01.0/.3 PIIX3 ISA and PIIX4 PM; virtio devices from 00:02.0 up,
# where QEMU's -nodefaults machine puts its first device.
VIRTIO_FIRST_SLOT = 2
VIRTIO_MAX_DEVICES = 32 - VIRTIO_FIRST_SLOT

# Guest-physical pages served inside KVM, which no BAR may cover.
RESERVED_MMIO = ((IOAPIC_START, 0x1000, "the I/O APIC"), (LAPIC_START, 0x1000, "the local APIC"),
                 (KVM_IDENTITY_MAP_START, KVM_PRIVATE_SIZE, "KVM's identity map and TSS"))


def mmio_conflict(address: int, size: int, memory_regions=()) -> str | None:
    """What guest-physical [address, address + size) overlaps where an MMIO device would never
    be reached: guest memory (`memory_regions`, (gpa, size, ...) tuples, e.g.
    GuestMemory.regions) or a page KVM serves (RESERVED_MMIO), as "the local APIC at
    0xfee00000-0xfee00fff"; None when the range is free of both."""
    end = address + size
    taken = [(gpa, length, "guest memory") for gpa, length, *_ in memory_regions]
    for start, length, what in taken + list(RESERVED_MMIO):
        if start < end and address < start + length:
            return f"{what} at {start:#x}-{start + length - 1:#x}"
    return None

# PAM segments of the shadow window: (first address, size, i440FX register, nibble shift).
SHADOW_SEGMENTS = tuple(
    [(0xC0000 + 0x4000 * i, 0x4000, 0x5A + i // 2, 4 * (i % 2)) for i in range(12)]
    + [(0xF0000, 0x10000, 0x59, 4)])

# Direct and PVH boots (tinyvmm.boot.direct, tinyvmm.boot.pvh, the PVH option ROMs): what the
# loader writes into low RAM, below the BIOS stack's region and above the BIOS data area.
BOOT_GDT_START = 0x500           # flat code and data descriptors for the kernel's entry
BOOT_PARAMS_START = 0x7000       # the zero page (struct boot_params, 4 KiB) of a 64-bit entry
PVH_START_INFO = 0x8000          # struct hvm_start_info (56 bytes)
PVH_MODLIST = 0x8040             # one hvm_modlist_entry (32 bytes): the initrd
PVH_MEMMAP = 0x8080              # hvm_memmap_table_entry[], 24 bytes each
PVH_MEMMAP_MAX_ENTRIES = 128     # up to 0x8c80
BOOT_PAGE_TABLES_START = 0x9000  # PML4, PDPT and four page directories (identity map, 4 GiB)
BOOT_PAGE_TABLES_END = 0xF000
BOOT_STACK_TOP = 0x8FF0          # RSP at a 64-bit entry (the kernel sets its own at once)
BOOT_CMDLINE_START = 0x20000     # the command line, as for a bzImage through the ROMs
# The platform tables of a boot without firmware: the ACPI tables (tinyvmm.acpi) or, without
# ACPI, the MP table (tinyvmm.mptable), just below the EBDA; their pointer (the RSDP or the MP
# floating pointer) in the EBDA's first KiB, where an OS scans for it.
BOOT_TABLES_START = 0x9A000
BOOT_TABLES_POINTER = EBDA_START
ACPI_PM_BASE = 0x600             # the PIIX4 PM I/O block where firmware on QEMU puts it (SeaBIOS)
BDA_EBDA_SEGMENT = 0x40E         # the BDA word holding the EBDA's segment

SMP_MAX = 255                    # vCPUs: 8-bit xAPIC IDs (MADT, MP table), CMOS 0x5F
RAM_MIN_SIZE = 2 * MiB
RAM_MAX_SIZE = 64 * GiB
PAGE_SIZE = 4 * KiB

# e820 types (Linux/QEMU numbering)
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3                    # ACPI tables, reclaimable once read

# --- I/O ports: name -> (first port, number of ports) ---------------------
PORTS = {
    "i8042": (0x60, 5),          # data 0x60, status/command 0x64 (0x61 is the in-kernel PIT speaker)
    "cmos": (0x70, 2),
    "post": (0x80, 1),
    "port92": (0x92, 1),
    "apm": (0xB2, 2),            # APM control (0xb2) and status (0xb3)
    "debugexit": (0xE9, 1),      # second debug console (Bochs convention)
    "milestone_linux": (0xF4, 1),
    "milestone_fw": (0xF5, 1),
    "com1": (0x3F8, 8),
    "debugcon": (0x402, 1),      # SeaBIOS debug console
    "fw_cfg": (0x510, 2),        # selector 0x510 (16-bit), data 0x511
    "fw_cfg_dma": (0x514, 8),    # DMA address, big-endian, high half at 0x514
    "acpi_gpe0": (0xAFE0, 4),    # PIIX4 GPE0 status and enable
    "pci_config": (0xCF8, 8),    # configuration mechanism #1; 0xcf9 (byte) is PIIX reset control
}

# Ports KVM's in-kernel irqchip and PIT serve (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2): no exit
# reaches user space for them. (first port, number of ports, what)
IN_KERNEL_PORTS = ((0x20, 2, "the in-kernel master PIC"), (0x40, 4, "the in-kernel PIT"),
                   (0x61, 1, "the in-kernel PIT's speaker port"), (0xA0, 2, "the in-kernel slave PIC"),
                   (0x4D0, 2, "the in-kernel PIC's ELCR"))

# ISA interrupts of the legacy devices (the ACPI tables describe them)
KEYBOARD_IRQ = 1
COM1_IRQ = 4
RTC_IRQ = 8

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
    """Where the firmware's low alias (the PCI side of the shadow window) begins."""
    return HIGH_MEMORY_START - min(firmware_size, FIRMWARE_LOW_ALIAS_MAX)


def memory_regions(ram_size: int, firmware_size: int) -> list[Region]:
    """The guest-physical regions backed by memory at reset, in address order.

    RAM regions' host_offset is into the RAM backing; ROM regions' into the
    firmware image. The shadow window starts on its PCI side: the firmware's
    low alias, and nothing below it (tinyvmm.pci.pam switches it later).
    """
    rom_low = firmware_rom_low_start(firmware_size)
    low_end = low_ram_end(ram_size)
    regions = [
        Region("conventional", 0, VGA_START, "ram", 0),
        Region("bios-low", rom_low, HIGH_MEMORY_START - rom_low, "rom",
               firmware_size - (HIGH_MEMORY_START - rom_low)),
        Region("extended", HIGH_MEMORY_START, low_end - HIGH_MEMORY_START, "ram", HIGH_MEMORY_START),
        Region("bios-high", FOUR_GIB - firmware_size, firmware_size, "rom", 0),
    ]
    if ram_size > low_end:
        regions.append(Region("high", FOUR_GIB, ram_size - low_end, "ram", low_end))
    return [r for r in regions if r.size > 0]


FIRMWARE_SIZE_RULE = ("a firmware image must be a multiple of 64 KiB from 64 KiB to 16 MiB "
                      "(QEMU's pc machine has the same rule)")


def check_firmware_size(size: int, flash: bool = False) -> None:
    """Raise ValueError unless `size` bytes make a firmware image this machine can map; a
    pflash unit 0 (`flash`) needs only whole 4 KiB sectors (QEMU's rule for flash)."""
    if flash:
        if not 0 < size <= FIRMWARE_MAX_SIZE or size % PAGE_SIZE:
            raise ValueError(f"a flash unit 0 of {size} bytes does not fit below 4 GiB")
        return
    if not FIRMWARE_MIN_SIZE <= size <= FIRMWARE_MAX_SIZE or size % FIRMWARE_SIZE_STEP:
        raise ValueError(f"{FIRMWARE_SIZE_RULE}; this one is {size} bytes")


def low_ram_end(ram_size: int) -> int:
    """Where RAM below 4 GiB ends: all of it below LOW_RAM_LIMIT, else LOW_RAM_MAX."""
    return ram_size if ram_size < LOW_RAM_LIMIT else LOW_RAM_MAX


def e820_map(ram_size: int, firmware_size: int, acpi: bool = False) -> list[tuple[int, int, int]]:
    """The e820 table an operating system sees, with the BIOS areas reserved, sorted: (address,
    length, type). A direct boot hands it over, its platform tables below the EBDA as ACPI
    data (`acpi`) or reserved (the MP table); firmware makes its own from fw_cfg_e820."""
    low_end = low_ram_end(ram_size)
    entries = [(0, BOOT_TABLES_START, E820_RAM),
               (BOOT_TABLES_START, EBDA_START - BOOT_TABLES_START,
                E820_ACPI if acpi else E820_RESERVED)]
    entries += [
        (EBDA_START, EBDA_SIZE, E820_RESERVED),
        (OPTION_ROM_START, HIGH_MEMORY_START - OPTION_ROM_START, E820_RESERVED),
        (HIGH_MEMORY_START, low_end - HIGH_MEMORY_START, E820_RAM),
        (KVM_IDENTITY_MAP_START, KVM_PRIVATE_SIZE, E820_RESERVED),
        (FOUR_GIB - firmware_size, firmware_size, E820_RESERVED),
    ]
    if ram_size > low_end:
        entries.append((FOUR_GIB, ram_size - low_end, E820_RAM))
    return entries


# QEMU's HyperTransport reservation below 1 TiB, in the map of an AMD vCPU that can address it.
AMD_HT_START = 0xFD_0000_0000
AMD_HT_SIZE = 12 * GiB
AMD_HT_PHYS_BITS = 40


def fw_cfg_e820(ram_size: int, amd_ht_hole: bool) -> list[tuple[int, int, int]]:
    """The memory map fw_cfg's etc/e820 gives firmware, entry for entry as QEMU's pc machine
    under KVM writes it (firmware reserves its own areas): the KVM pages, the HyperTransport
    range for an AMD vCPU (`amd_ht_hole`), RAM from 0 to LOW_END, RAM above 4 GiB. Unsorted."""
    low_end = low_ram_end(ram_size)
    entries = [(KVM_IDENTITY_MAP_START, KVM_PRIVATE_SIZE, E820_RESERVED)]
    if amd_ht_hole:
        entries.append((AMD_HT_START, AMD_HT_SIZE, E820_RESERVED))
    entries.append((0, low_end, E820_RAM))
    if ram_size > low_end:
        entries.append((FOUR_GIB, ram_size - low_end, E820_RAM))
    return entries


def check(ram_size: int, firmware_size: int, flash: bool = False) -> None:
    """Raise ValueError unless the sizes give a consistent map (`flash`: the firmware image is
    a pflash unit 0, check_firmware_size's rule for it)."""
    if not RAM_MIN_SIZE <= ram_size <= RAM_MAX_SIZE:
        raise ValueError(f"RAM size {ram_size:#x} outside {RAM_MIN_SIZE // MiB} MiB .. "
                         f"{RAM_MAX_SIZE // GiB} GiB")
    if ram_size % PAGE_SIZE:
        raise ValueError(f"RAM size {ram_size:#x} is not a multiple of 4 KiB")
    check_firmware_size(firmware_size, flash)
    regions = memory_regions(ram_size, firmware_size)
    for a, b in zip(regions, regions[1:]):
        if a.end > b.gpa:
            raise ValueError(f"layout overlap: {a.name} and {b.name}")
    ports = sorted(PORTS.values())
    for (port, count), (next_port, _) in zip(ports, ports[1:]):
        if port + count > next_port:
            raise ValueError(f"port overlap at {next_port:#x}")


def asm_symbols() -> str:
    """The constants firmware needs, as GNU as `.set` lines."""
    lines = ["/* Generated by `python -m tinyvmm.layout --asm`; do not edit. */"]
    consts = {
        "BIOS_STACK_TOP": BIOS_STACK_TOP, "EBDA_START": EBDA_START, "EBDA_SIZE": EBDA_SIZE,
        "ACPI_PM_BASE": ACPI_PM_BASE,
        "OPTION_ROM_START": OPTION_ROM_START, "OPTION_ROM_ALIGN": OPTION_ROM_ALIGN,
        "HIGH_MEMORY_START": HIGH_MEMORY_START, "COM1_IRQ": COM1_IRQ,
        "MILESTONE_FW_START": MILESTONE_FW_START,
        "MILESTONE_LINUX_START_BOOT": MILESTONE_LINUX_START_BOOT,
        "MILESTONE_DO_BOOT": MILESTONE_DO_BOOT,
        "MILESTONE_PVH_BOOT": MILESTONE_PVH_BOOT,
        "PVH_START_INFO": PVH_START_INFO, "PVH_MODLIST": PVH_MODLIST, "PVH_MEMMAP": PVH_MEMMAP,
        "PVH_MEMMAP_MAX_ENTRIES": PVH_MEMMAP_MAX_ENTRIES, "BOOT_CMDLINE_START": BOOT_CMDLINE_START,
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
        print("I/O ports:\n")
        rows = [(port, port + count - 1, name) for name, (port, count) in PORTS.items()]
        rows.append((ACPI_PM_BASE, ACPI_PM_BASE + 0x3F, "the PIIX4 PM block, where tinyvmm's BIOS "
                                                        "and a direct boot put it"))
        rows.append((PCI_IO_START, PCI_IO_END - 1, "PCI I/O window: BARs (the fixed ports above "
                                                   "take precedence)"))
        for first, last, name in sorted(rows):
            print(f"    {first:#06x}  {last:#06x}  {name}")
