"""An 8250/16550A UART, as Linux's 8250 driver probes and uses it (COM1: 0x3f8, IRQ 4).

Transmission is instantaneous: the transmitter is always empty (LSR THRE|TEMT),
so polled output never waits. Interrupts follow the 16550 priority scheme for
the two sources emulated here, received data and transmitter empty. Received
bytes may come from another thread (the console input): feed() and register
accesses take the same lock.
"""

import threading
from collections import deque

from ..bus import RegisterDevice

# Register offsets
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_RDA = 0x01          # received data available interrupt
IER_THRE = 0x02         # transmitter holding register empty interrupt
IER_MASK = 0x0F
IIR_NONE = 0x01
IIR_THRE = 0x02
IIR_RDA = 0x04
IIR_FIFO_ENABLED = 0xC0  # both bits: "16550A with working FIFO"
FCR_FIFO_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
LCR_DLAB = 0x80
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
LSR_DR = 0x01
LSR_THRE = 0x20
LSR_TEMT = 0x40
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80

DEFAULT_DIVISOR = 12     # 9600 baud; never 0, Linux divides by it
RX_FIFO_SIZE = 64


class Serial(RegisterDevice):
    """A 16550A. `out(data: bytes)` receives transmitted bytes; `irq(level: bool)` drives the line."""

    name = "serial"

    def __init__(self, out=None, irq=None):
        self.out = out or (lambda data: None)
        self.irq = irq or (lambda level: None)
        self.ier = 0
        self.lcr = 0x03
        self.mcr = MCR_OUT2
        self.scr = 0
        self.divisor = DEFAULT_DIVISOR
        self.fifo_enabled = False
        self.thre_pending = False
        self.rx: deque[int] = deque()       # received bytes, oldest first
        self._irq_level = False
        self._lock = threading.Lock()

    # --- input from the host side ---------------------------------------
    def feed(self, data: bytes) -> int:
        """Queue bytes as if received on the line, as many as the receive FIFO has room for;
        returns how many it took (the rest is the caller's to send again)."""
        with self._lock:
            return self._receive(data)

    def _receive(self, data: bytes) -> int:
        taken = data[:max(RX_FIFO_SIZE - len(self.rx), 0)]
        self.rx.extend(taken)
        self._update_irq()
        return len(taken)

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        with self._lock:
            return super().read(offset, size, count)

    def write(self, offset: int, size: int, data: bytes) -> None:
        with self._lock:
            super().write(offset, size, data)

    # --- registers -------------------------------------------------------
    def read_register(self, offset: int, size: int) -> int:
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                return self.divisor & 0xFF
            value = self.rx.popleft() if self.rx else 0
            self._update_irq()
            return value
        if offset == IER_DLM:
            return (self.divisor >> 8) if self.lcr & LCR_DLAB else self.ier
        if offset == IIR_FCR:
            iir = self._interrupt_id()
            if iir == IIR_THRE:
                self.thre_pending = False   # reading IIR acknowledges THRE
                self._update_irq()
            return iir | (IIR_FIFO_ENABLED if self.fifo_enabled else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0)
        if offset == MSR:
            if self.mcr & MCR_LOOP:
                m = self.mcr
                return ((MSR_CTS if m & MCR_RTS else 0) | (MSR_DSR if m & MCR_DTR else 0) |
                        (MSR_RI if m & MCR_OUT1 else 0) | (MSR_DCD if m & MCR_OUT2 else 0))
            return MSR_DCD | MSR_DSR | MSR_CTS
        return self.scr

    def write_register(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF00) | value
            elif self.mcr & MCR_LOOP:
                self._receive(bytes([value]))   # loopback: the byte comes straight back
                self.thre_pending = True
                self._update_irq()
            else:
                self.out(bytes([value]))
                self.thre_pending = True
                self._update_irq()
        elif offset == IER_DLM:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
            else:
                enabling_thre = value & IER_THRE and not self.ier & IER_THRE
                self.ier = value & IER_MASK
                if enabling_thre:
                    self.thre_pending = True  # the transmitter is already empty
                self._update_irq()
        elif offset == IIR_FCR:
            self.fifo_enabled = bool(value & FCR_FIFO_ENABLE)
            if value & FCR_CLEAR_RX:
                self.rx.clear()
                self._update_irq()
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
            self._update_irq()
        elif offset == SCR:
            self.scr = value

    def _interrupt_id(self) -> int:
        if self.ier & IER_RDA and self.rx:
            return IIR_RDA
        if self.ier & IER_THRE and self.thre_pending:
            return IIR_THRE
        return IIR_NONE

    def _update_irq(self) -> None:
        # OUT2 gates the interrupt line on PC serial ports.
        level = self._interrupt_id() != IIR_NONE and bool(self.mcr & MCR_OUT2)
        if level != self._irq_level:
            self._irq_level = level
            self.irq(level)
