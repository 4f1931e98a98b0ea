"""Guest memory: RAM and firmware regions, with every guest address checked.

Consumers (devices, loaders, the gdb stub) see only GuestMemory; whether it is
backed by mmap (a real VM) or bytearray (tests) is invisible to them. An
access must lie wholly inside one region; anything else raises
GuestMemoryError, so no guest-supplied address can reach host memory outside
the guest's own.
"""

import bisect
import ctypes
import mmap

from . import layout
from .errors import HostError, TinyvmmError

TYPE_CHECKING = False           # True for type checkers only
if TYPE_CHECKING:
    from collections.abc import Callable


class GuestMemoryError(TinyvmmError, ValueError):
    """A guest-physical access outside RAM, into ROM for writing, or wrapping around."""


class HostMemoryError(HostError, OSError):
    """The host could not provide the guest's RAM (mmap failed)."""


ADDRESS_LIMIT = 1 << 64
PAGE_SIZE = mmap.PAGESIZE
MADV_POPULATE_WRITE = 23        # Linux 5.14: fault pages in as if written, contents unchanged
# From this size a copy runs in ctypes.memmove, which lets other threads (vCPUs, the
# console's writer) run meanwhile; below it, a slice assignment is cheaper than the call.
MEMMOVE_MIN = 64 << 10
MADV_DONTNEED = 4
# From this size a zero fill of RAM drops the pages instead of writing them (a bss): one
# madvise costs less than faulting in the pages a write touches (a direct boot's 0.9 MiB bss:
# 1-6 ms written, here).
ZERO_BY_DISCARD_MIN = 64 << 10
FILL_CHUNK = 1 << 20

# What a region's bytes can live in (the buffer protocol, writable for a writable region).
Backing = mmap.mmap | bytearray | bytes | memoryview


class GuestMemory:
    """Guest-physical memory made of non-overlapping regions.

    Each region is (gpa, size, buffer, writable), buffer being any writable
    object supporting the buffer protocol (mmap, bytearray). `ram` and `rom` are
    the two backings of a memory made by for_layout, else None.
    """

    def __init__(self, regions: list[tuple[int, int, Backing, bool]]):
        regions = sorted(regions, key=lambda r: r[0])
        for (a, n, _, _), (b, _, _, _) in zip(regions, regions[1:]):
            if a + n > b:
                raise ValueError(f"guest memory regions overlap at {b:#x}")
        self._starts: list[int] = []
        # (start, end, read view or None, write view or None): a region may read from one
        # buffer and write to another (shadow RAM behind a ROM, tinyvmm.pci.pam).
        self._regions: list[tuple[int, int, memoryview | None, memoryview | None]] = []
        for gpa, size, buf, writable in regions:
            view = memoryview(buf).cast("B")
            if len(view) < size:
                raise ValueError(f"region at {gpa:#x} has a buffer smaller than its size")
            self._starts.append(gpa)
            self._regions.append((gpa, gpa + size, view, view if writable else None))
        self.ram: mmap.mmap | None = None
        self.rom: mmap.mmap | None = None
        # Called with (gpa, size) for each writable view handed out: what a device may write
        # (a software CPU drops the code it translated from there).
        self.write_observer: Callable[[int, int], object] | None = None

    @classmethod
    def for_layout(cls, ram_size: int, firmware: bytes) -> "GuestMemory":
        """Allocate RAM (anonymous mmap) and place the firmware per tinyvmm.layout (reset state).

        `ram` and `rom` are the two backings; RAM's host offset equals the guest
        address below the end of low RAM (layout.low_ram_end), so RAM hidden behind the shadow
        window exists too.
        """
        try:
            ram = mmap.mmap(-1, ram_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise HostMemoryError(exc.errno, f"the host could not provide {ram_size >> 20} MiB "
                                             f"of guest RAM ({exc.strerror})") from None
        if hasattr(mmap, "MADV_HUGEPAGE"):
            # Fewer first-touch faults when a kernel is copied in, fewer TLB misses later.
            ram.madvise(mmap.MADV_HUGEPAGE)
        rom = mmap.mmap(-1, len(firmware), mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                        mmap.PROT_READ | mmap.PROT_WRITE)
        rom[:] = firmware
        memory = cls([(r.gpa, r.size,
                       memoryview(ram if r.kind == "ram" else rom)[r.host_offset:r.host_offset + r.size],
                       r.kind == "ram")
                      for r in layout.memory_regions(ram_size, len(firmware))])
        memory.ram, memory.rom = ram, rom
        return memory

    @property
    def regions(self) -> list[tuple[int, int, bool]]:
        """(gpa, size, writable) of every region."""
        return [(start, end - start, write is not None) for start, end, _, write in self._regions]

    def replace(self, start: int, end: int, regions) -> None:
        """Swap everything in [start, end) for `regions`: (gpa, size, read view, write view).

        No existing region may straddle start or end; the new ones must lie inside.
        """
        first = bisect.bisect_left(self._starts, start)
        last = bisect.bisect_left(self._starts, end)
        if (first > 0 and self._regions[first - 1][1] > start) or \
                (last > first and self._regions[last - 1][1] > end):
            raise ValueError(f"a region straddles the window {start:#x}-{end:#x}")
        new = sorted(((gpa, gpa + size, read, write) for gpa, size, read, write in regions),
                     key=lambda r: r[0])
        cursor = start
        for gpa, stop, read, write in new:
            if gpa < cursor or stop > end:
                raise ValueError(f"region {gpa:#x}-{stop:#x} overlaps or leaves {start:#x}-{end:#x}")
            for view in (read, write):
                if view is not None and len(view) < stop - gpa:
                    raise ValueError(f"region at {gpa:#x} has a buffer smaller than its size")
            cursor = stop
        self._regions[first:last] = new
        self._starts[first:last] = [r[0] for r in new]

    def host_address(self, gpa: int) -> int:
        """Host virtual address of a region's first byte (for KVM memory slots)."""
        index = self._region_index(gpa, 1)
        start, _, view, _ = self._regions[index]
        if gpa != start:
            raise GuestMemoryError(f"{gpa:#x} is not the start of a region")
        return buffer_address(view)

    def _region_index(self, gpa: int, size: int, write: bool = False) -> int:
        if gpa < 0 or size < 0 or gpa + size > ADDRESS_LIMIT:
            raise GuestMemoryError(f"access of {size} bytes at {gpa:#x} wraps the address space")
        index = bisect.bisect_right(self._starts, gpa) - 1
        if index >= 0:
            start, end, read, written = self._regions[index]
            if gpa + size <= end and (gpa < end or size == 0):
                if write and written is None:
                    raise GuestMemoryError(f"write of {size} bytes at {gpa:#x} into read-only memory")
                if not write and read is None:
                    raise GuestMemoryError(f"read of {size} bytes at {gpa:#x} from write-only memory")
                return index
        raise GuestMemoryError(f"access of {size} bytes at {gpa:#x} is outside guest memory")

    def prefault(self, ranges) -> None:
        """Fault in the host pages behind these (gpa, size) RAM ranges now.

        A copy into fresh anonymous memory pays a host page fault per page (and the
        zeroing of a whole huge page); a boot loader's destinations are known before
        the guest starts, so that cost is paid here, in VMM startup, and the ROM's copy
        runs at memory bandwidth (27 MiB: about 1.3 ms with huge pages). Done before the
        vCPU starts rather than on a thread beside it: a thread the host schedules late
        races the ROM's copy (kernel setup 3 ms or 60 ms by the luck of the scheduler).
        Contents never change; ranges outside RAM are ignored, and so is a kernel
        without MADV_POPULATE_WRITE.
        """
        for gpa, size in ranges:
            if size <= 0:
                continue
            try:
                region_start, _, _, view = self._regions[self._region_index(gpa, size, True)]
            except GuestMemoryError:
                continue
            start = buffer_address(view) + gpa - region_start
            first = start - start % PAGE_SIZE
            if _madvise(first, start + size - first, MADV_POPULATE_WRITE) != 0:
                return          # an older kernel (EINVAL): each copy faults its own pages

    def contains(self, gpa: int, size: int, writable: bool = False) -> bool:
        try:
            self._region_index(gpa, size, writable)
        except GuestMemoryError:
            return False
        return True

    def view(self, gpa: int, size: int, writable: bool = False) -> memoryview:
        """A zero-copy view of [gpa, gpa + size), which must lie in one region."""
        start, _, read, write = self._regions[self._region_index(gpa, size, writable)]
        if writable and self.write_observer is not None:
            self.write_observer(gpa, size)
        view = write if writable else read
        assert view is not None             # _region_index refuses a region without it
        offset = gpa - start
        return view[offset:offset + size]

    def views(self, gpa: int, size: int, writable: bool = False) -> list[memoryview]:
        """Views covering [gpa, gpa + size), which may run across adjacent regions (a DMA
        buffer may); [] for 0 bytes. GuestMemoryError if any byte is outside guest memory
        (for `writable`, outside writable memory)."""
        if size == 0:
            return []
        try:
            return [self.view(gpa, size, writable)]
        except GuestMemoryError:
            if size < 0 or gpa < 0:
                raise
        views, cursor, end = [], gpa, gpa + size
        for start, end_of_region, _, written in self._regions:
            if start <= cursor < end_of_region:
                if writable and written is None:
                    break
                take = min(end, end_of_region) - cursor
                views.append(self.view(cursor, take, writable))
                cursor += take
                if cursor == end:
                    return views
        raise GuestMemoryError(f"access of {size} bytes at {gpa:#x} is outside guest "
                               f"{'writable ' if writable else ''}memory")

    def read(self, gpa: int, size: int) -> bytes:
        return bytes(self.view(gpa, size))

    def write(self, gpa: int, data) -> None:
        self.view(gpa, len(data), writable=True)[:] = data

    def read_obj(self, gpa: int, ctype):
        return ctype.from_buffer_copy(self.view(gpa, ctypes.sizeof(ctype)))

    def write_obj(self, gpa: int, obj) -> None:
        self.write(gpa, bytes(obj))

    def fill(self, gpa: int, size: int, value: int = 0) -> None:
        """Set [gpa, gpa + size) to `value`. Zeros over RAM's whole pages are not written:
        the pages are dropped, and anonymous memory reads as zeros again, so a bss of
        gigabytes costs neither time nor host memory, written before or not."""
        view = self.view(gpa, size, writable=True)
        if value == 0 and size >= ZERO_BY_DISCARD_MIN and self._discard(view):
            return
        chunk = bytes([value]) * min(size, FILL_CHUNK)     # never a buffer as large as the fill
        for offset in range(0, size, FILL_CHUNK):
            end = min(offset + FILL_CHUNK, size)
            view[offset:end] = chunk[:end - offset]

    def _discard(self, view: memoryview) -> bool:
        """Zero `view` by dropping its whole pages (MADV_DONTNEED) and writing its ragged
        edges; False (nothing done) unless it lies in the RAM mapping and madvise succeeds."""
        if self.ram is None:
            return False
        start, size, ram = buffer_address(view), len(view), buffer_address(self.ram)
        if not ram <= start <= start + size <= ram + len(self.ram):
            return False
        head = -start % PAGE_SIZE
        tail = (start + size) % PAGE_SIZE
        if size - head - tail < PAGE_SIZE or _madvise(start + head, size - head - tail,
                                                      MADV_DONTNEED) != 0:
            return False
        view[:head] = bytes(head)
        view[size - tail:] = bytes(tail)
        return True


_madvise = ctypes.CDLL(None, use_errno=True).madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def copy_into(dest: memoryview, source) -> None:
    """dest[:len(source)] = source, in one memmove on this thread (a second thread gained
    nothing into resident pages and waited on the host's scheduler when it was busy)."""
    size = len(source)
    if size > len(dest):
        raise ValueError(f"a copy of {size} bytes into {len(dest)}")
    if size < MEMMOVE_MIN:
        dest[:size] = source
        return
    ctypes.memmove(buffer_address(dest), buffer_address(source), size)


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer (stable since 3.11), to learn where a read-only buffer lies."""
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


def buffer_address(data) -> int:
    """Host address of the first byte of a contiguous buffer, read-only ones included."""
    view = _PyBuffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(data), ctypes.byref(view), 0)  # PyBUF_SIMPLE
    try:
        return view.buf
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))
