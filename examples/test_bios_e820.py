"""tinyvmm's BIOS answers INT 15h E820 with a memory map that matches the guest's RAM.

The BIOS runs its power-on self test until it has nothing to boot; the test then calls
INT 15h from a two-instruction stub it writes into guest RAM, once per map entry,
stopping at a breakpoint after each call to read the registers and the entry.
"""

import struct

from tinyvmm import Outcome

SMAP = 0x534D4150           # "SMAP", the signature E820 calls and answers carry
STUB = 0x7000               # int 0x15; jmp $
BUFFER = 0x8000             # where the BIOS writes each 20-byte entry
USABLE, RESERVED = 1, 2
MEM = 64 << 20


def e820_map(guest) -> list[tuple[int, int, int]]:
    """(base, length, type) of every entry, asked for one at a time as an OS does."""
    guest.write_memory(STUB, bytes.fromhex("cd 15 eb fe"))
    entries, continuation = [], 0
    while True:
        guest.set_segment("cs", 0)
        guest.set_segment("es", 0)
        guest.set_regs(rip=STUB, rax=0xE820, rdx=SMAP, rbx=continuation, rcx=20, rdi=BUFFER)
        result = guest.run(timeout=10, until_address=STUB + 2)
        assert result.outcome is Outcome.BREAKPOINT, guest.summary()
        regs = guest.regs()
        assert not regs.rflags & 1, "carry set: the BIOS refused the call"
        assert regs.rax & 0xFFFFFFFF == SMAP and regs.rcx & 0xFFFFFFFF >= 20
        entries.append(struct.unpack("<QQI", guest.read_memory(BUFFER, 20)))
        continuation = regs.rbx & 0xFFFFFFFF
        if continuation == 0:
            return entries
        assert len(entries) < 32, "the continuation never comes back to 0"


def test_the_bios_memory_map_covers_ram(machine):
    guest = machine("bios.bin", mem=MEM)
    result = guest.run(timeout=30, until_console="no bootable option ROM")
    assert result.outcome is Outcome.EXPECTED, guest.summary()
    entries = e820_map(guest)
    assert entries == sorted(entries)
    for (base, length, _), (next_base, _, _) in zip(entries, entries[1:]):
        assert base + length <= next_base, "entries overlap"
    usable = [(base, base + length) for base, length, kind in entries if kind == USABLE]
    assert usable[0][0] == 0 and usable[0][1] <= 0xA0000        # conventional memory
    # RAM above 1 MiB up to the ACPI tables the BIOS installed at its top, reserved for them.
    high = next((start, end) for start, end in usable if start == 1 << 20)
    tables = next((base, length) for base, length, kind in entries
                  if kind == RESERVED and base == high[1])
    assert sum(tables) == MEM and tables[1] <= 0x40000
    assert sum(end - start for start, end in usable) <= MEM
    assert ((1 << 32) - 0x10000, 0x10000, RESERVED) in entries  # the 64 KiB BIOS below 4 GiB
