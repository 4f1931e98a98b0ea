"""The ACPI tables on fw_cfg as QEMU's pc machine serves them: etc/acpi/tables, etc/acpi/rsdp
and etc/table-loader, for SeaBIOS, OVMF, qboot and tinyvmm's BIOS to install.

As in QEMU, the files are built once more on the guest's first select of any of them, from
the machine as the firmware has set it up by then (the PIIX4 PM base it programmed), so the
tables name the registers the firmware enabled. Their sizes never change: a rebuild does
not move a file's key or its size in the directory.
"""

from __future__ import annotations

from . import LOADER_FILE, RSDP_FILE, TABLES_FILE, AcpiMachine, build_acpi

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..fw_cfg.items import FwCfgEntry, FwCfgItems

ACPI_FILES = (TABLES_FILE, RSDP_FILE, LOADER_FILE)
SYSTEM_STATES_FILE = "etc/system-states"
# etc/system-states: one byte per S0-S5, bit 7 = supported, low bits = SLP_TYP (QEMU's format).
# S0 and S5 (soft-off, SLP_TYP 0) only: no S3 resume path, no S4 image.
SYSTEM_STATES = bytes([0x80, 0x00, 0x00, 0x01, 0x02, 0x80])


def fw_cfg_files(machine: AcpiMachine) -> dict[str, bytes]:
    linker = build_acpi(machine)
    return {TABLES_FILE: bytes(linker.files[TABLES_FILE]), RSDP_FILE: bytes(linker.files[RSDP_FILE]),
            LOADER_FILE: linker.script()}


def add_acpi_files(items: FwCfgItems, machine: AcpiMachine) -> None:
    """The three files, built for `machine` (a rebuild on first read may follow: see
    rebuild_on_first_read), and etc/system-states (the sleep states firmware may offer)."""
    for name, data in fw_cfg_files(machine).items():
        items.add_file(name, data)
    items.add_file(SYSTEM_STATES_FILE, SYSTEM_STATES)


def rebuild_on_first_read(items: FwCfgItems, current: Callable[[], AcpiMachine]) -> None:
    """Build the files again from `current()` when the guest first selects one of them."""
    entries: list[FwCfgEntry] = [items.file(name) for name in ACPI_FILES]

    def rebuild(_entry: FwCfgEntry) -> None:
        for entry in entries:
            entry.on_select = None
        files = fw_cfg_files(current())
        for entry in entries:
            data = files[entry.name]
            if len(data) != entry.size:
                raise AssertionError(f"{entry.name} changed size on rebuild")
            entry.data = memoryview(data)
    for entry in entries:
        entry.on_select = rebuild
