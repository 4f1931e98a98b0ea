"""The exit trace: one line per event, with a timestamp, for the categories asked for; and with
steps, one line per instruction (tinyvmm.debug.steps).

The --trace grammar, items separated by commas:
  io, mmio, unclaimed, milestones, exits, fw_cfg, pci, completions
                        event categories; all: every one of them
  steps[=N][@START]     single-step N instructions (default 10000), logging each one, then let
                        the guest run on at full speed; START, where stepping begins (default:
                        the first instruction):
                          0xADDRESS          the first instruction run at that linear address
                          SYMBOL             the same, at a symbol of --symbols or the
                                             firmware's own ELF files
                          milestone:VALUE    right after the first write of VALUE (a byte) to
                                             port 0xf4 or 0xf5
e.g. `--trace steps`, `--trace steps=20000@setup_pic`, `--trace io,steps=500@milestone:5`.
"""

import os
import re
import time
from collections import namedtuple

from ..errors import ConfigError
from ..kvm import abi

CATEGORIES = ("io", "mmio", "unclaimed", "milestones", "exits", "fw_cfg", "pci", "completions")
DEFAULT_STEPS = 10_000
MAX_STEPS = 1_000_000_000
MILESTONE_PREFIX = "milestone:"


class TraceSpecError(ConfigError):
    pass


class StepSpec(namedtuple("StepSpec", "limit address symbol milestone", defaults=(None, None, None))):
    """--trace steps: log `limit` instructions, from the first one run at linear `address`,
    at the symbol named `symbol`, or after the first write of the byte `milestone` to port
    0xf4 or 0xf5; with all three None, from the vCPU's first instruction."""
    __slots__ = ()


class TraceSpec(namedtuple("TraceSpec", "categories steps")):
    """What --trace asked for: a frozenset of event categories, and a StepSpec or None."""
    __slots__ = ()

    def __bool__(self) -> bool:
        return bool(self.categories) or self.steps is not None


def parse_spec(spec: str) -> TraceSpec:
    """'io,steps=500@0xf0135' and the like: comma-separated categories (or all, every one of
    CATEGORIES), and at most one steps[=N][@START], START being 0xADDRESS (a linear address;
    decimal too), a symbol name, or milestone:VALUE. Raises TraceSpecError."""
    names, steps = set(), None
    for item in (part.strip() for part in spec.split(",")):
        head = item.partition("@")[0]
        if head == "steps" or head.startswith("steps="):
            if steps is not None:
                raise TraceSpecError("steps is given more than once")
            steps = _parse_steps(item)
        elif item:
            names.add(item)
    if "all" in names:
        return TraceSpec(frozenset(CATEGORIES), steps)
    unknown = names - set(CATEGORIES)
    if unknown or not (names or steps):
        problem = (f"unknown trace categories {', '.join(sorted(unknown))}" if unknown
                   else "no trace category given")
        raise TraceSpecError(f"{problem}; choose from {', '.join(CATEGORIES)}, all, and steps[=N][@START]")
    return TraceSpec(frozenset(names), steps)


def _parse_steps(item: str) -> StepSpec:
    """One 'steps[=N][@START]' item (see parse_spec)."""
    head, at, start = item.partition("@")
    _, equals, count = head.partition("=")
    limit = DEFAULT_STEPS
    if equals:
        if not (count.isascii() and count.isdigit()) or not 1 <= int(count) <= MAX_STEPS:
            raise TraceSpecError(f"{item}: the number of instructions must be 1 to {MAX_STEPS}")
        limit = int(count)
    if not at:
        return StepSpec(limit)
    if start.startswith(MILESTONE_PREFIX):
        value = _number(start[len(MILESTONE_PREFIX):])
        if value is None or not 0 <= value <= 0xFF:
            raise TraceSpecError(f"{item}: a milestone is a byte value, 0 to 255")
        return StepSpec(limit, milestone=value)
    if start[:1].isdigit():
        address = _number(start)
        if address is None or not 0 <= address < 1 << 64:
            raise TraceSpecError(f"{item}: {start!r} is not a linear address")
        return StepSpec(limit, address=address)
    if not re.fullmatch(r"[A-Za-z_.$][\w.$]*", start):
        raise TraceSpecError(f"{item}: after @ comes an address (0x...), a symbol name or "
                             f"milestone:VALUE")
    return StepSpec(limit, symbol=start)


def _number(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


class TraceFile:
    """--trace-file PATH, opened for writing (OSError if it cannot be). Its old contents go
    only when the run begins (begin()): lines written before are held until then, and a
    usage error found in between leaves the file as it was. A write that fails (a full
    disk) does not end the run: later lines are dropped, and close() raises that error."""

    def __init__(self, path: str):
        self.file = open(path, "a")
        self.error: OSError | None = None
        self._held: list[str] | None = []

    def begin(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        try:
            if os.path.isfile(self.file.name):
                self.file.truncate(0)
        except OSError as exc:
            self.error = exc
        for text in held:
            self.write(text)

    def write(self, text: str) -> None:
        if self._held is not None:
            self._held.append(text)
        elif self.error is None:
            try:
                self.file.write(text)
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        try:
            self.file.close()           # flushes; the file is closed even when that fails
        except OSError as exc:
            self.error = self.error or exc
        if self.error is not None:
            raise self.error


class Tracer:
    """Writes trace lines to `out` (a text stream). `locate()` may add where the vCPU was."""

    def __init__(self, out, categories: set[str], locate=None):
        self.out = out
        self.categories = categories
        self.locate = locate
        self.start = time.monotonic()

    def __bool__(self) -> bool:
        return bool(self.categories)

    def line(self, category: str, text: str) -> None:
        where = f" {self.locate()}" if self.locate else ""
        self.out.write(f"{time.monotonic() - self.start:12.6f} {category:<10}{where} {text}\n")

    def step(self, text: str) -> None:
        """A --trace steps line; `text` says where the vCPU is itself (locate() is not asked)."""
        self.out.write(f"{time.monotonic() - self.start:12.6f} {'step':<10} {text}\n")

    def io(self, port: int, is_out: bool, size: int, count: int, data: bytes) -> None:
        if "io" in self.categories:
            rep = f" x{count}" if count > 1 else ""
            self.line("io", f"{'out' if is_out else 'in '} {port:#06x} size {size}{rep} "
                            f"{data[:16].hex(' ')}{' ...' if len(data) > 16 else ''}")

    def mmio(self, address: int, is_write: bool, size: int, data: bytes) -> None:
        if "mmio" in self.categories:
            kind = "write" if is_write else "read "
            self.line("mmio", f"{kind} {address:#010x} len {size} {data.hex(' ')}")

    def unclaimed(self, bus: str, kind: str, address: int, size: int, data) -> None:
        if "unclaimed" in self.categories:
            shown = f" {bytes(data[:16]).hex(' ')}" if data else ""
            self.line("unclaimed", f"{bus} {kind} {address:#x} ({size} bytes){shown}")

    def milestone(self, milestone) -> None:
        if "milestones" in self.categories:
            self.line("milestone", f"port {milestone.port:#x} value {milestone.value}: {milestone.name}")

    def fw_cfg(self, event: str, text: str) -> None:
        """An fw_cfg select, data read or DMA transfer (the device formats the details)."""
        if "fw_cfg" in self.categories:
            self.line("fw_cfg", f"{event} {text}")

    def completion(self, text: str) -> None:
        """An instruction the host's KVM left undone, completed by tinyvmm.completion; `text`
        says where (the vCPU has already moved on, so locate() is not asked)."""
        if "completions" in self.categories:
            self.out.write(f"{time.monotonic() - self.start:12.6f} {'complete':<10} {text}\n")

    def exit(self, reason: int) -> None:
        if "exits" in self.categories:
            self.line("exit", abi.EXIT_REASON_NAMES.get(reason, str(reason)))


class ExitStats:
    """--stats: exits per reason and per port, and where the time went.

    The run loop fills it: time inside KVM_RUN (guest and kernel), time from
    each exit to the next entry by exit reason, and time in the device by port.
    """

    def __init__(self):
        self.run_ns = 0
        self.handler_ns = [0] * 256                 # by exit reason
        self.ports: dict[tuple[int, bool], list[int]] = {}   # (port, is_out) -> [accesses, bytes, ns]

    def port_access(self, port: int, is_out: bool, length: int, ns: int) -> None:
        entry = self.ports.get((port, is_out))
        if entry is None:
            entry = self.ports[(port, is_out)] = [0, 0, 0]
        entry[0] += 1
        entry[1] += length
        entry[2] += ns

    def table(self, exit_counts, port_name=lambda port: "") -> str:
        """The report printed at the end of a run; port_name(port) names the device."""
        lines = [f"{'exit reason':<18}{'count':>10}{'handling':>13}{'per exit':>12}"]
        for reason, count in sorted(enumerate(exit_counts), key=lambda rc: -rc[1]):
            if count:
                ns = self.handler_ns[reason]
                lines.append(f"{abi.EXIT_REASON_NAMES.get(reason, str(reason)):<18}{count:>10}"
                             f"{_seconds(ns):>13}{_micro(ns / count):>12}")
        lines.append(f"{'in KVM_RUN':<18}{'':>10}{_seconds(self.run_ns):>13}")
        if self.ports:
            lines.append("")
            lines.append(f"{'port':<8}{'device':<12}{'dir':<5}{'accesses':>10}{'bytes':>11}"
                         f"{'in device':>13}{'per access':>12}")
            for (port, is_out), (accesses, size, ns) in sorted(
                    self.ports.items(), key=lambda item: -item[1][2]):
                lines.append(f"{port:#06x}  {port_name(port) or '-':<12}{'out' if is_out else 'in':<5}"
                             f"{accesses:>10}{size:>11}{_seconds(ns):>13}{_micro(ns / accesses):>12}")
        return "\n".join(lines)


def _seconds(ns: float) -> str:
    return f"{ns / 1e9:.6f} s"


def _micro(ns: float) -> str:
    return f"{ns / 1e3:.1f} us"
