"""The split virtqueue, device side (virtio 1.x "Split Virtqueues", split-ring.tex).

SplitQueue reads the driver's descriptor table and available ring and writes the
used ring; Chain is one request popped from it: the guest buffers it names,
checked and resolved to memory views. Guest memory is reached only through a
GuestMemory-like object (view, regions), and every address the guest supplies
is checked before use: a malformed ring or chain raises VirtqueueError and
nothing else.

Layouts (N = queue size, all little-endian):
    descriptor table  16*N   addr u64, len u32, flags u16, next u16       (align 16)
    available ring    6+2*N  flags u16, idx u16, ring[N] u16, used_event  (align 2)
    used ring         6+8*N  flags u16, idx u16, ring[N] {id u32, len u32},
                             avail_event u16                              (align 4)

Also the generic feature bits ("Reserved Feature Bits"), as bit numbers.
"""

import struct
import threading

# Generic feature bits (bit numbers, not masks).
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

MAX_QUEUE_SIZE = 32768
DESC_SIZE = 16
# An indirect table may not describe a chain longer than any queue could hold, so a
# larger one is refused rather than walked (it bounds the work one request costs).
MAX_INDIRECT_ENTRIES = MAX_QUEUE_SIZE
MAX_CHAIN_BYTES = 1 << 32               # "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes"

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")

# Acquiring a lock is a full memory barrier on x86 (a locked instruction). The device
# needs one between publishing an index and reading the driver's suppression field
# (store then load), or both sides can miss each other's update and the queue stalls.
_barrier_lock = threading.Lock()


def _barrier() -> None:
    with _barrier_lock:
        pass


class VirtqueueError(Exception):
    """A guest-side fault in a ring or a descriptor chain.

    `head` is the head of the chain concerned when one had been taken from the
    available ring (it is consumed: push(head, 0) can still complete it), else None.
    """

    def __init__(self, message: str, head: int | None = None):
        super().__init__(message)
        self.head = head


def guest_views(memory, gpa: int, length: int, writable: bool) -> list[memoryview]:
    """Views covering guest [gpa, gpa + length), possibly across adjacent regions; [] for 0
    bytes. Raises VirtqueueError when any byte is outside guest memory (or, for `writable`,
    outside writable memory) or the range wraps 2^64."""
    try:
        return memory.views(gpa, length, writable)
    except ValueError:
        kind = "writable guest RAM" if writable else "guest memory"
        raise VirtqueueError(f"buffer of {length} bytes at {gpa:#x} is not entirely in {kind}") from None


def _slice_views(views: list[memoryview], offset: int, length: int | None) -> list[memoryview]:
    """The parts of `views` (taken as one byte string) from offset, at most length bytes."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"negative offset {offset} or length {length}")
    out = []
    remaining = length
    for view in views:
        size = len(view)
        if offset >= size:
            offset -= size
            continue
        stop = size if remaining is None else min(size, offset + remaining)
        part = view[offset:stop] if offset or stop != size else view
        out.append(part)
        offset = 0
        if remaining is not None:
            remaining -= len(part)
            if remaining == 0:
                break
    return out


class Chain:
    """One descriptor chain taken from the available ring.

    `head`: its head descriptor index (what push() wants back).
    `readable`, `writable`: (gpa, length) of each device-readable and
    device-writable buffer, in chain order (zero-length buffers included).
    Every buffer has been checked to lie in guest memory (writable ones in
    writable RAM) when the chain was popped.
    """

    __slots__ = ("head", "readable", "writable", "readable_length", "writable_length",
                 "_read_views", "_write_views")

    def __init__(self, head: int, readable, writable, read_views, write_views):
        self.head = head
        self.readable: list[tuple[int, int]] = readable
        self.writable: list[tuple[int, int]] = writable
        self.readable_length = sum(length for _, length in readable)
        self.writable_length = sum(length for _, length in writable)
        self._read_views: list[memoryview] = read_views
        self._write_views: list[memoryview] = write_views

    def readable_views(self, offset: int = 0, length: int | None = None) -> list[memoryview]:
        """Zero-copy views of readable bytes [offset, offset + length), clipped at the end."""
        return _slice_views(self._read_views, offset, length)

    def writable_views(self, offset: int = 0, length: int | None = None) -> list[memoryview]:
        """Zero-copy views of writable bytes [offset, offset + length), clipped at the end."""
        return _slice_views(self._write_views, offset, length)

    def read_all(self, limit: int | None = None) -> bytes:
        """The readable buffers concatenated, at most `limit` bytes of them."""
        return b"".join(_slice_views(self._read_views, 0, limit))

    def write(self, offset: int, data) -> int:
        """Copy `data` into the writable buffers from byte `offset` of their
        concatenation; never past the last writable byte. Returns bytes written."""
        data = memoryview(data).cast("B")
        done = 0
        for view in _slice_views(self._write_views, offset, len(data)):
            size = len(view)
            view[:] = data[done:done + size]
            done += size
        return done

    def __repr__(self) -> str:
        return (f"Chain(head={self.head}, readable={self.readable_length} bytes in "
                f"{len(self.readable)}, writable={self.writable_length} bytes in {len(self.writable)})")


class SplitQueue:
    """The device side of one split virtqueue.

    `memory`: guest memory (tinyvmm.memory.GuestMemory interface). `size`: queue
    size N, a power of two <= 32768. `desc_addr`, `driver_addr`, `device_addr`:
    guest-physical addresses of the descriptor table, available ring and used
    ring, each lying in one region of guest memory (the used ring writable).
    `event_idx`, `indirect`: whether VIRTIO_F_EVENT_IDX and
    VIRTIO_F_INDIRECT_DESC were negotiated. Raises VirtqueueError for a bad
    size, alignment or address.

    `last_avail_idx` (next available entry to take) and `used_idx` (next used
    entry to fill) are the device's free-running u16 indices, 0 after reset.
    One thread at a time may use a queue.
    """

    def __init__(self, memory, size: int, desc_addr: int, driver_addr: int, device_addr: int,
                 event_idx: bool = False, indirect: bool = False):
        if not 0 < size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise VirtqueueError(f"queue size {size} is not a power of two from 1 to {MAX_QUEUE_SIZE}")
        for name, address, align in (("descriptor table", desc_addr, 16),
                                     ("available ring", driver_addr, 2), ("used ring", device_addr, 4)):
            if address % align:
                raise VirtqueueError(f"{name} at {address:#x} is not {align}-byte aligned")
        self.memory = memory
        self.size = size
        self.event_idx = event_idx
        self.indirect = indirect
        self.desc_addr, self.driver_addr, self.device_addr = desc_addr, driver_addr, device_addr
        self._desc = self._ring_view("descriptor table", desc_addr, DESC_SIZE * size, False)
        self._avail = self._ring_view("available ring", driver_addr, 6 + 2 * size, False)
        self._used = self._ring_view("used ring", device_addr, 6 + 8 * size, True)
        self._used_event_offset = 4 + 2 * size
        self._avail_event_offset = 4 + 8 * size
        self.last_avail_idx = 0
        self.used_idx = 0
        self._unsignalled = 0           # pushes since the last needs_interrupt()

    def _ring_view(self, name: str, address: int, length: int, writable: bool) -> memoryview:
        try:
            return self.memory.view(address, length, writable)
        except ValueError:
            kind = "writable guest RAM" if writable else "guest memory"
            raise VirtqueueError(f"{name} of {length} bytes at {address:#x} is not inside one "
                                 f"region of {kind}") from None

    # --- available ring -------------------------------------------------------------
    def _avail_idx(self) -> int:
        return _U16.unpack_from(self._avail, 2)[0]

    def pop(self) -> Chain | None:
        """The next available chain, or None when the driver published nothing new.

        Raises VirtqueueError for a malformed ring or chain; a chain that fails is
        consumed all the same (last_avail_idx moves past it, the error's `head`
        names it).
        """
        avail_idx = self._avail_idx()
        if avail_idx == self.last_avail_idx:
            if not self.event_idx:
                return None
            # Ask to be notified for the next entry, then look again: the driver may
            # have published one before it could see the new avail_event.
            _U16.pack_into(self._used, self._avail_event_offset, self.last_avail_idx)
            _barrier()
            avail_idx = self._avail_idx()
            if avail_idx == self.last_avail_idx:
                return None
        pending = (avail_idx - self.last_avail_idx) & 0xFFFF
        if pending > self.size:
            raise VirtqueueError(f"available idx {avail_idx} is {pending} entries ahead of the "
                                 f"device's {self.last_avail_idx}, more than the queue size {self.size}")
        slot = self.last_avail_idx % self.size
        head = _U16.unpack_from(self._avail, 4 + 2 * slot)[0]
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        return self._walk(head)

    def _walk(self, head: int) -> Chain:
        """Follow the chain from descriptor `head`, checking it as split-ring.tex requires."""
        readable: list[tuple[int, int]] = []
        writable: list[tuple[int, int]] = []
        read_views: list[memoryview] = []
        write_views: list[memoryview] = []
        # An indirect table that spans two regions is copied: bytes, not a view.
        table: memoryview | bytes = self._desc
        count, where = self.size, "descriptor table"
        index, steps, total = head, 0, 0
        in_indirect = False
        memory = self.memory
        while True:
            if index >= count:
                raise VirtqueueError(f"chain {head}: descriptor index {index} is outside the "
                                     f"{where} of {count} entries", head)
            steps += 1
            if steps > count:
                raise VirtqueueError(f"chain {head}: more than {count} descriptors in the {where} "
                                     f"(a loop)", head)
            addr, length, flags, next_index = _DESC.unpack_from(table, DESC_SIZE * index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if not self.indirect:
                    raise VirtqueueError(f"chain {head}: descriptor {index} is INDIRECT, a feature "
                                         f"not negotiated", head)
                if in_indirect:
                    raise VirtqueueError(f"chain {head}: indirect descriptor {index} inside an "
                                         f"indirect table", head)
                if flags & VIRTQ_DESC_F_NEXT:
                    raise VirtqueueError(f"chain {head}: descriptor {index} has both INDIRECT and NEXT",
                                         head)
                if length == 0 or length % DESC_SIZE or length // DESC_SIZE > MAX_INDIRECT_ENTRIES:
                    raise VirtqueueError(f"chain {head}: indirect table at {addr:#x} has length "
                                         f"{length}, not a multiple of 16 from 16 to "
                                         f"{16 * MAX_INDIRECT_ENTRIES}", head)
                try:
                    parts = guest_views(memory, addr, length, False)
                except VirtqueueError as exc:
                    raise VirtqueueError(f"chain {head}: indirect table: {exc}", head) from None
                table = parts[0] if len(parts) == 1 else b"".join(parts)
                count, where = length // DESC_SIZE, f"indirect table at {addr:#x}"
                index, steps, in_indirect = 0, 0, True
                continue
            device_writes = bool(flags & VIRTQ_DESC_F_WRITE)
            if not device_writes and writable:
                raise VirtqueueError(f"chain {head}: readable descriptor {index} follows a writable "
                                     f"one", head)
            total += length
            if total > MAX_CHAIN_BYTES:
                raise VirtqueueError(f"chain {head}: buffers add up to more than 2^32 bytes", head)
            try:
                views = guest_views(memory, addr, length, device_writes)
            except VirtqueueError as exc:
                raise VirtqueueError(f"chain {head}: descriptor {index} in the {where}: {exc}",
                                     head) from None
            if device_writes:
                writable.append((addr, length))
                write_views.extend(views)
            else:
                readable.append((addr, length))
                read_views.extend(views)
            if not flags & VIRTQ_DESC_F_NEXT:
                return Chain(head, readable, writable, read_views, write_views)
            index = next_index

    # --- used ring ------------------------------------------------------------------
    def push(self, head: int, written: int) -> None:
        """Return chain `head` to the driver with `written` bytes written into its
        writable buffers: the used element first, then the new used idx.
        Raises ValueError for a head >= size or a length outside u32."""
        if not 0 <= head < self.size:
            raise ValueError(f"head {head} outside a queue of {self.size}")
        if not 0 <= written <= 0xFFFFFFFF:
            raise ValueError(f"used length {written} does not fit in 32 bits")
        slot = self.used_idx % self.size
        _USED_ELEM.pack_into(self._used, 4 + 8 * slot, head, written)
        # x86 keeps stores in order, so the driver sees the element before the index.
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        _U16.pack_into(self._used, 2, self.used_idx)
        self._unsignalled += 1

    def needs_interrupt(self) -> bool:
        """Whether the driver wants a used-buffer notification for the entries
        pushed since the previous call ("Used Buffer Notification Suppression").

        Without EVENT_IDX: unless avail.flags has NO_INTERRUPT. With EVENT_IDX: when
        the used idx moved past used_event, i.e. used_event lies in [old, new).
        """
        pushed, self._unsignalled = self._unsignalled, 0
        if pushed == 0:
            return False
        _barrier()                      # the used idx is published before the driver's field is read
        if not self.event_idx:
            return not _U16.unpack_from(self._avail, 0)[0] & VIRTQ_AVAIL_F_NO_INTERRUPT
        if pushed >= 0x10000:
            return True
        new = self.used_idx
        used_event = _U16.unpack_from(self._avail, self._used_event_offset)[0]
        # Modulo 2^16: the distance from used_event to the newest entry is shorter
        # than the distance from the oldest unsignalled one.
        return (new - used_event - 1) & 0xFFFF < pushed
