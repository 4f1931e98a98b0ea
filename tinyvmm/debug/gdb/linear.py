"""Guest memory by linear address, as gdb and crash reports see it: paged when the guest pages.

Real mode and unpaged protected mode: linear = physical (A20 is always on
in this machine). With CR0.PG set, KVM_TRANSLATE walks the guest's tables.
"""

from ...memory import GuestMemoryError
from ...x86 import CR0_PG, EFER_LMA

PAGE_SIZE = 4096


class LinearMemory:
    """Guest memory seen through the vCPU: linear addresses, paged when the guest pages."""

    def __init__(self, vcpu, memory):
        self.vcpu = vcpu
        self.memory = memory

    def physical(self, linear: int, sregs) -> int | None:
        """The guest-physical address, or None: unmapped, or beyond 4 GiB with paging off
        (which must not wrap onto low memory)."""
        if sregs.cr0 & CR0_PG:
            return self.vcpu.translate(linear)
        return linear if 0 <= linear <= 0xFFFFFFFF else None

    def read(self, linear: int, size: int, sregs=None) -> bytes:
        """Up to size bytes: stops at the first page that is not mapped to guest memory.

        Raises GuestMemoryError when not even the first byte can be read.
        """
        sregs = sregs or self.vcpu.get_sregs()
        out = bytearray()
        while len(out) < size:
            address = linear + len(out)
            chunk = min(size - len(out), PAGE_SIZE - address % PAGE_SIZE)
            physical = self.physical(address, sregs)
            if physical is None or not self.memory.contains(physical, chunk):
                if out:
                    break
                raise GuestMemoryError(f"linear address {address:#x} is not mapped to guest memory")
            out += self.memory.read(physical, chunk)
        return bytes(out)

    def write(self, linear: int, data: bytes, sregs=None) -> None:
        sregs = sregs or self.vcpu.get_sregs()
        done = 0
        pieces = []
        while done < len(data):               # check every page before writing any
            address = linear + done
            chunk = min(len(data) - done, PAGE_SIZE - address % PAGE_SIZE)
            physical = self.physical(address, sregs)
            if physical is None or not self.memory.contains(physical, chunk, writable=True):
                raise GuestMemoryError(f"linear address {address:#x} is not writable guest RAM")
            pieces.append((physical, data[done:done + chunk]))
            done += chunk
        for physical, piece in pieces:
            self.memory.write(physical, piece)


def linear_pc(regs, sregs) -> int:
    pc = sregs.cs.base + regs.rip
    return pc & (0xFFFFFFFFFFFFFFFF if sregs.efer & EFER_LMA else 0xFFFFFFFF)
