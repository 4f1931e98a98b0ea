"""Guest linear to guest-physical addresses through the guest's own page tables.

The walk reads the tables from guest RAM (GuestMemory checks every access), so a guest
that points its tables anywhere gets None, never a read outside its memory. Modes (Intel
SDM vol. 3A, 4.3-4.5): paging off (linear = physical, A20 on), 32-bit (with 4 MiB pages
when CR4.PSE), PAE, 4-level and 5-level (CR4.LA57).
"""

from ..memory import GuestMemoryError
from ..x86 import CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA

PRESENT = 1 << 0
LARGE = 1 << 7
PAGE_SIZE = 4096
ADDRESS_BITS = 0x000F_FFFF_FFFF_F000     # bits 12-51 of a 64-bit entry


def _entry(memory, address: int, size: int) -> int | None:
    try:
        return int.from_bytes(memory.read(address, size), "little")
    except GuestMemoryError:
        return None


def translate(memory, cr0: int, cr3: int, cr4: int, efer: int, linear: int) -> int | None:
    """The guest-physical address of `linear`, or None when a table or the page is absent
    or a table lies outside guest memory. Access rights are not checked."""
    if not cr0 & CR0_PG:
        return linear & 0xFFFF_FFFF
    if efer & EFER_LMA:
        levels = 5 if cr4 & CR4_LA57 else 4
        table = cr3 & ADDRESS_BITS
        for level in range(levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            entry = _entry(memory, table + ((linear >> shift) & 0x1FF) * 8, 8)
            if entry is None or not entry & PRESENT:
                return None
            if level == 1 or (level <= 3 and entry & LARGE):
                base = entry & ADDRESS_BITS & ~((1 << shift) - 1)
                return base | (linear & ((1 << shift) - 1))
            table = entry & ADDRESS_BITS
        return None
    linear &= 0xFFFF_FFFF
    if cr4 & CR4_PAE:
        pdpte = _entry(memory, (cr3 & 0xFFFF_FFE0) + (linear >> 30) * 8, 8)
        if pdpte is None or not pdpte & PRESENT:
            return None
        pde = _entry(memory, (pdpte & ADDRESS_BITS) + ((linear >> 21) & 0x1FF) * 8, 8)
        if pde is None or not pde & PRESENT:
            return None
        if pde & LARGE:
            return (pde & ADDRESS_BITS & ~0x1F_FFFF) | (linear & 0x1F_FFFF)
        pte = _entry(memory, (pde & ADDRESS_BITS) + ((linear >> 12) & 0x1FF) * 8, 8)
        if pte is None or not pte & PRESENT:
            return None
        return (pte & ADDRESS_BITS) | (linear & 0xFFF)
    pde = _entry(memory, (cr3 & 0xFFFF_F000) + (linear >> 22) * 4, 4)
    if pde is None or not pde & PRESENT:
        return None
    if pde & LARGE and cr4 & CR4_PSE:
        # bits 13-20 of a 4 MiB entry are physical bits 32-39 (PSE-36)
        return (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32 | (linear & 0x3F_FFFF)
    pte = _entry(memory, (pde & 0xFFFF_F000) + ((linear >> 12) & 0x3FF) * 4, 4)
    if pte is None or not pte & PRESENT:
        return None
    return (pte & 0xFFFF_F000) | (linear & 0xFFF)


def _pieces(memory, sregs, linear: int, size: int, writable: bool) -> list | None:
    """(guest-physical address, offset, length) of each page's part of `size` bytes at a
    linear address under the paging mode `sregs` (a kvm_sregs) describes; None when any
    byte is not guest memory (RAM, for `writable`)."""
    pieces, done = [], 0
    while done < size:
        address = linear + done
        chunk = min(size - done, PAGE_SIZE - address % PAGE_SIZE)
        physical = translate(memory, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, address)
        if physical is None or not memory.contains(physical, chunk, writable=writable):
            return None
        pieces.append((physical, done, chunk))
        done += chunk
    return pieces


def read_linear(memory, sregs, linear: int, size: int) -> bytes | None:
    """`size` bytes at a linear address; None when any of them is not guest memory."""
    pieces = _pieces(memory, sregs, linear, size, writable=False)
    if pieces is None:
        return None
    return b"".join(memory.read(physical, chunk) for physical, _, chunk in pieces)


def write_linear(memory, sregs, linear: int, data: bytes) -> bool:
    """Write `data` at a linear address when every byte of it is guest RAM; returns whether
    it did (nothing is written otherwise)."""
    pieces = _pieces(memory, sregs, linear, len(data), writable=True)
    if pieces is None:
        return False
    for physical, offset, chunk in pieces:
        memory.write(physical, data[offset:offset + chunk])
    return True
