"""What ends a run before the guest does, as Machine.run takes it: a time limit, a text on a
console, a milestone byte written, an address about to execute. Each is checked first
(TypeError, ConfigError), then armed on the board and runner for one run."""

from __future__ import annotations

import os

from .errors import ConfigError
from .outcome import Outcome
from .spec import check_console_text, check_timeout, check_type

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from dataclasses import dataclass

    from .board import Board
    from .console import Console
    from .devices.milestones import Milestone
    from .kvm.abi import kvm_run_debug
    from .runner import Runner
else:
    from .record import dataclass


@dataclass(frozen=True)
class RunLimits:
    """`timeout` seconds; `console` bytes to see on a console; `milestone` a byte written to
    port 0xf4 or 0xf5; `address` a linear address the vCPU is about to execute. None: none."""
    timeout: float | None = None
    console: bytes | None = None
    milestone: int | None = None
    address: int | None = None


def check_limits(timeout: float | None = None, until_console: str | bytes | None = None,
                 until_milestone: int | None = None, until_address: int | None = None) -> RunLimits:
    """Machine.run's arguments checked: TypeError for a wrong type, ConfigError for a value
    out of range. (A timeout works on any thread: off the main one, a timer thread.)"""
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout: expected seconds as int or float, not {type(timeout).__name__}")
        check_timeout(timeout, f"timeout={timeout!r}")
    text = None
    if until_console is not None:
        if not isinstance(until_console, (str, bytes)):
            raise TypeError(f"until_console: expected str or bytes, not {type(until_console).__name__}")
        text = check_console_text(os.fsencode(until_console) if isinstance(until_console, str)
                                  else until_console)
    if until_milestone is not None:
        check_type("until_milestone", until_milestone, int)
        if not 0 <= until_milestone <= 0xFF:
            raise ConfigError(f"until_milestone={until_milestone!r}: a byte, 0 to 0xff")
    if until_address is not None:
        check_type("until_address", until_address, int)
        if not 0 <= until_address < 1 << 64:
            raise ConfigError(f"until_address={until_address:#x}: not a linear address")
    return RunLimits(timeout, text, until_milestone, until_address)


def arm(limits: RunLimits, board: Board, runner: Runner, consoles: Iterable[Console]) -> Callable[[], None]:
    """Make `limits` end the next run (Outcome.TIMEOUT, EXPECTED or BREAKPOINT); returns what
    disarms them afterwards. ConfigError when the address needs the vCPU's debug registers
    and something else holds them."""
    undo: list[Callable[[], None]] = []

    def disarm() -> None:
        runner.timeout = None
        for step in reversed(undo):
            step()
    try:
        text = limits.console
        if text is not None:
            def seen() -> None:
                board.request_stop(Outcome.EXPECTED, f"{text.decode(errors='replace')!r} seen")
            for console in consoles:
                console.watch(text, seen)
                undo.append(_unwatcher(console, seen))
        value = limits.milestone
        if value is not None:
            def milestone(written: Milestone) -> None:
                if written.value == value:
                    board.request_stop(Outcome.EXPECTED, f"milestone {value:#x} written")
            board.milestone_listeners.append(milestone)
            undo.append(lambda: board.milestone_listeners.remove(milestone))
        if limits.address is not None:
            undo.append(_break_at(runner, limits.address))
        runner.timeout = limits.timeout
    except BaseException:
        disarm()
        raise
    return disarm


def _unwatcher(console: Console, callback: Callable[[], None]) -> Callable[[], None]:
    return lambda: console.unwatch(callback)


def _break_at(runner: Runner, address: int) -> Callable[[], None]:
    """A DR0 execution breakpoint at linear `address`; returns its undo."""
    from .kvm.debugregs import USE_HARDWARE_BREAKPOINTS, execution_breakpoint

    def on_debug_exit(debug: kvm_run_debug) -> tuple[Outcome, str] | None:
        if debug.pc == address:
            return Outcome.BREAKPOINT, f"breakpoint at {address:#x}"
        return None
    guest_debug = runner.guest_debug
    try:
        guest_debug.claim("until_address", on_debug_exit, breakpoints_only=True)
    except ConfigError as exc:
        raise ConfigError(f"until_address: {exc}") from exc
    guest_debug.set(USE_HARDWARE_BREAKPOINTS, execution_breakpoint(address))
    return guest_debug.release
