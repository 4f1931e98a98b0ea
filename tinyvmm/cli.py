"""The `tinyvmm` command line: parse options, build the machine, run it, turn the outcome into a status."""

import argparse
import os
import re
import sys

from . import layout
from .errors import ConfigError

EXIT_OK = 0
EXIT_HOST_ERROR = 1
EXIT_USAGE = 2

STATUS_HELP = """\
exit status:
  0    the guest reset or powered off, --expect text was seen, Ctrl-A x was typed, or the
       reader of the console output went away
  1    tinyvmm could not run the guest (no usable /dev/kvm, a KVM call failed, no host
       memory for its RAM) or could not write a result
  2    bad usage: an unknown option, a value out of range, an unreadable or malformed file
  3    the guest crashed (triple fault, KVM internal error, failed entry); a report goes to stderr
  4    --timeout passed first (a report goes to stderr)
  5    the guest halted for good (HLT with interrupts disabled; not looked for under --gdb)
  130  interrupted (Ctrl-C, SIGTERM or SIGHUP)
"""


# Bad input found before the guest starts: message for the user, exit status 2. The API's
# ConfigError, so that the command line and scripts say the same.
UsageError = ConfigError


class OutputError(Exception):
    """A result that could not be written (a full disk, /dev/full): exit status 1."""


def parse_size(text: str) -> int:
    """'256M', '1G', '65536K', or a plain number of MiB (as QEMU's -m)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 64M or 1G")
    number, unit = int(match.group(1)), (match.group(2) or "M").upper()
    return number * {"K": layout.KiB, "M": layout.MiB, "G": layout.GiB, "T": 1024 * layout.GiB}[unit]


def parse_mem(text: str) -> int:
    size = parse_size(text)
    if not layout.RAM_MIN_SIZE <= size <= layout.RAM_MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text}: RAM must be between {layout.RAM_MIN_SIZE // layout.MiB}M and "
            f"{layout.RAM_MAX_SIZE // layout.GiB}G")
    if size % layout.PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text}: RAM must be a multiple of 4K")
    return size


def parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 30 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"{text}: the timeout must be above 0 and at most 30 days")
    return value


def parse_expect(text: str) -> str:
    from .console import TAIL_SIZE
    if not text:
        raise argparse.ArgumentTypeError("the text to expect is empty")
    if len(os.fsencode(text)) > TAIL_SIZE // 2:
        raise argparse.ArgumentTypeError(f"at most {TAIL_SIZE // 2} bytes can be expected")
    return text


def parse_runs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of runs must be 1 to 1000")
    return int(text)


def parse_sink(text: str) -> str:
    if text in ("stdio", "none") or (text.startswith("file:") and len(text) > 5):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected stdio, none or file:PATH")


def parse_trace(text: str):
    from .debug.trace import TraceSpecError, parse_spec
    try:
        return parse_spec(text)
    except TraceSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def add_machine_options(parser: argparse.ArgumentParser) -> None:
    """Options every command that runs a guest shares."""
    parser.add_argument("--mem", type=parse_mem, default=256 * layout.MiB, metavar="SIZE",
                        help="guest RAM, e.g. 64M or 1G; a plain number is MiB (default 256M)")
    parser.add_argument("--serial", type=parse_sink, default="stdio", metavar="stdio|file:PATH|none",
                        help="where COM1 output goes (default stdio); with stdio, stdin is COM1's "
                             "input: a terminal in raw mode (Ctrl-A x quits, Ctrl-A h lists the "
                             "keys), or a pipe")
    parser.add_argument("--debugcon", type=parse_sink, default="none", metavar="stdio|file:PATH|none",
                        help="where the debug console (ports 0x402, 0xe9) goes (default none)")
    parser.add_argument("--timeout", type=parse_timeout, metavar="S",
                        help="end a guest still running after S seconds (status 4)")
    parser.add_argument("--expect", metavar="TEXT", type=parse_expect,
                        help="end the run with status 0 as soon as the serial console or the "
                             "debug console has shown TEXT")
    from .virtio.drive import add_drive_options
    add_drive_options(parser)
    from .debug.gdb.options import add_debug_options
    add_debug_options(parser)
    parser.add_argument("--trace", type=parse_trace, action=MergeTrace, metavar="CATEGORIES",
                        help="log events to stderr (or --trace-file): comma-separated io, mmio, "
                             "unclaimed, milestones, exits (the other exits: HLT, shutdown, "
                             "signals, debug), fw_cfg, pci, completions (instructions the host's "
                             "KVM cannot emulate, completed by tinyvmm), or all; and "
                             "steps[=N][@START]: single-step N instructions (default 10000), "
                             "logging each one's mode, CS:IP, bytes, disassembly and symbol, then "
                             "run on at full speed; from the first instruction, or from START: a "
                             "linear 0xADDRESS, a SYMBOL, or milestone:VALUE (after its first "
                             "write to port 0xf4 or 0xf5); not with --gdb")
    parser.add_argument("--trace-file", metavar="PATH",
                        help="write the --trace lines to PATH instead of stderr")


def terminal_columns() -> int:
    """$COLUMNS, else the width of the terminal on stdout, else 80: the width help is wrapped to."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help formatters are told the terminal's width.

    Left to find it themselves, argparse's formatters import shutil (and with it
    zlib, bz2 and lzma), at the first add_argument: milliseconds of every start.
    The width is the one they would find, less the same 2 columns of margin.
    """

    def __init__(self, *args, formatter_class=argparse.HelpFormatter, **kwargs):
        width = terminal_columns() - 2      # once: add_argument makes a formatter every time

        def formatter(prog):
            return formatter_class(prog, width=width)
        super().__init__(*args, formatter_class=formatter, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `command` of that one alone.

    One command's parser is all it takes to parse that command's arguments;
    building the others' would only slow every start down.
    """
    parser = Parser(
        prog="tinyvmm", description="A minimal virtual machine monitor over /dev/kvm.",
        epilog=STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=VersionAction, nargs=0,
                        help="print the version and where the shipped firmware and kernel are")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, add_command in COMMANDS.items():
        if command is None or command == name:
            add_command(commands)
    return parser


class VersionAction(argparse.Action):
    """--version, its text worked out only when asked for (it imports what a start needs not)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            print(version_text(), flush=True)
        except BrokenPipeError:
            parser.exit(quiet_stdout())
        except OSError as exc:
            parser.exit(EXIT_HOST_ERROR, f"tinyvmm: cannot write the version: {exc.strerror}\n")
        parser.exit()


def version_text() -> str:
    from . import __version__
    from . import firmware as shipped
    from .boot.payload import DEFAULT_KERNEL_DIR
    return (f"tinyvmm {__version__}\nshipped firmware: {shipped.DIRECTORY} ({', '.join(shipped.IMAGES)})"
            f"\ndefault kernel folder: {DEFAULT_KERNEL_DIR} (TINYVMM_KERNELS)")


def _command(commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help, description=description, epilog=STATUS_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_run(commands) -> None:
    from .fw_cfg.options import add_fw_cfg_options
    run = _command(commands, "run",
                   "run a raw firmware image from the reset vector (like QEMU's -bios)",
                   "Run a raw firmware image from the reset vector, as QEMU's -bios does: the image "
                   "(a multiple of 64 KiB, up to 16 MiB) is mapped read-only ending at 4 GiB, and "
                   "its last 64 or 128 KiB also ending at 1 MiB, behind the i440FX's PAM shadow "
                   "RAM (SeaBIOS, qboot and tinyvmm's own BIOS run unmodified).")
    run.add_argument("--bios", required=True, metavar="FILE",
                     help="the firmware image; a bare name that is no file here names a shipped "
                          "one (bios.bin, as QEMU's -bios looks in its data folder)")
    add_machine_options(run)
    add_fw_cfg_options(run)
    run.set_defaults(func=cmd_run)


def _add_boot(commands) -> None:
    from .fw_cfg.options import add_fw_cfg_options
    boot = _command(commands, "boot",
                    "boot a Linux bzImage or vmlinux, through firmware or directly",
                    "Boot a Linux bzImage as QEMU's -kernel does: tinyvmm's BIOS finds the "
                    "linuxboot option ROM in fw_cfg, and the ROM loads setup, kernel, initrd and "
                    "command line through fw_cfg (DMA by default, `rep insb` with "
                    "--no-fw-cfg-dma) and jumps to the kernel's real-mode entry. An ELF vmlinux "
                    "built with CONFIG_PVH boots directly through its PVH entry (as Firecracker "
                    "does), or with --boot firmware through the PVH option ROM. Without "
                    "--kernel, boots the test kernel and initramfs built by `make -C kernels`.")
    add_boot_options(boot)
    boot.add_argument("--bios", metavar="FILE",
                      help="firmware to run instead of the built-in BIOS (it must find the "
                           "boot ROM in fw_cfg genroms/, as SeaBIOS does, or load the kernel "
                           "from fw_cfg itself, as qboot does)")
    boot.add_argument("--timing-json", metavar="PATH",
                      help="write the boot timeline (milestones, banner; exits and bytes moved "
                           "at each) as JSON, for tinyvmm bench")
    boot.add_argument("--stop-at-kernel", action="store_true",
                      help="end the run (status 0) when the ROM jumps into the kernel")
    add_machine_options(boot)
    add_fw_cfg_options(boot)
    boot.set_defaults(func=cmd_boot)


def _add_bench(commands) -> None:
    def firmware(text):
        from .bench import parse_firmware
        try:
            return parse_firmware(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    bench = _command(commands, "bench", "the boot-time table: legacy against DMA fw_cfg (and QEMU)",
                     "Boot the kernel N times with the DMA ROM and N times with the legacy ROM, "
                     "interleaved, each in a fresh process, and print the phases of the 2015 "
                     "fw_cfg DMA posting: VMM startup (process start to first KVM_RUN), BIOS "
                     "startup (to the hand-over to the boot ROM), kernel setup (to the jump into "
                     "the kernel), total; plus the time to the \"Linux version\" banner.")
    add_boot_options(bench, choose_boot=False)
    bench.add_argument("--runs", type=parse_runs, default=5, metavar="N",
                       help="boots per system (default 5; medians are reported)")
    bench.add_argument("--mem", type=parse_mem, default=256 * layout.MiB, metavar="SIZE",
                       help="guest RAM (default 256M)")
    bench.add_argument("--timeout", type=parse_timeout, default=300, metavar="S",
                       help="give up on a boot after S seconds (default 300)")
    bench.add_argument("--no-banner", action="store_true",
                       help="stop each boot when the ROM jumps into the kernel instead of waiting "
                            "for the banner (for large kernels, slow to reach it under emulation)")
    bench.add_argument("--to-init", action="store_true",
                       help="run each tinyvmm boot on to the test init's first line "
                            "(TINYVMM-INIT-OK, so the initrd must be kernels/build/initramfs.cpio "
                            "with its /init) instead of the banner (--no-banner is then ignored), "
                            "and add the \"to init\" row with the completions an emulating host "
                            "needed; 30-50 s a boot on such a host (6 rows x --runs)")
    bench.add_argument("--vs-qemu", action="store_true",
                       help="also boot the same kernel under QEMU: SeaBIOS with linuxboot_dma, "
                            "SeaBIOS with the legacy linuxboot, and qboot (SeaBIOS is "
                            "/usr/share/seabios/bios.bin)")
    bench.add_argument("--firmware", type=firmware, action="extend", default=[],
                       metavar="seabios,qboot",
                       help="also boot tinyvmm with unmodified firmware: seabios (SeaBIOS with "
                            "QEMU's linuxboot_dma.bin, and with linuxboot.bin and no fw_cfg DMA) "
                            "and/or qboot; repeatable or comma-separated")
    bench.add_argument("--vmlinux", metavar="FILE",
                       help="the ELF kernel of the PVH rows: direct PVH, and PVH through the BIOS "
                            "and the PVH ROM, DMA and legacy (default, without --kernel: "
                            "kernels/build/vmlinux when it exists; none, no PVH rows)")
    bench.add_argument("--json", metavar="PATH", help="write every run and the summary as JSON")
    bench.add_argument("--plot", metavar="PATH",
                       help="draw the phases as stacked bars, one per system (.svg or .png)")
    bench.set_defaults(func=cmd_bench)


def _add_fw_cfg(commands) -> None:
    from .fw_cfg.options import add_fw_cfg_list_options
    fw_cfg = commands.add_parser("fw-cfg", help="inspect what the fw_cfg device will serve")
    fw_cfg_commands = fw_cfg.add_subparsers(dest="fw_cfg_command", metavar="COMMAND")
    fw_cfg_commands.required = True
    listing = fw_cfg_commands.add_parser(
        "list", help="print the items the guest will see (key, name, size, writable)",
        description="Print the fw_cfg items a guest started with the same options would see. "
                    "Accepts the options of run and boot; with --kernel the boot items appear too.")
    listing.add_argument("--bios", metavar="FILE", help="the firmware image (its size shapes etc/e820)")
    add_boot_options(listing)
    listing.add_argument("--mem", type=parse_mem, default=256 * layout.MiB, metavar="SIZE",
                         help="guest RAM (default 256M)")
    from .virtio.drive import add_drive_options
    add_drive_options(listing)
    add_fw_cfg_list_options(listing)
    listing.set_defaults(func=cmd_fw_cfg_list)


# The commands, in the order `tinyvmm --help` lists them, and what adds each one's parser.
COMMANDS = {"run": _add_run, "boot": _add_boot, "bench": _add_bench, "fw-cfg": _add_fw_cfg}


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


def cmd_run(args) -> int:
    if args.drives:
        from . import firmware as shipped
        if os.path.realpath(shipped.resolve(args.bios)) == os.path.realpath(shipped.image_path(shipped.BIOS)):
            print("tinyvmm: warning: tinyvmm's BIOS boots only from fw_cfg, not from disks; give "
                  "--bios /usr/share/seabios/bios-256k.bin to boot one", file=sys.stderr)
    return launch(args, boot_linux=False)


def cmd_boot(args) -> int:
    if args.timing_json is not None:
        from .files import check_output_path
        try:
            check_output_path("--timing-json", args.timing_json)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return launch(args, boot_linux=True)


def cmd_fw_cfg_list(args) -> int:
    if args.kernel is None:
        given = [option for option, value in (("--initrd", args.initrd), ("--append", args.append),
                                              ("--append-as-is", args.append_as_is),
                                              ("--boot", args.boot)) if value]
        if given:
            raise UsageError(f"{', '.join(given)} without --kernel: fw-cfg list shows the boot "
                             "items of the --kernel given")
    from .config import MachineOptions, firmware_image, open_disks, prepare_items
    from .fw_cfg.options import print_listing
    options = MachineOptions.from_args(args)
    items, _ = prepare_items(options, firmware_image(options), boot_linux=args.kernel is not None)
    _, close_disks = open_disks(options.drives)         # the same checks as a run's
    close_disks()
    try:
        status = print_listing(args, items, as_json=args.json)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write the listing: {exc.strerror}") from None
    return status


def cmd_bench(args) -> int:
    from . import bench
    from .boot.payload import PayloadError, load_payload
    missing = bench.firmware_missing(args.firmware)
    if missing:
        raise UsageError(missing)
    try:    # outputs first: a bad --json or --plot must not wait for the last run
        bench.check_outputs(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:    # fail early, with the loader's own message, on a kernel that cannot boot
        payload = load_payload(args.kernel, args.initrd, args.append, True, args.mem,
                               getattr(args, "append_as_is", False), boot="firmware")
    except PayloadError as exc:
        raise UsageError(str(exc)) from None
    if payload.is_elf:
        raise UsageError(f"bench --kernel {args.kernel} is an ELF vmlinux: give the bzImage with "
                         "--kernel and the vmlinux with --vmlinux")
    from .boot.direct import DirectBootError, check_64bit_entry
    try:    # a kernel without a 64-bit entry only loses its direct row
        check_64bit_entry(payload.plan.image, payload.kernel_path)
        args.direct64 = True
    except DirectBootError as exc:
        print(f"tinyvmm: no direct 64-bit row: {exc}", file=sys.stderr)
        args.direct64 = False
    args.vmlinux_path = bench.default_vmlinux(args)
    if args.vmlinux_path is None:
        why = ("--kernel is given without --vmlinux" if args.kernel is not None else
               "no kernels/build/vmlinux (build it with `make -C kernels`, or give --vmlinux)")
        print(f"tinyvmm: no PVH rows: {why}", file=sys.stderr)
    else:
        try:
            payload = load_payload(args.vmlinux_path, bench.bench_initrd(args), args.append, True, args.mem,
                                   getattr(args, "append_as_is", False))
        except PayloadError as exc:
            raise UsageError(f"--vmlinux: {exc}") from None
        if not payload.is_elf:
            raise UsageError(f"--vmlinux {args.vmlinux_path} is a bzImage, not an ELF vmlinux")
    return bench.cmd_bench(args)


def launch(args, boot_linux: bool) -> int:
    """Build the Machine these options describe (with a kernel when `boot_linux`), run it to
    its end with the command line's own aids (console input, gdb, --trace steps, --stats,
    the boot's milestones, --timing-json), report; the exit status."""
    from .config import MachineOptions
    from .debug.gdb.options import DebugSetupError, attach_debug_tools
    from .kvm import KvmError, KvmUnavailable
    from .machine import Machine
    from .memory import HostMemoryError
    from .outcome import Outcome

    tracer, close_trace = make_tracer(args)
    steps = args.trace.steps if args.trace else None
    try:
        try:
            machine = Machine.from_options(
                MachineOptions.from_args(args), boot_linux=boot_linux, serial=args.serial,
                debugcon=args.debugcon, expect=os.fsencode(args.expect) if args.expect else None,
                tracer=tracer)
        except (KvmUnavailable, KvmError) as exc:
            print(f"tinyvmm: {exc}", file=sys.stderr)
            return EXIT_HOST_ERROR
        except HostMemoryError as exc:
            print(f"tinyvmm: {exc.strerror}", file=sys.stderr)
            return EXIT_HOST_ERROR
        try:
            board, runner, payload = machine.board, machine.runner, machine.payload
            args.boot = machine.options.boot        # as chosen: the debugging aids follow it
            direct = payload is not None and payload.boot == "direct"
            if payload is not None and not direct and not getattr(args, "gdb", None):
                from .boot.marks import BootMarks
                # --trace steps owns guest debugging: no kernel-entry breakpoint beside it
                entry = (None,) if steps is not None else payload.kernel_entry()
                BootMarks(board, runner, machine.fw_cfg, *entry)
            timeline = None
            if getattr(args, "timing_json", None):
                from .timeline import BootTimeline
                timeline = BootTimeline(board, runner, machine.fw_cfg)
            if getattr(args, "stop_at_kernel", False):
                if direct:      # the vCPU starts in the kernel: the run ends before it enters
                    board.request_stop(Outcome.EXPECTED, "the vCPU starts in the kernel")
                else:
                    value = payload.kernel_entry()[1]
                    board.stop_at_milestone("milestone_linux", value,
                                            "the boot ROM jumped into the kernel")
            console_input = start_console_input(args, board, runner)
            try:
                with attach_debug_tools(board, runner, args) as debug:
                    if steps is not None:
                        from .debug.steps import StepTracer
                        StepTracer(board, runner, tracer, steps, debug.symbols)
                    if tracer is not None and hasattr(tracer.out, "begin"):
                        tracer.out.begin()      # the last usage error is behind us
                    result = debug.run(lambda: machine.run(timeout=args.timeout))
            finally:
                if console_input is not None:
                    console_input.close()
            if machine.output_error:
                raise OutputError(machine.output_error)
            if timeline:
                try:
                    timeline.write(args.timing_json, result.outcome.name)
                except OSError as exc:
                    raise OutputError(f"cannot write {args.timing_json}: {exc.strerror}") from None
        except DebugSetupError as exc:
            raise UsageError(str(exc)) from None
        except KvmError as exc:
            print(f"tinyvmm: {exc}", file=sys.stderr)
            return EXIT_HOST_ERROR
        finally:
            machine.close()
    finally:
        close_trace()
    from .console import end_stdout_line, end_stdout_line_before_stderr
    if result.outcome is Outcome.EXPECTED:
        end_stdout_line()
    else:
        end_stdout_line_before_stderr()
    if result.report:
        print(result.report, file=sys.stderr)
    elif result.outcome is Outcome.INTERRUPTED:
        print("tinyvmm: interrupted", file=sys.stderr)
    elif result.outcome is Outcome.HALTED:
        print(f"tinyvmm: {result.outcome.description}: {result.message}", file=sys.stderr)
    elif result.outcome is Outcome.OUTPUT_CLOSED:
        return quiet_stdout()
    return result.status


def make_tracer(args):
    """The Tracer of --trace (None without it), writing to --trace-file or stderr, and a
    function closing that file (OutputError if a line could not be written). UsageError
    for a file that cannot be opened, and for --trace steps with --gdb (both want the
    vCPU's debug registers)."""
    path = getattr(args, "trace_file", None)
    if not args.trace:
        if path:
            raise UsageError("--trace-file needs --trace")
        return None, lambda: None
    if args.trace.steps is not None and getattr(args, "gdb", None):
        raise UsageError("--trace steps cannot be used with --gdb: both need the vCPU's "
                         "debug registers")
    from .debug.trace import TraceFile, Tracer
    if not path:
        return Tracer(sys.stderr, args.trace.categories), lambda: None
    try:
        out = TraceFile(path)
    except OSError as exc:
        raise UsageError(f"cannot write the trace to {path}: {exc.strerror}") from None

    def close():
        try:
            out.close()
        except OSError as exc:
            raise OutputError(f"cannot write the trace to {path}: {exc.strerror}") from None
    return Tracer(out, args.trace.categories), close


def start_console_input(args, machine, runner):
    """With --serial stdio, stdin feeds COM1 (a terminal in raw mode, with Ctrl-A escapes)."""
    if args.serial != "stdio" or sys.stdin is None:
        return None
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (OSError, ValueError):
        return None                                 # no stdin at all
    import signal
    from .outcome import Outcome
    from .terminal import ConsoleInput
    # Ctrl-A x kicks the vCPU with SIGUSR1, possibly before the run loop installs its own
    # handler or after it has put the old one back: never let the default action kill us.
    signal.signal(signal.SIGUSR1, lambda *_: None)
    console_input = ConsoleInput(fd, machine.serial.feed, on_quit=lambda: runner.stop_from_thread(
        Outcome.QUIT, "C-a x typed on the console"))
    console_input.start()
    return console_input


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # A command's own parser is enough for its arguments; anything else (no command, --help,
    # a misspelt command) gets the full parser, whose usage and help list every command.
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()              # inside the try: a reader that left is found here
        return status
    except UsageError as exc:
        print(f"tinyvmm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return quiet_stdout()
    except KeyboardInterrupt:           # Ctrl-C while files are read, before the run loop's own
        print("tinyvmm: interrupted", file=sys.stderr)
        return 130
    except OutputError as exc:
        print(f"tinyvmm: {exc}", file=sys.stderr)
        return EXIT_HOST_ERROR


def quiet_stdout() -> int:
    """stdout's reader has gone (`tinyvmm ... | head`): end quietly, as command-line tools do.
    stdout now points at /dev/null, so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
