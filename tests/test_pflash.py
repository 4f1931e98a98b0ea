"""pflash: the CFI flash device alone (QEMU 7.2's status values), its configuration, and a
guest booted from a flash unit programming another."""

import os

import pytest

from tinyvmm.devices.pflash import SECTOR_SIZE, Pflash, cfi_table


def put(dev, offset, value):
    dev.write(offset, 1, bytes([value]))


def get(dev, offset, size=1):
    return int.from_bytes(dev.read(offset, size), "little")


def make(size=2 * SECTOR_SIZE, read_only=False, fill=0x5A, **options):
    storage = bytearray([fill]) * size
    modes = []
    dev = Pflash(storage, read_only=read_only, on_array=modes.append, **options)
    return dev, storage, modes


# --- the device model ------------------------------------------------------------------------
def test_array_mode_reads_contents_and_starts_ready():
    dev, storage, _ = make()
    storage[5:9] = b"\x01\x02\x03\x04"
    assert dev.in_array_mode and dev.status == 0x80
    assert dev.read(5, 4) == b"\x01\x02\x03\x04"


def test_read_status_then_read_array():
    dev, _, modes = make()
    put(dev, 0x10, 0x70)
    assert not dev.in_array_mode and modes == [False]
    assert get(dev, 0x123) == 0x80
    assert get(dev, 0, 4) == 0x00800080       # 4-byte reads repeat it at bits 16-23
    put(dev, 0x10, 0xFF)
    assert dev.in_array_mode and modes == [False, True]
    assert get(dev, 0x10) == 0x5A


def test_clear_status_returns_to_array_mode():
    dev, _, modes = make()
    put(dev, 0, 0x50)
    assert dev.status == 0 and dev.in_array_mode and modes == []
    assert get(dev, 0) == 0x5A


def test_ovmf_detection_sequence_says_flash():
    """QemuFlashDetected (reference K.2): a byte that is not 0x00/0x50/0x70; write 0x50 and
    read it back (0x50 would be RAM); write 0x70 and read: 0x00 means flash; then 0xFF."""
    dev, _, _ = make()
    offset = 0x10
    original = get(dev, offset)
    assert original not in (0x00, 0x50, 0x70)
    put(dev, offset, 0x50)
    assert get(dev, offset) != 0x50
    put(dev, offset, 0x70)
    answer = get(dev, offset)
    put(dev, offset, 0xFF)
    kind = "ram" if answer == 0x70 else "rom" if answer == original else \
        "flash" if answer == 0x00 else "unknown"
    assert kind == "flash"
    assert dev.in_array_mode and get(dev, offset) == original


@pytest.mark.parametrize("command", [0x10, 0x40])
def test_program_pairs_then_read_array(command):
    dev, storage, modes = make()
    for i, byte in enumerate(b"VARS"):
        put(dev, 0x100 + i, command)
        put(dev, 0x100 + i, byte)
        assert get(dev, 0x100 + i) == 0x80    # status until read array
    put(dev, 0x103, 0xFF)
    assert bytes(storage[0x100:0x104]) == b"VARS" and dev.read(0x100, 4) == b"VARS"
    assert dev.programmed == 4 and modes == [False, True]


def test_program_stores_the_byte_as_given():
    dev, storage, _ = make(fill=0x00)     # QEMU does not AND: bits can be set by programming
    put(dev, 7, 0x10)
    put(dev, 7, 0xA5)
    assert storage[7] == 0xA5


def test_block_erase_and_confirm():
    dev, storage, _ = make()
    put(dev, SECTOR_SIZE + 0x123, 0x20)
    assert bytes(storage[SECTOR_SIZE:]) == b"\xff" * SECTOR_SIZE     # erased at once
    assert bytes(storage[:SECTOR_SIZE]) == b"\x5a" * SECTOR_SIZE
    put(dev, SECTOR_SIZE, 0xD0)
    assert get(dev, SECTOR_SIZE) == 0x80
    put(dev, 0, 0xFF)
    assert get(dev, SECTOR_SIZE) == 0xFF and dev.erased == 1


def test_erase_followed_by_another_byte_returns_to_array():
    dev, _, _ = make()
    put(dev, 0, 0x20)
    put(dev, 0, 0x42)                     # QEMU: unimplemented sequence, read array
    assert dev.in_array_mode and get(dev, 0) == 0xFF and dev.status == 0x80


def test_read_only_unit_refuses_program_and_erase():
    dev, storage, _ = make(read_only=True)
    put(dev, 3, 0x10)
    put(dev, 3, 0x00)
    assert get(dev, 3) == 0x90            # ready | program error
    assert storage[3] == 0x5A
    put(dev, 0, 0x50)
    put(dev, 0, 0x20)
    put(dev, 0, 0xD0)
    assert get(dev, 0) == 0xA0            # ready | erase error
    put(dev, 0, 0xFF)
    assert bytes(storage) == b"\x5a" * len(storage)


def test_identifier_and_cfi_query():
    dev, _, _ = make(size=0x20000)
    put(dev, 0, 0x90)
    assert get(dev, 0) == 0 and get(dev, 1) == 0
    put(dev, 0, 0xFF)
    put(dev, 0x55, 0x98)
    assert dev.read(0x10, 1) + dev.read(0x11, 1) + dev.read(0x12, 1) == b"QRY"
    assert get(dev, 0x13) == 0x01 and get(dev, 0x14) == 0x00   # Intel/Sharp command set
    assert get(dev, 0x27) == 17                                # 128 KiB
    assert get(dev, 0x2D) | get(dev, 0x2E) << 8 == 31          # 32 sectors...
    assert get(dev, 0x2F) << 8 | get(dev, 0x30) << 16 == SECTOR_SIZE   # ... of 4 KiB
    assert get(dev, 0x60) == 0
    put(dev, 0, 0x42)                     # QEMU: anything but 0xFF keeps the query mode
    assert get(dev, 0x10) == ord("Q")
    put(dev, 0, 0xFF)
    assert get(dev, 0x10) == 0x5A


def test_cfi_table_of_ovmf_code_size():
    table = cfi_table(0x1E0000)
    assert table[0x27] == 17 and table[0x2D] | table[0x2E] << 8 == 0x1E0 - 1


@pytest.mark.parametrize("value", [0x01, 0x30, 0xE8, 0xC0, 0xD0])
def test_unknown_commands_return_to_array_without_error(value):
    dev, storage, modes = make()
    put(dev, 0, 0x70)
    put(dev, 0, value)
    assert dev.in_array_mode and dev.status == 0x80 and modes == [False, True]
    assert bytes(storage) == b"\x5a" * len(storage)


def test_lock_setup_and_confirm():
    dev, _, _ = make()
    put(dev, 0, 0x60)
    put(dev, 0, 0x01)
    assert get(dev, 0) == 0x80
    put(dev, 0, 0xFF)
    assert dev.in_array_mode


def test_wide_program_and_eight_byte_write():
    dev, storage, _ = make()
    dev.write(0x20, 2, (0x10).to_bytes(2, "little"))
    dev.write(0x20, 2, b"\x34\x12")
    put(dev, 0, 0xFF)
    assert storage[0x20:0x22] == b"\x34\x12"
    dev.write(0, 8, b"\xff" * 8)          # split in two 4-byte accesses: read array twice
    assert dev.in_array_mode


def test_writes_reach_the_file(tmp_path):
    path = tmp_path / "vars.fd"
    path.write_bytes(b"\x5a" * 2 * SECTOR_SIZE)
    fd = os.open(path, os.O_RDWR)
    try:
        dev = Pflash(bytearray(path.read_bytes()), fd=fd)
        put(dev, 9, 0x10)
        put(dev, 9, 0x33)
        put(dev, SECTOR_SIZE, 0x20)
        put(dev, SECTOR_SIZE, 0xD0)
        put(dev, 0, 0xFF)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[9] == 0x33 and data[SECTOR_SIZE:] == b"\xff" * SECTOR_SIZE


def test_file_write_error_is_a_warning_not_a_crash(tmp_path):
    path = tmp_path / "vars.fd"
    path.write_bytes(bytes(SECTOR_SIZE))
    fd = os.open(path, os.O_RDONLY)
    warnings = []
    try:
        dev = Pflash(bytearray(SECTOR_SIZE), fd=fd, warn=warnings.append)
        for _ in range(2):
            put(dev, 1, 0x10)
            put(dev, 1, 0x22)
    finally:
        os.close(fd)
    assert len(warnings) == 1 and "cannot write" in warnings[0]


def test_size_must_be_whole_sectors():
    with pytest.raises(ValueError):
        Pflash(bytearray(1000))
