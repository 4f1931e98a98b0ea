"""ACPI tables for tinyvmm's i440FX/PIIX4 PC, built from the machine it has, and how they
reach the guest.

* tables.py: RSDP, RSDT, FADT (revision 1, the PIIX4 PM block), FACS, MADT;
  dsdt.py: the DSDT in AML (aml.py is the encoder);
* linker.py: the blobs and QEMU's table-loader script that links them in guest memory;
* build_acpi() below: one call, the same tables for every consumer;
* publish.py: etc/acpi/tables, etc/acpi/rsdp and etc/table-loader on fw_cfg, rebuilt on the
  first read so the PM base the firmware programmed appears in them, as QEMU does.
A boot without firmware links them itself (tinyvmm.boot.direct, at layout.BOOT_TABLES_*).
"""

from __future__ import annotations

from .. import layout
from ..pci.piix import SCI_IRQ
from . import tables
from .dsdt import build_dsdt
from .linker import ZONE_FSEG, ZONE_HIGH, Linker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass

    from ..memory import GuestMemory
else:
    from ..record import dataclass

TABLES_FILE = "etc/acpi/tables"
RSDP_FILE = "etc/acpi/rsdp"
LOADER_FILE = "etc/table-loader"
RSDP_ALIGN = 16                         # where an OS scans for it
TABLES_ALIGN = tables.FACS_ALIGN        # the FACS is first in the blob


@dataclass(frozen=True)
class AcpiMachine:
    """What the tables describe: vCPUs, RAM (bytes), the PIIX4 PM I/O base and SCI, and where
    fw_cfg is reachable (its ports, with or without DMA, or an MMIO base)."""
    cpus: int
    ram_size: int
    pm_base: int = layout.ACPI_PM_BASE
    sci_irq: int = SCI_IRQ
    fw_cfg_ports: bool = True
    fw_cfg_dma: bool = True
    fw_cfg_mmio: int | None = None


def build_acpi(machine: AcpiMachine) -> Linker:
    """The tables in two files (TABLES_FILE: FACS, DSDT, FADT, MADT, RSDT; RSDP_FILE) and the
    links between them, as QEMU lays them out. Sizes depend on the CPUs only, not on the PM
    base: a rebuild after the firmware moved it keeps every file's size."""
    linker = Linker()
    linker.allocate(RSDP_FILE, RSDP_ALIGN, ZONE_FSEG)
    linker.allocate(TABLES_FILE, TABLES_ALIGN, ZONE_HIGH)

    def add_table(data: bytes) -> int:
        offset = linker.append(TABLES_FILE, data)
        linker.add_checksum(TABLES_FILE, offset + tables.CHECKSUM_OFFSET, offset, len(data))
        return offset

    def point(destination: str, offset: int) -> None:
        linker.add_pointer(destination, offset, 4, TABLES_FILE)

    facs = linker.append(TABLES_FILE, tables.facs())
    dsdt = add_table(build_dsdt(machine))
    fadt_data = tables.fadt(machine.pm_base, machine.sci_irq, facs, dsdt)
    fadt = linker.append(TABLES_FILE, fadt_data)
    point(TABLES_FILE, fadt + tables.FADT_FIRMWARE_CTRL)
    point(TABLES_FILE, fadt + tables.FADT_DSDT)
    linker.add_checksum(TABLES_FILE, fadt + tables.CHECKSUM_OFFSET, fadt, len(fadt_data))
    madt = add_table(tables.madt(machine.cpus))
    entries = [fadt, madt]
    rsdt_data = tables.rsdt(entries)
    rsdt = linker.append(TABLES_FILE, rsdt_data)
    for i in range(len(entries)):
        point(TABLES_FILE, rsdt + tables.HEADER_SIZE + 4 * i)
    linker.add_checksum(TABLES_FILE, rsdt + tables.CHECKSUM_OFFSET, rsdt, len(rsdt_data))
    linker.append(RSDP_FILE, tables.rsdp(rsdt))
    point(RSDP_FILE, tables.RSDP_RSDT_OFFSET)
    linker.add_checksum(RSDP_FILE, tables.RSDP_CHECKSUM_OFFSET, 0, tables.RSDP_SIZE)
    return linker


def install_direct(memory: GuestMemory, machine: AcpiMachine) -> int:
    """For a boot without firmware: the tables linked and written at layout.BOOT_TABLES_START,
    the RSDP in the EBDA's first KiB (layout.BOOT_TABLES_POINTER) with the BDA pointing there, as
    an OS's scan expects. Returns the RSDP's address."""
    linker = build_acpi(machine)
    size = len(linker.files[TABLES_FILE])
    room = layout.EBDA_START - layout.BOOT_TABLES_START
    if size > room:
        raise AssertionError(f"the ACPI tables take {size} bytes; {room} are set aside")
    linker.install(memory.write, {TABLES_FILE: layout.BOOT_TABLES_START,
                                  RSDP_FILE: layout.BOOT_TABLES_POINTER})
    memory.write(layout.BDA_EBDA_SEGMENT, (layout.EBDA_START >> 4).to_bytes(2, "little"))
    return layout.BOOT_TABLES_POINTER


def linked_tables(machine: AcpiMachine) -> dict[str, bytes]:
    """Each table by signature ("FACS", "DSDT", "FACP", "APIC", "RSDT"), linked as a direct
    boot places them: what `iasl -d` takes, one table a file (iasl does not take an ACPI 1.0
    RSDP, which has no table header)."""
    files = build_acpi(machine).link({TABLES_FILE: layout.BOOT_TABLES_START,
                                      RSDP_FILE: layout.BOOT_TABLES_POINTER})
    blob = files[TABLES_FILE]
    found = {"FACS": bytes(blob[:tables.FACS_SIZE])}
    offset = tables.FACS_SIZE
    while offset < len(blob):
        length = int.from_bytes(blob[offset + 4:offset + 8], "little")
        found[blob[offset:offset + 4].decode("ascii")] = bytes(blob[offset:offset + length])
        offset += length
    return found
