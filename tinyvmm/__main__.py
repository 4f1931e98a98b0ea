"""The `tinyvmm` command (`python -m tinyvmm`, and the console script): the command line, with
an interrupt that comes while Python is still loading it ending it as one would later."""

import signal
import sys

INTERRUPTED = 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM and SIGHUP end the command as Ctrl-C does (status 130), from the first moment:
    # the run loop installs handlers of its own for the run, and restores these after it.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:           # while Python is still loading tinyvmm
        print("tinyvmm: interrupted", file=sys.stderr)
        return INTERRUPTED
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
