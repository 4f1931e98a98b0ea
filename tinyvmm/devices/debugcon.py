"""Debug console ports (0x402, the SeaBIOS convention, and 0xe9): bytes written go to `out`.

Reading returns 0xE9, which is how firmware detects that the port exists. A
console nobody reads (`--debugcon none`) reads 0xFF, as the port of a QEMU
without -debugcon does, so firmware that checks (SeaBIOS) keeps its log to
itself instead of paying an exit per byte; bytes written anyway still reach
`out` (crash reports show them).
"""

from ..bus import Device

READBACK = b"\xe9"
ABSENT = b"\xff"


class DebugConsole(Device):
    name = "debugcon"

    def __init__(self, out=None, present: bool = True):
        self.out = out or (lambda data: None)
        self.readback = READBACK if present else ABSENT

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        return self.readback * (size * count)

    def write(self, offset: int, size: int, data: bytes) -> None:
        # Only the low byte of each element is a character.
        self.out(bytes(data[::size]) if size > 1 else bytes(data))
