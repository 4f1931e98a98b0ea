"""A device in ten lines: a Python object on an I/O port, driven by real guest code on KVM."""

from tinyvmm import Outcome
from tinyvmm.firmware import real_mode_image


class Doubler:
    """Port 0x600: a read gives twice the last value written."""

    def __init__(self):
        self.value = 0

    def read(self, offset, size):
        return 2 * self.value

    def write(self, offset, size, value):
        self.value = value


GUEST = real_mode_image(bytes.fromhex(
    "ba 00 06"      # f000:0000  mov dx, 0x600
    "b8 15 00"      # f000:0003  mov ax, 21
    "ef"            # f000:0006  out dx, ax
    "ed"            # f000:0007  in ax, dx
    "eb fe"         # f000:0008  jmp $
))


def test_the_guest_reads_what_the_device_computes(machine):
    guest = machine(GUEST, mem=16 << 20)
    doubler = Doubler()
    guest.add_port_device(0x600, 2, doubler)        # a 16-bit port: 0x600-0x601
    result = guest.run(timeout=10, until_address=0xF0008)
    assert result.outcome is Outcome.BREAKPOINT, guest.summary()
    assert doubler.value == 21
    assert guest.regs().rax & 0xFFFF == 42
