"""UART, i8042, CMOS, debug console, milestones and small ports, alone with fake wiring."""

import time

from tinyvmm import layout
from tinyvmm.devices import serial as uart
from tinyvmm.devices.cmos import Cmos
from tinyvmm.devices.debugcon import DebugConsole
from tinyvmm.devices.i8042 import I8042
from tinyvmm.devices.milestones import MilestonePort
from tinyvmm.devices.misc import Port92, PostCode


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, *args):
        self.events.append(args[0] if len(args) == 1 else args)


def make_serial():
    out, irq = bytearray(), Recorder()
    return uart.Serial(out=out.extend, irq=irq), out, irq


def reg(dev, offset):
    return dev.read(offset, 1)[0]


def put(dev, offset, value):
    dev.write(offset, 1, bytes([value]))


def test_serial_transmits_and_is_always_ready():
    dev, out, _ = make_serial()
    for ch in b"ok\n":
        assert reg(dev, uart.LSR) & (uart.LSR_THRE | uart.LSR_TEMT) == 0x60
        put(dev, uart.RBR_THR_DLL, ch)
    assert bytes(out) == b"ok\n"


def test_serial_scratch_and_ier_probe():
    # Linux's 8250 probe: IER must read back 0 and 0x0F; the scratch register must hold a value.
    dev, _, _ = make_serial()
    put(dev, uart.SCR, 0xA5)
    assert reg(dev, uart.SCR) == 0xA5
    put(dev, uart.IER_DLM, 0)
    assert reg(dev, uart.IER_DLM) == 0
    put(dev, uart.IER_DLM, 0xFF)
    assert reg(dev, uart.IER_DLM) == 0x0F


def test_serial_divisor_latch_never_zero_by_default():
    dev, out, _ = make_serial()
    put(dev, uart.LCR, uart.LCR_DLAB | 3)
    assert (reg(dev, uart.IER_DLM) << 8 | reg(dev, uart.RBR_THR_DLL)) == uart.DEFAULT_DIVISOR
    put(dev, uart.RBR_THR_DLL, 0x01)
    put(dev, uart.IER_DLM, 0x00)
    put(dev, uart.LCR, 3)
    assert dev.divisor == 1
    assert out == b""            # divisor writes are not output


def test_serial_loopback_msr_and_data():
    dev, out, _ = make_serial()
    put(dev, uart.MCR, uart.MCR_LOOP | 0x0A)        # what Linux writes during autoconfig
    assert reg(dev, uart.MSR) & 0xF0 == 0x90
    put(dev, uart.RBR_THR_DLL, 0x42)
    assert reg(dev, uart.LSR) & uart.LSR_DR
    assert reg(dev, uart.RBR_THR_DLL) == 0x42
    assert out == b""
    put(dev, uart.MCR, uart.MCR_OUT2)
    assert reg(dev, uart.MSR) == uart.MSR_DCD | uart.MSR_DSR | uart.MSR_CTS


def test_serial_fifo_identifies_as_16550a():
    dev, _, _ = make_serial()
    put(dev, uart.IIR_FCR, uart.FCR_FIFO_ENABLE)
    assert reg(dev, uart.IIR_FCR) >> 6 == 3
    put(dev, uart.IIR_FCR, 0)
    assert reg(dev, uart.IIR_FCR) >> 6 == 0


def test_serial_thre_interrupt_raised_and_acknowledged():
    dev, _, irq = make_serial()
    put(dev, uart.MCR, uart.MCR_OUT2)
    put(dev, uart.IER_DLM, uart.IER_THRE)
    assert irq.events == [True]                  # transmitter already empty
    assert reg(dev, uart.IIR_FCR) & 0x0F == uart.IIR_THRE
    assert irq.events == [True, False]           # reading IIR acknowledged it
    assert reg(dev, uart.IIR_FCR) & 0x0F == uart.IIR_NONE
    put(dev, uart.RBR_THR_DLL, ord("x"))
    assert irq.events == [True, False, True]     # raised again after the byte went out


def test_serial_receive_interrupt_and_priority():
    dev, _, irq = make_serial()
    put(dev, uart.MCR, uart.MCR_OUT2)
    put(dev, uart.IER_DLM, uart.IER_RDA | uart.IER_THRE)
    dev.feed(b"ab")
    assert reg(dev, uart.IIR_FCR) & 0x0F == uart.IIR_RDA
    assert reg(dev, uart.RBR_THR_DLL) == ord("a")
    assert reg(dev, uart.RBR_THR_DLL) == ord("b")
    assert reg(dev, uart.IIR_FCR) & 0x0F == uart.IIR_THRE
    assert irq.events[-1] is False


def test_serial_out2_gates_the_line():
    dev, _, irq = make_serial()
    put(dev, uart.MCR, 0)
    put(dev, uart.IER_DLM, uart.IER_THRE)
    assert irq.events == []


def test_i8042_reset_command():
    resets = Recorder()
    dev = I8042(on_reset=lambda: resets("reset"))
    assert dev.read(4, 1)[0] & 0x02 == 0         # input buffer empty: Linux waits for this
    dev.write(4, 1, b"\xfe")
    assert resets.events == ["reset"]


def test_i8042_output_port_reset_line_and_config():
    resets = Recorder()
    dev = I8042(on_reset=lambda: resets("reset"))
    dev.write(4, 1, b"\xd1")
    dev.write(0, 1, b"\xdf")                     # A20 on, reset line high: no reset
    assert resets.events == []
    dev.write(4, 1, b"\xaa")
    assert dev.read(4, 1)[0] & 0x01
    assert dev.read(0, 1) == b"\x55"
    dev.write(4, 1, b"\x60")
    dev.write(0, 1, b"\x47")
    dev.write(4, 1, b"\x20")
    assert dev.read(0, 1) == b"\x47"
    dev.write(4, 1, b"\xd1")
    dev.write(0, 1, b"\x00")                     # reset line low
    assert resets.events == ["reset"]


def test_cmos_memory_size_and_clock():
    ram = 256 * layout.MiB
    frozen = time.mktime((2026, 11, 21, 13, 45, 59, 0, 0, -1)) - time.timezone
    dev = Cmos(ram, clock=lambda: frozen)

    def cmos(index):
        dev.write(0, 1, bytes([index]))
        return dev.read(1, 1)[0]

    assert cmos(0x15) | cmos(0x16) << 8 == 639
    assert cmos(0x17) | cmos(0x18) << 8 == 0xFFFF       # 255 MiB of KiB does not fit: capped
    assert (cmos(0x34) | cmos(0x35) << 8) * 65536 + 16 * layout.MiB == ram
    assert (cmos(0x04), cmos(0x02), cmos(0x00)) == (0x13, 0x45, 0x59)     # BCD
    assert (cmos(0x09), cmos(0x08), cmos(0x07), cmos(0x32)) == (0x26, 0x11, 0x21, 0x20)
    assert cmos(0x0D) & 0x80
    dev.write(0, 1, b"\x8f")                      # NMI disabled, index 0x0f
    assert dev.nmi_disabled
    dev.write(1, 1, b"\x0a")
    assert cmos(0x0F) == 0x0A


def test_cmos_small_memory_in_kib():
    dev = Cmos(32 * layout.MiB)
    dev.write(0, 1, b"\x30")
    low = dev.read(1, 1)[0]
    dev.write(0, 1, b"\x31")
    assert low | dev.read(1, 1)[0] << 8 == 31 * 1024


def test_cmos_memory_above_4g():
    dev = Cmos(5 * layout.GiB)
    dev.write(0, 1, b"\x5c")
    mid = dev.read(1, 1)[0]
    dev.write(0, 1, b"\x5b")
    low = dev.read(1, 1)[0]
    assert (mid << 8 | low) * 65536 == 5 * layout.GiB - layout.LOW_RAM_MAX


def test_debug_console_output_and_readback():
    out = bytearray()
    dev = DebugConsole(out=out.extend)
    dev.write(0, 1, b"hi")
    dev.write(0, 2, b"!\x00")
    assert out == b"hi!"
    assert dev.read(0, 1) == b"\xe9"


def test_debug_console_nobody_reads_looks_absent_to_firmware():
    from tinyvmm.console import Console, open_sink
    sink, _ = open_sink("none")
    unread, watched = Console("debugcon", sink), Console("debugcon", sink, expect=b"boot")
    assert not unread.connected and watched.connected
    dev = DebugConsole(out=unread.write, present=unread.connected)
    assert dev.read(0, 1, 2) == b"\xff\xff"              # SeaBIOS's probe: no port, no log
    dev.write(0, 1, b"kept")
    assert bytes(unread.tail) == b"kept"                 # written anyway: crash reports show it


def test_milestones_are_timestamped_in_order():
    log = []
    low, high = MilestonePort(0xF5, log), MilestonePort(0xF4, log)
    low.write(0, 1, b"\x01")
    high.write(0, 1, b"\x05")
    high.write(0, 1, b"\x03")
    assert [(m.port, m.value) for m in log] == [(0xF5, 1), (0xF4, 5), (0xF4, 3)]
    assert log[0].time_ns <= log[1].time_ns <= log[2].time_ns
    assert [m.name for m in log] == ["firmware start", "firmware do_boot", "jump to Linux boot code"]


def test_port92_fast_reset_and_post_codes():
    resets = Recorder()
    dev = Port92(on_reset=lambda: resets("reset"))
    dev.write(0, 1, b"\x02")
    assert resets.events == [] and dev.read(0, 1) == b"\x02"
    dev.write(0, 1, b"\x03")
    assert resets.events == ["reset"]
    post = PostCode()
    post.write(0, 1, b"\x10\x20")
    assert (post.last, post.writes) == (0x20, 2)


def i8042_drain(dev) -> list[int]:
    out = []
    while dev.read(4, 1)[0] & 0x01:              # output buffer full
        out.append(dev.read(0, 1)[0])
    return out


def test_i8042_keyboard_answers_firmware_probes():
    dev = I8042()
    for command, expected in ((b"\xaa", [0x55]), (b"\xab", [0x00]), (b"\xa9", [0x00])):
        dev.write(4, 1, command)
        assert i8042_drain(dev) == expected
    for byte, expected in ((0xFF, [0xFA, 0xAA]),          # reset: ACK, self-test passed
                           (0xF2, [0xFA, 0xAB, 0x83]),    # identify: an MF2 keyboard
                           (0xF5, [0xFA]), (0xF4, [0xFA]), (0xEE, [0xEE])):
        dev.write(0, 1, bytes([byte]))
        assert i8042_drain(dev) == expected, hex(byte)
    dev.write(0, 1, b"\xf0")                     # set scan code set: ACK, then its parameter
    assert i8042_drain(dev) == [0xFA]
    dev.write(0, 1, b"\x00")                     # 0 asks for the current set
    assert i8042_drain(dev) == [0xFA, 0x02]
    dev.write(0, 1, b"\xed")
    dev.write(0, 1, b"\x07")                     # LEDs: the parameter is not a command
    assert i8042_drain(dev) == [0xFA, 0xFA]


def test_i8042_every_pulse_of_bit_0_resets():
    # Issue 24: only 0xFE reset; 0xF0-0xFF pulse the bits clear in their low nibble.
    resets = Recorder()
    dev = I8042(on_reset=lambda: resets("reset"))
    for command in range(0xF0, 0x100):
        dev.write(4, 1, bytes([command]))
    assert len(resets.events) == 8              # 0xF0, 0xF2 ... 0xFE: bit 0 clear
    assert dev.output_port & 0x01                # a pulse leaves the line high again


def test_i8042_pulse_without_bit_0_and_other_commands_do_not_reset():
    resets = Recorder()
    dev = I8042(on_reset=lambda: resets("reset"))
    for command in (0xF1, 0xF3, 0xFD, 0xFF, 0xD0, 0xC0, 0xE0):
        dev.write(4, 1, bytes([command]))
    assert resets.events == []


def test_i8042_write_keyboard_output_buffer():
    # D2: the byte comes back as keyboard data; it is not sent to the keyboard (no ACK).
    dev = I8042()
    dev.write(4, 1, b"\xd2")
    dev.write(0, 1, b"\xff")
    assert i8042_drain(dev) == [0xFF]
    dev.write(4, 1, b"\xd2")                    # a second one: a byte that is a keyboard command
    dev.write(0, 1, b"\xf2")
    dev.write(0, 1, b"\xee")                    # then a real command, answered as usual
    assert i8042_drain(dev) == [0xF2, 0xEE]


def test_i8042_unknown_keyboard_commands_ask_for_resend():
    dev = I8042()
    for byte in (0x01, 0x42, 0xE0, 0xEC, 0xF1, 0xF7, 0xFB, 0xFD):
        dev.write(0, 1, bytes([byte]))
        assert i8042_drain(dev) == [0xFE], hex(byte)
    for byte in (0x00, 0xF4, 0xF5, 0xF6, 0xFA):  # known ones without a parameter: ACK only
        dev.write(0, 1, bytes([byte]))
        assert i8042_drain(dev) == [0xFA], hex(byte)
    dev.write(0, 1, b"\xfc")                    # set one key make/break: takes a scan code
    dev.write(0, 1, b"\x1c")
    assert i8042_drain(dev) == [0xFA, 0xFA]


def test_i8042_port_enables_and_mouse_bytes_go_nowhere():
    dev = I8042()
    dev.write(4, 1, b"\xad")
    dev.write(4, 1, b"\xa7")
    dev.write(4, 1, b"\x20")
    assert i8042_drain(dev)[0] & 0x30 == 0x30    # both ports disabled in the command byte
    dev.write(4, 1, b"\xae")
    dev.write(4, 1, b"\x20")
    assert i8042_drain(dev)[0] & 0x30 == 0x20
    dev.write(4, 1, b"\xd4")                     # next byte to the mouse: there is none
    dev.write(0, 1, b"\xff")
    assert i8042_drain(dev) == []
