"""Blobs that firmware places in guest memory and the commands that link them there: QEMU's
"BIOS linker/loader" script (fw_cfg file etc/table-loader), and the same links made by the VMM
itself for a boot without firmware.

Script format (QEMU hw/acpi/bios-linker-loader.c, as SeaBIOS, OVMF and qboot read it):
128-byte little-endian entries, a u32 command then its fields; file names are 56-byte
NUL-terminated fields.
  1 ALLOCATE       file, u32 alignment, u8 zone (1: anywhere in RAM, 2: the F-segment)
  2 ADD_POINTER    destination file, source file, u32 offset, u8 size: the size-byte
                   value at destination + offset gets the source's address added
  3 ADD_CHECKSUM   file, u32 checksum offset, u32 start, u32 length
Every ALLOCATE comes first; pointers are stored as offsets into the source file.
"""

from __future__ import annotations

import struct

from ..checksum import checksum_byte

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

COMMAND_SIZE = 128
FILE_NAME_SIZE = 56
ALLOCATE = 1
ADD_POINTER = 2
ADD_CHECKSUM = 3
ZONE_HIGH = 1
ZONE_FSEG = 2
POINTER_SIZES = (1, 2, 4, 8)


def _file_name(name: str) -> bytes:
    encoded = name.encode("ascii")
    if len(encoded) >= FILE_NAME_SIZE:
        raise ValueError(f"{name!r} does not fit a loader file name")
    return encoded.ljust(FILE_NAME_SIZE, b"\0")


def _command(kind: int, fields: bytes) -> bytes:
    return struct.pack("<I", kind) + fields.ljust(COMMAND_SIZE - 4, b"\0")


class Linker:
    """Files (bytearrays the tables are appended to) and the links between them."""

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}
        self.allocations: list[tuple[str, int, int]] = []     # (file, alignment, zone)
        # ("pointer", destination, offset, size, source) or ("checksum", file, offset, start, length)
        self.links: list[tuple] = []

    def allocate(self, name: str, alignment: int, zone: int) -> bytearray:
        """A new file the firmware places `alignment`-aligned in `zone`."""
        if name in self.files or alignment & (alignment - 1):
            raise ValueError(f"bad allocation of {name!r}")
        self.files[name] = blob = bytearray()
        self.allocations.append((name, alignment, zone))
        return blob

    def append(self, name: str, data: bytes, alignment: int = 1) -> int:
        """Append `data` to file `name` (padded to `alignment` first); its offset there."""
        blob = self.files[name]
        blob.extend(bytes(-len(blob) % alignment))
        offset = len(blob)
        blob.extend(data)
        return offset

    def add_pointer(self, destination: str, offset: int, size: int, source: str) -> None:
        if size not in POINTER_SIZES or offset + size > len(self.files[destination]):
            raise ValueError(f"bad pointer at {destination}+{offset:#x}")
        self.links.append(("pointer", destination, offset, size, source))

    def add_checksum(self, name: str, offset: int, start: int, length: int) -> None:
        if not start <= offset < start + length <= len(self.files[name]):
            raise ValueError(f"bad checksum range in {name}")
        self.links.append(("checksum", name, offset, start, length))

    def script(self) -> bytes:
        """The etc/table-loader file."""
        commands = [_command(ALLOCATE, _file_name(name) + struct.pack("<IB", alignment, zone))
                    for name, alignment, zone in self.allocations]
        for link in self.links:
            if link[0] == "pointer":
                _, destination, offset, size, source = link
                commands.append(_command(ADD_POINTER, _file_name(destination) + _file_name(source)
                                         + struct.pack("<IB", offset, size)))
            else:
                _, name, offset, start, length = link
                commands.append(_command(ADD_CHECKSUM, _file_name(name)
                                         + struct.pack("<III", offset, start, length)))
        return b"".join(commands)

    def link(self, addresses: dict[str, int]) -> dict[str, bytearray]:
        """Every file with its links made for the given load addresses (what firmware leaves
        in memory after running the script)."""
        files = {name: bytearray(blob) for name, blob in self.files.items()}
        for link in self.links:
            if link[0] == "pointer":
                _, destination, offset, size, source = link
                blob = files[destination]
                value = int.from_bytes(blob[offset:offset + size], "little") + addresses[source]
                blob[offset:offset + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
            else:
                _, name, offset, start, length = link
                blob = files[name]
                blob[offset] = 0
                blob[offset] = checksum_byte(blob[start:start + length])
        return files

    def install(self, write: Callable[[int, bytes], object], addresses: dict[str, int]) -> None:
        """Link for `addresses` and write each file there with `write(address, data)`."""
        for name, alignment, _ in self.allocations:
            if addresses[name] % alignment:
                raise ValueError(f"{name} at {addresses[name]:#x} is not aligned as allocated")
        for name, blob in self.link(addresses).items():
            write(addresses[name], bytes(blob))
