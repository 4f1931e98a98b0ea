"""A device a user writes in Python, put on a bus by Machine.add_port_device/add_mmio_device."""


class HostDevice:
    """A device written in Python by a user (read(offset, size) -> int, write(offset, size,
    value)), on a bus: one call per element of string I/O; exceptions end the run."""

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

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        out = bytearray()
        all_ones = (1 << (8 * size)) - 1
        for _ in range(count):
            value = self._read(offset, size)
            out += (all_ones if value is None else value).to_bytes(size, "little")
        return bytes(out)

    def write(self, offset: int, size: int, data: bytes) -> None:
        for i in range(0, len(data), size):
            self._write(offset, size, int.from_bytes(data[i:i + size], "little"))
