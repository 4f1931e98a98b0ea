"""The PIIX functions of QEMU's `pc` machine: the PIIX3 ISA bridge (00:01.0) and PIIX4 power
management (00:01.3).

Register values and behaviour follow Intel's 82371AB (PIIX4) datasheet and what
QEMU's piix.c and acpi/piix4.c show to firmware with `-machine smm=off`; the
ACPI register semantics follow the ACPI specification, section 4.8.3
(PM1 event and control blocks, PM timer).

* ISA bridge: PIRQA-D route registers 0x60-0x63 (a value below 16 routes that
  PIRQ to the ISA IRQ of that number, bit 7 disables it) and the reset control
  register at port 0xCF9 (bit 2 requests a reset).
* PM: the 64-byte PM I/O block at PMBA (0x40, bits 15:6) decodes while PMREGMISC
  (0x80) bit 0 is set: PM1a_STS (+0, write-1-to-clear), PM1a_EN (+2),
  PM1a_CNT (+4; SLP_EN with SLP_TYP 0 powers off), PM_TMR (+8, 24 bits at
  3.579545 MHz). SCI_EN is set from reset and DEVACTB bit 25 ("SMM already set
  up", config byte 0x5B bit 1) is preset, so firmware leaves SMM alone, as
  with QEMU's smm=off. The GPE0 block at 0xAFE0 and the APM ports 0xB2/0xB3 are
  plain registers here. The SMBus controller (SMBBA 0x90) reads as QEMU's but
  decodes nothing: no firmware here uses it.
"""

import time

from ..bus import RegisterDevice
from .config import PCI_HEADER_TYPE_MULTI_FUNCTION, PciFunction

INTEL = 0x8086
PIIX3_ISA_DEVICE = 0x7000
PIIX4_PM_DEVICE = 0x7113
CLASS_ISA_BRIDGE = 0x060100
CLASS_OTHER_BRIDGE = 0x068000

# PIIX3 ISA bridge registers and their reset values (82371SB/AB datasheets, QEMU piix_reset)
PIIX_PIRQC = 0x60               # PIRQA..PIRQD route control, 0x60-0x63
PIRQ_COUNT = 4
PIRQ_DISABLED = 0x80
FIRMWARE_PIRQ_ROUTES = (10, 10, 11, 11)
ISA_BRIDGE_RESET_BYTES = {0x4C: 0x4D, 0x4E: 0x03, 0x69: 0x02, 0x70: 0x80, 0x76: 0x0C, 0x77: 0x0C,
                          0x78: 0x02, 0xA0: 0x08, 0xA8: 0x0F}
ISA_BRIDGE_COMMAND = 0x0007     # I/O, memory, bus master
STATUS_DEVSEL_MEDIUM = 0x0200
STATUS_FAST_BACK_TO_BACK = 0x0080
RCR_SYSTEM_RESET = 0x04
RCR_RESET_TYPE = 0x02

# PIIX4 power management configuration registers
PM_REVISION = 0x03
PMBA = 0x40
PMBA_IO = 0x01                  # bit 0: an I/O address
PMBA_MASK = 0xFFC0
PM_IO_SIZE = 64
DEVACTB_APMC = 0x5B             # byte 3 of DEVACTB (0x58); bit 1 = APMC_EN
DEVACTB_SMM_OFF = 0x02
PMREGMISC = 0x80
PMIOSE = 0x01                   # PM I/O space enable
SMBBA = 0x90
SMBBA_RESET = 0xB101
SMBHSTCFG = 0xD2
SMBHSTCFG_RESET = 0x09
SCI_IRQ = 9

# PM I/O block (ACPI 4.8.3) offsets and bits
PM1_STS = 0
PM1_EN = 2
PM1_CNT = 4
PM_TMR = 8
TMR_STS = 0x0001
TMR_EN = 0x0001
SCI_EN = 0x0001
SLP_TYP_SHIFT = 10
SLP_EN = 0x2000
SLP_TYP_SOFT_OFF = 0            # the \_S5 value of the PIIX4 DSDTs
PM_TIMER_HZ = 3_579_545
PM_TIMER_MASK = 0xFFFFFF


class Piix3IsaBridge(PciFunction):
    """00:01.0: routes PCI interrupts to ISA IRQs; function 0 of a multi-function device."""

    name = "piix3-isa"

    def __init__(self):
        super().__init__(INTEL, PIIX3_ISA_DEVICE, CLASS_ISA_BRIDGE,
                         header_type=PCI_HEADER_TYPE_MULTI_FUNCTION)
        self.set_word(0x04, ISA_BRIDGE_COMMAND)
        self.set_word(0x06, STATUS_DEVSEL_MEDIUM)
        for offset, value in ISA_BRIDGE_RESET_BYTES.items():
            self.set_byte(offset, value)
        for pirq in range(PIRQ_COUNT):
            self.set_byte(PIIX_PIRQC + pirq, PIRQ_DISABLED)

    def route_as_firmware(self) -> None:
        """Route PIRQA-D to IRQs 10, 10, 11, 11, as SeaBIOS and OVMF do (a boot without one)."""
        for pirq, irq in enumerate(FIRMWARE_PIRQ_ROUTES):
            self.set_byte(PIIX_PIRQC + pirq, irq)

    def pirq_irq(self, pirq: int) -> int | None:
        """The ISA IRQ that PIRQ A-D (0-3) is routed to, or None when disabled."""
        route = self.config[PIIX_PIRQC + pirq]
        return None if route & PIRQ_DISABLED or route >= 16 else route

    def irq_for(self, slot: int, pin: int) -> int | None:
        """The ISA IRQ of INTA#-INTD# (pin 1-4) of a device in `slot` of bus 0 (QEMU's swizzle)."""
        return self.pirq_irq((pin - 1 + slot - 1) & 3)


class ResetControl(RegisterDevice):
    """Port 0xCF9: bit 2 asks for a system reset; bit 1 (hard or soft) is remembered."""

    name = "reset-control"

    def __init__(self, on_reset=None):
        self.on_reset = on_reset or (lambda: None)
        self.value = 0

    def read_register(self, offset: int, size: int) -> int:
        return self.value

    def write_register(self, offset: int, size: int, value: int) -> None:
        if value & RCR_SYSTEM_RESET:
            self.on_reset()
        else:
            self.value = value & RCR_RESET_TYPE


class Piix4PowerManagement(PciFunction):
    """00:01.3: the ACPI PM registers, mapped where firmware puts PMBA once it enables them."""

    name = "piix4-pm"

    def __init__(self, on_poweroff=None, set_sci=None, clock=time.monotonic_ns):
        super().__init__(INTEL, PIIX4_PM_DEVICE, CLASS_OTHER_BRIDGE, PM_REVISION, interrupt_pin=1)
        self.set_word(0x06, STATUS_DEVSEL_MEDIUM | STATUS_FAST_BACK_TO_BACK)
        self.set_dword(PMBA, PMBA_IO)
        self.set_wmask(PMBA, 4, PMBA_MASK)
        self.set_byte(DEVACTB_APMC, DEVACTB_SMM_OFF)
        self.set_dword(SMBBA, SMBBA_RESET)
        self.set_byte(SMBHSTCFG, SMBHSTCFG_RESET)
        self.registers = PmRegisters(on_poweroff, set_sci, clock)
        self.window: int | None = None          # where the PM block decodes now

    def pm_base(self) -> int | None:
        if not self.config[PMREGMISC] & PMIOSE:
            return None
        return (self.get(PMBA, 4) & PMBA_MASK) or None

    def enable_pm_io(self, base: int) -> None:
        """Put the PM block at `base` and enable it, as firmware does (a boot without one)."""
        self.set_dword(PMBA, (base & PMBA_MASK) | PMBA_IO)
        self.set_byte(PMREGMISC, self.config[PMREGMISC] | PMIOSE)
        self.update_pm_window()

    def config_written(self, offset: int, size: int, changed: bool) -> None:
        if offset < PMBA + 4 and offset + size > PMBA or offset <= PMREGMISC < offset + size:
            self.update_pm_window()

    def update_pm_window(self) -> None:
        base = self.pm_base()
        if base == self.window or self.buses is None:
            return
        if self.window is not None:
            self.buses.unmap("pio", self.window)
            self.window = None
        if base is not None and self.buses.map_range(
                f"{self.describe()} PM I/O block at {base:#x}", "pio", base, PM_IO_SIZE,
                self.registers):
            self.window = base


class PmRegisters(RegisterDevice):
    """The PM1a event and control blocks and the PM timer (the PM I/O block's first 12 bytes)."""

    name = "acpi-pm"

    def __init__(self, on_poweroff=None, set_sci=None, clock=time.monotonic_ns):
        self.on_poweroff = on_poweroff or (lambda: None)
        self.set_sci = set_sci or (lambda level: None)
        self.clock = clock
        self.status = 0
        self.enable = 0
        self.control = SCI_EN               # ACPI mode from reset (QEMU's smm=off)
        self.timer_bit23 = 0
        self.sci = False

    def timer(self) -> int:
        return (self.clock() * PM_TIMER_HZ // 1_000_000_000) & PM_TIMER_MASK

    def _status(self) -> int:
        # TMR_STS: bit 23 of the timer changed since the guest last cleared it.
        if (self.timer() >> 23) != self.timer_bit23:
            self.status |= TMR_STS
        return self.status

    def _bytes(self) -> bytes:
        return (self._status().to_bytes(2, "little") + self.enable.to_bytes(2, "little")
                + self.control.to_bytes(2, "little") + bytes(2) + self.timer().to_bytes(4, "little"))

    def read_register(self, offset: int, size: int) -> int:
        data = self._bytes()[offset:offset + size]
        return int.from_bytes(data + b"\xff" * (size - len(data)), "little")

    def write_register(self, offset: int, size: int, value: int) -> None:
        for i, byte in enumerate(value.to_bytes(size, "little")):
            at = offset + i
            shift = 8 * (at & 1)
            if at in (PM1_STS, PM1_STS + 1):
                cleared = byte << shift
                self.status = self._status() & ~cleared
                if cleared & TMR_STS:
                    self.timer_bit23 = self.timer() >> 23
            elif at in (PM1_EN, PM1_EN + 1):
                self.enable = (self.enable & ~(0xFF << shift)) | byte << shift
            elif at in (PM1_CNT, PM1_CNT + 1):
                self.control = (self.control & ~(0xFF << shift)) | byte << shift
                if self.control & SLP_EN:
                    self.control &= ~SLP_EN             # SLP_EN always reads 0
                    if (self.control >> SLP_TYP_SHIFT) & 7 == SLP_TYP_SOFT_OFF:
                        self.on_poweroff()
        self._update_sci()

    def _update_sci(self) -> None:
        level = bool(self.status & self.enable)
        if level != self.sci:
            self.sci = level
            self.set_sci(level)


class PlainRegisters(RegisterDevice):
    """Byte registers that read back what was written: the GPE0 block and the APM ports."""

    def __init__(self, name: str, size: int, write_one_to_clear: int = 0):
        self.name = name
        self.bytes = bytearray(size)
        self.write_one_to_clear = write_one_to_clear    # this many leading bytes are RW1C

    def read_register(self, offset: int, size: int) -> int:
        data = self.bytes[offset:offset + size]
        return int.from_bytes(bytes(data) + b"\xff" * (size - len(data)), "little")

    def write_register(self, offset: int, size: int, value: int) -> None:
        for at in range(offset, min(offset + size, len(self.bytes))):
            byte = (value >> (8 * (at - offset))) & 0xFF
            if at < self.write_one_to_clear:
                self.bytes[at] &= ~byte
            else:
                self.bytes[at] = byte
