"""fw_cfg on the command line: its options, the standard items of a machine, attaching it, `fw-cfg list`."""

import argparse
import os
import sys

from .. import layout
from ..bus import BusError
from .smbios import ANCHOR_FILE as SMBIOS_ANCHOR
from .smbios import TABLES_FILE as SMBIOS_TABLES
from .smbios import smbios_files
from .device import MMIO_DMA, MMIO_SIZE, FwCfg, FwCfgDmaPorts, FwCfgIoPorts, FwCfgMmio
from .items import (FILE_BOOT_FAIL_WAIT, FILE_E820, FW_CFG_BOOT_MENU, FW_CFG_MAX_CPUS,
                    FW_CFG_MAX_ITEM_SIZE, FW_CFG_NB_CPUS, FW_CFG_NOGRAPHIC, FW_CFG_RAM_SIZE,
                    FW_CFG_UUID, GENROMS_PREFIX, FwCfgConfigError, FwCfgItems, add_user_items,
                    e820_file, parse_user_item)

# The widest register in the MMIO window is 8 bytes; 8-byte alignment keeps every one natural.
MMIO_ALIGN = 8
# Pages the in-kernel irqchip claims inside the hole below 4 GiB.
NO_REBOOT_ON_BOOT_FAILURE = 0xFFFFFFFF   # etc/boot-fail-wait value QEMU uses by default


def parse_fw_cfg_spec(text: str):
    try:
        return parse_user_item(text)
    except FwCfgConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("fw_cfg: ")) from None


def parse_mmio_base(text: str) -> int:
    """An MMIO base that can lie in the hole below 4 GiB (RAM size is checked later)."""
    try:
        base = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address like 0xfef00000") from None
    try:
        check_mmio_window(base, ram_size=None)
    except FwCfgConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("fw_cfg: ")) from None
    return base


def check_mmio_window(base: int, ram_size: int | None, size: int = MMIO_SIZE) -> None:
    """Raise FwCfgConfigError unless [base, base + size) fits the hole below 4 GiB, clear of the
    APICs. With ram_size None, only what holds whatever the RAM (the hole's top, alignment)."""
    hole_start = min(ram_size, layout.LOW_RAM_MAX) if ram_size is not None else layout.HIGH_MEMORY_START
    hole_end = layout.KVM_IDENTITY_MAP_START
    if base % MMIO_ALIGN:
        raise FwCfgConfigError(f"fw_cfg: MMIO base {base:#x} is not aligned to {MMIO_ALIGN} bytes")
    if not hole_start <= base or base + size > hole_end:
        with_ram = f" with {ram_size // layout.MiB} MiB of RAM" if ram_size is not None else ""
        raise FwCfgConfigError(f"fw_cfg: MMIO window {base:#x}-{base + size - 1:#x} is outside the "
                               f"hole below 4 GiB ({hole_start:#x}-{hole_end - 1:#x}{with_ram})")
    conflict = layout.mmio_conflict(base, size)
    if conflict:
        raise FwCfgConfigError(f"fw_cfg: MMIO window {base:#x}-{base + size - 1:#x} overlaps "
                               f"{conflict}")


def add_fw_cfg_options(parser: argparse.ArgumentParser) -> None:
    """The fw_cfg options of every command that builds a machine (run, boot, fw-cfg list)."""
    group = parser.add_argument_group("fw_cfg")
    group.add_argument("--fw-cfg", dest="fw_cfg", action="append", default=[],
                       type=parse_fw_cfg_spec, metavar="name=NAME,string=TEXT|file=PATH",
                       help="add a named fw_cfg file, as QEMU's -fw_cfg (repeatable); names "
                            "should start with opt/")
    group.add_argument("--option-rom", dest="option_roms", action="append", default=[],
                       metavar="FILE",
                       help="add a legacy option ROM as fw_cfg genroms/NAME for the BIOS to run, "
                            "as QEMU's -option-rom (repeatable); with boot, the first one boots "
                            "the kernel instead of tinyvmm's linuxboot ROM (e.g. "
                            "/usr/share/qemu/linuxboot_dma.bin)")
    group.add_argument("--no-fw-cfg-dma", dest="fw_cfg_dma", action="store_false",
                       help="no DMA interface: FW_CFG_ID reads 1 and ports 0x514-0x51b are absent")
    group.add_argument("--fw-cfg-mmio", dest="fw_cfg_mmio", type=parse_mmio_base, metavar="ADDR",
                       help="also map fw_cfg as MMIO (data +0, selector +8, DMA +16) at ADDR in "
                            "the hole below 4 GiB, e.g. 0xfef00000")
    group.add_argument("--fw-cfg-ports", dest="fw_cfg_ports", action=argparse.BooleanOptionalAction,
                       default=True,
                       help="offer the x86 I/O ports 0x510 (and 0x514 for DMA); with "
                            "--no-fw-cfg-ports, fw_cfg is reachable only through --fw-cfg-mmio")


def add_fw_cfg_list_options(parser: argparse.ArgumentParser) -> None:
    """Options of `fw-cfg list` beyond the machine's: the fw_cfg ones and --json."""
    add_fw_cfg_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _args(args) -> tuple[list, bool, int | None, bool]:
    return (list(getattr(args, "fw_cfg", None) or []), getattr(args, "fw_cfg_dma", True),
            getattr(args, "fw_cfg_mmio", None), getattr(args, "fw_cfg_ports", True))


def build_fw_cfg_items(args, ram_size: int, firmware_size: int, cpus: int = 1,
                       warn=None, loader_files: int = 0) -> FwCfgItems:
    """Every item a machine with these options serves, except SIGNATURE and ID (the device's own).
    `loader_files`: how many files a boot loader will add afterwards (their slots are kept).

    Raises FwCfgConfigError (a ValueError) for anything wrong with the options:
    an unreadable user file, a duplicate name, an MMIO window outside the hole.
    """
    specs, _, mmio_base, ports = _args(args)
    if mmio_base is not None:
        check_mmio_window(mmio_base, ram_size)
    elif not ports:
        raise FwCfgConfigError("fw_cfg: --no-fw-cfg-ports needs --fw-cfg-mmio, or the guest "
                               "cannot reach fw_cfg at all")
    items = FwCfgItems()
    items.add_item(FW_CFG_UUID, bytes(16))
    items.add_u64(FW_CFG_RAM_SIZE, ram_size)
    items.add_u16(FW_CFG_NOGRAPHIC, 1)               # no display device
    items.add_u16(FW_CFG_NB_CPUS, cpus)
    items.add_u16(FW_CFG_MAX_CPUS, cpus)             # x86: highest APIC ID + 1
    items.add_u16(FW_CFG_BOOT_MENU, 0)
    items.add_file(FILE_E820, e820_file(ram_size, firmware_size))
    items.add_file(FILE_BOOT_FAIL_WAIT, NO_REBOOT_ON_BOOT_FAILURE.to_bytes(4, "little"))
    anchor, tables = smbios_files(ram_size, cpus)
    items.add_file(SMBIOS_ANCHOR, anchor)
    items.add_file(SMBIOS_TABLES, tables)
    reserved = {FILE_E820, FILE_BOOT_FAIL_WAIT, SMBIOS_ANCHOR, SMBIOS_TABLES}
    for spec in specs:
        if spec.name in reserved:
            raise FwCfgConfigError(f"fw_cfg: {spec.name!r} is already provided by tinyvmm; "
                                   "choose another name (user items belong under opt/)")
    roms = getattr(args, "option_roms", None) or []
    room = items.file_slots - len(items.file_names()) - loader_files
    if len(specs) + len(roms) > room:
        raise FwCfgConfigError(
            f"fw_cfg: {len(specs)} --fw-cfg files and {len(roms)} option ROMs were given, but "
            f"only {room} fit: fw_cfg has {items.file_slots} file slots and this machine's own "
            f"files take {items.file_slots - room} ({', '.join(items.file_names())}"
            f"{' and the boot loader' + chr(39) + 's ROM and bootorder' if loader_files else ''})")
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise FwCfgConfigError(f"fw_cfg: {spec.name!r} is given twice with --fw-cfg")
        seen.add(spec.name)
    add_user_items(items, specs, warn, limit=min(ram_size, FW_CFG_MAX_ITEM_SIZE))
    add_option_roms(items, getattr(args, "option_roms", None) or [], warn)
    return items


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


def attach_fw_cfg(machine, args, items: FwCfgItems | None = None) -> FwCfg:
    """Build the machine's fw_cfg from `args` and put it on machine.pio and machine.mmio.

    `items` may be prepared beforehand with build_fw_cfg_items (to report
    option errors before KVM is touched); the boot loader adds its keys and
    files to the returned device's `items`, before the guest runs.
    """
    config = machine.config
    if items is None:
        items = build_fw_cfg_items(args, config.ram_size, len(config.firmware))
    _, dma, mmio_base, ports = _args(args)
    fw_cfg = FwCfg(items, machine.memory, dma_enabled=dma, tracer=getattr(machine, "tracer", None))
    try:
        if ports:
            machine.add_pio("fw_cfg", FwCfgIoPorts(fw_cfg))
            if dma:
                machine.add_pio("fw_cfg_dma", FwCfgDmaPorts(fw_cfg))
        if mmio_base is not None:
            # Without DMA the window stops before the DMA register, which then reads as all-ones.
            machine.mmio.register(mmio_base, MMIO_SIZE if dma else MMIO_DMA,
                                  FwCfgMmio(fw_cfg, dma_enabled=dma))
    except BusError as exc:
        raise FwCfgConfigError(f"fw_cfg: {exc}") from None
    return fw_cfg


def _firmware_size(args) -> int:
    path = getattr(args, "bios", None)
    if not path:
        return layout.FIRMWARE_MIN_SIZE
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise FwCfgConfigError(f"cannot read firmware {path}: {exc.strerror}") from None


def describe_fw_cfg(args, items: FwCfgItems | None = None) -> dict:
    """What the guest will see, as a JSON-ready dict; needs no /dev/kvm.

    `items` defaults to build_fw_cfg_items for these options (RAM from
    args.mem, firmware size from args.bios).
    """
    if items is None:
        ram_size = getattr(args, "mem", None) or 256 * layout.MiB
        items = build_fw_cfg_items(args, ram_size, _firmware_size(args))
    _, dma, mmio_base, ports = _args(args)
    FwCfg(items, None, dma_enabled=dma)          # adds SIGNATURE and ID as the device will
    interfaces = {
        "ports": ports, "dma": dma,
        "selector_port": layout.PORTS["fw_cfg"][0] if ports else None,
        "dma_port": layout.PORTS["fw_cfg_dma"][0] if ports and dma else None,
        "mmio": mmio_base,
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


def print_listing(args, items: FwCfgItems | None = None, as_json: bool = False) -> int:
    """Print what the guest will see, as a table or JSON; returns the exit status."""
    try:
        description = describe_fw_cfg(args, items)
    except FwCfgConfigError as exc:
        print(f"tinyvmm: {exc}", file=sys.stderr)
        return 2
    if as_json:
        import json
        json.dump(description, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(description))
    return 0


def cmd_fw_cfg_list(args) -> int:
    """`tinyvmm fw-cfg list`: the items for these options, as a table (or JSON with --json)."""
    return print_listing(args, None, as_json=getattr(args, "json", False))
