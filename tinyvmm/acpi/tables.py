"""The fixed-layout ACPI tables of an i440FX/PIIX4 PC: RSDP, RSDT, FADT, FACS and MADT.

Layouts follow the ACPI specification 6.5, chapter 5.2 (5.2.5 RSDP, 5.2.6 the system
description table header, 5.2.7 RSDT, 5.2.9 FADT, 5.2.10 FACS, 5.2.12 MADT). The FADT is
revision 1 (116 bytes), as a PIIX4 PM block has no extended (X_) registers: the ACPI 1.0
form every OS still reads. Addresses between tables are left as offsets for the linker
(tinyvmm.acpi.linker) to turn into guest addresses.
"""

from __future__ import annotations

import struct

from .. import layout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

OEM_ID = b"TINYVM"                      # 6 bytes
OEM_TABLE_ID = b"TINYVMM "              # 8 bytes
OEM_REVISION = 1
CREATOR_ID = b"TVMM"
CREATOR_REVISION = 1

HEADER = struct.Struct("<4sIBB6s8sI4sI")       # 36 bytes (5.2.6)
HEADER_SIZE = HEADER.size
CHECKSUM_OFFSET = 9
RSDP_SIZE = 20                          # revision 0: the ACPI 1.0 RSDP
RSDP_CHECKSUM_OFFSET = 8
RSDP_RSDT_OFFSET = 16
FACS_SIZE = 64
FACS_ALIGN = 64

# FADT revision 1 (5.2.9, the fields up to Flags)
FADT_REVISION = 1
FADT_SIZE = 116
FADT_FIRMWARE_CTRL = 36
FADT_DSDT = 40
INT_MODEL_APIC = 1                      # ACPI 1.0's INT_MODEL: multiple APIC
P_LVL_DISABLED = 0x0FFF                 # P_LVL2/3_LAT above 100/1000 us: no C2, no C3
RTC_CENTURY = 0x32                      # the CMOS index of the century (tinyvmm.devices.cmos)
# Flags: WBINVD works, C1 on all CPUs, the sleep button is a control method (none is
# fixed), the RTC wakes from S4, and timestamps use the platform clock.
FADT_FLAGS = (1 << 0) | (1 << 2) | (1 << 5) | (1 << 7) | (1 << 15)
PM1_EVT_LEN = 4
PM1_CNT_LEN = 2
PM_TMR_LEN = 4
PM1_CNT_OFFSET = 4                      # from the PM base (tinyvmm.pci.piix)
PM_TMR_OFFSET = 8

# MADT (5.2.12)
MADT_REVISION = 1
MADT_PCAT_COMPAT = 1                    # dual 8259s present
MADT_LOCAL_APIC = 0
MADT_IO_APIC = 1
MADT_INTERRUPT_OVERRIDE = 2
MADT_LOCAL_APIC_NMI = 4
LOCAL_APIC_ENABLED = 1
ALL_PROCESSORS = 0xFF
LINT1 = 1
# ISA IRQs that PCI devices share (the PIRQ link choices and the SCI): level, active-high
# (MPS INTI flags: polarity 01 active-high, trigger 11 level).
PCI_ISA_IRQS = (5, 9, 10, 11)
INTI_LEVEL_ACTIVE_HIGH = 0x000D


def header(signature: bytes, length: int, revision: int) -> bytes:
    """A table header with a zero checksum (filled when the table is linked)."""
    return HEADER.pack(signature, length, revision, 0, OEM_ID, OEM_TABLE_ID, OEM_REVISION,
                       CREATOR_ID, CREATOR_REVISION)


def table(signature: bytes, revision: int, body: bytes) -> bytes:
    return header(signature, HEADER_SIZE + len(body), revision) + body


def rsdp(rsdt_address: int = 0) -> bytes:
    """The revision-0 Root System Description Pointer (checksum 0 until linked)."""
    return struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 0, rsdt_address)


def rsdt(entries: Iterable[int]) -> bytes:
    """The RSDT: 32-bit table addresses (offsets until linked)."""
    addresses = list(entries)
    return table(b"RSDT", 1, struct.pack(f"<{len(addresses)}I", *addresses))


def facs() -> bytes:
    """The FACS: signature and length; no waking vector, no global lock holder."""
    return struct.pack("<4sI", b"FACS", FACS_SIZE) + bytes(FACS_SIZE - 8)


def fadt(pm_base: int, sci_irq: int, facs_offset: int = 0, dsdt_offset: int = 0) -> bytes:
    """The revision-1 FADT of a PIIX4 PM block at `pm_base` with its SCI on ISA IRQ
    `sci_irq`. No SMI command port: the PM block is in ACPI mode from reset."""
    gpe0_base, gpe0_length = layout.PORTS["acpi_gpe0"]
    body = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
        facs_offset, dsdt_offset, INT_MODEL_APIC, 0, sci_irq,
        0, 0, 0, 0, 0,                              # SMI_CMD, ACPI_ENABLE/DISABLE, S4BIOS, PSTATE
        pm_base, 0, pm_base + PM1_CNT_OFFSET, 0, 0, pm_base + PM_TMR_OFFSET,
        gpe0_base, 0,
        PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, gpe0_length, 0, 0, 0,
        P_LVL_DISABLED, P_LVL_DISABLED, 0, 0, 0, 0,
        0, 0, RTC_CENTURY, 0, 0, FADT_FLAGS)
    return table(b"FACP", FADT_REVISION, body)


def madt(cpus: int) -> bytes:
    """The MADT: one enabled local APIC per vCPU (APIC ID = processor UID = vCPU index), the
    I/O APIC at GSI 0, the PCI IRQs as level-triggered, LINT1 as NMI on every CPU. IRQ 0 has
    no override: KVM's default routing brings the PIT to I/O APIC pin 0."""
    entries = [struct.pack("<BBBBI", MADT_LOCAL_APIC, 8, cpu, cpu, LOCAL_APIC_ENABLED)
               for cpu in range(cpus)]
    entries.append(struct.pack("<BBBBII", MADT_IO_APIC, 12, 0, 0, layout.IOAPIC_START, 0))
    entries += [struct.pack("<BBBBIH", MADT_INTERRUPT_OVERRIDE, 10, 0, irq, irq,
                            INTI_LEVEL_ACTIVE_HIGH) for irq in PCI_ISA_IRQS]
    entries.append(struct.pack("<BBBHB", MADT_LOCAL_APIC_NMI, 6, ALL_PROCESSORS, 0, LINT1))
    body = struct.pack("<II", layout.LAPIC_START, MADT_PCAT_COMPAT) + b"".join(entries)
    return table(b"APIC", MADT_REVISION, body)
