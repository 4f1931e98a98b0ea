"""The split virtqueue, device side, driven by a small driver model over bytearray guest memory."""

import struct

import pytest
from guest_memory import guest_memory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyvmm.virtio.queue import (
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    SplitQueue,
    VirtqueueError,
    guest_views,
)

NEXT, WRITE, INDIRECT = VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT

# Test guest memory: RAM, a read-only region right after it, more RAM right after that,
# and nothing from END on.
RAM_END = 0x20000
ROM = 0x20000
ROM_END = 0x21000
RAM2 = 0x21000
END = 0x22000
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
DATA = 0x8000


def make_memory(ram=RAM_END, rom=ROM_END - ROM, ram2=END - RAM2):
    """(GuestMemory, [(gpa, bytearray)]): RAM at 0, ROM after it, RAM after that."""
    backing = [(0, bytearray(ram)), (ram, bytearray(rom)), (ram + rom, bytearray(ram2))]
    memory = guest_memory(*((gpa, buf, gpa != ram) for gpa, buf in backing if len(buf)))
    return memory, backing


class Driver:
    """The driver's half of a split virtqueue: lays out descriptors and the available
    ring, reads the used ring. Writes go straight to the backing buffers (ROM too)."""

    def __init__(self, size=8, event_idx=False, indirect=False, desc=DESC, avail=AVAIL, used=USED,
                 memory=None):
        self.memory, self.backing = memory or make_memory()
        self.size = size
        self.desc_addr, self.avail_addr, self.used_addr = desc, avail, used
        self.avail_idx = 0
        self.queue = SplitQueue(self.memory, size, desc, avail, used, event_idx=event_idx,
                                indirect=indirect)

    # raw access, bypassing the read-only check so tests can put things in ROM
    def poke(self, gpa, data):
        for start, buf in self.backing:
            if start <= gpa and gpa + len(data) <= start + len(buf):
                buf[gpa - start:gpa - start + len(data)] = data
                return
        raise AssertionError(f"poke outside test memory at {gpa:#x}")

    def peek(self, gpa, size):
        for start, buf in self.backing:
            if start <= gpa and gpa + size <= start + len(buf):
                return bytes(buf[gpa - start:gpa - start + size])
        raise AssertionError(f"peek outside test memory at {gpa:#x}")

    def desc(self, index, addr, length, flags=0, next_index=0, table=None):
        base = self.desc_addr if table is None else table
        self.poke(base + 16 * index, struct.pack("<QIHH", addr, length, flags, next_index))

    def chain(self, buffers, indices=None, table=None):
        """Descriptors for buffers [(addr, length, writable)], linked by NEXT; returns the head."""
        indices = indices or list(range(len(buffers)))
        for n, ((addr, length, writable), index) in enumerate(zip(buffers, indices)):
            last = n == len(buffers) - 1
            self.desc(index, addr, length, (WRITE if writable else 0) | (0 if last else NEXT),
                      0 if last else indices[n + 1], table)
        return indices[0]

    def publish(self, *heads):
        for head in heads:
            self.poke(self.avail_addr + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
            self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.poke(self.avail_addr + 2, struct.pack("<H", self.avail_idx))

    def set_avail_idx(self, value):
        self.avail_idx = value
        self.poke(self.avail_addr + 2, struct.pack("<H", value))

    def start_at(self, index):
        """Both sides' free-running indices at `index`, as after that many requests."""
        self.set_avail_idx(index)
        self.queue.last_avail_idx = self.queue.used_idx = index
        self.poke(self.used_addr + 2, struct.pack("<H", index))

    def avail_flags(self, flags):
        self.poke(self.avail_addr, struct.pack("<H", flags))

    def used_event(self, value):
        self.poke(self.avail_addr + 4 + 2 * self.size, struct.pack("<H", value))

    @property
    def used_idx(self):
        return struct.unpack("<H", self.peek(self.used_addr + 2, 2))[0]

    @property
    def avail_event(self):
        return struct.unpack("<H", self.peek(self.used_addr + 4 + 8 * self.size, 2))[0]

    def used(self, slot):
        return struct.unpack("<II", self.peek(self.used_addr + 4 + 8 * (slot % self.size), 8))


# --- simple chains ------------------------------------------------------------------

def test_empty_queue_pops_none():
    d = Driver()
    assert d.queue.pop() is None
    assert d.queue.last_avail_idx == 0
    assert not d.queue.needs_interrupt()


def test_readable_then_writable_chain():
    d = Driver()
    d.poke(DATA, b"request header!!")
    head = d.chain([(DATA, 16, False), (DATA + 0x100, 8, True), (DATA + 0x200, 4, True)])
    d.publish(head)
    chain = d.queue.pop()
    assert chain.head == 0
    assert chain.readable == [(DATA, 16)]
    assert chain.writable == [(DATA + 0x100, 8), (DATA + 0x200, 4)]
    assert chain.readable_length == 16 and chain.writable_length == 12
    assert chain.read_all() == b"request header!!"
    assert chain.read_all(7) == b"request"
    assert d.queue.pop() is None
    assert d.queue.last_avail_idx == 1


def test_write_crosses_buffers_and_stops_at_the_end():
    d = Driver()
    d.publish(d.chain([(DATA, 3, True), (DATA + 0x10, 0, True), (DATA + 0x20, 4, True)]))
    chain = d.queue.pop()
    assert chain.write(1, b"abcdefgh") == 6
    assert d.peek(DATA, 4) == b"\0ab\0"
    assert d.peek(DATA + 0x20, 5) == b"cdef\0"
    assert chain.write(6, b"XYZ") == 1
    assert d.peek(DATA + 0x23, 2) == b"X\0"
    assert chain.write(7, b"Q") == 0
    assert chain.write(0, b"") == 0
    assert [bytes(v) for v in chain.writable_views(2, 3)] == [b"b", b"cd"]


def test_next_links_in_any_order():
    d = Driver()
    for i, text in enumerate([b"one", b"two", b"three"]):
        d.poke(DATA + 0x10 * i, text)
    head = d.chain([(DATA, 3, False), (DATA + 0x10, 3, False), (DATA + 0x20, 5, False)],
                   indices=[5, 2, 7])
    d.publish(head)
    chain = d.queue.pop()
    assert chain.head == 5
    assert chain.read_all() == b"onetwothree"
    assert chain.writable == [] and chain.writable_length == 0


def test_push_writes_element_and_index():
    d = Driver()
    d.publish(d.chain([(DATA, 4, True)], indices=[3]))
    chain = d.queue.pop()
    d.queue.push(chain.head, 4)
    assert d.used_idx == 1
    assert d.used(0) == (3, 4)
    assert d.queue.used_idx == 1


def test_push_rejects_device_mistakes():
    d = Driver()
    with pytest.raises(ValueError):
        d.queue.push(8, 0)
    with pytest.raises(ValueError):
        d.queue.push(0, 1 << 32)
    assert d.used_idx == 0


def test_several_chains_in_order():
    d = Driver()
    heads = [d.chain([(DATA + 0x100 * i, 16, True)], indices=[i]) for i in range(4)]
    d.publish(*heads)
    popped = [d.queue.pop().head for _ in range(4)]
    assert popped == heads
    assert d.queue.pop() is None


def test_zero_length_buffers_anywhere_are_harmless():
    d = Driver()
    d.publish(d.chain([(0xFFFF_FFFF_FFFF_0000, 0, False), (DATA, 2, False), (1 << 40, 0, True)]))
    chain = d.queue.pop()
    assert chain.readable == [(0xFFFF_FFFF_FFFF_0000, 0), (DATA, 2)]
    assert chain.writable == [(1 << 40, 0)]
    assert chain.writable_length == 0 and chain.write(0, b"x") == 0


def test_buffers_may_span_adjacent_regions():
    d = Driver()
    d.poke(ROM - 2, b"ab")
    d.poke(ROM, b"cd")
    d.poke(ROM_END - 1, b"e")
    d.poke(RAM2, b"f")
    d.publish(d.chain([(ROM - 2, 4, False), (ROM_END - 1, 2, False)]))
    assert d.queue.pop().read_all() == b"abcdef"


def test_writable_buffer_spanning_into_rom_is_a_fault():
    d = Driver()
    d.publish(d.chain([(ROM - 2, 4, True)]))
    with pytest.raises(VirtqueueError, match="writable"):
        d.queue.pop()


# --- indirect descriptors -----------------------------------------------------------

TABLE = 0x6000


def test_indirect_table():
    d = Driver(indirect=True)
    d.poke(DATA, b"hdr")
    d.chain([(DATA, 3, False), (DATA + 0x100, 512, True), (DATA + 0x400, 1, True)],
            indices=[0, 2, 1], table=TABLE)
    d.desc(4, TABLE, 3 * 16, INDIRECT | WRITE)       # WRITE on the table descriptor is ignored
    d.publish(4)
    chain = d.queue.pop()
    assert chain.head == 4
    assert chain.read_all() == b"hdr"
    assert chain.writable == [(DATA + 0x100, 512), (DATA + 0x400, 1)]


def test_direct_descriptors_then_an_indirect_one():
    d = Driver(indirect=True)
    d.poke(DATA, b"head")
    d.poke(DATA + 0x10, b"tail")
    d.desc(0, DATA, 4, NEXT, 1)
    d.desc(1, TABLE, 32, INDIRECT)
    d.chain([(DATA + 0x10, 4, False), (DATA + 0x20, 1, True)], table=TABLE)
    d.publish(0)
    chain = d.queue.pop()
    assert chain.read_all() == b"headtail"
    assert chain.writable == [(DATA + 0x20, 1)]


def test_indirect_table_may_hold_more_than_the_queue_size():
    d = Driver(size=2, indirect=True)
    d.chain([(DATA + 0x10 * i, 1, False) for i in range(5)], table=TABLE)
    d.desc(0, TABLE, 5 * 16, INDIRECT)
    d.publish(0)
    assert len(d.queue.pop().readable) == 5


# --- index wrap-around --------------------------------------------------------------

def test_free_running_indices_wrap():
    d = Driver(size=4)
    d.start_at(0xFFFE)
    for round_ in range(3):
        heads = [d.chain([(DATA + 0x100 * i, 8, True)], indices=[i]) for i in range(4)]
        d.publish(*heads)
        for i in range(4):
            chain = d.queue.pop()
            assert chain.head == i
            d.queue.push(chain.head, 8 + i)
        assert d.queue.pop() is None
        assert d.used_idx == (0xFFFE + 4 * (round_ + 1)) & 0xFFFF
        for i in range(4):
            assert d.used((0xFFFE + 4 * round_ + i) % 4) == (i, 8 + i)
    assert d.queue.last_avail_idx == d.queue.used_idx == 10


def test_full_ring_is_not_a_fault():
    d = Driver(size=4)
    d.start_at(0xFFFF)
    d.publish(*[d.chain([(DATA, 1, False)], indices=[i]) for i in range(4)])
    assert [d.queue.pop().head for _ in range(4)] == [0, 1, 2, 3]


# --- interrupt suppression ----------------------------------------------------------

def push_one(d, head=0):
    d.publish(d.chain([(DATA, 1, True)], indices=[head]))
    d.queue.push(d.queue.pop().head, 1)


def test_interrupts_without_event_idx():
    d = Driver()
    push_one(d)
    assert d.queue.needs_interrupt()
    assert not d.queue.needs_interrupt()       # nothing new since
    d.avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)
    push_one(d)
    assert not d.queue.needs_interrupt()
    d.avail_flags(0)
    d.used_event(100)                          # ignored without EVENT_IDX
    push_one(d)
    assert d.queue.needs_interrupt()


def test_event_idx_interrupts_when_used_idx_passes_used_event():
    d = Driver(event_idx=True)
    d.avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)  # ignored with EVENT_IDX
    d.used_event(0)
    push_one(d)                                # used idx 0 -> 1 passes entry 0
    assert d.queue.needs_interrupt()
    push_one(d)                                # 1 -> 2: used_event still 0
    assert not d.queue.needs_interrupt()
    d.used_event(4)
    push_one(d)                                # 2 -> 3
    assert not d.queue.needs_interrupt()
    push_one(d)                                # 3 -> 4
    assert not d.queue.needs_interrupt()
    push_one(d)
    push_one(d)                                # 4 -> 6 in one batch: entry 4 was written
    assert d.queue.needs_interrupt()
    d.used_event(5)                            # behind the used idx: wait for a wrap
    push_one(d)
    assert not d.queue.needs_interrupt()


def test_event_idx_across_the_wrap():
    d = Driver(event_idx=True)
    d.start_at(0xFFFE)
    d.used_event(0xFFFF)
    push_one(d)                                # 0xFFFE -> 0xFFFF
    assert not d.queue.needs_interrupt()
    push_one(d)
    push_one(d)                                # 0xFFFF -> 1 wrote entry 0xFFFF
    assert d.queue.needs_interrupt()


def test_event_idx_sets_avail_event_when_the_queue_runs_dry():
    d = Driver(event_idx=True)
    d.start_at(0x1234)
    assert d.queue.pop() is None
    assert d.avail_event == 0x1234
    d.publish(d.chain([(DATA, 1, False)]), d.chain([(DATA, 1, False)], indices=[1]))
    assert d.queue.pop().head == 0
    assert d.avail_event == 0x1234             # left alone while work remains
    assert d.queue.pop().head == 1
    assert d.queue.pop() is None
    assert d.avail_event == 0x1236


def test_no_avail_event_without_event_idx():
    d = Driver()
    d.poke(USED + 4 + 8 * 8, b"\x77\x77")
    assert d.queue.pop() is None
    assert d.avail_event == 0x7777


# --- construction faults ------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 3, 6, 65536, -4])
def test_bad_queue_sizes(size):
    memory, _ = make_memory()
    with pytest.raises(VirtqueueError, match="power of two"):
        SplitQueue(memory, size, DESC, AVAIL, USED)


@pytest.mark.parametrize("addresses, what", [
    ((DESC + 8, AVAIL, USED), "descriptor table .* aligned"),
    ((DESC, AVAIL + 1, USED), "available ring .* aligned"),
    ((DESC, AVAIL, USED + 2), "used ring .* aligned"),
    ((END - 0x40, AVAIL, USED), "descriptor table .* not inside"),
    ((DESC, END, USED), "available ring"),
    ((DESC, AVAIL, ROM), "used ring .* writable"),
    ((DESC, AVAIL, RAM_END - 0x40), "used ring"),
    ((DESC, AVAIL, 0xFFFF_FFFF_FFFF_FFF0), "used ring"),
])
def test_bad_ring_addresses(addresses, what):
    memory, _ = make_memory()
    with pytest.raises(VirtqueueError, match=what):
        SplitQueue(memory, 8, *addresses)


def test_rings_may_be_read_only_except_the_used_ring():
    memory, _ = make_memory()
    SplitQueue(memory, 8, ROM, ROM + 0x800, USED)


# --- chain faults -------------------------------------------------------------------

def fault_loop(d):
    d.desc(0, DATA, 1, NEXT, 1)
    d.desc(1, DATA, 1, NEXT, 2)
    d.desc(2, DATA, 1, NEXT, 0)
    return 0


def fault_self_loop(d):
    d.desc(3, DATA, 1, NEXT, 3)
    return 3


def fault_too_long_in_indirect(d):
    for i in range(4):
        d.desc(i, DATA, 1, NEXT, (i + 1) % 4, table=TABLE)
    d.desc(0, TABLE, 64, INDIRECT)
    return 0


def fault_next_out_of_range(d):
    d.desc(0, DATA, 1, NEXT, 8)
    return 0


def fault_head_out_of_range(d):
    return 9


def fault_indirect_next_out_of_range(d):
    d.desc(0, DATA, 1, NEXT, 2, table=TABLE)
    d.desc(0, TABLE, 32, INDIRECT)
    return 0


def fault_outside_ram(d):
    d.desc(0, END - 4, 8, 0)
    return 0


def fault_wraps_address_space(d):
    d.desc(0, 0xFFFF_FFFF_FFFF_FFF0, 0x20, WRITE)
    return 0


def fault_writable_in_rom(d):
    d.desc(0, DATA, 16, NEXT, 1)
    d.desc(1, ROM + 0x10, 1, WRITE)
    return 0


def fault_readable_after_writable(d):
    d.desc(0, DATA, 16, WRITE | NEXT, 1)
    d.desc(1, DATA + 0x100, 16, 0)
    return 0


def fault_readable_after_writable_through_indirect(d):
    d.desc(0, DATA, 16, WRITE | NEXT, 1)
    d.desc(1, TABLE, 16, INDIRECT)
    d.desc(0, DATA + 0x100, 16, 0, table=TABLE)
    return 0


def fault_nested_indirect(d):
    d.desc(0, TABLE + 0x100, 16, INDIRECT, table=TABLE)
    d.desc(0, DATA, 1, 0, table=TABLE + 0x100)
    d.desc(0, TABLE, 16, INDIRECT)
    return 0


def fault_indirect_with_next(d):
    d.desc(0, DATA, 1, 0, table=TABLE)
    d.desc(0, TABLE, 16, INDIRECT | NEXT, 1)
    d.desc(1, DATA, 1, 0)
    return 0


def fault_indirect_bad_length(d):
    d.desc(0, TABLE, 24, INDIRECT)
    return 0


def fault_indirect_empty(d):
    d.desc(0, TABLE, 0, INDIRECT)
    return 0


def fault_indirect_huge(d):
    d.desc(0, 0, 0xFFFF_FFF0, INDIRECT)
    return 0


def fault_indirect_table_outside_ram(d):
    d.desc(0, END - 16, 32, INDIRECT)
    return 0


def fault_chain_over_4_gib(d):
    d.desc(0, DATA, 2, NEXT, 1)
    d.desc(1, DATA, 0xFFFF_FFFF, 0)         # the total is checked before the memory
    return 0


CHAIN_FAULTS = {
    "loop": (fault_loop, "loop"),
    "self loop": (fault_self_loop, "loop"),
    "too long in indirect table": (fault_too_long_in_indirect, "loop"),
    "next out of range": (fault_next_out_of_range, "index 8 is outside"),
    "head out of range": (fault_head_out_of_range, "index 9 is outside"),
    "indirect next out of range": (fault_indirect_next_out_of_range, "index 2 is outside the indirect"),
    "outside RAM": (fault_outside_ram, "not entirely in guest memory"),
    "wraps": (fault_wraps_address_space, "not entirely in"),
    "writable in ROM": (fault_writable_in_rom, "writable guest RAM"),
    "readable after writable": (fault_readable_after_writable, "follows a writable"),
    "readable after writable, indirect": (fault_readable_after_writable_through_indirect,
                                          "follows a writable"),
    "nested indirect": (fault_nested_indirect, "inside an indirect table"),
    "indirect with NEXT": (fault_indirect_with_next, "both INDIRECT and NEXT"),
    "indirect length": (fault_indirect_bad_length, "not a multiple of 16"),
    "indirect empty": (fault_indirect_empty, "not a multiple of 16"),
    "indirect huge": (fault_indirect_huge, "not a multiple of 16"),
    "indirect table outside RAM": (fault_indirect_table_outside_ram, "indirect table"),
    "over 4 GiB": (fault_chain_over_4_gib, "2\\^32"),
}


@pytest.mark.parametrize("name", list(CHAIN_FAULTS))
def test_chain_faults_consume_the_chain(name):
    build, message = CHAIN_FAULTS[name]
    d = Driver(indirect=True)
    d.start_at(0xFFFF)
    head = build(d)
    good = d.chain([(DATA + 0x800, 4, True)], indices=[6])
    d.publish(head, good)
    with pytest.raises(VirtqueueError, match=message) as info:
        d.queue.pop()
    assert info.value.head == head
    assert d.queue.last_avail_idx == 0
    if head < d.size:
        d.queue.push(head, 0)               # the device may still fail the request
        assert d.used(0xFFFF) == (head, 0)
    assert d.queue.pop().head == 6          # and the queue carries on


def test_indirect_without_the_feature_is_a_fault():
    d = Driver(indirect=False)
    d.chain([(DATA, 1, False)], table=TABLE)
    d.desc(0, TABLE, 16, INDIRECT)
    d.publish(0)
    with pytest.raises(VirtqueueError, match="not negotiated"):
        d.queue.pop()


@pytest.mark.parametrize("ahead", [9, 0x8000, 0xFFFF])
def test_avail_idx_too_far_ahead(ahead):
    d = Driver()
    d.start_at(0xFFF0)
    d.set_avail_idx((0xFFF0 + ahead) & 0xFFFF)
    with pytest.raises(VirtqueueError, match="ahead") as info:
        d.queue.pop()
    assert info.value.head is None
    assert d.queue.last_avail_idx == 0xFFF0


def test_ring_entries_are_read_once_per_pop():
    """The descriptor table may change after a pop; the chain keeps what was checked."""
    d = Driver()
    d.publish(d.chain([(DATA, 4, True)]))
    chain = d.queue.pop()
    d.desc(0, 0xDEAD_0000, 4, WRITE)
    assert chain.writable == [(DATA, 4)]
    assert chain.write(0, b"okay") == 4
    assert d.peek(DATA, 4) == b"okay"


def test_guest_views_helper():
    memory, _ = make_memory()
    assert guest_views(memory, 1 << 63, 0, True) == []
    assert [len(v) for v in guest_views(memory, ROM - 1, 0x1002, False)] == [1, 0x1000, 1]
    with pytest.raises(VirtqueueError):
        guest_views(memory, ROM - 1, 0x1002, True)
    with pytest.raises(VirtqueueError):
        guest_views(memory, END - 1, 2, False)


# --- fuzz: random rings over small memory -------------------------------------------

FUZZ_SIZE = 8
FUZZ_DESC, FUZZ_AVAIL, FUZZ_USED, FUZZ_TABLE = 0x000, 0x100, 0x180, 0x400
FUZZ_RAM, FUZZ_ROM, FUZZ_RAM2 = 0x1000, 0x200, 0x200     # nothing at and above 0x1400
FUZZ_END = FUZZ_RAM + FUZZ_ROM + FUZZ_RAM2

def mostly(likely, rare):
    """A value from `likely` about seven times in eight, else one from `rare`."""
    return st.tuples(st.integers(0, 7), likely, rare).map(lambda t: t[1] if t[0] else t[2])


addresses = mostly(st.one_of(st.sampled_from([0x800, 0x900, 0xA00, 0xFF0, FUZZ_RAM, FUZZ_RAM - 8,
                                              FUZZ_END - 16, FUZZ_END, FUZZ_TABLE, FUZZ_USED]),
                             st.integers(0x200, FUZZ_END + 0x100)),
                   st.integers(0, (1 << 64) - 1))
lengths = mostly(st.one_of(st.sampled_from([0, 1, 16, 32, 64, 512, 513]), st.integers(0, 0x300)),
                 st.integers(0, (1 << 32) - 1))
flags = mostly(mostly(st.sampled_from([0, NEXT, WRITE, NEXT | WRITE]), st.integers(0, 7)),
               st.integers(0, 0xFFFF))
descriptors = st.tuples(addresses, lengths, flags,
                        mostly(st.integers(0, FUZZ_SIZE - 1), st.integers(0, 0xFFFF)))


def fuzz_memory():
    return make_memory(FUZZ_RAM, FUZZ_ROM, FUZZ_RAM2)


def lay_out_fuzz_rings(backing, table, indirect_table, heads, start, pending, filler):
    """Write the generated rings straight into the backing RAM."""
    ram = backing[0][1]
    ram[:] = (filler * (len(ram) // len(filler) + 1))[:len(ram)]
    for area, entries in ((FUZZ_DESC, table), (FUZZ_TABLE, indirect_table)):
        for i, entry in enumerate(entries):
            struct.pack_into("<QIHH", ram, area + 16 * i, *entry)
    for slot, head in enumerate(heads):
        struct.pack_into("<H", ram, FUZZ_AVAIL + 4 + 2 * slot, head)
    struct.pack_into("<HH", ram, FUZZ_AVAIL, 0, (start + pending) & 0xFFFF)
    ram[FUZZ_USED:FUZZ_USED + 6 + 8 * FUZZ_SIZE] = bytes(6 + 8 * FUZZ_SIZE)
    struct.pack_into("<H", ram, FUZZ_USED + 2, start)


fuzz_rings = st.fixed_dictionaries({
    "table": st.lists(descriptors, min_size=FUZZ_SIZE, max_size=FUZZ_SIZE),
    "indirect_table": st.lists(descriptors, min_size=0, max_size=6),
    "heads": st.lists(mostly(st.integers(0, FUZZ_SIZE - 1), st.integers(0, 0xFFFF)),
                      min_size=FUZZ_SIZE, max_size=FUZZ_SIZE),
    "start": st.one_of(st.just(0), st.integers(0xFFF8, 0xFFFF), st.integers(0, 0xFFFF)),
    "pending": mostly(st.integers(0, FUZZ_SIZE), st.integers(0, 0xFFFF)),
    "filler": st.binary(min_size=1, max_size=64),
    "event_idx": st.booleans(),
    "indirect": st.booleans(),
})


def allowed_mask(chains):
    """Which bytes of guest memory the device may change: chains' writable buffers, the used ring."""
    mask = bytearray(FUZZ_END)
    used_length = 6 + 8 * FUZZ_SIZE
    mask[FUZZ_USED:FUZZ_USED + used_length] = b"\1" * used_length
    for chain in chains:
        for gpa, length in chain.writable:
            if length:
                mask[gpa:gpa + length] = b"\1" * length
    return mask


def changed_outside(backing, before, mask):
    bad = []
    for (gpa, buf), old in zip(backing, before):
        for i, (a, b) in enumerate(zip(buf, old)):
            if a != b and not mask[gpa + i]:
                bad.append(gpa + i)
    return bad


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rings=fuzz_rings, payload=st.binary(max_size=40), offset=st.integers(0, 0x600))
def test_fuzz_pop_push(rings, payload, offset):
    memory, backing = fuzz_memory()
    lay_out_fuzz_rings(backing, rings["table"], rings["indirect_table"], rings["heads"],
                       rings["start"], rings["pending"], rings["filler"])
    before = [bytes(buf) for _, buf in backing]
    queue = SplitQueue(memory, FUZZ_SIZE, FUZZ_DESC, FUZZ_AVAIL, FUZZ_USED,
                       event_idx=rings["event_idx"], indirect=rings["indirect"])
    queue.last_avail_idx = queue.used_idx = rings["start"]
    chains = []
    for _ in range(2 * FUZZ_SIZE + 2):
        try:
            chain = queue.pop()
        except VirtqueueError as exc:
            if exc.head is not None and exc.head < FUZZ_SIZE:
                queue.push(exc.head, 0)
            continue
        if chain is None:
            break
        chains.append(chain)
        assert chain.writable_length == sum(length for _, length in chain.writable)
        assert len(chain.read_all(100)) == min(100, chain.readable_length)
        written = chain.write(offset, payload)
        assert written == max(0, min(len(payload), chain.writable_length - offset))
        queue.push(chain.head, written)
        queue.needs_interrupt()
    assert not changed_outside(backing, before, allowed_mask(chains))
