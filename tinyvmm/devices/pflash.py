"""A CFI parallel flash with the Intel/Sharp command set, as QEMU's pc machine builds each
`-drive if=pflash` unit (its cfi.pflash01 device: 1 byte wide, 4 KiB sectors, no device ID).

Commands (a byte written anywhere in the unit; QEMU 7.2's behaviour, status values included):

    0xFF, 0x00, 0xF0  read array: reads return the flash contents
    0x50              clear the status register, then read array
    0x70              reads return the status register
    0x90              reads return the identifier: 0 at every offset (QEMU sets no IDs)
    0x98              reads return the CFI query table ("QRY" at 0x10); any write other than
                      0xFF leaves the device in query mode
    0x10, 0x40        the next write programs its byte(s); status 0x80 (ready), | 0x10 (program
                      error) on a read-only unit, which keeps its contents
    0x20              erases the 4 KiB sector at once (fills it with 0xFF; on a read-only unit:
                      status | 0x20, erase error), then 0xD0 confirms; any other byte after it
                      returns to read array
    0x60              lock/unlock setup: 0xD0 or 0x01 complete it (nothing is locked)
    anything else     read array, status unchanged (QEMU logs the sequence as unimplemented)

After a program, erase or lock command, reads return the status register until 0xFF. A guest
cannot make the device fail: every byte sequence has an answer.

Array mode is served without exits: while the device reads as array, the unit is a read-only
KVM memory slot (a write to it exits as MMIO and reaches `write`); in any other mode the slot
is removed, so every read comes here. `on_array(bool)` tells the board which to map.
"""

from __future__ import annotations

import os

from ..bus import Device

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..spec import PflashSpec

SECTOR_SIZE = 4096

# Status register bits (Intel's command set; QEMU sets these three).
STATUS_READY = 0x80                 # the write state machine is ready
STATUS_ERASE_ERROR = 0x20
STATUS_PROGRAM_ERROR = 0x10

READ_ARRAY = 0x00                   # the mode read array leaves `command` in
STATUS_COMMANDS = frozenset((0x10, 0x20, 0x28, 0x40, 0x50, 0x60, 0x70, 0xE8))
CFI_TABLE_SIZE = 0x52


def cfi_table(size: int) -> bytes:
    """The CFI query answers of a byte-wide unit of `size` bytes (a multiple of SECTOR_SIZE),
    offsets 0 to 0x51, per JEDEC JESD68 with the values QEMU's pflash_cfi01 gives: the
    Intel/Sharp command set (0x0001), one erase region of size/4096 sectors of 4 KiB."""
    table = bytearray(CFI_TABLE_SIZE)
    blocks = size // SECTOR_SIZE
    values = {
        0x10: ord("Q"), 0x11: ord("R"), 0x12: ord("Y"),
        0x13: 0x01, 0x14: 0x00,             # primary command set: Intel/Sharp extended
        0x15: 0x31, 0x16: 0x00,             # primary extended table at 0x31
        0x1B: 0x45, 0x1C: 0x55,             # Vcc 4.5 V to 5.5 V, no Vpp
        0x1F: 0x07, 0x20: 0x07, 0x21: 0x0A, 0x22: 0x00,     # typical timeouts (log2)
        0x23: 0x04, 0x24: 0x04, 0x25: 0x04, 0x26: 0x00,     # maximum timeouts (log2 x typical)
        # log2 of the size: the lowest set bit, as QEMU counts it for sizes not a power of two
        0x27: (size & -size).bit_length() - 1,
        0x28: 0x02, 0x29: 0x00,             # x8/x16 interface
        0x2A: 0x08, 0x2B: 0x00,             # 256-byte write buffer (log2)
        0x2C: 0x01,                         # one erase block region
        0x2D: (blocks - 1) & 0xFF, 0x2E: ((blocks - 1) >> 8) & 0xFF,
        0x2F: (SECTOR_SIZE >> 8) & 0xFF, 0x30: (SECTOR_SIZE >> 16) & 0xFF,
        0x31: ord("P"), 0x32: ord("R"), 0x33: ord("I"), 0x34: ord("1"), 0x35: ord("0"),
        0x3F: 0x01,                         # one protection field
    }
    for offset, value in values.items():
        table[offset] = value
    return bytes(table)


class Pflash(Device):
    """One flash unit over `storage` (a writable buffer of the unit's size, a multiple of
    SECTOR_SIZE). `fd`, when given, is the backing file: programmed bytes and erased sectors
    are written through to it at once (os.pwrite), so the file holds them even if tinyvmm is
    killed. `read_only`: the guest's program and erase commands fail (status error bits) and
    nothing changes. `on_array(mapped)` is called when the device enters (True) or leaves
    (False) read-array mode. `warn(text)` reports a backing file that could not be written
    (once; the guest sees the byte programmed, as QEMU's guest does)."""

    def __init__(self, storage, read_only: bool = False, fd: int | None = None,
                 name: str = "pflash", on_array: Callable[[bool], None] | None = None,
                 warn: Callable[[str], None] | None = None):
        self.storage = memoryview(storage).cast("B")
        if len(self.storage) == 0 or len(self.storage) % SECTOR_SIZE:
            raise ValueError(f"a flash unit is a whole number of {SECTOR_SIZE}-byte sectors, "
                             f"not {len(self.storage)} bytes")
        self.name = name
        self.read_only = read_only
        self.fd = fd
        self.on_array = on_array
        self.warn = warn
        self.command = READ_ARRAY
        self.cycle = 0                      # 1: the command's second byte is awaited
        self.status = STATUS_READY          # QEMU's value at power-on
        self.cfi = cfi_table(len(self.storage))
        self.programmed = 0                 # bytes programmed (the cost a boot pays in exits)
        self.erased = 0                     # sectors erased
        self.write_error: str | None = None

    @property
    def in_array_mode(self) -> bool:
        """Reads return the contents (and the memory slot may serve them)."""
        return self.command == READ_ARRAY

    # --- reads -----------------------------------------------------------------------------
    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        if self.command == READ_ARRAY:
            data = bytes(self.storage[offset:offset + size])
            return (data + b"\xff" * (size - len(data))) * count
        out = bytearray()
        # As QEMU's memory core splits them: at most 4 bytes per device access.
        for start in range(0, size, 4):
            width = min(4, size - start)
            out += self._register(offset + start, width).to_bytes(4, "little")[:width]
        return bytes(out) * count

    def _register(self, offset: int, width: int) -> int:
        if self.command in STATUS_COMMANDS:
            # A byte-wide unit without a device width: a 4-byte read repeats the status at
            # bits 16-23, as QEMU's does.
            return self.status | (self.status << 16 if width > 2 else 0)
        if self.command == 0x90:
            return 0                        # manufacturer and device IDs: QEMU's pc sets none
        if self.command == 0x98:
            index = offset & 0xFF
            return self.cfi[index] if index < CFI_TABLE_SIZE else 0
        self._read_array()                  # cannot happen: no other command is kept
        return int.from_bytes(bytes(self.storage[offset:offset + width]), "little")

    # --- writes ----------------------------------------------------------------------------
    def write(self, offset: int, size: int, data: bytes) -> None:
        for start in range(0, len(data), size):
            element = data[start:start + size]
            # Wider accesses reach the device 4 bytes at a time, as QEMU's memory core splits.
            for part in range(0, len(element), 4):
                self._write(offset + part, element[part:part + 4])

    def _write(self, offset: int, data: bytes) -> None:
        value = data[0]                     # a command is the low byte of the access
        if self.cycle == 0:
            self._first_cycle(offset, value)
        else:
            self._second_cycle(offset, data, value)

    def _first_cycle(self, offset: int, value: int) -> None:
        if value in (0x00, 0xF0, 0xFF):
            self._read_array()
        elif value == 0x50:
            self.status = 0
            self._read_array()
        elif value in (0x70, 0x90):
            self._enter(value, cycle=0)
        elif value in (0x10, 0x40, 0x60, 0x98):
            self._enter(value, cycle=1)
        elif value == 0x20:
            self._erase(offset - offset % SECTOR_SIZE)
            self.status |= STATUS_READY
            self._enter(value, cycle=1)
        else:
            self._read_array()              # QEMU: an unimplemented sequence, logged

    def _second_cycle(self, offset: int, data: bytes, value: int) -> None:
        command = self.command
        if command in (0x10, 0x40):
            self._program(offset, data)
            self.status |= STATUS_READY
            self.cycle = 0                  # reads still return the status, until 0xFF
        elif command == 0x20:
            if value == 0xD0:
                self.status |= STATUS_READY
                self.cycle = 0
            else:
                self._read_array()          # 0xFF, or an unimplemented sequence
        elif command == 0x60:
            if value in (0xD0, 0x01):
                self.status |= STATUS_READY
                self.cycle = 0
            else:
                self._read_array()
        elif command == 0x98:
            if value == 0xFF:
                self._read_array()          # any other byte keeps the query mode
        else:
            self._read_array()

    def _enter(self, command: int, cycle: int) -> None:
        was_array = self.command == READ_ARRAY
        self.command, self.cycle = command, cycle
        if was_array and self.on_array is not None:
            self.on_array(False)

    def _read_array(self) -> None:
        was_array = self.command == READ_ARRAY
        self.command, self.cycle = READ_ARRAY, 0
        if not was_array and self.on_array is not None:
            self.on_array(True)

    def _program(self, offset: int, data: bytes) -> None:
        data = data[:len(self.storage) - offset]
        if self.read_only:
            self.status |= STATUS_PROGRAM_ERROR
            return
        # QEMU stores the byte as given (a real part could only clear bits).
        self.storage[offset:offset + len(data)] = data
        self.programmed += len(data)
        self._persist(offset, len(data))

    def _erase(self, offset: int) -> None:
        if self.read_only:
            self.status |= STATUS_ERASE_ERROR
            return
        self.storage[offset:offset + SECTOR_SIZE] = b"\xff" * SECTOR_SIZE
        self.erased += 1
        self._persist(offset, SECTOR_SIZE)

    def _persist(self, offset: int, size: int) -> None:
        """Write-through: the file holds the change before the guest's next instruction."""
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, self.storage[offset:offset + size], offset)
        except OSError as exc:
            if self.write_error is None:
                self.write_error = exc.strerror or str(exc)
                if self.warn is not None:
                    self.warn(f"{self.name}: cannot write the flash file: {self.write_error}; "
                              "the guest's changes stay in memory only")


# --- the units' files ------------------------------------------------------------------------
class FlashFile:
    """A flash unit's file, opened and read before KVM is touched: `unit` (0 or 1), `path`,
    `read_only`, `fd` (open for reading, and writing unless read-only; the caller closes it),
    `data` (the contents, a multiple of SECTOR_SIZE bytes)."""

    __slots__ = ("unit", "path", "read_only", "fd", "data")

    def __init__(self, unit: int, path: str, read_only: bool, fd: int, data: bytes):
        self.unit, self.path, self.read_only, self.fd, self.data = unit, path, read_only, fd, data


def open_flash_files(specs: Iterable[PflashSpec], window: int) -> list[FlashFile]:
    """Open every PflashSpec's file, unit 0 first. Raises tinyvmm.spec.DriveError (nothing left
    open) for a file that is missing, not a regular file, empty or not a whole number of
    4 KiB sectors (QEMU's rule), units larger together than `window` bytes (the room below
    4 GiB), one file given to two units unless both are read-only, or a file that cannot be
    opened for writing when the unit is writable."""
    import stat

    from ..spec import DriveError
    from ..virtio.drive import open_image
    specs = sorted(specs, key=lambda spec: spec.unit)
    sizes: list[int] = []
    seen: dict[tuple[int, int], PflashSpec] = {}
    for spec in specs:
        try:
            info = os.stat(spec.path)
        except OSError as exc:
            raise DriveError(f"cannot open pflash file {spec.path}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise DriveError(f"pflash file {spec.path} is not a regular file")
        if info.st_size == 0 or info.st_size % SECTOR_SIZE:
            raise DriveError(f"pflash file {spec.path} is {info.st_size} bytes: a flash unit is a "
                             f"whole number of {SECTOR_SIZE // 1024} KiB sectors (QEMU's rule)")
        if not spec.read_only and not info.st_mode & 0o222:
            # Refused even where root could open it: the file's owner made it read-only.
            raise DriveError(f"pflash file {spec.path} is read-only on disk; give readonly=on "
                             "to use it read-only")
        other = seen.get((info.st_dev, info.st_ino))
        if other is not None and not (other.read_only and spec.read_only):
            raise DriveError(f"pflash file {spec.path} is given to units {other.unit} and "
                             f"{spec.unit}; two writable views of one file would corrupt it")
        seen[(info.st_dev, info.st_ino)] = spec
        sizes.append(info.st_size)
    if sum(sizes) > window:
        raise DriveError(f"the pflash units are {sum(sizes)} bytes together: at most "
                         f"{window >> 20} MiB fit below 4 GiB")
    files: list[FlashFile] = []
    try:
        for spec, size in zip(specs, sizes):
            fd = open_image(spec.path, spec.read_only, "pflash file")
            files.append(FlashFile(spec.unit, spec.path, spec.read_only, fd, b""))
            try:
                data = os.pread(fd, size, 0)
            except OSError as exc:
                raise DriveError(f"cannot read pflash file {spec.path}: {exc.strerror}") from None
            if len(data) != size:
                raise DriveError(f"pflash file {spec.path} changed size while being read")
            files[-1].data = data
    except BaseException:
        for flash in files:
            os.close(flash.fd)
        raise
    return files
