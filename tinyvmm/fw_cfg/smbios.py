"""SMBIOS tables for fw_cfg: etc/smbios/smbios-anchor and etc/smbios/smbios-tables.

Layouts follow the DMTF SMBIOS Reference Specification 2.8 (the 32-bit entry
point of section 5.2.1, structures of section 7). Firmware finds the two files
by name, as on QEMU: SeaBIOS adds its own BIOS Information (type 0), sets the
table's address and checksums, and copies everything to the F segment; without
them it builds a default set itself through a slow lookup per field (0.25 s of
guest code under an emulating KVM). qboot installs them the same way.

The tables describe this machine: the system and chassis (type 1, 3), one
processor per vCPU (4), the memory array (16), one memory device per 16 GiB
(17), one mapped range per RAM region of the e820 map (19), boot status (32).
"""

import struct

from .. import layout
from ..checksum import checksum_byte

ANCHOR_FILE = "etc/smbios/smbios-anchor"
TABLES_FILE = "etc/smbios/smbios-tables"
MANUFACTURER = "tinyvmm"
PRODUCT = "i440FX + PIIX"
MEMORY_DEVICE_MAX = 16 * layout.GiB
ENTRY_POINT = struct.Struct("<4sBBBBHB5s5sBHIHB")     # 31 bytes, SMBIOS 2.1 32-bit entry point
SMBIOS_VERSION = (2, 8)

# Structure types and handles (a handle names a structure for others to refer to it)
HANDLE_SYSTEM, HANDLE_CHASSIS, HANDLE_CPU = 0x100, 0x300, 0x400
HANDLE_MEMORY_ARRAY, HANDLE_MEMORY_DEVICE, HANDLE_MAPPED_RANGE = 0x1000, 0x1100, 0x1300
HANDLE_BOOT, HANDLE_END = 0x2000, 0x7F00
UNKNOWN_HANDLE = 0xFFFF
NO_ERROR_INFORMATION = 0xFFFE


def _structure(kind: int, handle: int, formatted: bytes, strings=()) -> bytes:
    """Header, formatted area, then the string set (each NUL-ended, the set ended by a NUL)."""
    header = struct.pack("<BBH", kind, 4 + len(formatted), handle)
    text = b"".join(s.encode() + b"\0" for s in strings)
    return header + formatted + (text + b"\0" if text else b"\0\0")


def structures(ram_size: int, cpus: int = 1) -> list[bytes]:
    """Every structure of the table, type 127 (end of table) last."""
    tables = [
        # Type 1, System Information: manufacturer, product, version, serial (strings 1-3, 0),
        # UUID (all zero: not set), wake-up by power switch, SKU and family none.
        _structure(1, HANDLE_SYSTEM, struct.pack("<BBBB16sBBB", 1, 2, 0, 0, bytes(16), 0x06, 0, 0),
                   (MANUFACTURER, PRODUCT)),
        # Type 3, System Enclosure: manufacturer, type "other", no version/serial/asset tag,
        # states "safe", security "unknown", no OEM data, height, cords or elements, no SKU.
        _structure(3, HANDLE_CHASSIS, struct.pack("<BBBBBBBBBIBBBBB", 1, 0x01, 0, 0, 0, 0x03, 0x03,
                                                  0x03, 0x02, 0, 0, 0, 0, 0, 0), (MANUFACTURER,)),
    ]
    for cpu in range(cpus):
        # Type 4, Processor Information: socket name, central processor, family "other",
        # manufacturer, no ID or version, populated and enabled, one core, one thread.
        tables.append(_structure(4, HANDLE_CPU + cpu, struct.pack(
            "<BBBB8sBBHHHBBHHHBBBBBBHH", 1, 0x03, 0x01, 2, bytes(8), 0, 0, 0, 0, 0, 0x41, 0x01,
            UNKNOWN_HANDLE, UNKNOWN_HANDLE, UNKNOWN_HANDLE, 0, 0, 0, 1, 1, 1, 0x02, 0x01),
            (f"CPU {cpu}", MANUFACTURER)))
    devices = [(start, min(MEMORY_DEVICE_MAX, ram_size - start))
               for start in range(0, ram_size, MEMORY_DEVICE_MAX)]
    capacity_kib = ram_size // layout.KiB
    # Type 16, Physical Memory Array: system board, system memory, no error correction.
    tables.append(_structure(16, HANDLE_MEMORY_ARRAY, struct.pack(
        "<BBBIHHQ", 0x03, 0x03, 0x03, min(capacity_kib, 0x80000000), NO_ERROR_INFORMATION,
        len(devices), capacity_kib * layout.KiB if capacity_kib >= 0x80000000 else 0)))
    for index, (_, size) in enumerate(devices):
        size_mib = size // layout.MiB
        # Type 17, Memory Device: in the array above, 64 bits wide, a DIMM of RAM.
        tables.append(_structure(17, HANDLE_MEMORY_DEVICE + index, struct.pack(
            "<HHHHHBBBBBHHBBBBBIHHHH", HANDLE_MEMORY_ARRAY, NO_ERROR_INFORMATION, 64, 64,
            size_mib if size_mib < 0x7FFF else 0x7FFF, 0x09, 0, 1, 0, 0x07, 0x0002, 0, 0, 0, 0, 0,
            0, size_mib if size_mib >= 0x7FFF else 0, 0, 0, 0, 0), (f"DIMM {index}",)))
    ram_ranges = [(start, length) for start, length, kind in layout.e820_map(ram_size, 0)
                  if kind == layout.E820_RAM]
    for index, (start, length) in enumerate(ram_ranges):
        end = start + length - 1
        fits = end < 4 * layout.GiB * layout.KiB
        # Type 19, Memory Array Mapped Address: a RAM range, in KiB (or bytes when extended).
        tables.append(_structure(19, HANDLE_MAPPED_RANGE + index, struct.pack(
            "<IIHBQQ", start // layout.KiB if fits else 0xFFFFFFFF,
            end // layout.KiB if fits else 0xFFFFFFFF, HANDLE_MEMORY_ARRAY, 1,
            0 if fits else start, 0 if fits else end)))
    tables.append(_structure(32, HANDLE_BOOT, bytes(6) + b"\x00"))     # no errors detected
    tables.append(_structure(127, HANDLE_END, b""))
    return tables


def smbios_files(ram_size: int, cpus: int = 1) -> tuple[bytes, bytes]:
    """(anchor, tables): the entry point, its table address left 0 for the firmware, and the table."""
    parts = structures(ram_size, cpus)
    table = b"".join(parts)
    major, minor = SMBIOS_VERSION
    fields = [b"_SM_", 0, ENTRY_POINT.size, major, minor, max(len(p) for p in parts), 0, bytes(5),
              b"_DMI_", 0, len(table), 0, len(parts), major << 4 | minor]
    anchor = bytearray(ENTRY_POINT.pack(*fields))
    anchor[0x15] = checksum_byte(anchor[0x10:])
    anchor[0x04] = checksum_byte(anchor)
    return bytes(anchor), table
