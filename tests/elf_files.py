"""Small ELF files written byte by byte, for the ELF kernel loader's tests (no kernel needed)."""

import struct

EM_X86_64 = 62
EM_AARCH64 = 183
PT_LOAD = 1
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


def note(name: bytes, kind: int, desc: bytes) -> bytes:
    """One ELF note, name and descriptor padded to 4 bytes."""
    def pad(b):
        return b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def pvh_note(entry: int, size: int = 4) -> bytes:
    return note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, entry.to_bytes(size, "little"))


def elf64(segments, notes: bytes = b"", machine: int = EM_X86_64, entry: int = 0) -> bytes:
    """An ELF64 executable: `segments` are (paddr, data, memsz) PT_LOADs, then one PT_NOTE
    holding `notes` when given."""
    phnum = len(segments) + (1 if notes else 0)
    offset = 64 + 56 * phnum
    headers, body = b"", b""
    for paddr, data, memsz in segments:
        vaddr = (0xFFFFFFFF80000000 + paddr) % (1 << 64)
        headers += struct.pack("<IIQQQQQQ", PT_LOAD, 7, offset + len(body), vaddr,
                               paddr, len(data), memsz, 0x1000)
        body += data
    if notes:
        headers += struct.pack("<IIQQQQQQ", PT_NOTE, 4, offset + len(body), 0, 0, len(notes),
                               len(notes), 4)
        body += notes
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, entry, 64, 0, 0, 64, 56, phnum,
                                 64, 0, 0)
    return header + headers + body


def elf32(paddr: int, data: bytes) -> bytes:
    """A minimal ELF32 i386 executable with one PT_LOAD."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, paddr, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<IIIIIIII", PT_LOAD, 84, paddr, paddr, len(data), len(data), 7, 0x1000)
    return header + phdr + data
