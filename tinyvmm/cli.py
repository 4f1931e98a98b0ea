"""The `tinyvmm` command line: parse options, build the machine, run it, turn the outcome into a status."""

import argparse
import re
import sys

from . import layout
from .runner import Outcome

EXIT_OK = 0
EXIT_HOST_ERROR = 1
EXIT_USAGE = 2

STATUS_HELP = """\
exit status:
  0    the guest reset or powered off, or --expect text was seen
  1    tinyvmm could not run the guest (no usable /dev/kvm, a KVM call failed)
  2    bad usage: an unknown option, a value out of range, an unreadable or malformed file
  3    the guest crashed (triple fault, KVM internal error, failed entry); a report goes to stderr
  4    --timeout passed first (a report goes to stderr)
  130  interrupted (Ctrl-C or SIGTERM)
"""


class UsageError(Exception):
    """Bad input found before the guest starts: message for the user, exit status 2."""


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


def parse_sink(text: str) -> str:
    if text in ("stdio", "none") or (text.startswith("file:") and len(text) > 5):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected stdio, none or file:PATH")


def parse_trace(text: str) -> set[str]:
    from .trace import TraceSpecError, parse_categories
    try:
        return parse_categories(text)
    except TraceSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_machine_options(parser: argparse.ArgumentParser) -> None:
    """Options every command that runs a guest shares."""
    parser.add_argument("--mem", type=parse_mem, default=256 * layout.MiB, metavar="SIZE",
                        help="guest RAM, e.g. 64M or 1G; a plain number is MiB (default 256M)")
    parser.add_argument("--serial", type=parse_sink, default="stdio", metavar="stdio|file:PATH|none",
                        help="where COM1 output goes (default stdio)")
    parser.add_argument("--debugcon", type=parse_sink, default="none", metavar="stdio|file:PATH|none",
                        help="where the debug console (ports 0x402, 0xe9) goes (default none)")
    parser.add_argument("--timeout", type=parse_timeout, metavar="S",
                        help="end a guest still running after S seconds (status 4)")
    parser.add_argument("--expect", metavar="TEXT",
                        help="end the run with status 0 as soon as the serial console or the "
                             "debug console has shown TEXT")
    parser.add_argument("--trace", type=parse_trace, default=set(), metavar="CATEGORIES",
                        help="log events to stderr: comma-separated io, mmio, unclaimed, "
                             "milestones, exits, or all")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyvmm", description="A minimal virtual machine monitor over /dev/kvm.",
        epilog=STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run", help="run a raw firmware image from the reset vector (like QEMU's -bios)",
        description="Run a raw firmware image from the reset vector, as QEMU's -bios does: the "
                    "image (64, 128, 192 or 256 KiB) is mapped read-only ending at 4 GiB, and its "
                    "last 64 or 128 KiB also ending at 1 MiB.",
        epilog=STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--bios", required=True, metavar="FILE", help="the firmware image")
    add_machine_options(run)
    run.set_defaults(func=cmd_run)
    return parser


def read_firmware(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(layout.FIRMWARE_MAX_SIZE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read firmware {path}: {exc.strerror}") from None
    size = len(data)
    if size % (64 * layout.KiB) or not layout.FIRMWARE_MIN_SIZE <= size <= layout.FIRMWARE_MAX_SIZE:
        raise UsageError(f"firmware {path} is {size} bytes; it must be 64, 128, 192 or 256 KiB")
    return data


def run_machine(config, args) -> int:
    """Build the machine, run it to its end, report; returns the exit status."""
    from .kvm import KvmError, KvmUnavailable
    from .machine import Machine
    from .runner import Runner
    from .trace import Tracer

    tracer = Tracer(sys.stderr, args.trace) if args.trace else None
    try:
        machine = Machine(config, tracer=tracer)
    except (KvmUnavailable, KvmError) as exc:
        print(f"tinyvmm: {exc}", file=sys.stderr)
        return EXIT_HOST_ERROR
    try:
        result = Runner(machine, timeout=args.timeout, tracer=tracer).run()
    except KvmError as exc:
        print(f"tinyvmm: {exc}", file=sys.stderr)
        return EXIT_HOST_ERROR
    finally:
        machine.close()
    if result.report:
        print(result.report, file=sys.stderr)
    elif result.outcome is Outcome.INTERRUPTED:
        print("tinyvmm: interrupted", file=sys.stderr)
    return result.status


def make_consoles(args):
    from .console import Console, open_sink
    serial_sink, close_serial = open_sink(args.serial)
    debug_sink, close_debug = open_sink(args.debugcon)
    expect = args.expect.encode() if args.expect else None
    return (Console("serial", serial_sink, expect), Console("debugcon", debug_sink, expect),
            lambda: (close_serial(), close_debug()))


def cmd_run(args) -> int:
    from .console import SinkSpecError
    from .machine import MachineConfig
    firmware = read_firmware(args.bios)
    try:
        serial, debugcon, close = make_consoles(args)
    except SinkSpecError as exc:
        raise UsageError(str(exc)) from None
    try:
        return run_machine(MachineConfig(firmware, args.mem, serial, debugcon), args)
    finally:
        close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"tinyvmm: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
