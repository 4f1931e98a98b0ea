"""The boot timeline of one run: time, exits and bytes moved at each milestone and at the banner.

Times are CLOCK_MONOTONIC nanoseconds, so a parent process (tinyvmm bench)
can set them against the moment it started this one.
"""

import time

from .devices.milestones import MILESTONE_NAMES

TYPE_CHECKING = False           # True for type checkers only: no import cycle at run time
if TYPE_CHECKING:
    from .board import Board

BANNER = b"Linux version"
INIT = b"TINYVMM-INIT-OK"          # the test init's first line (kernels/init.c, INIT_MARKER)


class BootTimeline:
    """The marks of one run of `board` (its milestones, the serial banner and the test
    init's first line), with `runner`'s exit and byte counts and `fw_cfg`'s DMA bytes."""

    def __init__(self, board: "Board", runner, fw_cfg=None):
        self.board = board
        self.runner = runner
        self.fw_cfg = fw_cfg
        self.marks: list[dict] = []
        board.milestone_listeners.append(self._on_milestone)
        board.config.serial.watch(BANNER, lambda: self.mark("banner"))
        board.config.serial.watch(INIT, lambda: self.mark("init"))

    def _on_milestone(self, milestone) -> None:
        self.mark(f"milestone {milestone.port:#x}:{milestone.value}", milestone.time_ns)

    def mark(self, event: str, time_ns: int | None = None) -> None:
        self.marks.append({
            "event": event,
            "time_ns": time_ns if time_ns is not None else time.clock_gettime_ns(time.CLOCK_MONOTONIC),
            "exits": sum(self.runner.exit_counts),
            "pio_bytes": self.runner.pio_bytes,
            "dma_bytes": getattr(self.fw_cfg, "dma_bytes", 0),
            "dma_errors": getattr(self.fw_cfg, "dma_errors", 0),
            "completions": self.runner.completer.stats.total,
            "completion_ns": self.runner.completer.stats.total_ns,
        })

    def to_dict(self, outcome: str) -> dict:
        return {
            "start_ns": self.board.first_run_ns,
            "outcome": outcome,
            "payload_bytes": self.payload_bytes(),
            "marks": self.marks,
            "milestone_names": {f"{port:#x}:{value}": name
                                for (port, value), name in MILESTONE_NAMES.items()},
        }

    def payload_bytes(self) -> int:
        """The bytes of the kernel, initrd and command line fw_cfg serves: what a boot through
        firmware must move (at least) between do_boot and the kernel's entry."""
        if self.fw_cfg is None:
            return 0
        from .fw_cfg.items import PAYLOAD_DATA_KEYS
        items = self.fw_cfg.items
        return sum(len(entry.data) for entry in (items.lookup(key) for key in PAYLOAD_DATA_KEYS)
                   if entry is not None)

    def write(self, path: str, outcome: str) -> None:
        import json  # after the run: VMM startup does not pay for it
        with open(path, "w") as f:
            json.dump(self.to_dict(outcome), f, indent=1)
