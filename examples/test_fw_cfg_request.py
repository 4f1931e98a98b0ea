"""A guest-to-host request through fw_cfg: the guest writes a request into a file by fw_cfg DMA,
host code answers it in another file the guest reads back, and the guest prints the answer."""

from tinyvmm import Outcome
from tinyvmm.firmware import real_mode_image

# Real mode, DS = 0. BX holds the request file's key and CX the reply file's (set by the
# host below); the DMA descriptor is built at 0x500: big-endian control (key << 16 | flags),
# length and address.
GUEST = real_mode_image(bytes.fromhex(
    "31 c0"                     # xor ax, ax
    "8e d8"                     # mov ds, ax
    "66 c7 06 00 06 70696e67"   # mov dword [0x600], "ping"      the request
    "86 df"                     # xchg bl, bh                    key, big-endian
    "89 1e 00 05"               # mov [0x500], bx                control: key,
    "c7 06 02 05 00 18"         # mov word [0x502], 0x1800         SELECT | WRITE
    "66 c7 06 04 05 00000004"   # mov dword [0x504], 4 (BE)      length
    "66 c7 06 08 05 00000000"   # mov dword [0x508], 0           address 0x600
    "66 c7 06 0c 05 00000600"   # mov dword [0x50c], 0x600 (BE)
    "ba 18 05"                  # mov dx, 0x518                  fw_cfg DMA address, low half
    "66 b8 00 00 05 00"         # mov eax, 0x500 (BE)
    "66 ef"                     # out dx, eax                    the write: the host answers
    "86 cd"                     # xchg cl, ch
    "89 0e 00 05"               # mov [0x500], cx                control: reply key,
    "c7 06 02 05 00 0a"         # mov word [0x502], 0x0a00         SELECT | READ
    "66 c7 06 0c 05 00000700"   # mov dword [0x50c], 0x700 (BE)  into 0x700
    "66 ef"                     # out dx, eax                    the read
    "be 00 07"                  # mov si, 0x700
    "ba 02 04"                  # mov dx, 0x402                  the debug console
    "b9 04 00"                  # mov cx, 4
    "f3 6e"                     # rep outsb                      print the reply
    "eb fe"                     # jmp $                          at f000:0061
))
ANSWERS = {b"ping": b"pong"}


def test_the_host_answers_a_request_the_guest_wrote(machine):
    requests = []
    guest = machine(GUEST, mem=16 << 20)
    guest.add_fw_cfg_file("opt/example/request", size=4,
                          write=lambda offset, data: requests.append(data))
    guest.add_fw_cfg_file("opt/example/reply", size=4, read=lambda: ANSWERS[requests[-1]])
    guest.set_regs(rbx=guest.fw_cfg_file_key("opt/example/request"),
                   rcx=guest.fw_cfg_file_key("opt/example/reply"))
    result = guest.run(timeout=10, until_address=0xF0061)
    assert result.outcome is Outcome.BREAKPOINT, guest.summary()
    assert requests == [b"ping"]
    assert guest.debugcon_output == b"pong"
