"""virtio-blk requests against a real image file, through a split virtqueue in bytearray memory."""

import errno
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_virtqueue import (
    DATA,
    FUZZ_AVAIL,
    FUZZ_DESC,
    FUZZ_SIZE,
    FUZZ_USED,
    Driver,
    addresses,
    allowed_mask,
    changed_outside,
    fuzz_memory,
    lengths,
    mostly,
)

from tinyvmm.virtio import blk
from tinyvmm.virtio.blk import (
    CONFIG_SIZE,
    SECTOR,
    VIRTIO_BLK_F_BLK_SIZE,
    VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VIRTIO_ID_BLOCK,
    BlockBackend,
    BlockDevice,
)
from tinyvmm.virtio.queue import (
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    SplitQueue,
    VirtqueueError,
)

SECTORS = 64
HEADER = 0x4000
STATUS = 0x4100
OUT_DATA = 0x18000           # where OUT payloads are laid out (IN data goes to DATA)


def pattern(sector: int) -> bytes:
    """Sector contents that differ between sectors and within one."""
    return bytes((sector * 7 + i) & 0xFF for i in range(SECTOR))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"".join(pattern(s) for s in range(SECTORS)))
    fd = os.open(path, os.O_RDWR)
    yield path, fd
    os.close(fd)


def disk_bytes(path) -> bytes:
    return path.read_bytes()


class Disk:
    """A BlockDevice on a Driver's queue, with request helpers in the driver's terms."""

    def __init__(self, backend, size=256, event_idx=False, indirect=False, **device_args):
        self.d = Driver(size=size, event_idx=event_idx, indirect=indirect)
        self.device = BlockDevice(backend, queue_size=size, **device_args)
        self.backend = backend

    def submit(self, kind, sector=0, out=b"", in_segments=(), out_segments=None, status_len=1,
               header_len=16):
        """Lay out one request (header, data segments, status) and publish it; returns the head."""
        d = self.d
        d.poke(HEADER, struct.pack("<IIQ", kind, 0, sector & 0xFFFF_FFFF_FFFF_FFFF)[:header_len])
        buffers = [(HEADER, header_len, False)]
        cursor = OUT_DATA
        for size in (out_segments or ([len(out)] if out else [])):
            buffers.append((cursor, size, False))
            cursor += size + 8              # gaps, so a wrong copy shows
        position = 0
        for gpa, size, _ in buffers[1:]:
            d.poke(gpa, out[position:position + size])
            position += size
        cursor = DATA
        for size in in_segments:
            buffers.append((cursor, size, True))
            cursor += size + 8
        if status_len:
            buffers.append((STATUS, status_len, True))
        head = d.chain(buffers)
        d.publish(head)
        return head

    def run(self, *args, **kwargs):
        """Submit, serve; returns (status byte, used length)."""
        self.d.poke(STATUS, b"\xEE")
        self.submit(*args, **kwargs)
        self.device.serve(self.d.queue)
        _, length = self.d.used(self.d.queue.used_idx - 1)
        return self.d.peek(STATUS, 1)[0], length

    def in_data(self, segments):
        out, cursor = b"", DATA
        for size in segments:
            out += self.d.peek(cursor, size)
            cursor += size + 8
        return out


@pytest.fixture
def disk(image):
    path, fd = image
    return Disk(BlockBackend(fd, serial="tinyvmm-disk"))


# --- reads and writes ---------------------------------------------------------------

def test_in_reads_sectors(disk):
    status, length = disk.run(VIRTIO_BLK_T_IN, 3, in_segments=[1024])
    assert status == VIRTIO_BLK_S_OK
    assert length == 1025
    assert disk.in_data([1024]) == pattern(3) + pattern(4)


SEGMENTATIONS = [[512], [256, 256], [1, 511, 512], [100, 412, 1024, 512], [2048], [511, 1, 0, 512]]


@pytest.mark.parametrize("segments", SEGMENTATIONS)
@pytest.mark.parametrize("sector", [0, 1, 17])
def test_out_then_in_round_trip(image, segments, sector):
    path, fd = image
    disk = Disk(BlockBackend(fd))
    total = sum(segments)
    payload = os.urandom(total)
    assert disk.run(VIRTIO_BLK_T_OUT, sector, out=payload, out_segments=segments) == (VIRTIO_BLK_S_OK, 1)
    content = disk_bytes(path)
    assert content[sector * SECTOR:sector * SECTOR + total] == payload
    assert content[:sector * SECTOR] == b"".join(pattern(s) for s in range(sector))
    after = sector + total // SECTOR
    assert content[after * SECTOR:] == b"".join(pattern(s) for s in range(after, SECTORS))
    status, length = disk.run(VIRTIO_BLK_T_IN, sector, in_segments=segments)
    assert (status, length) == (VIRTIO_BLK_S_OK, total + 1)
    assert disk.in_data(segments) == payload


def test_last_sectors_are_reachable(disk):
    status, _ = disk.run(VIRTIO_BLK_T_IN, SECTORS - 2, in_segments=[1024])
    assert status == VIRTIO_BLK_S_OK
    assert disk.in_data([1024]) == pattern(SECTORS - 2) + pattern(SECTORS - 1)


def test_64_kib_in_one_segment_and_seg_max_segments(tmp_path):
    path = tmp_path / "big.img"
    content = os.urandom(256 * SECTOR)
    path.write_bytes(content)
    with open(path, "r+b") as f:
        disk = Disk(BlockBackend(f))
        assert disk.run(VIRTIO_BLK_T_IN, 0, in_segments=[65536]) == (VIRTIO_BLK_S_OK, 65537)
        assert disk.in_data([65536]) == content[:65536]
        # header + seg_max data descriptors + status: exactly a 256-entry queue, no indirect
        segments = [SECTOR // 2] * disk.device.seg_max
        assert len(segments) + 2 == 256
        status, length = disk.run(VIRTIO_BLK_T_IN, 100, in_segments=segments)
        assert (status, length) == (VIRTIO_BLK_S_OK, sum(segments) + 1)
        assert disk.in_data(segments) == content[100 * SECTOR:100 * SECTOR + sum(segments)]


def test_zero_length_in_is_ok(disk):
    assert disk.run(VIRTIO_BLK_T_IN, SECTORS, in_segments=[]) == (VIRTIO_BLK_S_OK, 1)


def test_many_buffers_and_short_transfers(image, monkeypatch):
    """More buffers than one preadv takes, and a host that moves 100 bytes per call."""
    path, fd = image
    real_preadv, real_pwritev = os.preadv, os.pwritev
    calls = []

    def clipped(real):
        def call(fd_, buffers, offset):
            calls.append(len(buffers))
            budget, parts = 100, []
            for b in buffers:
                parts.append(memoryview(b)[:budget])
                budget -= len(parts[-1])
                if not budget:
                    break
            return real(fd_, parts, offset)
        return call

    monkeypatch.setattr(blk, "_IOV_MAX", 3)
    monkeypatch.setattr(os, "preadv", clipped(real_preadv))
    monkeypatch.setattr(os, "pwritev", clipped(real_pwritev))
    disk = Disk(BlockBackend(fd))
    segments = [64] * 24
    payload = os.urandom(sum(segments))
    assert disk.run(VIRTIO_BLK_T_OUT, 5, out=payload, out_segments=segments)[0] == VIRTIO_BLK_S_OK
    assert disk.run(VIRTIO_BLK_T_IN, 5, in_segments=segments)[0] == VIRTIO_BLK_S_OK
    assert disk.in_data(segments) == payload
    assert disk_bytes(path)[5 * SECTOR:8 * SECTOR] == payload
    assert max(calls) <= 3


# --- errors -------------------------------------------------------------------------

@pytest.mark.parametrize("sector, count", [(SECTORS, 1), (SECTORS - 1, 2), (SECTORS + 1, 0),
                                           (2 ** 64 - 1, 1), (2 ** 63, 2), (2 ** 55, 1)])
def test_out_of_range_transfers_nothing(image, sector, count):
    path, fd = image
    disk = Disk(BlockBackend(fd))
    before = disk_bytes(path)
    disk.d.poke(DATA, b"\xAA" * (count * SECTOR + 8))
    status, length = disk.run(VIRTIO_BLK_T_IN, sector, in_segments=[count * SECTOR])
    assert status == VIRTIO_BLK_S_IOERR
    assert length == (1 if count == 0 else 0)
    assert disk.d.peek(DATA, count * SECTOR) == b"\xAA" * (count * SECTOR)
    status, _ = disk.run(VIRTIO_BLK_T_OUT, sector, out=b"\x55" * (count * SECTOR))
    assert status == VIRTIO_BLK_S_IOERR
    assert disk_bytes(path) == before


def test_read_only_refuses_writes(image):
    path, _ = image
    before = disk_bytes(path)
    with open(path, "rb") as f:
        disk = Disk(BlockBackend(f, read_only=True))
        assert disk.device.features & (1 << VIRTIO_BLK_F_RO)
        status, length = disk.run(VIRTIO_BLK_T_OUT, 0, out=b"\x11" * SECTOR)
        assert (status, length) == (VIRTIO_BLK_S_IOERR, 1)
        assert disk.run(VIRTIO_BLK_T_IN, 0, in_segments=[SECTOR]) == (VIRTIO_BLK_S_OK, SECTOR + 1)
        assert disk.in_data([SECTOR]) == pattern(0)
    assert disk_bytes(path) == before


@pytest.mark.parametrize("kind, size", [(VIRTIO_BLK_T_IN, 513), (VIRTIO_BLK_T_IN, 100),
                                        (VIRTIO_BLK_T_OUT, 100), (VIRTIO_BLK_T_OUT, 1023)])
def test_partial_sectors_are_refused(image, kind, size):
    path, fd = image
    disk = Disk(BlockBackend(fd))
    before = disk_bytes(path)
    disk.d.poke(DATA, b"\xAA" * size)
    if kind == VIRTIO_BLK_T_IN:
        status, length = disk.run(kind, 0, in_segments=[size])
        assert disk.d.peek(DATA, size) == b"\xAA" * size
    else:
        status, length = disk.run(kind, 0, out=b"\x22" * size)
    assert status == VIRTIO_BLK_S_IOERR
    assert disk_bytes(path) == before


def test_host_write_error_is_ioerr(image):
    """A writable disk whose descriptor was opened read-only: pwritev fails with EBADF."""
    path, _ = image
    before = disk_bytes(path)
    with open(path, "rb") as f:
        disk = Disk(BlockBackend(f))
        assert disk.run(VIRTIO_BLK_T_OUT, 0, out=b"\x33" * SECTOR)[0] == VIRTIO_BLK_S_IOERR
    assert disk_bytes(path) == before


@pytest.mark.parametrize("name, kind", [("preadv", VIRTIO_BLK_T_IN), ("pwritev", VIRTIO_BLK_T_OUT),
                                        ("fsync", VIRTIO_BLK_T_FLUSH)])
def test_host_errors_are_ioerr(disk, monkeypatch, name, kind):
    def fail(*args):
        raise OSError(errno.EIO, "injected")
    monkeypatch.setattr(os, name, fail)
    status, _ = disk.run(kind, 0, out=b"\0" * SECTOR if kind == VIRTIO_BLK_T_OUT else b"",
                         in_segments=[SECTOR] if kind == VIRTIO_BLK_T_IN else [])
    assert status == VIRTIO_BLK_S_IOERR


def test_image_shorter_than_its_size_is_ioerr(image):
    path, fd = image
    disk = Disk(BlockBackend(fd, size=(SECTORS + 4) * SECTOR))
    assert disk.run(VIRTIO_BLK_T_IN, SECTORS - 1, in_segments=[2 * SECTOR])[0] == VIRTIO_BLK_S_IOERR


@pytest.mark.parametrize("kind", [2, 3, 5, 10, 11, 13, 0xFFFFFFFF])
def test_unknown_types_are_unsupported(disk, kind):
    assert disk.run(kind, 0, in_segments=[SECTOR]) == (VIRTIO_BLK_S_UNSUPP, 0)
    assert disk.run(kind, 0) == (VIRTIO_BLK_S_UNSUPP, 1)


# --- flush and GET_ID ---------------------------------------------------------------

@pytest.mark.parametrize("sector", [0, 12345])
def test_flush_fsyncs(disk, monkeypatch, sector):
    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    assert disk.run(VIRTIO_BLK_T_FLUSH, sector) == (VIRTIO_BLK_S_OK, 1)
    assert synced == [disk.backend.fd]


@pytest.mark.parametrize("serial, expected", [
    ("tinyvmm-disk", b"tinyvmm-disk" + b"\0" * 8),
    ("", b"\0" * 20),
    ("ABCDEFGHIJKLMNOPQRST", b"ABCDEFGHIJKLMNOPQRST"),
])
def test_get_id(image, serial, expected):
    _, fd = image
    disk = Disk(BlockBackend(fd, serial=serial))
    disk.d.poke(DATA, b"\xAA" * 28)
    assert disk.run(VIRTIO_BLK_T_GET_ID, 0, in_segments=[20]) == (VIRTIO_BLK_S_OK, 21)
    assert disk.d.peek(DATA, 21) == expected + b"\xAA"


def test_get_id_buffer_sizes(disk):
    disk.d.poke(DATA, b"\xAA" * 40)
    status, length = disk.run(VIRTIO_BLK_T_GET_ID, 0, in_segments=[19])
    assert status == VIRTIO_BLK_S_IOERR and length == 0
    assert disk.d.peek(DATA, 19) == b"\xAA" * 19
    status, length = disk.run(VIRTIO_BLK_T_GET_ID, 0, in_segments=[10, 22])
    assert (status, length) == (VIRTIO_BLK_S_OK, 20)
    assert disk.in_data([10, 22]) == b"tinyvmm-disk" + b"\0" * 8 + b"\xAA" * 12


@pytest.mark.parametrize("serial", ["x" * 21, "dísk"])
def test_bad_serials(image, serial):
    with pytest.raises(ValueError):
        BlockBackend(image[1], serial=serial)


def test_serial_none_is_empty(image):
    assert BlockBackend(image[1], serial=None).id_bytes == b"\0" * 20


# --- requests that cannot be answered -----------------------------------------------

@pytest.mark.parametrize("args, message", [
    (dict(header_len=15, in_segments=[SECTOR]), "header of 15"),
    (dict(header_len=0, in_segments=[SECTOR]), "header of 0"),
    (dict(status_len=0), "no writable status"),
])
def test_unanswerable_requests_raise(disk, args, message):
    d = disk.d
    good = disk.submit(VIRTIO_BLK_T_IN, 0, in_segments=[SECTOR])
    # the bad request in descriptors of its own, after a good one
    buffers = [(HEADER + 0x20, args.get("header_len", 16), False)]
    buffers += [(DATA + 0x2000, size, True) for size in args.get("in_segments", [])]
    if args.get("status_len", 1):
        buffers.append((STATUS + 8, 1, True))
    d.poke(HEADER + 0x20, struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0))
    bad = d.chain(buffers, indices=list(range(10, 10 + len(buffers))))
    d.publish(bad)
    with pytest.raises(VirtqueueError, match=message) as info:
        disk.device.serve(d.queue)
    assert info.value.head == bad
    assert d.used_idx == 1 and d.used(0) == (good, SECTOR + 1)
    assert d.queue.last_avail_idx == 2
    d.queue.push(bad, 0)                    # the transport may still complete it


def test_serve_reports_whether_to_interrupt(disk):
    disk.submit(VIRTIO_BLK_T_IN, 0, in_segments=[SECTOR])
    assert disk.device.serve(disk.d.queue)
    assert not disk.device.serve(disk.d.queue)          # nothing new
    disk.d.avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)
    disk.submit(VIRTIO_BLK_T_IN, 0, in_segments=[SECTOR])
    assert not disk.device.serve(disk.d.queue)
    assert disk.d.used_idx == 2


def test_serve_through_indirect_and_event_idx(image):
    _, fd = image
    disk = Disk(BlockBackend(fd), event_idx=True, indirect=True, size=8)
    d = disk.d
    d.poke(HEADER, struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 9))
    d.chain([(HEADER, 16, False), (DATA, 300, True), (DATA + 0x200, 212, True), (STATUS, 1, True)],
            table=0x6000)
    d.desc(0, 0x6000, 64, 4)
    d.used_event(0)
    d.publish(0)
    assert disk.device.serve(d.queue)
    assert d.peek(STATUS, 1) == bytes([VIRTIO_BLK_S_OK])
    assert d.peek(DATA, 300) + d.peek(DATA + 0x200, 212) == pattern(9)
    assert d.avail_event == 1                           # ran dry at 1: notify for entry 1


# --- features and configuration -----------------------------------------------------

def test_features(disk):
    features = disk.device.features
    for bit in (VIRTIO_F_VERSION_1, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE,
                VIRTIO_BLK_F_FLUSH, VIRTIO_F_INDIRECT_DESC):
        assert features >> bit & 1, bit
    for bit in (VIRTIO_BLK_F_RO, VIRTIO_F_EVENT_IDX):
        assert not features >> bit & 1, bit
    assert features == (1 << 32) | (1 << 28) | (1 << 9) | (1 << 6) | (1 << 2) | (1 << 1)
    plain = BlockDevice(disk.backend, indirect=False, event_idx=True)
    assert not plain.features >> VIRTIO_F_INDIRECT_DESC & 1
    assert plain.features >> VIRTIO_F_EVENT_IDX & 1
    assert disk.device.device_type == VIRTIO_ID_BLOCK == 2
    assert disk.device.class_code == 0x010000
    assert disk.device.queue_sizes == [256]


def test_config_bytes_layout(tmp_path):
    path = tmp_path / "odd.img"
    path.write_bytes(b"\0" * (1000 * SECTOR + 300))       # a partial last sector is not counted
    with open(path, "rb") as f:
        backend = BlockBackend(f)
        assert backend.size == 1000 * SECTOR + 300 and backend.capacity == 1000
        config = BlockDevice(backend).config_bytes()
    assert len(config) == CONFIG_SIZE >= 0x3C
    assert config[0:8] == bytes([0xE8, 0x03, 0, 0, 0, 0, 0, 0])        # capacity 1000
    assert config[8:12] == bytes([0x00, 0x00, 0x01, 0x00])              # size_max 65536
    assert config[12:16] == bytes([0xFE, 0x00, 0x00, 0x00])             # seg_max 254
    assert config[16:20] == bytes(4)                                    # geometry
    assert config[20:24] == bytes([0x00, 0x02, 0x00, 0x00])             # blk_size 512
    assert config[24:] == bytes(CONFIG_SIZE - 24)


def test_capacity_of_a_large_image_is_little_endian_u64(image):
    config = BlockDevice(BlockBackend(image[1], size=(3 << 40) + 511)).config_bytes()
    assert config[:8] == ((3 << 40) // SECTOR).to_bytes(8, "little")


@pytest.mark.parametrize("queue_size", [4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 32768])
def test_seabios_split_quotient_is_never_zero(image, queue_size):
    """SeaBIOS 1.16.2 splits requests at size_max * seg_max / 512 sectors kept in 16 bits;
    0 would loop forever, and a 64 KiB BIOS transfer should go in one request."""
    device = BlockDevice(BlockBackend(image[1]), queue_size=queue_size)
    size_max, seg_max = struct.unpack_from("<II", device.config_bytes(), 8)
    assert seg_max == queue_size - 2
    quotient = (size_max * seg_max // 512) & 0xFFFF
    assert quotient != 0
    assert quotient >= 128 and size_max >= 65536


@pytest.mark.parametrize("queue_size", [0, 2, 3, 100, 65536])
def test_bad_device_queue_sizes(image, queue_size):
    with pytest.raises(ValueError):
        BlockDevice(BlockBackend(image[1]), queue_size=queue_size)


# --- fuzz: well-formed requests, then random damage -----------------------------------

FUZZ_SECTORS = 8
FUZZ_HEADERS = (0x800, 0x900, 0xA00)
FUZZ_STATUS = (0x700, 0x710, 0x720)
FUZZ_TABLES = (0x400, 0x480)                 # indirect tables of up to 8 entries
# data buffers: RAM, the end of RAM running into ROM, ROM, the RAM after it, past the end
FUZZ_DATA = (0xB00, 0xC00, 0xD00, 0xE00, 0xF00, 0xF80, 0x1000, 0x1200, 0x1300, 0x1400)

header_values = st.tuples(
    st.sampled_from([VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, 2,
                     0xFFFFFFFF]),
    st.integers(0, 0xFFFFFFFF),
    mostly(st.integers(0, FUZZ_SECTORS + 1), st.integers(0, 2 ** 64 - 1)))
segments = st.tuples(mostly(st.sampled_from(FUZZ_DATA), addresses),
                     mostly(st.sampled_from([0, 20, 256, 512, 1024]), lengths))
requests = st.fixed_dictionaries({
    "header": st.sampled_from(range(len(FUZZ_HEADERS))),
    "header_len": mostly(st.just(16), st.integers(0, 32)),
    "data": st.lists(segments, max_size=3),
    "data_writable": mostly(st.none(), st.booleans()),     # None: as the request type wants
    "status": mostly(st.sampled_from(FUZZ_STATUS).map(lambda a: (a, 1)), st.tuples(addresses, lengths)),
    "indirect": st.booleans(),
})
damage = st.lists(st.tuples(st.integers(0, FUZZ_USED + 8), st.integers(0, 255)), max_size=3)


def lay_out_requests(ram, reqs, headers, start):
    """Requests as the driver would build them (header, data, status), in the descriptor
    table or an indirect table each; returns how many were published."""
    heads, free, tables = [], 0, list(FUZZ_TABLES)
    for req in reqs:
        kind = headers[req["header"]][0]
        writable = req["data_writable"]
        if writable is None:
            writable = kind != VIRTIO_BLK_T_OUT
        buffers = [(FUZZ_HEADERS[req["header"]], req["header_len"], 0)]
        buffers += [(addr, length, VIRTQ_DESC_F_WRITE if writable else 0) for addr, length in req["data"]]
        buffers.append((*req["status"], VIRTQ_DESC_F_WRITE))
        if req["indirect"] and tables:
            if free >= FUZZ_SIZE:
                break
            base, first, table = tables.pop(0), 0, True
        else:
            if free + len(buffers) > FUZZ_SIZE:
                break
            base, first, table = FUZZ_DESC, free, False
        for n, (addr, length, flags) in enumerate(buffers):
            last = n == len(buffers) - 1
            struct.pack_into("<QIHH", ram, base + 16 * (first + n), addr, length,
                             flags | (0 if last else VIRTQ_DESC_F_NEXT), 0 if last else first + n + 1)
        if table:
            struct.pack_into("<QIHH", ram, FUZZ_DESC + 16 * free, base, 16 * len(buffers),
                             VIRTQ_DESC_F_INDIRECT, 0)
            heads.append(free)
            free += 1
        else:
            heads.append(free)
            free += len(buffers)
    for slot, head in enumerate(heads):
        struct.pack_into("<H", ram, FUZZ_AVAIL + 4 + 2 * ((start + slot) % FUZZ_SIZE), head)
    struct.pack_into("<HH", ram, FUZZ_AVAIL, 0, (start + len(heads)) & 0xFFFF)
    ram[FUZZ_USED:FUZZ_USED + 6 + 8 * FUZZ_SIZE] = bytes(6 + 8 * FUZZ_SIZE)
    struct.pack_into("<H", ram, FUZZ_USED + 2, start)
    return len(heads)


class RecordingQueue(SplitQueue):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chains = []

    def pop(self):
        chain = super().pop()
        if chain is not None:
            self.chains.append(chain)
        return chain


class RecordingDevice(BlockDevice):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    def handle(self, chain):
        length = super().handle(chain)
        kind = struct.unpack("<I", chain.read_all(4))[0]
        status = bytes(chain.writable_views(chain.writable_length - 1, 1)[0])[0]
        self.results.append((kind, status))
        return length


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=st.lists(requests, min_size=1, max_size=4),
       headers=st.lists(header_values, min_size=3, max_size=3),
       start=st.one_of(st.just(0), st.integers(0xFFFC, 0xFFFF), st.integers(0, 0xFFFF)),
       damage=damage, filler=st.binary(min_size=1, max_size=16), read_only=st.booleans(),
       event_idx=st.booleans(), indirect=st.booleans())
def test_fuzz_serve(tmp_path_factory, reqs, headers, start, damage, filler, read_only, event_idx,
                    indirect):
    memory, backing = fuzz_memory()
    ram = backing[0][1]
    ram[:] = (filler * len(ram))[:len(ram)]
    for gpa, header in zip(FUZZ_HEADERS, headers):
        struct.pack_into("<IIQ", ram, gpa, *header)
    lay_out_requests(ram, reqs, headers, start)
    for gpa, value in damage:
        ram[gpa] = value
    before = [bytes(buf) for _, buf in backing]
    path = tmp_path_factory.mktemp("fuzz") / "disk.img"
    original = os.urandom(FUZZ_SECTORS * SECTOR)
    path.write_bytes(original)
    fd = os.open(path, os.O_RDWR)
    try:
        device = RecordingDevice(BlockBackend(fd, read_only=read_only), queue_size=FUZZ_SIZE,
                                 event_idx=event_idx)
        queue = RecordingQueue(memory, FUZZ_SIZE, FUZZ_DESC, FUZZ_AVAIL, FUZZ_USED,
                               event_idx=event_idx, indirect=indirect)
        queue.last_avail_idx = queue.used_idx = start
        for _ in range(2 * FUZZ_SIZE + 2):
            try:
                device.serve(queue)
                break
            except VirtqueueError:
                continue
    finally:
        os.close(fd)
    assert not changed_outside(backing, before, allowed_mask(queue.chains))
    if path.read_bytes() != original:
        assert not read_only
        assert (VIRTIO_BLK_T_OUT, VIRTIO_BLK_S_OK) in device.results
    assert all(status in (VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP)
               for _, status in device.results)
