"""What a target tells the stub: why the vCPU stopped, and requests it refuses."""

from dataclasses import dataclass

SIGINT = 2                       # gdb's signal numbers, as stop replies carry them
SIGTRAP = 5


class TargetError(Exception):
    """A request the target refuses; `errno` goes back to gdb as Exx."""

    def __init__(self, message: str, errno: int = 22):
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class StopEvent:
    signal: int = SIGTRAP
    reason: str = ""              # "", "swbreak", "hwbreak", "watch", "rwatch" or "awatch"
    address: int = 0              # the data address, for watchpoints
