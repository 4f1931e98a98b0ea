"""virtio-blk: requests and device configuration (virtio 1.x "Block Device",
device-types/blk/description.tex). The transport lives elsewhere.

BlockBackend is the raw image (an open file descriptor, positioned I/O only);
BlockDevice serves request chains from a SplitQueue against it and describes
the device: offered features and the virtio_blk_config bytes.

A request is a chain of: a 16-byte device-readable header (type u32, reserved
u32, sector u64), the data (device-writable for IN, device-readable for OUT),
and one device-writable status byte, the chain's last writable byte.
"""

import os
import stat
import struct

from .queue import VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, SplitQueue, VirtqueueError

TYPE_CHECKING = False           # True for type checkers only: typing stays unimported
if TYPE_CHECKING:
    from .model import VirtioModel

VIRTIO_ID_BLOCK = 2
PCI_CLASS_MASS_STORAGE = 0x010000   # the class code QEMU's virtio-blk-pci shows (SCSI controller)

# Feature bits (bit numbers).
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_GEOMETRY = 4
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9

# Request types and status values.
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

SECTOR = 512
ID_BYTES = 20                       # GET_ID: NUL-padded, no terminator when 20 long
HEADER = struct.Struct("<IIQ")      # type, reserved, sector
CONFIG_SIZE = 0x40                  # through write_zeroes_may_unmap and padding (0x3C), rounded up
# Bytes per segment. A 64 KiB BIOS transfer is then one segment, and SeaBIOS 1.16.2's
# request split, size_max * seg_max / 512 kept in 16 bits, is 128 * seg_max: never 0
# for seg_max below 512, and 32512 sectors for the usual 256-entry queue.
SIZE_MAX = 1 << 16
DEFAULT_QUEUE_SIZE = 256

_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


class BlockBackend:
    """A raw disk image: `file` is an int fd or a file object, opened by the caller.

    `size`: bytes the guest sees (default: the file's size); the capacity is
    size // 512 sectors. `read_only`: refuse writes. `serial`: the GET_ID
    string, ASCII, at most 20 bytes (ValueError otherwise). I/O is positioned
    (os.preadv/os.pwritev), so no file position is shared with anyone; errors
    are OSError.
    """

    def __init__(self, file, size: int | None = None, read_only: bool = False,
                 serial: str | None = ""):
        self.file = file                # kept so a file object is not closed under us
        self.fd = file if isinstance(file, int) else file.fileno()
        if size is None:
            st = os.fstat(self.fd)
            # A block device reports st_size 0; its end is where its length shows.
            size = os.lseek(self.fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        if size < 0:
            raise ValueError(f"negative image size {size}")
        self.size = size
        self.capacity = size // SECTOR
        self.read_only = read_only
        serial = serial or ""
        try:
            encoded = serial.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"serial {serial!r} is not ASCII") from None
        if len(encoded) > ID_BYTES:
            raise ValueError(f"serial {serial!r} is longer than {ID_BYTES} bytes")
        self.serial = serial
        self.id_bytes = encoded.ljust(ID_BYTES, b"\0")

    def read_into(self, offset: int, views: list[memoryview]) -> None:
        """Fill `views` from image byte `offset` on; OSError on failure or end of file."""
        _positioned(os.preadv, self.fd, views, offset)

    def write_from(self, offset: int, views: list[memoryview]) -> None:
        """Write `views` at image byte `offset`; OSError on failure."""
        _positioned(os.pwritev, self.fd, views, offset)

    def flush(self) -> None:
        os.fsync(self.fd)


def _positioned(call, fd: int, views: list[memoryview], offset: int) -> None:
    """Run preadv/pwritev until every view is done, IOV_MAX buffers at a time."""
    pending = [v for v in views if len(v)]
    first = 0
    while first < len(pending):
        done = call(fd, pending[first:first + _IOV_MAX], offset)
        if done <= 0:
            raise OSError(5, f"short transfer at image offset {offset}")    # EIO: end of file
        offset += done
        while done:
            size = len(pending[first])
            if done >= size:
                done -= size
                first += 1
            else:
                pending[first] = pending[first][done:]
                done = 0


class BlockDevice:
    """virtio-blk device logic over one request queue.

    `backend`: a BlockBackend. `queue_size`: the largest queue the transport
    offers (power of two, 4 to 32768); seg_max is queue_size - 2, so a request
    of header + seg_max segments + status fits a queue without indirect
    descriptors. `indirect`, `event_idx`: whether to offer those ring features.

    Attributes for the transport: `device_type` (2), `class_code`, `features`
    (the offered 64-bit mask), `queue_sizes` ([queue_size]).
    """

    name = "virtio-blk"
    device_type = VIRTIO_ID_BLOCK
    class_code = PCI_CLASS_MASS_STORAGE

    def __init__(self, backend: BlockBackend, queue_size: int = DEFAULT_QUEUE_SIZE,
                 indirect: bool = True, event_idx: bool = False):
        if not 4 <= queue_size <= 32768 or queue_size & (queue_size - 1):
            raise ValueError(f"queue size {queue_size} is not a power of two from 4 to 32768")
        self.backend = backend
        self.queue_sizes = [queue_size]
        self.seg_max = queue_size - 2
        self.size_max = SIZE_MAX
        bits = [VIRTIO_F_VERSION_1, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX,
                VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH]
        if backend.read_only:
            bits.append(VIRTIO_BLK_F_RO)
        if indirect:
            bits.append(VIRTIO_F_INDIRECT_DESC)
        if event_idx:
            bits.append(VIRTIO_F_EVENT_IDX)
        self.features = sum(1 << bit for bit in bits)

    def reset(self) -> None:
        """Device reset: nothing to forget (requests complete before serve() returns)."""

    def config_bytes(self) -> bytes:
        """struct virtio_blk_config, CONFIG_SIZE bytes, little-endian: capacity u64 @0,
        size_max u32 @8, seg_max u32 @12, geometry (zero) @16, blk_size u32 @20 = 512,
        the rest zero."""
        head = struct.pack("<QIIIII", self.backend.capacity, self.size_max, self.seg_max,
                           0, SECTOR, 0)
        return head.ljust(CONFIG_SIZE, b"\0")

    def handle(self, chain) -> int:
        """Serve one request chain; returns the used length for push().

        The length counts writable bytes from the first one that were all written:
        data + status for a successful IN (20 + status for GET_ID with a 20-byte
        buffer), 1 when the status is the only writable byte, else 0 (the spec
        lets it underestimate; drivers read the status byte). Host I/O errors
        become VIRTIO_BLK_S_IOERR. Raises VirtqueueError (chain.head attached)
        when the request cannot be answered: a header shorter than 16 bytes or
        no writable status byte.
        """
        if chain.readable_length < HEADER.size:
            raise VirtqueueError(f"block request {chain.head}: header of {chain.readable_length} "
                                 f"bytes, needs {HEADER.size}", chain.head)
        writable = chain.writable_length
        if writable < 1:
            raise VirtqueueError(f"block request {chain.head}: no writable status byte", chain.head)
        kind, _, sector = HEADER.unpack(chain.read_all(HEADER.size))
        status, filled = self._execute(chain, kind, sector, writable - 1)
        chain.write(writable - 1, bytes((status,)))
        if filled == writable - 1:
            return min(writable, 0xFFFFFFFF)
        return min(filled, 0xFFFFFFFF)

    def _execute(self, chain, kind: int, sector: int, data_room: int) -> tuple[int, int]:
        """(status, writable bytes filled from the start, status excluded)."""
        backend = self.backend
        if kind == VIRTIO_BLK_T_IN:
            offset = self._range(sector, data_room)
            if offset is None:
                return VIRTIO_BLK_S_IOERR, 0
            try:
                backend.read_into(offset, chain.writable_views(0, data_room))
            except OSError:
                return VIRTIO_BLK_S_IOERR, 0
            return VIRTIO_BLK_S_OK, data_room
        if kind == VIRTIO_BLK_T_OUT:
            length = chain.readable_length - HEADER.size
            offset = self._range(sector, length)
            if offset is None or backend.read_only:
                return VIRTIO_BLK_S_IOERR, 0
            try:
                backend.write_from(offset, chain.readable_views(HEADER.size, length))
            except OSError:
                return VIRTIO_BLK_S_IOERR, 0
            return VIRTIO_BLK_S_OK, 0
        if kind == VIRTIO_BLK_T_FLUSH:
            # The spec has drivers send sector 0; any other value is accepted.
            try:
                backend.flush()
            except OSError:
                return VIRTIO_BLK_S_IOERR, 0
            return VIRTIO_BLK_S_OK, 0
        if kind == VIRTIO_BLK_T_GET_ID:
            if data_room < ID_BYTES:
                return VIRTIO_BLK_S_IOERR, 0
            chain.write(0, backend.id_bytes)
            return VIRTIO_BLK_S_OK, ID_BYTES
        return VIRTIO_BLK_S_UNSUPP, 0

    def _range(self, sector: int, length: int) -> int | None:
        """Image byte offset of a transfer of `length` bytes at `sector`, or None when
        the length is not whole sectors or the sectors pass the capacity."""
        if length % SECTOR:
            return None
        capacity = self.backend.capacity
        if sector > capacity or length // SECTOR > capacity - sector:
            return None
        return sector * SECTOR

    def serve(self, queue: SplitQueue) -> bool:
        """Handle every chain available in `queue` (a SplitQueue), pushing each result.

        Returns whether the driver wants an interrupt. A VirtqueueError stops the
        loop and propagates (the transport sets DEVICE_NEEDS_RESET); chains served
        before it are already in the used ring.
        """
        while True:
            chain = queue.pop()
            if chain is None:
                return queue.needs_interrupt()
            queue.push(chain.head, self.handle(chain))


if TYPE_CHECKING:
    _checked: type[VirtioModel] = BlockDevice      # the type checker holds it to the contract
