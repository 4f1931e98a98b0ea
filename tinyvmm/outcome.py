"""How a run ends: its Outcome (with the command line's exit status), the RunResult a run
returns, and the exits a crash report remembers."""

from collections import namedtuple
from enum import Enum

from .kvm import abi


class Outcome(Enum):
    """How a run ended, and the process exit status that goes with it."""
    RESET = ("guest reset", 0)
    POWEROFF = ("guest powered off", 0)
    EXPECTED = ("expected output seen", 0)
    CRASH = ("guest crashed", 3)
    TIMEOUT = ("timeout", 4)
    INTERRUPTED = ("interrupted", 130)
    OUTPUT_CLOSED = ("console output closed", 0)
    HALTED = ("guest halted for good", 5)
    QUIT = ("quit from the console", 0)
    BREAKPOINT = ("breakpoint reached", 0)      # Machine.run(until_address=...)
    STOPPED = ("stopped by the host", 0)        # Machine.stop(), or Machine.step()'s count

    @property
    def description(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]


class RunResult:
    """How a run ended: its outcome, a message, the crash report (for CRASH and TIMEOUT), exits;
    `completions`, how many instructions of each name the host's KVM left to tinyvmm
    (tinyvmm.completion) in this run; `vcpu`, the vCPU whose exit or kick ended it (0, the BSP,
    for a signal or a device)."""
    __slots__ = ("outcome", "message", "report", "exits", "completions", "vcpu")

    def __init__(self, outcome: Outcome, message: str = "", report: str | None = None,
                 exits: int = 0):
        self.outcome = outcome
        self.message = message
        self.report = report
        self.exits = exits
        self.completions: dict[str, int] = {}
        self.vcpu = 0

    @property
    def status(self) -> int:
        return self.outcome.status

    def __repr__(self) -> str:
        return f"RunResult({self.outcome.name}, {self.message!r}, exits={self.exits})"


class ExitRecord(namedtuple("ExitRecord", "reason address is_write size count data",
                            defaults=(0, False, 0, 0, b""))):
    """One exit as remembered for crash reports (kept as a plain tuple in the loop).

    `address` is the port, or the guest-physical address of an MMIO access.
    """
    __slots__ = ()

    def describe(self) -> str:
        name = abi.EXIT_REASON_NAMES.get(self.reason, str(self.reason))
        if self.reason == abi.KVM_EXIT_IO:
            what = "out" if self.is_write else "in "
            rep = f" x{self.count}" if self.count > 1 else ""
            return f"IO   {what} port {self.address:#06x} size {self.size}{rep} data {_hex(self.data)}"
        if self.reason == abi.KVM_EXIT_MMIO:
            what = "write" if self.is_write else "read "
            return f"MMIO {what} {self.address:#010x} len {self.size} data {_hex(self.data)}"
        return name


def _hex(data: bytes, limit: int = 16) -> str:
    text = data[:limit].hex(" ")
    return text + (f" ... ({len(data)} bytes)" if len(data) > limit else "")
