"""Small chipset ports: POST code (0x80) and System Control Port A (0x92, A20 and fast reset)."""

from ..bus import RegisterDevice

PORT92_FAST_RESET = 0x01
PORT92_A20 = 0x02


def _ignore(code: int) -> None:
    pass


class PostCode(RegisterDevice):
    """Port 0x80: records the last POST code and how many were written (Linux's io_delay)."""

    name = "post"

    def __init__(self, on_code=None):
        self.on_code = on_code or _ignore
        self.last = None
        self.writes = 0

    def read_register(self, offset: int, size: int) -> int:
        return self.last if self.last is not None else 0xFF

    def write(self, offset: int, size: int, data: bytes) -> None:
        # Linux's io_delay writes here constantly: one call per exit, no per-element loop.
        self.writes += len(data) // size
        for value in data[::size]:
            self.last = value
            self.on_code(value)


class Port92(RegisterDevice):
    """A20 gate (always open in this machine; the bit is remembered) and fast reset."""

    name = "port92"

    def __init__(self, on_reset=None):
        self.on_reset = on_reset or (lambda: None)
        self.value = PORT92_A20

    def read_register(self, offset: int, size: int) -> int:
        return self.value

    def write_register(self, offset: int, size: int, value: int) -> None:
        self.value = value & ~PORT92_FAST_RESET & 0xFF
        if value & PORT92_FAST_RESET:
            self.on_reset()
