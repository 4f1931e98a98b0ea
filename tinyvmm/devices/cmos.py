"""CMOS RAM and real-time clock at ports 0x70 (index, bit 7 = NMI mask) and 0x71 (data).

The clock reads the host's time in BCD, 24-hour mode; the memory-size bytes
are those PC firmware and old kernels read.
"""

import time

from .. import layout
from ..bus import RegisterDevice

INDEX = 0
DATA = 1

RTC_SECONDS, RTC_MINUTES, RTC_HOURS = 0x00, 0x02, 0x04
RTC_WEEKDAY, RTC_DAY, RTC_MONTH, RTC_YEAR = 0x06, 0x07, 0x08, 0x09
RTC_REG_A, RTC_REG_B, RTC_REG_C, RTC_REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CMOS_BASE_MEM_LO, CMOS_BASE_MEM_HI = 0x15, 0x16
CMOS_EXT_MEM_LO, CMOS_EXT_MEM_HI = 0x17, 0x18
CMOS_EXT_MEM2_LO, CMOS_EXT_MEM2_HI = 0x30, 0x31
RTC_CENTURY = 0x32
CMOS_MEM_16M_LO, CMOS_MEM_16M_HI = 0x34, 0x35
CMOS_MEM_4G_LO, CMOS_MEM_4G_MID, CMOS_MEM_4G_HI = 0x5B, 0x5C, 0x5D
CMOS_CPUS_MINUS_ONE = 0x5F      # the boot CPUs less one, as QEMU's pc machine sets it

REG_A_DEFAULT = 0x26       # 32.768 kHz time base, 1024 Hz rate, update not in progress
REG_B_24H = 0x02
REG_D_VALID = 0x80


def _bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


class Cmos(RegisterDevice):
    name = "cmos"

    def __init__(self, ram_size: int, clock=time.time, cpus: int = 1):
        self.clock = clock
        self.index = 0
        self.nmi_disabled = False
        self.ram = bytearray(128)
        self.ram[RTC_REG_A] = REG_A_DEFAULT
        self.ram[RTC_REG_B] = REG_B_24H
        self.ram[RTC_REG_D] = REG_D_VALID
        self._set_memory_size(ram_size)
        # SeaBIOS counts max(fw_cfg NB_CPUS, this + 1) CPUs; QEMU writes 0 beyond 255.
        self.ram[CMOS_CPUS_MINUS_ONE] = cpus - 1 if cpus <= 256 else 0

    def _set_memory_size(self, ram_size: int) -> None:
        low = layout.low_ram_end(ram_size)
        base_kib = layout.EBDA_START // 1024
        self.ram[CMOS_BASE_MEM_LO], self.ram[CMOS_BASE_MEM_HI] = base_kib & 0xFF, base_kib >> 8
        ext_kib = min(max(low - layout.HIGH_MEMORY_START, 0) // 1024, 0xFFFF)
        for lo, hi in ((CMOS_EXT_MEM_LO, CMOS_EXT_MEM_HI), (CMOS_EXT_MEM2_LO, CMOS_EXT_MEM2_HI)):
            self.ram[lo], self.ram[hi] = ext_kib & 0xFF, ext_kib >> 8
        above_16m = min(max(low - 16 * layout.MiB, 0) // (64 * 1024), 0xFFFF)
        self.ram[CMOS_MEM_16M_LO], self.ram[CMOS_MEM_16M_HI] = above_16m & 0xFF, above_16m >> 8
        above_4g = (ram_size - low) // (64 * 1024)
        self.ram[CMOS_MEM_4G_LO] = above_4g & 0xFF
        self.ram[CMOS_MEM_4G_MID] = (above_4g >> 8) & 0xFF
        self.ram[CMOS_MEM_4G_HI] = (above_4g >> 16) & 0xFF

    def _clock_register(self, index: int) -> int | None:
        now = time.gmtime(self.clock())
        values = {RTC_SECONDS: now.tm_sec, RTC_MINUTES: now.tm_min, RTC_HOURS: now.tm_hour,
                  RTC_WEEKDAY: (now.tm_wday + 1) % 7 + 1, RTC_DAY: now.tm_mday,
                  RTC_MONTH: now.tm_mon, RTC_YEAR: now.tm_year % 100,
                  RTC_CENTURY: now.tm_year // 100}
        value = values.get(index)
        if value is None:
            return None
        return value if self.ram[RTC_REG_B] & 0x04 else _bcd(value)  # bit 2: binary mode

    def read_register(self, offset: int, size: int) -> int:
        if offset != DATA:
            return 0xFF
        value = self._clock_register(self.index)
        if value is not None:
            return value
        value = self.ram[self.index]
        if self.index == RTC_REG_C:
            self.ram[RTC_REG_C] = 0   # reading C acknowledges the interrupt flags
        return value

    def write_register(self, offset: int, size: int, value: int) -> None:
        if offset == INDEX:
            self.index = value & 0x7F
            self.nmi_disabled = bool(value & 0x80)
        elif self.index not in (RTC_REG_C, RTC_REG_D):
            self.ram[self.index] = value & 0xFF
