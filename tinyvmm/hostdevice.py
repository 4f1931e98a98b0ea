"""A device a user writes in Python, put on a bus by Machine.add_port_device/add_mmio_device."""

from .bus import RegisterDevice


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
