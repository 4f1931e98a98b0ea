"""Boot-milestone ports 0xf4 and 0xf5: each byte written is a milestone, timestamped.

The values follow the convention of qboot and the boot-time scripts of this
field (see tinyvmm.layout MILESTONE_*). Timestamps are CLOCK_MONOTONIC
nanoseconds, comparable across processes.
"""

import time
from collections import namedtuple

from ..bus import Device

MILESTONE_NAMES = {
    (0xF5, 1): "firmware start",
    (0xF4, 2): "Linux start from fw_cfg",
    (0xF4, 3): "jump to Linux boot code",
    (0xF4, 4): "PVH boot",
    (0xF4, 5): "firmware do_boot",
    (0xF4, 6): "start_kernel",
    (0xF4, 7): "first user process",
}


class Milestone(namedtuple("Milestone", "port value time_ns")):
    __slots__ = ()

    @property
    def name(self) -> str:
        return MILESTONE_NAMES.get((self.port, self.value), f"custom {self.value}")


class MilestonePort(Device):
    """One milestone port; all instances append to the same shared `log` list."""

    name = "milestone"

    def __init__(self, port: int, log: list, on_milestone=None):
        self.port = port
        self.log = log
        self.on_milestone = on_milestone or (lambda milestone: None)

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        return b"\x00" * (size * count)

    def write(self, offset: int, size: int, data: bytes) -> None:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for value in data[::size]:
            milestone = Milestone(self.port, value, now)
            self.log.append(milestone)
            self.on_milestone(milestone)
