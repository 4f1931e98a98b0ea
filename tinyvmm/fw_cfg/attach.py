"""A machine's fw_cfg: its standard items, the user's files and option ROMs, attaching the device
to the board, and describing what the guest will see (`tinyvmm fw-cfg list`)."""

from __future__ import annotations

import os
import sys

from .. import layout
from ..bus import BusError
from ..cpu import guest_has_amd_ht_hole
from .device import MMIO_DMA, MMIO_SIZE, FwCfg, FwCfgDmaPorts, FwCfgIoPorts, FwCfgMmio
from .items import (
    FILE_BOOT_FAIL_WAIT,
    FILE_E820,
    FW_CFG_BOOT_MENU,
    FW_CFG_MAX_CPUS,
    FW_CFG_MAX_ITEM_SIZE,
    FW_CFG_NB_CPUS,
    FW_CFG_NOGRAPHIC,
    FW_CFG_RAM_SIZE,
    FW_CFG_UUID,
    GENROMS_PREFIX,
    FwCfgConfigError,
    FwCfgItems,
    add_user_items,
    e820_file,
)
from .smbios import ANCHOR_FILE as SMBIOS_ANCHOR
from .smbios import TABLES_FILE as SMBIOS_TABLES
from .smbios import smbios_files

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..acpi import AcpiMachine
    from ..board import Board
    from ..spec import FwCfgSpec

# The widest register in the MMIO window is 8 bytes; 8-byte alignment keeps every one natural.
MMIO_ALIGN = 8
NO_REBOOT_ON_BOOT_FAILURE = 0xFFFFFFFF   # etc/boot-fail-wait value QEMU uses by default


def check_mmio_window(base: int, ram_size: int | None, size: int = MMIO_SIZE) -> None:
    """Raise FwCfgConfigError unless [base, base + size) fits the hole below 4 GiB, clear of the
    APICs. With ram_size None, only what holds whatever the RAM (the hole's top, alignment)."""
    hole_start = layout.low_ram_end(ram_size) if ram_size is not None else layout.HIGH_MEMORY_START
    hole_end = layout.KVM_IDENTITY_MAP_START
    if not hole_start <= base or base + size > hole_end:
        with_ram = f" with {ram_size // layout.MiB} MiB of RAM" if ram_size is not None else ""
        raise FwCfgConfigError(f"fw_cfg: MMIO window {base:#x}-{base + size - 1:#x} is outside the "
                               f"hole below 4 GiB ({hole_start:#x}-{hole_end - 1:#x}{with_ram})")
    if base % MMIO_ALIGN:
        raise FwCfgConfigError(f"fw_cfg: MMIO base {base:#x} is not aligned to {MMIO_ALIGN} bytes")
    conflict = layout.mmio_conflict(base, size)
    if conflict:
        raise FwCfgConfigError(f"fw_cfg: MMIO window {base:#x}-{base + size - 1:#x} overlaps "
                               f"{conflict}")


def build_fw_cfg_items(spec: FwCfgSpec, ram_size: int, firmware_size: int, cpus: int = 1,
                       warn=None, loader_files: int = 0, acpi: bool = False) -> FwCfgItems:
    """Every item a machine with this fw_cfg serves, except SIGNATURE and ID (the device's own).
    `loader_files`: how many files a boot loader will add afterwards (their slots are kept).
    `acpi`: the ACPI tables and their loader script (tinyvmm.acpi.publish).

    Raises FwCfgConfigError (a ConfigError) for anything wrong with the spec:
    an unreadable user file, a duplicate name, an MMIO window outside the hole.
    """
    specs = spec.files
    if spec.mmio is not None:
        check_mmio_window(spec.mmio, ram_size)
    elif not spec.ports:
        raise FwCfgConfigError("fw_cfg: --no-fw-cfg-ports needs --fw-cfg-mmio, or the guest "
                               "cannot reach fw_cfg at all")
    items = FwCfgItems()
    items.add_item(FW_CFG_UUID, bytes(16))
    items.add_u64(FW_CFG_RAM_SIZE, ram_size)
    items.add_u16(FW_CFG_NOGRAPHIC, 1)               # no display device
    items.add_u16(FW_CFG_NB_CPUS, cpus)
    items.add_u16(FW_CFG_MAX_CPUS, cpus)             # x86: highest APIC ID + 1
    items.add_u16(FW_CFG_BOOT_MENU, 0)
    items.add_file(FILE_E820, e820_file(ram_size, guest_has_amd_ht_hole()))
    items.add_file(FILE_BOOT_FAIL_WAIT, NO_REBOOT_ON_BOOT_FAILURE.to_bytes(4, "little"))
    anchor, tables = smbios_files(ram_size, cpus)
    items.add_file(SMBIOS_ANCHOR, anchor)
    items.add_file(SMBIOS_TABLES, tables)
    reserved = {FILE_E820, FILE_BOOT_FAIL_WAIT, SMBIOS_ANCHOR, SMBIOS_TABLES}
    if acpi:
        from ..acpi.publish import ACPI_FILES, SYSTEM_STATES_FILE, add_acpi_files
        add_acpi_files(items, acpi_machine(spec, ram_size, cpus))
        reserved.update(ACPI_FILES + (SYSTEM_STATES_FILE,))
    for item in specs:
        if item.name in reserved:
            raise FwCfgConfigError(f"fw_cfg: {item.name!r} is already provided by tinyvmm; "
                                   "choose another name (user items belong under opt/)")
    roms = spec.option_roms
    room = items.file_slots - len(items.file_names()) - loader_files
    if len(specs) + len(roms) > room:
        raise FwCfgConfigError(
            f"fw_cfg: {len(specs)} --fw-cfg files and {len(roms)} option ROMs were given, but "
            f"only {room} fit: fw_cfg has {items.file_slots} file slots and this machine's own "
            f"files take {items.file_slots - room} ({', '.join(items.file_names())}"
            f"{' and the boot loader' + chr(39) + 's ROM and bootorder' if loader_files else ''})")
    seen = set()
    for item in specs:
        if item.name in seen:
            raise FwCfgConfigError(f"fw_cfg: {item.name!r} is given twice with --fw-cfg")
        seen.add(item.name)
    add_user_items(items, specs, warn, limit=min(ram_size, FW_CFG_MAX_ITEM_SIZE))
    add_option_roms(items, roms, warn)
    return items


def acpi_machine(spec: FwCfgSpec, ram_size: int, cpus: int, pm_base: int | None = None) -> AcpiMachine:
    """What the ACPI tables describe of a machine with this fw_cfg; `pm_base` None: where
    firmware is expected to put the PM block (layout.ACPI_PM_BASE)."""
    from ..acpi import AcpiMachine
    return AcpiMachine(cpus=cpus, ram_size=ram_size, pm_base=pm_base or layout.ACPI_PM_BASE,
                       fw_cfg_ports=spec.ports, fw_cfg_dma=spec.dma, fw_cfg_mmio=spec.mmio)


def add_option_roms(items: FwCfgItems, paths, warn=None) -> None:
    """Each ROM as genroms/<file name>, checked (signature, size byte) before the guest starts."""
    from .. import firmware as shipped
    from ..optionrom import OptionRomError, read_option_rom
    warn = warn or (lambda text: print(f"tinyvmm: {text}", file=sys.stderr))
    for path in map(shipped.resolve, paths):
        name = GENROMS_PREFIX + os.path.basename(path)
        if name in items.file_names():
            raise FwCfgConfigError(f"fw_cfg: two option ROMs are named {name!r}")
        try:
            data, warnings = read_option_rom(path)
        except OptionRomError as exc:
            raise FwCfgConfigError(str(exc)) from None
        except OSError as exc:
            raise FwCfgConfigError(f"cannot read option ROM {path}: {exc.strerror}") from None
        for text in warnings:
            warn(f"warning: {text}")
        items.add_file(name, data)


def attach_fw_cfg(board: Board, spec: FwCfgSpec, items: FwCfgItems | None = None) -> FwCfg:
    """Build the board's fw_cfg as `spec` says and put it on board.pio and board.mmio.

    `items` may be prepared beforehand with build_fw_cfg_items (to report
    errors before KVM is touched); the boot loader adds its keys and
    files to the returned device's `items`, before the guest runs.
    """
    config = board.config
    if items is None:
        items = build_fw_cfg_items(spec, config.ram_size, len(config.firmware))
    dma = spec.dma
    pm = board.power_management
    if pm is not None and "etc/acpi/tables" in items.file_names():    # ours, not a user's file
        from ..acpi.publish import rebuild_on_first_read
        rebuild_on_first_read(items, lambda: acpi_machine(
            spec, config.ram_size, config.smp, pm.pm_base()))
    fw_cfg = FwCfg(items, board.memory, dma_enabled=dma, tracer=board.tracer)
    try:
        if spec.ports:
            board.add_pio("fw_cfg", FwCfgIoPorts(fw_cfg))
            if dma:
                board.add_pio("fw_cfg_dma", FwCfgDmaPorts(fw_cfg))
        if spec.mmio is not None:
            # Without DMA the window stops before the DMA register, which then reads as all-ones.
            board.mmio.register(spec.mmio, MMIO_SIZE if dma else MMIO_DMA,
                                FwCfgMmio(fw_cfg, dma_enabled=dma))
    except BusError as exc:
        raise FwCfgConfigError(f"fw_cfg: {exc}") from None
    return fw_cfg


def describe_fw_cfg(spec: FwCfgSpec, items: FwCfgItems) -> dict:
    """What the guest will see, as a JSON-ready dict: the interfaces and every item (key, name,
    size, writable, file); needs no /dev/kvm."""
    FwCfg(items, None, dma_enabled=spec.dma)      # adds SIGNATURE and ID as the device will
    ports = spec.ports
    interfaces = {
        "ports": ports, "dma": spec.dma,
        "selector_port": layout.PORTS["fw_cfg"][0] if ports else None,
        "dma_port": layout.PORTS["fw_cfg_dma"][0] if ports and spec.dma else None,
        "mmio": spec.mmio,
    }
    entries = [{"key": e.key, "name": e.name, "size": e.size, "writable": e.writable,
                "file": e.is_file} for e in items.entries()]
    return {"interfaces": interfaces, "items": entries}


def format_table(description: dict) -> str:
    rows = [("KEY", "NAME", "SIZE", "WRITABLE")]
    rows += [(f"{e['key']:#06x}", e["name"], str(e["size"]), "yes" if e["writable"] else "no")
             for e in description["items"]]
    name_width = max(len(r[1]) for r in rows)
    size_width = max(len(r[2]) for r in rows)
    lines = [f"{k:<6}  {n:<{name_width}}  {s:>{size_width}}  {w}" for k, n, s, w in rows]
    iface = description["interfaces"]
    where = []
    if iface["ports"]:
        where.append(f"ports {iface['selector_port']:#x}-{iface['selector_port'] + 1:#x}"
                     + (f", DMA {iface['dma_port']:#x}" if iface["dma_port"] is not None else ""))
    if iface["mmio"] is not None:
        where.append(f"MMIO {iface['mmio']:#x}" + ("" if iface["dma"] else " (no DMA)"))
    lines.append(f"interfaces: {'; '.join(where)}")
    return "\n".join(lines) + "\n"


def add_host_file(items: FwCfgItems, name: str, data: bytes | str = b"", *, size: int | None = None,
                  read=None, write=None, limit: int, guard) -> str | None:
    """Add the host's file `name` of `size` bytes (default len(data)), holding `data` (a str as
    UTF-8) zero-padded, at most `limit` bytes; `read()` gives its contents each time the guest
    selects it, `write(offset, data)` receives each DMA write (see Machine.add_fw_cfg_file).
    `guard(callback, what, fallback=None)` wraps the callbacks (an exception ends the run).
    Returns the warning for a name outside opt/, or None. TypeError, FwCfgConfigError."""
    from ..spec import check_type
    from .items import user_item_warning
    check_type("name", name, str)
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"fw_cfg file {name!r}: data must be bytes or str, not {type(data).__name__}")
    for what, callback in (("read", read), ("write", write)):
        if callback is not None and not callable(callback):
            raise TypeError(f"fw_cfg file {name!r}: {what} must be callable")
    size = len(data) if size is None else size
    check_type("size", size, int)
    if not 0 <= size <= limit:
        raise FwCfgConfigError(f"fw_cfg file {name!r}: size {size} is outside 0 to {limit} bytes "
                               "(the guest's RAM, at most 2 GiB)")
    if len(data) > size:
        raise FwCfgConfigError(f"fw_cfg file {name!r}: {len(data)} bytes of data, size {size}")
    entry = items.add_file(name, bytes(data) + bytes(size - len(data)), writable=write is not None)
    if read is not None and write is None:
        entry.data = memoryview(bytearray(entry.data))      # read() refills it; DMA still cannot
    if read is not None:
        def on_select(entry):
            contents = read()
            if not isinstance(contents, (bytes, bytearray, memoryview)):
                raise TypeError(f"read() of fw_cfg file {name!r} returned "
                                f"{type(contents).__name__}, not bytes")
            if len(contents) > size:
                raise ValueError(f"read() of fw_cfg file {name!r} gave {len(contents)} bytes; "
                                 f"the file holds {size}")
            entry.data[:] = bytes(contents) + bytes(size - len(contents))
        entry.on_select = guard(on_select, f"the read callback of fw_cfg file {name!r}")
    if write is not None:
        entry.on_write = guard(write, f"the write callback of fw_cfg file {name!r}", fallback=False)
    return user_item_warning(name)
