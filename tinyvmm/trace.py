"""The exit trace: one line per event, with a timestamp, for the categories asked for."""

import time

from .kvm import abi

CATEGORIES = ("io", "mmio", "unclaimed", "milestones", "exits", "fw_cfg", "pci")


class TraceSpecError(ValueError):
    pass


def parse_categories(spec: str) -> set[str]:
    names = {name.strip() for name in spec.split(",") if name.strip()}
    if "all" in names:
        return set(CATEGORIES)
    unknown = names - set(CATEGORIES)
    if unknown or not names:
        raise TraceSpecError(f"unknown trace categories {', '.join(sorted(unknown)) or '(none)'}; "
                             f"choose from {', '.join(CATEGORIES)} or all")
    return names


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

    def io(self, port: int, is_out: bool, size: int, count: int, data: bytes) -> None:
        if "io" in self.categories:
            rep = f" x{count}" if count > 1 else ""
            self.line("io", f"{'out' if is_out else 'in '} {port:#06x} size {size}{rep} "
                            f"{data[:16].hex(' ')}{' ...' if len(data) > 16 else ''}")

    def mmio(self, address: int, is_write: bool, size: int, data: bytes) -> None:
        if "mmio" in self.categories:
            self.line("mmio", f"{'write' if is_write else 'read '} {address:#010x} len {size} {data.hex(' ')}")

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
