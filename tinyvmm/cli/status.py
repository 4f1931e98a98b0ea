"""The command line's exit statuses, and the errors that end it with one."""

import os
import sys

from ..errors import TinyvmmError

EXIT_OK = 0
EXIT_HOST_ERROR = 1
EXIT_USAGE = 2
EXIT_EXPECT_MISSED = 6

STATUS_HELP = """\
exit status:
  0    the guest reset or powered off (without --expect or --stop-at), --expect text was
       seen or the --stop-at point reached, Ctrl-A x was typed, or the reader of the console
       output went away
  1    tinyvmm could not run the guest (no usable /dev/kvm, a KVM call failed, no host
       memory for its RAM) or could not write a result
  2    bad usage: an unknown option, a value out of range, an unreadable or malformed file
  3    the guest crashed (triple fault, KVM internal error, failed entry); a report goes to stderr
  4    --timeout passed first (a report goes to stderr)
  5    the guest halted for good (HLT with interrupts disabled; not looked for under --gdb)
  6    the guest reset or powered off before the --expect text appeared (or the --stop-at point)
  130  interrupted (Ctrl-C, SIGTERM or SIGHUP)
"""


class OutputError(TinyvmmError):
    """A result that could not be written (a full disk, /dev/full): exit status 1."""


def quiet_stdout() -> int:
    """stdout's reader has gone (`tinyvmm ... | head`): end quietly, as command-line tools do.
    stdout now points at /dev/null, so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK
