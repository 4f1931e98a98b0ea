"""Guest memory bounds checks and the declared memory and I/O map."""

import ctypes

import pytest
from guest_memory import guest_memory

from tinyvmm import layout
from tinyvmm.memory import (
    MEMMOVE_MIN,
    ZERO_BY_DISCARD_MIN,
    GuestMemory,
    GuestMemoryError,
    buffer_address,
    copy_into,
)


@pytest.fixture
def memory():
    ram = bytearray(0x10000)
    rom = bytearray(b"\xaa" * 0x1000)
    return guest_memory((0, ram), (0xF000_0000, rom, False))


def test_read_write_and_views(memory):
    memory.write(0x100, b"abc")
    assert memory.read(0x100, 3) == b"abc"
    view = memory.view(0x100, 3, writable=True)
    view[0:1] = b"X"
    assert memory.read(0x100, 3) == b"Xbc"
    assert memory.read(0xF000_0000, 2) == b"\xaa\xaa"


@pytest.mark.parametrize("gpa,size", [
    (0xFFFF, 2),                 # crosses the end of RAM
    (0x10000, 1),                # just past RAM
    (-1, 1),
    (2**64 - 1, 2),              # wraps
    (0xEFFF_FFFF, 2),            # runs into ROM from a hole
])
def test_outside_memory_rejected(memory, gpa, size):
    with pytest.raises(GuestMemoryError):
        memory.read(gpa, size)
    assert not memory.contains(gpa, size)


def test_rom_not_writable(memory):
    with pytest.raises(GuestMemoryError, match="read-only"):
        memory.write(0xF000_0000, b"x")
    assert memory.read(0xF000_0000, 1) == b"\xaa"


def test_objects(memory):
    value = ctypes.c_uint32(0xDEADBEEF)
    memory.write_obj(0x20, value)
    assert memory.read(0x20, 4) == bytes.fromhex("efbeadde")
    assert memory.read_obj(0x20, ctypes.c_uint32).value == 0xDEADBEEF


def test_overlapping_regions_rejected():
    with pytest.raises(ValueError):
        GuestMemory([(0, 0x2000, bytearray(0x2000), True), (0x1000, 0x1000, bytearray(0x1000), True)])


def test_layout_low_memory_map():
    regions = {r.name: r for r in layout.memory_regions(256 * layout.MiB, 64 * layout.KiB)}
    assert regions["bios-low"].gpa == 0xF0000 and regions["bios-low"].kind == "rom"
    assert regions["bios-high"].gpa == 0xFFFF0000
    assert regions["extended"].end == 256 * layout.MiB
    assert "high" not in regions
    layout.check(256 * layout.MiB, 64 * layout.KiB)


def test_layout_large_firmware_and_ram_above_4g():
    regions = {r.name: r for r in layout.memory_regions(4 * layout.GiB, 256 * layout.KiB)}
    assert regions["bios-low"].gpa == 0xE0000                  # 128 KiB alias at most
    assert regions["bios-low"].host_offset == 128 * layout.KiB  # the image's last 128 KiB
    assert regions["extended"].end == layout.LOW_RAM_MAX
    assert (regions["high"].gpa, regions["high"].size) == (layout.FOUR_GIB, layout.GiB)


def test_e820_covers_ram_exactly():
    ram = 5 * layout.GiB
    entries = layout.e820_map(ram, 64 * layout.KiB)
    usable = sum(length for _, length, kind in entries if kind == layout.E820_RAM)
    # all of it but the 640 KiB-1 MiB hole and a direct boot's platform tables below the EBDA
    assert usable == ram - (layout.HIGH_MEMORY_START - layout.BOOT_TABLES_START)
    for (a, n, _), (b, _, _) in zip(entries, entries[1:]):
        assert a + n <= b


@pytest.mark.parametrize("ram,firmware", [
    (layout.MiB, 65536), (256 * layout.MiB, 1000), (256 * layout.MiB, 17 * layout.MiB),
    (256 * layout.MiB, 0), (256 * layout.MiB, 16 * layout.MiB + 65536), (layout.MiB * 3 + 1, 65536)])
def test_layout_rejects_bad_sizes(ram, firmware):
    with pytest.raises(ValueError):
        layout.check(ram, firmware)


def test_port_map_has_no_overlaps_and_matches_asm():
    layout.check(64 * layout.MiB, 64 * layout.KiB)
    asm = layout.asm_symbols()
    assert ".set PORT_FW_CFG, 0x510" in asm
    assert ".set PORT_MILESTONE_FW, 0xf5" in asm


def test_guest_memory_for_layout_places_firmware():
    image = bytes(range(256)) * 256
    memory = GuestMemory.for_layout(8 * layout.MiB, image)
    assert memory.read(0xFFFFFFF0, 16) == image[-16:]
    assert memory.read(0xFFFF0, 16) == image[-16:]
    with pytest.raises(GuestMemoryError):
        memory.read(0xA0000, 1)                   # VGA window is not memory
    memory.write(0x7FFFFF, b"z")
    with pytest.raises(GuestMemoryError):
        memory.write(0x800000, b"z")


def _resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


def test_prefault_makes_ram_resident_and_keeps_its_contents():
    memory = GuestMemory.for_layout(64 * layout.MiB, bytes(4096))
    before = _resident_kib()
    memory.write(0x1000000, b"kept")
    # Ranges outside RAM (the VGA window, past the end, ROM) are skipped, not errors.
    memory.prefault([(0x1000000, 16 * layout.MiB), (0xA0000, 4096), (64 * layout.MiB, 4096),
                     (0xFFFFF000, 4096)])
    assert memory.read(0x1000000, 4) == b"kept"
    assert memory.read(0x1800000, 4) == bytes(4)
    assert _resident_kib() - before >= 15 * 1024


def test_buffer_address_of_read_only_and_writable_buffers():
    data = b"0123456789"
    assert buffer_address(memoryview(data)[3:]) == ctypes.cast(data, ctypes.c_void_p).value + 3
    array = bytearray(16)
    assert buffer_address(array) == ctypes.addressof(ctypes.c_char.from_buffer(array))


@pytest.mark.parametrize("size", [ZERO_BY_DISCARD_MIN - 1, ZERO_BY_DISCARD_MIN, 0xE1AD9])
def test_a_zero_fill_clears_its_range_and_nothing_else(size):
    # from ZERO_BY_DISCARD_MIN the whole pages inside are dropped and the edges written
    memory = GuestMemory.for_layout(32 * layout.MiB, bytes(4096))
    start = 0x1000000 + 0x527
    memory.fill(start - 16, size + 32, 0x5A)
    memory.fill(start, size)
    assert memory.read(start, size) == bytes(size)
    assert memory.read(start - 16, 16) == memory.read(start + size, 16) == b"\x5a" * 16


@pytest.mark.parametrize("size", [4096, MEMMOVE_MIN + 12345])
def test_copy_into_copies_exactly_the_source(size):
    source = memoryview(bytes(range(251)) * (size // 251 + 2))[7:7 + size]    # read-only, odd offset
    memory = GuestMemory.for_layout(32 * layout.MiB, bytes(4096))
    memory.fill(0x100000, size + 2, 0xAA)
    copy_into(memory.view(0x100000, size + 1, writable=True), source)
    assert memory.read(0x100000, size) == bytes(source)
    assert memory.read(0x100000 + size, 2) == b"\xaa\xaa"              # nothing past the end


def test_copy_into_refuses_a_short_destination():
    with pytest.raises(ValueError):
        copy_into(memoryview(bytearray(4)), b"12345")
