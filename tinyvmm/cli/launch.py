"""Running one machine for the command line: the Machine its spec describes, the command line's
own aids (console input, gdb, --trace steps, --stats, the boot's milestones, --timing-json,
--stop-at-kernel), the run, the report, the exit status."""

from __future__ import annotations

import os
import sys

from .status import EXIT_EXPECT_MISSED, EXIT_HOST_ERROR, OutputError, quiet_stdout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass

    from ..board import Board
    from ..runner import Runner
    from ..spec import MachineSpec
else:
    from ..record import dataclass


@dataclass(frozen=True)
class RunOptions:
    """How the command line runs a machine: `timeout` seconds at most (None: no limit),
    --timing-json PATH, --stop-at (end a Linux boot when the boot ROM jumps into the kernel,
    "kernel"; at the kernel's banner on COM1, "banner"; at the test init's first line, "init";
    None: run on), --report PATH (the crash report's file: replaced by each run's, removed
    after a run that has none)."""
    timeout: float | None = None
    timing_json: str | None = None
    stop_at: str | None = None
    report: str | None = None


def launch(spec: MachineSpec, options: RunOptions) -> int:
    """Build the Machine `spec` describes, run it to its end with the command line's aids, report
    on stderr; the exit status. ConfigError for bad input, OutputError for a result that could
    not be written."""
    from ..errors import HostError
    from ..machine import Machine
    from ..outcome import Outcome

    try:
        machine = Machine.from_spec(spec, raise_on_interrupt=False)
    except HostError as exc:
        print(f"tinyvmm: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_HOST_ERROR
    try:
        board, runner, payload = machine.board, machine.runner, machine.payload
        assert board is not None
        steps = spec.debug.trace.steps if spec.debug.trace else None
        firmware_boot = payload is not None and payload.boot == "firmware"
        if firmware_boot and payload is not None and spec.debug.gdb is None:
            from ..boot.marks import EFI_STUB_LINE, BootMarks
            from ..firmware import is_uefi
            if is_uefi(machine.firmware):
                BootMarks(board, runner, machine.fw_cfg, None, entry_line=EFI_STUB_LINE)
            else:
                # --trace steps owns guest debugging: no kernel-entry breakpoint beside it
                entry = (None,) if steps is not None else payload.kernel_entry()
                BootMarks(board, runner, machine.fw_cfg, *entry)
        timeline = None
        if options.timing_json:
            from ..timeline import BootTimeline
            timeline = BootTimeline(board, runner, machine.fw_cfg)
        if options.stop_at == "kernel" and payload is not None:
            if not firmware_boot:   # the vCPU starts in the kernel: the run ends before it enters
                board.request_stop(Outcome.EXPECTED, "the vCPU starts in the kernel")
            else:
                board.stop_at_milestone("milestone_linux", payload.kernel_entry()[1],
                                        STOP_POINTS["kernel"])
        elif options.stop_at in ("banner", "init"):
            # Watched on COM1 alone: unlike --expect, this connects no debug console, so the
            # firmware sees the same machine whichever moment a run ends at.
            from ..timeline import BANNER, INIT
            board.config.serial.watch(BANNER if options.stop_at == "banner" else INIT,
                                      lambda: board.request_stop(Outcome.EXPECTED,
                                                                 f"the kernel reached its {options.stop_at}"))
        console_input = start_console_input(spec, board, runner)
        try:
            result = machine.run(timeout=options.timeout)
        finally:
            if console_input is not None:
                console_input.close()
        if machine.output_error:
            raise OutputError(machine.output_error)
        if timeline is not None and options.timing_json is not None:
            try:
                timeline.write(options.timing_json, result.outcome.name)
            except OSError as exc:
                raise OutputError(f"cannot write {options.timing_json}: {exc.strerror}") from None
    except HostError as exc:
        print(f"tinyvmm: {exc}", file=sys.stderr)
        return EXIT_HOST_ERROR
    finally:
        machine.close()
    if machine.output_error:        # the trace file, written to its end at close()
        raise OutputError(machine.output_error)
    from ..console import end_stdout_line, end_stdout_line_before_stderr
    if result.outcome is Outcome.EXPECTED:
        end_stdout_line()
    else:
        end_stdout_line_before_stderr()
    if result.report:
        print(result.report, file=sys.stderr)
    if options.report is not None:      # after stderr: a file that fails must not lose it
        keep_report(options.report, result.report)
    if result.report:
        return result.status
    if result.outcome is Outcome.INTERRUPTED:
        print("tinyvmm: interrupted", file=sys.stderr)
    elif result.outcome is Outcome.HALTED:
        print(f"tinyvmm: {result.outcome.description}: {result.message}", file=sys.stderr)
    elif result.outcome is Outcome.OUTPUT_CLOSED:
        return quiet_stdout()
    elif (spec.expect or options.stop_at) and result.outcome in (Outcome.RESET, Outcome.POWEROFF):
        # The end a user waited for never came: a reset is how Linux ends after a panic.
        awaited = (f"{spec.expect.decode(errors='replace')!r} appeared" if spec.expect
                   else STOP_POINTS[options.stop_at or ""])
        print(f"tinyvmm: {result.outcome.description} before {awaited}", file=sys.stderr)
        return EXIT_EXPECT_MISSED
    return result.status


# --stop-at's points, as a run that ended before one says it.
STOP_POINTS = {"kernel": "the firmware started the kernel",
               "banner": "the kernel printed its banner",
               "init": "the test init printed its first line"}


def keep_report(path: str, report: str | None) -> None:
    """--report PATH: the run's crash report written there, replacing the last one; with no
    report (the run ended as expected), an old one there is removed, so that what the file
    holds is always about the last run. OutputError when it cannot be written."""
    try:
        if report:
            with open(path, "w") as f:
                f.write(report + "\n")
        elif os.path.isfile(path):
            os.unlink(path)
    except OSError as exc:
        raise OutputError(f"cannot write the report to {path}: {exc.strerror}") from None


def start_console_input(spec: MachineSpec, board: Board, runner: Runner):
    """With --serial stdio, stdin feeds COM1 (a terminal in raw mode, with Ctrl-A escapes)."""
    if spec.serial != "stdio" or sys.stdin is None:
        return None
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (OSError, ValueError):
        return None                                 # no stdin at all
    import signal

    from ..outcome import Outcome
    from ..terminal import ConsoleInput
    # Ctrl-A x kicks the vCPU with SIGUSR1, possibly before the run loop installs its own
    # handler or after it has put the old one back: never let the default action kill us.
    signal.signal(signal.SIGUSR1, lambda *_: None)
    console_input = ConsoleInput(fd, board.serial.feed, on_quit=lambda: runner.stop_from_thread(
        Outcome.QUIT, "C-a x typed on the console"))
    console_input.start()
    return console_input
