"""Bus routing with identifying fake devices: edges, overlaps, string I/O, unclaimed accesses."""

import pytest

from tinyvmm.bus import Bus, BusError, Device, PioBus, RegisterDevice


class IdDevice(Device):
    """Answers every read with its id, and remembers every access."""

    def __init__(self, ident: int):
        self.name = f"id{ident}"
        self.ident = ident
        self.calls = []

    def read(self, offset, size, count=1):
        self.calls.append(("read", offset, size, count))
        return bytes([self.ident]) * (size * count)

    def write(self, offset, size, data):
        self.calls.append(("write", offset, size, bytes(data)))


@pytest.fixture(params=[PioBus, lambda: Bus("mmio")], ids=["pio", "mmio"])
def bus(request):
    return request.param()


def test_dispatch_by_offset_at_range_edges(bus):
    a, b = IdDevice(1), IdDevice(2)
    bus.register(0x100, 8, a)
    bus.register(0x108, 2, b)
    assert bus.read(0x100, 1) == b"\x01"
    assert bus.read(0x107, 1) == b"\x01"
    assert bus.read(0x108, 1) == b"\x02"
    assert a.calls == [("read", 0, 1, 1), ("read", 7, 1, 1)]
    assert b.calls == [("read", 0, 1, 1)]


def test_overlap_rejected(bus):
    bus.register(0x100, 8, IdDevice(1))
    for base, size in ((0x0FF, 2), (0x107, 1), (0x100, 8), (0xF0, 0x20)):
        with pytest.raises(BusError, match="overlaps"):
            bus.register(base, size, IdDevice(9))
    bus.register(0x108, 1, IdDevice(2))     # adjacent is fine
    bus.register(0x0F8, 8, IdDevice(3))


def test_empty_range_rejected(bus):
    with pytest.raises(BusError):
        bus.register(0x10, 0, IdDevice(1))


def test_unclaimed_reads_all_ones_and_counts(bus):
    seen = []
    bus.observer = lambda *event: seen.append(event)
    assert bus.read(0x50, 2) == b"\xff\xff"
    bus.write(0x50, 1, b"\x12")
    assert (bus.unclaimed_reads, bus.unclaimed_writes) == (1, 1)
    assert seen == [("read", 0x50, 2, None), ("write", 0x50, 1, b"\x12")]


def test_access_straddling_the_end_is_split_per_byte(bus):
    dev = IdDevice(1)
    bus.register(0x100, 2, dev)
    assert bus.read(0x101, 2) == b"\x01\xff"                  # the device's byte, then nothing
    assert dev.calls == [("read", 1, 1, 1)]
    assert bus.unclaimed_reads == 1


def test_access_straddling_two_devices_reaches_both(bus):
    """`inl` at fw_cfg's data port 0x511: the data byte, then what the next ports answer."""
    first, second = IdDevice(1), IdDevice(2)
    bus.register(0x510, 2, first)
    bus.register(0x512, 2, second)
    assert bus.read(0x511, 4) == b"\x01\x02\x02\xff"
    bus.write(0x511, 2, b"\xaa\xbb\xcc\xdd")                  # two elements, each split
    assert [c for c in first.calls if c[0] == "write"] == [("write", 1, 1, b"\xaa"),
                                                            ("write", 1, 1, b"\xcc")]
    assert [c for c in second.calls if c[0] == "write"] == [("write", 0, 1, b"\xbb"),
                                                             ("write", 0, 1, b"\xdd")]
    assert bus.read(0x511, 2, count=2) == b"\x01\x02" * 2       # string I/O: per element


def test_access_wholly_unclaimed_is_one_unclaimed_access(bus):
    assert bus.read(0x700, 4) == b"\xff" * 4
    assert bus.unclaimed_reads == 1


def test_string_io_is_one_call(bus):
    dev = IdDevice(7)
    bus.register(0x200, 2, dev)
    assert bus.read(0x200, 1, 1024) == b"\x07" * 1024
    bus.write(0x200, 2, bytes(range(8)))
    assert dev.calls == [("read", 0, 1, 1024), ("write", 0, 2, bytes(range(8)))]


def test_device_returning_wrong_length_is_caught():
    class Broken(Device):
        name = "broken"

        def read(self, offset, size, count=1):
            return b"\x00"
    bus = PioBus()
    bus.register(0x10, 2, Broken())
    with pytest.raises(RuntimeError, match="returned 1 bytes"):
        bus.read(0x10, 2)


def test_pio_range_beyond_port_space_rejected():
    with pytest.raises(BusError, match="beyond"):
        PioBus().register(0xFFFE, 4, IdDevice(1))


def test_register_device_splits_string_io_into_elements():
    class Counter(RegisterDevice):
        def __init__(self):
            self.value = 0
            self.written = []

        def read_register(self, offset, size):
            self.value += 1
            return self.value

        def write_register(self, offset, size, value):
            self.written.append(value)

    dev = Counter()
    assert dev.read(0, 2, 3) == bytes([1, 0, 2, 0, 3, 0])
    dev.write(0, 2, bytes([1, 2, 3, 4]))
    assert dev.written == [0x0201, 0x0403]
