"""Debug console ports (0x402, the SeaBIOS convention, and 0xe9): bytes written go to `out`.

Reading returns 0xE9, which is how firmware detects that the port exists.
"""

from ..bus import Device

READBACK = b"\xe9"


class DebugConsole(Device):
    name = "debugcon"

    def __init__(self, out=None):
        self.out = out or (lambda data: None)

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        return READBACK * (size * count)

    def write(self, offset: int, size: int, data: bytes) -> None:
        # Only the low byte of each element is a character.
        self.out(bytes(data[::size]) if size > 1 else bytes(data))
