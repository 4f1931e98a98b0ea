"""The `tinyvmm` command line: parse options into a MachineSpec, build the machine, run it, turn
the outcome into an exit status. The only part of tinyvmm that sees argparse."""

import argparse
import os
import sys

from ..errors import ConfigError
from .arguments import parse_size
from .commands import COMMANDS
from .status import EXIT_HOST_ERROR, EXIT_OK, EXIT_USAGE, STATUS_HELP, OutputError, quiet_stdout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["main", "build_parser", "COMMANDS", "Parser", "parse_size", "EXIT_OK", "EXIT_HOST_ERROR",
           "EXIT_USAGE", "OutputError"]


def terminal_columns() -> int:
    """$COLUMNS, else the width of the terminal on stdout, else 80: the width help is wrapped to."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help formatters are told the terminal's width, and whose usage
    errors are one line, as every other usage error of tinyvmm (status 2).

    Left to find it themselves, argparse's formatters import shutil (and with it
    zlib, bz2 and lzma), at the first add_argument: milliseconds of every start.
    The width is the one they would find, less the same 2 columns of margin.
    """

    def __init__(self, *, formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
                 **kwargs):
        width = terminal_columns() - 2      # once: add_argument makes a formatter every time

        def formatter(prog: str) -> argparse.HelpFormatter:
            return formatter_class(prog, width=width)
        super().__init__(formatter_class=formatter, **kwargs)

    def error(self, message: str) -> "NoReturn":
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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
    from .. import __version__
    from .. import firmware as shipped
    from ..boot.payload import DEFAULT_KERNEL_DIR
    return (f"tinyvmm {__version__}\nshipped firmware: {shipped.DIRECTORY} ({', '.join(shipped.IMAGES)})"
            f"\ndefault kernel folder: {DEFAULT_KERNEL_DIR} (TINYVMM_KERNELS)")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # A command's own parser is enough for its arguments; anything else (no command, --help,
    # a misspelt command) gets the full parser, whose usage and help list every command.
    try:
        parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
        args = parser.parse_args(argv)
        status = args.func(args)
        sys.stdout.flush()              # inside the try: a reader that left is found here
        return status
    except ConfigError as exc:
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


if __name__ == "__main__":
    sys.exit(main())
