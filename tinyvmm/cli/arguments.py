"""The command line's options: their argparse types (each calling the rule tinyvmm.spec or the
subsystem applies, so the message is the API's), the groups every command shares, and the
translation of a parsed namespace into the typed MachineSpec the rest of tinyvmm takes."""

from __future__ import annotations

import argparse
import os
import re

from .. import layout
from ..errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..spec import MachineSpec


def argument_type(parse: Callable, strip: str = ""):
    """An argparse `type=` running `parse` (a rule raising ConfigError): argparse then names the
    option in the message. `strip`: a prefix the rule's message carries that the option says."""
    def parse_argument(text: str):
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(strip)) from None
    parse_argument.__name__ = getattr(parse, "__name__", "value")   # argparse's "invalid X value"
    return parse_argument


def parse_size(text: str) -> int:
    """'256M', '1G', '65536K', or a plain number of MiB (as QEMU's -m)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 64M or 1G")
    number, unit = int(match.group(1)), (match.group(2) or "M").upper()
    return number * {"K": layout.KiB, "M": layout.MiB, "G": layout.GiB, "T": 1024 * layout.GiB}[unit]


def parse_mem(text: str) -> int:
    from ..spec import check_mem
    return argument_type(lambda value: check_mem(parse_size(value), value))(text)


def parse_smp(text: str) -> int:
    from ..spec import check_smp
    if not text.strip().lstrip("+-").isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of vCPUs")
    return argument_type(lambda value: check_smp(int(value), value))(text)


def parse_timeout(text: str) -> float:
    from ..spec import check_timeout
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    return argument_type(lambda _: check_timeout(value, text))(text)


def parse_expect(text: str) -> str:
    from ..spec import check_console_text
    argument_type(lambda value: check_console_text(os.fsencode(value)))(text)
    return text


def parse_runs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of runs must be 1 to 1000")
    return int(text)


def parse_load(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of busy processes must be 0 to 64")
    return int(text)


def parse_sink(text: str) -> str:
    from ..spec import check_sink
    return argument_type(check_sink)(text)


def parse_trace(text: str):
    from ..debug.trace import parse_spec
    return argument_type(parse_spec)(text)


def parse_fw_cfg_item(text: str):
    from ..fw_cfg.items import parse_user_item
    return argument_type(parse_user_item, strip="fw_cfg: ")(text)


def parse_fw_cfg_mmio(text: str) -> int:
    """An MMIO base that can lie in the hole below 4 GiB (the RAM's end is checked later)."""
    from ..spec import check_mmio_base
    try:
        base = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address like 0xfef00000") from None
    return argument_type(check_mmio_base, strip="fw_cfg: ")(base)


def parse_drive(text: str):
    from ..virtio.drive import parse_drive as parse
    return argument_type(parse)(text)


def parse_disk(text: str):
    """`--disk FILE`: a raw image as a writable virtio disk."""
    from ..spec import DriveSpec
    if not text:
        raise argparse.ArgumentTypeError("--disk needs a file")
    return DriveSpec(text)


def parse_gdb_address(text: str):
    from ..debug.gdb.server import ListenAddress  # sockets only for runs that ask for gdb
    return argument_type(ListenAddress.parse)(text)


def parse_symbols(text: str):
    from ..debug.symbols import parse_symbol_spec  # pyelftools only for runs that ask
    return argument_type(parse_symbol_spec)(text)


class MergeTrace(argparse.Action):
    """--trace given more than once: the categories of all, and at most one steps."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest, None)
        if previous:
            if previous.steps is not None and values.steps is not None:
                parser.error("argument --trace: steps is given twice")
            values = type(values)(previous.categories | values.categories,
                                  previous.steps if values.steps is None else values.steps)
        setattr(namespace, self.dest, values)


def add_mem_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mem", type=parse_mem, default=256 * layout.MiB, metavar="SIZE",
                        help="guest RAM, e.g. 64M or 1G; a plain number is MiB (default 256M)")


def add_hardware_options(parser: argparse.ArgumentParser) -> None:
    """What the machine has: RAM, vCPUs, ACPI (run, boot, fw-cfg list)."""
    add_mem_option(parser)
    parser.add_argument("--smp", type=parse_smp, default=1, metavar="N",
                        help=f"the number of vCPUs, 1 to {layout.SMP_MAX} and to the host's "
                             "limit (default 1); vCPU 0 starts, the guest wakes the others "
                             "with INIT and SIPI")
    parser.add_argument("--no-acpi", dest="acpi", action="store_false",
                        help="publish no ACPI tables (QEMU's -machine acpi=off)")
    from ..spec import SOFTWARE_CPU_MODES
    parser.add_argument("--software-cpu", choices=SOFTWARE_CPU_MODES, default="off",
                        help="run privileged guest code in a software CPU (unicorn) between "
                             "the instructions only KVM executes: many times faster where KVM "
                             "emulates guest code (OVMF, a kernel's boot); for one vCPU with "
                             "no debugger or step trace; auto = on where KVM emulates guest "
                             "code (default off)")


def add_machine_options(parser: argparse.ArgumentParser) -> None:
    """Options every command that runs a guest shares."""
    add_hardware_options(parser)
    parser.add_argument("--serial", type=parse_sink, default="stdio", metavar="stdio|file:PATH|none",
                        help="where COM1 output goes (default stdio); with stdio, stdin is COM1's "
                             "input: a terminal in raw mode (Ctrl-A x quits, Ctrl-A h lists the "
                             "keys), or a pipe")
    parser.add_argument("--debugcon", type=parse_sink, default="none", metavar="stdio|file:PATH|none",
                        help="where the debug console (ports 0x402, 0xe9) goes (default none)")
    parser.add_argument("--timeout", type=parse_timeout, metavar="S",
                        help="end a guest still running after S seconds (status 4)")
    parser.add_argument("--report", metavar="PATH",
                        help="also write the crash report (a crash, a timeout) to PATH, replacing "
                             "the last one; a run that ends without one removes PATH")
    parser.add_argument("--expect", metavar="TEXT", type=parse_expect,
                        help="end the run with status 0 as soon as the serial console or the "
                             "debug console has shown TEXT")
    add_drive_options(parser)
    add_debug_options(parser)
    parser.add_argument("--trace", type=parse_trace, action=MergeTrace, metavar="CATEGORIES",
                        help="log events to stderr (or --trace-file): comma-separated io, mmio, "
                             "unclaimed, milestones, exits (the other exits: HLT, shutdown, "
                             "signals, debug), fw_cfg, pci, completions (instructions the host's "
                             "KVM cannot emulate, completed by tinyvmm), or all; and "
                             "steps[=N][@START]: single-step N instructions of vCPU 0 (default "
                             "10000; other vCPUs run on), "
                             "logging each one's mode, CS:IP, bytes, disassembly and symbol, then "
                             "run on at full speed; from the first instruction, or from START: a "
                             "linear 0xADDRESS, a SYMBOL, or milestone:VALUE (after its first "
                             "write to port 0xf4 or 0xf5); not with --gdb")
    parser.add_argument("--trace-file", metavar="PATH",
                        help="write the --trace lines to PATH instead of stderr")


def add_drive_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("disks")
    group.add_argument("--drive", dest="drives", action="append", default=[], type=parse_drive,
                       metavar="file=PATH,if=virtio,format=raw[,readonly=on][,serial=S][,bootindex=N]",
                       help="a raw disk image as a virtio-blk PCI disk (QEMU's -drive spelling; "
                            "repeatable; the first is at 00:02.0). bootindex puts it in the "
                            "firmware's boot order (SeaBIOS), lowest first. "
                            "if=pflash,format=raw,unit=0|1,file=PATH[,readonly=on]: a CFI flash "
                            "unit below 4 GiB instead of --bios (unit 0 ends at 4 GiB and holds "
                            "the reset vector, unit 1 ends where it begins; OVMF_CODE.fd and "
                            "OVMF_VARS.fd); the guest's writes reach the file")
    group.add_argument("--disk", dest="drives", action="append", type=parse_disk,
                       metavar="FILE", help="short for --drive file=FILE,if=virtio,format=raw")


def add_debug_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("debugging")
    group.add_argument("--gdb", type=parse_gdb_address, metavar="tcp::PORT|unix:PATH",
                       help="serve gdb's remote protocol: tcp::PORT (localhost), tcp:HOST:PORT, "
                            "or a unix socket path; port 0 picks a free one (printed)")
    group.add_argument("--gdb-wait", action="store_true",
                       help="with --gdb: stop before the first instruction until gdb connects")
    group.add_argument("--stats", action="store_true",
                       help="print exits per reason and per port, the time in each handler, and "
                            "the instructions completed for the host's KVM (count and time), "
                            "at the end")
    group.add_argument("--symbols", type=parse_symbols, nargs="+", action="extend", default=[],
                       metavar="ELF[@ADDRESS]",
                       help="ELF files whose symbols name addresses in traces, crash reports and "
                            "gdb; @ADDRESS is where link address 0 sits (default: 0xF0000 for "
                            "real-mode images linked at 0, else the link addresses)")


def add_fw_cfg_options(parser: argparse.ArgumentParser) -> None:
    """The fw_cfg options of every command that builds a machine (run, boot, fw-cfg list)."""
    group = parser.add_argument_group("fw_cfg")
    group.add_argument("--fw-cfg", dest="fw_cfg", action="append", default=[],
                       type=parse_fw_cfg_item, metavar="name=NAME,string=TEXT|file=PATH",
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
    group.add_argument("--fw-cfg-mmio", dest="fw_cfg_mmio", type=parse_fw_cfg_mmio, metavar="ADDR",
                       help="also map fw_cfg as MMIO (data +0, selector +8, DMA +16) at ADDR in "
                            "the hole below 4 GiB, e.g. 0xfef00000")
    group.add_argument("--fw-cfg-ports", dest="fw_cfg_ports", action=argparse.BooleanOptionalAction,
                       default=True,
                       help="offer the x86 I/O ports 0x510 (and 0x514 for DMA); with "
                            "--no-fw-cfg-ports, fw_cfg is reachable only through --fw-cfg-mmio")


def add_boot_options(parser: argparse.ArgumentParser, choose_boot: bool = True) -> None:
    """--kernel, --initrd, --append; with `choose_boot`, --boot (bench has its rows instead)."""
    if choose_boot:
        parser.add_argument("--kernel", metavar="FILE",
                            help="a bzImage, or an ELF vmlinux with a PVH entry (CONFIG_PVH) "
                                 "(default: kernels/build/bzImage from `make -C kernels`)")
        parser.add_argument("--boot", choices=("firmware", "direct"), metavar="firmware|direct",
                            help="firmware: the BIOS runs and a boot ROM loads the kernel from "
                                 "fw_cfg (linuxboot for a bzImage, the PVH ROM for a vmlinux); "
                                 "direct: no firmware, the vCPU starts at the kernel's entry (the "
                                 "64-bit entry of a bzImage, the PVH entry of a vmlinux). Default: "
                                 "direct for a vmlinux unless --bios or --option-rom is given, "
                                 "else firmware")
    else:
        parser.add_argument("--kernel", metavar="BZIMAGE",
                            help="the bzImage of the bzImage rows (default: kernels/build/bzImage "
                                 "from `make -C kernels`); the PVH rows boot --vmlinux")
    parser.add_argument("--initrd", metavar="FILE",
                        help="an initrd or initramfs (default with the default kernel: "
                             "kernels/build/initramfs.cpio)")
    parser.add_argument("--append", metavar="CMDLINE",
                        help="the kernel command line (default: serial console on ttyS0, "
                             "reboot=k, panic=-1); tinyvmm adds what this machine needs after it: "
                             "the fw_cfg location and, where KVM emulates guest code, noxsave")
    parser.add_argument("--append-as-is", action="store_true",
                        help="pass --append to the kernel exactly as given, adding nothing")


def machine_spec(args: argparse.Namespace, boot_linux: bool) -> MachineSpec:
    """The MachineSpec a parsed command line describes; with `boot_linux`, a kernel (the
    default test kernel without --kernel). Options a command lacks keep their defaults."""
    from ..spec import DebugSpec, FwCfgSpec, KernelSpec, MachineSpec, split_drives

    def given(name: str, default=None):
        value = getattr(args, name, None)
        return default if value is None else value
    kernel = None
    if boot_linux:
        kernel = KernelSpec(given("kernel"), given("initrd"), given("append"),
                            given("append_as_is", False), given("boot"))
    expect = given("expect")
    disks, flash = split_drives(given("drives", ()))
    return MachineSpec(
        firmware=given("bios"), mem=given("mem", 256 * layout.MiB), smp=given("smp", 1),
        acpi=given("acpi", True), kernel=kernel, software_cpu=given("software_cpu", "off"),
        fw_cfg=FwCfgSpec(files=tuple(given("fw_cfg", ())),
                         option_roms=tuple(given("option_roms", ())),
                         dma=given("fw_cfg_dma", True), ports=given("fw_cfg_ports", True),
                         mmio=given("fw_cfg_mmio")),
        drives=disks, pflash=flash, serial=given("serial", "none"),
        debugcon=given("debugcon", "none"), expect=os.fsencode(expect) if expect else None,
        debug=DebugSpec(gdb=given("gdb"), gdb_wait=given("gdb_wait", False),
                        stats=given("stats", False), symbols=tuple(given("symbols", ())),
                        trace=given("trace"), trace_file=given("trace_file")))
