"""UEFI modules named without debug symbols (tinyvmm.debug.uefi_images): firmware volumes
parsed as the PI specification lays them out, loaded images found in memory by their headers."""

import lzma
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvmm.debug.symbols import SymbolTable
from tinyvmm.debug.uefi_images import LZMA_GUID, UefiImages, fingerprint, index_firmware, modules

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")


def pe_image(entry: int, size: int, sections: int = 2) -> bytes:
    """The headers of a PE32+ image (what a loader copies to the image's base)."""
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", 0x8664, sections, 0, 0, 0, 0xF0, 0x22)
    optional = bytearray(0xF0)
    struct.pack_into("<H", optional, 0, 0x20B)
    struct.pack_into("<I", optional, 16, entry)
    struct.pack_into("<I", optional, 56, size)
    table = b"".join(struct.pack("<8sIIII", f".s{i}".encode(), 0x1000, 0x1000 * (i + 1), 0x200, 0x400)
                     + bytes(16) for i in range(sections))
    image = dos + b"PE\0\0" + coff + bytes(optional) + table
    return image + bytes(-len(image) % 0x200)


def section(kind: int, body: bytes) -> bytes:
    data = (len(body) + 4).to_bytes(3, "little") + bytes([kind]) + body
    return data + bytes(-len(data) % 4)


def ui(name: str) -> bytes:
    return section(0x15, (name + "\0").encode("utf-16-le"))


def ffs(body: bytes, kind: int = 0x07) -> bytes:
    size = (len(body) + 24).to_bytes(3, "little")
    header = uuid.uuid4().bytes_le + b"\0\0" + bytes([kind, 0]) + size + b"\xf8"
    data = header + body
    return data + bytes(-len(data) % 8)


def volume(files: bytes) -> bytes:
    header = bytearray(0x48)
    struct.pack_into("<Q", header, 32, 0x48 + len(files))
    header[40:44] = b"_FVH"
    struct.pack_into("<HHH", header, 48, 0x48, 0, 0)
    return bytes(header) + files


def lzma_section(inner: bytes) -> bytes:
    packed = lzma.compress(inner, format=lzma.FORMAT_ALONE)
    return section(0x02, LZMA_GUID + struct.pack("<HH", 4 + 20, 1) + packed)


DRIVER = pe_image(0x1234, 0x8000)
PACKED = pe_image(0x2000, 0x3000, sections=3)
NESTED = pe_image(0x0400, 0x2000, sections=1)
FIRMWARE = bytes(0x100) + volume(
    ffs(section(0x10, DRIVER) + ui("TestDriver"))
    + ffs(lzma_section(ui("Packed") + section(0x10, PACKED)))
    + ffs(section(0x17, volume(ffs(section(0x10, NESTED) + ui("Nested")))), kind=0x0B)
    + ffs(section(0x10, pe_image(0x10, 0x1000)))            # no name: not indexed
) + b"\xff" * 0x100


def test_firmware_volumes_give_each_named_image():
    found = modules(FIRMWARE)
    assert [name for name, _ in found] == ["TestDriver", "Packed", "Nested"]
    assert sorted(index_firmware(FIRMWARE).values()) == ["Nested", "Packed", "TestDriver"]


def test_a_loaded_image_is_found_from_any_address_inside_it():
    base = 0x20000
    memory = bytearray(0x40000)
    memory[base:base + len(DRIVER)] = DRIVER

    def read(linear: int, size: int) -> bytes:
        if not 0 <= linear < len(memory):
            raise ValueError("not guest memory")
        return bytes(memory[linear:linear + size])
    images = UefiImages(lambda: FIRMWARE, read)
    symbol, offset = images.lookup(base + 0x5678)
    assert (symbol.name, symbol.address, symbol.size, offset) == ("TestDriver", base, 0x8000, 0x5678)
    assert images.lookup(base + 0x8000) is None             # past SizeOfImage
    assert images.lookup(base - 1) is None
    assert SymbolTable([images]).name(base + 0x10) == "TestDriver+0x10"
    assert SymbolTable([images]).gdb_commands() == []
    memory[base] = 0                                        # the image is gone
    assert images.lookup(base + 0x5678) is None


def test_fingerprints_ignore_the_base_a_loader_writes():
    relocated = bytearray(DRIVER)
    struct.pack_into("<Q", relocated, 0x40 + 24 + 24, 0x7F000000)     # OptionalHeader.ImageBase
    assert fingerprint(bytes(relocated))[0] == fingerprint(DRIVER)[0]
    assert fingerprint(PACKED)[0] != fingerprint(DRIVER)[0]
    assert fingerprint(b"MZ" + bytes(100)) is None


@pytest.mark.parametrize("damage", [b"", FIRMWARE[:0x180], FIRMWARE.replace(b"_FVH", b"_FVX"),
                                    FIRMWARE[:0x150] + b"\xff\xff\xff\x15" + FIRMWARE[0x154:]])
def test_damaged_volumes_are_passed_over(damage):
    assert isinstance(index_firmware(damage), dict)


@pytest.mark.skipif(not OVMF_CODE.exists(),
                    reason="needs /usr/share/OVMF/OVMF_CODE.fd (Debian package ovmf; make setup)")
def test_debians_ovmf_names_its_modules():
    found = modules(OVMF_CODE.read_bytes())
    names = {name for name, _ in found}
    assert {"DxeCore", "PlatformPei", "BdsDxe", "CpuDxe", "PciBusDxe"} <= names, names
    assert len(index_firmware(OVMF_CODE.read_bytes())) == len(found)      # no two alike


@given(st.binary(max_size=4096), st.integers(0, 4095))
@settings(max_examples=300, deadline=None)
def test_any_flash_contents_index_without_an_error(noise, at):
    # a volume signature among random bytes: headers, sizes and sections of any value
    data = bytearray(noise.ljust(at + 0x80, b"\0"))
    data[at + 40:at + 44] = b"_FVH"
    struct.pack_into("<QIIH", data, at + 32, len(data) - at, 0x4856465F, 0, 0x48)
    assert isinstance(index_firmware(bytes(data)), dict)
