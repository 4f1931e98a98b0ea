"""What a user writes in Python, put on the machine: devices on the port and MMIO buses
(Machine.add_port_device/add_mmio_device) and callbacks guarded so that an exception ends the
run as a crash, never the process."""

from __future__ import annotations

from . import layout
from .bus import BusError, RegisterDevice
from .errors import ConfigError
from .outcome import Outcome

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from .board import Board
    from .bus import Bus
else:
    Protocol = object

PORT_SPACE = 0x10000
MMIO_SPACE = 1 << 52                # guest-physical addresses: 52 bits


class UserDevice(Protocol):
    """A device written in Python for Machine.add_port_device/add_mmio_device: `size` bytes
    (1, 2, 4, or 8 on MMIO) at `offset` from its base; read returns 0 to 2**(8*size)-1."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> object: ...


class HostCallbacks:
    """Guards the user's callbacks for the run loop: an exception ends the run (Outcome.CRASH,
    on `board` once there is one) and its traceback is kept for the crash report."""

    def __init__(self) -> None:
        self.board: Board | None = None
        self.traceback: str | None = None      # the first one since the last take_traceback()

    def guard(self, callback: Callable, what: str, fallback=None) -> Callable:
        """`callback` made safe: an exception in it ends the run, and the call returns
        `fallback`. `what` names the callback in the crash message."""
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as exc:
                import traceback
                if self.traceback is None:
                    self.traceback = traceback.format_exc()
                if self.board is not None:
                    self.board.request_stop(Outcome.CRASH, f"{what} raised {type(exc).__name__}: {exc}")
                return fallback
        return guarded

    def take_traceback(self) -> str | None:
        traceback, self.traceback = self.traceback, None
        return traceback


def add_port_device(board: Board, base: int, size: int, device, guard: Callable) -> None:
    """`device` (read(offset, size) -> int, write(offset, size, value)) on ports base ...
    base+size-1; ConfigError for a range outside the port space, on ports KVM serves itself,
    or overlapping another device."""
    _check_range("ports", base, size, PORT_SPACE)
    for start, length, what in layout.IN_KERNEL_PORTS:
        if base < start + length and start < base + size:
            raise ConfigError(f"ports {base:#x}-{base + size - 1:#x} overlap {what} at "
                              f"{start:#x}-{start + length - 1:#x} (the guest never exits there)")
    _register(board.pio, base, size, device, guard)


def add_mmio_device(board: Board, base: int, size: int, device, guard: Callable) -> None:
    """`device` on guest-physical base ... base+size-1; ConfigError where guest RAM or ROM is,
    where KVM serves the APICs, or where another device is."""
    _check_range("MMIO", base, size, MMIO_SPACE)
    conflict = layout.mmio_conflict(base, size, board.memory.regions)
    if conflict:
        raise ConfigError(f"MMIO {base:#x}-{base + size - 1:#x} overlaps {conflict}")
    _register(board.mmio, base, size, device, guard)


def _register(bus: Bus, base: int, size: int, device, guard: Callable) -> None:
    for method in ("read", "write"):
        if not callable(getattr(device, method, None)):
            raise ConfigError(f"{type(device).__name__} has no {method}() method")
    try:
        bus.register(base, size, HostDevice(device, guard))
    except BusError as exc:
        raise ConfigError(str(exc)) from exc


def _check_range(what: str, base, size, end: int) -> None:
    from .spec import check_type
    check_type(f"{what} base", base, int)
    check_type(f"{what} size", size, int)
    if not (size > 0 and 0 <= base and base + size <= end):
        raise ConfigError(f"{what} {base:#x}+{size:#x}: the range must lie in 0-{end - 1:#x}")


class HostDevice(RegisterDevice):
    """A device written in Python by a user (read(offset, size) -> int, write(offset, size,
    value)), on a bus: its registers, so string I/O makes one call per element.

    `guard(callback, what, fallback=None)` wraps each call so that an exception ends the run
    (and the call returns `fallback`): a read that fails, or returns anything but an int
    that `size` bytes hold, reads as all-ones.
    """

    def __init__(self, device, guard):
        self.device = device
        self.name = type(device).__name__
        self._read = guard(self._checked_read, f"{self.name}.read", fallback=None)
        self._write = guard(device.write, f"{self.name}.write")

    def _checked_read(self, offset: int, size: int) -> int:
        value = self.device.read(offset, size)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"returned {value!r} ({type(value).__name__}), not an int")
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"returned {value:#x}, which a {size}-byte access cannot hold")
        return value

    def read_register(self, offset: int, size: int) -> int:
        value = self._read(offset, size)
        return (1 << (8 * size)) - 1 if value is None else value

    def write_register(self, offset: int, size: int, value: int) -> None:
        self._write(offset, size, value)
