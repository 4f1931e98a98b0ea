"""The MP table (Intel MultiProcessor Specification 1.4, chapter 4) of a boot without firmware
and without ACPI: what an OS then learns the CPUs, the I/O APIC and the interrupt wiring from.

Layout: the 16-byte floating pointer ("_MP_", 4.1) points to the configuration table ("PCMP"
header, 4.2) whose entries are, in the specification's order: one processor per vCPU (APIC ID
= vCPU index, vCPU 0 the BSP), the PCI bus 0 and the ISA bus 1, the I/O APIC (ID 0, as its
register reads in KVM), the I/O interrupt assignments (ISA IRQs to the pin of the same number,
as KVM's default routing wires them; each PCI device's INTx to the ISA IRQ the PIIX3 routes it
to), and the local interrupts (LINT0 ExtINT from the 8259s, LINT1 NMI).
"""

from __future__ import annotations

import struct

from . import layout
from .checksum import checksum_byte

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

SPEC_REVISION = 4                       # MP 1.4
OEM_ID = b"TINYVMM "
PRODUCT_ID = b"PC          "
POINTER = struct.Struct("<4sIBBBBBBBB")     # 16 bytes
HEADER = struct.Struct("<4sHBB8s12sIHHIHBB")   # 44 bytes
PROCESSOR, BUS, IO_APIC, IO_INTERRUPT, LOCAL_INTERRUPT = range(5)
LOCAL_APIC_VERSION = 0x14
IO_APIC_VERSION = 0x11
CPU_ENABLED, CPU_BSP = 0x01, 0x02
INT, NMI, EXTINT = 0, 1, 3
PCI_BUS, ISA_BUS = 0, 1
ALL_LOCAL_APICS = 0xFF
ISA_IRQS = 16
CASCADE_IRQ = 2                         # the slave 8259's input: no device behind it


def config_table(cpus: int, pci_interrupts: Iterable[tuple[int, int, int]]) -> bytes:
    """The configuration table: `pci_interrupts` are (slot, pin 1-4, ISA IRQ) of bus 0's
    devices. Processor entries leave the CPU signature and features 0 (an OS reads CPUID)."""
    entries = []
    for cpu in range(cpus):
        flags = CPU_ENABLED | (CPU_BSP if cpu == 0 else 0)
        entries.append(struct.pack("<BBBBII8x", PROCESSOR, cpu, LOCAL_APIC_VERSION, flags, 0, 0))
    entries.append(struct.pack("<BB6s", BUS, PCI_BUS, b"PCI   "))
    entries.append(struct.pack("<BB6s", BUS, ISA_BUS, b"ISA   "))
    entries.append(struct.pack("<BBBBI", IO_APIC, 0, IO_APIC_VERSION, 1, layout.IOAPIC_START))
    pci = sorted(set(pci_interrupts))
    pci_irqs = {irq for _, _, irq in pci}
    for irq in range(ISA_IRQS):
        if irq != CASCADE_IRQ and irq not in pci_irqs:
            entries.append(struct.pack("<BBHBBBB", IO_INTERRUPT, INT, 0, ISA_BUS, irq, 0, irq))
    for slot, pin, irq in pci:        # source IRQ: device number and pin, as 4.3.4 defines for PCI
        entries.append(struct.pack("<BBHBBBB", IO_INTERRUPT, INT, 0, PCI_BUS,
                                   slot << 2 | (pin - 1), 0, irq))
    entries.append(struct.pack("<BBHBBBB", LOCAL_INTERRUPT, EXTINT, 0, ISA_BUS, 0, 0, 0))
    entries.append(struct.pack("<BBHBBBB", LOCAL_INTERRUPT, NMI, 0, ISA_BUS, 0, ALL_LOCAL_APICS, 1))
    body = b"".join(entries)
    header = bytearray(HEADER.pack(b"PCMP", HEADER.size + len(body), SPEC_REVISION, 0, OEM_ID,
                                   PRODUCT_ID, 0, 0, len(entries), layout.LAPIC_START, 0, 0, 0))
    header[7] = checksum_byte(bytes(header) + body)
    return bytes(header) + body


def floating_pointer(table_address: int) -> bytes:
    """The floating pointer to a configuration table at `table_address` (no default config,
    virtual-wire mode: no IMCR)."""
    pointer = bytearray(POINTER.pack(b"_MP_", table_address, 1, SPEC_REVISION, 0, 0, 0, 0, 0, 0))
    pointer[10] = checksum_byte(pointer)
    return bytes(pointer)


def install_direct(memory, cpus: int, pci_interrupts: Iterable[tuple[int, int, int]]) -> None:
    """Write the table at layout.BOOT_TABLES_START and its pointer at BOOT_TABLES_POINTER (the
    EBDA's first KiB, which an OS scans), with the BDA pointing at the EBDA."""
    table = config_table(cpus, pci_interrupts)
    room = layout.EBDA_START - layout.BOOT_TABLES_START
    if len(table) > room:
        raise AssertionError(f"the MP table takes {len(table)} bytes; {room} are set aside")
    memory.write(layout.BOOT_TABLES_START, table)
    memory.write(layout.BOOT_TABLES_POINTER, floating_pointer(layout.BOOT_TABLES_START))
    memory.write(layout.BDA_EBDA_SEGMENT, (layout.EBDA_START >> 4).to_bytes(2, "little"))
