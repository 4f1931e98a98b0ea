"""The exit trace: one line per event, with a timestamp, for the categories asked for."""

import time

from .kvm import abi

CATEGORIES = ("io", "mmio", "unclaimed", "milestones", "exits")


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

    def exit(self, reason: int) -> None:
        if "exits" in self.categories:
            self.line("exit", abi.EXIT_REASON_NAMES.get(reason, str(reason)))
