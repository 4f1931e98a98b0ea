"""tinyvmm's BIOS runs etc/table-loader (firmware/acpi.S), as SeaBIOS runs QEMU's.

Each test hands the BIOS a loader script built here (QEMU's 128-byte command format)
with small fake tables, lets it run until it stops for want of a boot ROM, and reads
guest memory: where the files landed, the patched pointers and checksums, the e820
table the BIOS serves (its copy in the EBDA), and the debug console's report of every
command it skipped.
"""

import struct

import pytest

from tinyvmm import layout
from tinyvmm.machine import Machine

pytestmark = pytest.mark.kvm

MEM = 64 * layout.MiB
ALLOCATE, ADD_POINTER, ADD_CHECKSUM, WRITE_POINTER = 1, 2, 3, 4
HIGH, FSEG = 1, 2
FSEG_START, FSEG_END = 0xE0000, 0xF0000     # the BIOS's own image is 0xF0000 up
HIGH_ZONE = 0x40000
# firmware/bios.inc: the EBDA's fields this test reads
EBDA_E801_HIGH_64K, EBDA_E820_COUNT, EBDA_ROM_AREA_END, EBDA_E820_TABLE = 0x06, 0x0A, 0x14, 0xA0
SEABIOS_256K = "/usr/share/seabios/bios-256k.bin"


def name(text: str) -> bytes:
    return text.encode().ljust(56, b"\0")


def allocate(file: str, align: int, zone: int) -> bytes:
    return struct.pack("<I56sIB", ALLOCATE, name(file), align, zone).ljust(128, b"\0")


def add_pointer(dest: str, src: str, offset: int, size: int) -> bytes:
    return struct.pack("<I56s56sIB", ADD_POINTER, name(dest), name(src), offset, size).ljust(128, b"\0")


def add_checksum(file: str, offset: int, start: int, length: int) -> bytes:
    return struct.pack("<I56sIII", ADD_CHECKSUM, name(file), offset, start, length).ljust(128, b"\0")


def write_pointer(dest: str, src: str, dest_offset: int, src_offset: int, size: int) -> bytes:
    return struct.pack("<I56s56sIIB", WRITE_POINTER, name(dest), name(src), dest_offset,
                       src_offset, size).ljust(128, b"\0")


def script(*commands: bytes) -> bytes:
    """The commands (each padded to 128 bytes), zero-padded to 4 KiB as QEMU pads its loader."""
    return b"".join(command.ljust(128, b"\0") for command in commands).ljust(4096, b"\0")


def table(signature: bytes, body: bytes = b"") -> bytes:
    """An ACPI header (checksum 0, left to ADD_CHECKSUM) and `body`."""
    length = 36 + len(body)
    return struct.pack("<4sIBB6s8sI4sI", signature, length, 1, 0, b"TINYVM", b"TESTTABL", 1,
                       b"TVMM", 1) + body


# etc/acpi/tables: a TEST table at 0, the RSDT at 64 (its entry: the TEST table's offset),
# and at 128 pointer fields of every size for ADD_POINTER.
TEST_AT, RSDT_AT, FIELDS_AT = 0, 64, 128
TEST_LENGTH = 43                        # not a multiple of 4: the checksum's byte-wise tail
FIELD8, FIELD4, FIELD2, FIELD1 = 0x1_FFFF_FFF0, 0x10, 0x1234, 0x56
TABLES = bytearray(4096)
TABLES[TEST_AT:TEST_AT + TEST_LENGTH] = table(b"TEST", b"\x11\x22\x33\x44\x55\x66\x77")
TABLES[RSDT_AT:RSDT_AT + 40] = table(b"RSDT", struct.pack("<I", TEST_AT))
TABLES[FIELDS_AT:FIELDS_AT + 15] = struct.pack("<QIHB", FIELD8, FIELD4, FIELD2, FIELD1)
TABLES = bytes(TABLES)
RSDP = struct.pack("<8sB6sBI", b"RSD PTR ", 0, b"TINYVM", 0, RSDT_AT)

GOOD = [
    allocate("etc/acpi/rsdp", 16, FSEG),
    allocate("etc/acpi/tables", 64, HIGH),
    add_pointer("etc/acpi/tables", "etc/acpi/tables", RSDT_AT + 36, 4),
    add_checksum("etc/acpi/tables", TEST_AT + 9, TEST_AT, TEST_LENGTH),
    add_checksum("etc/acpi/tables", RSDT_AT + 9, RSDT_AT, 40),
    add_pointer("etc/acpi/tables", "etc/acpi/tables", FIELDS_AT, 8),
    add_pointer("etc/acpi/tables", "etc/acpi/tables", FIELDS_AT + 8, 4),
    add_pointer("etc/acpi/tables", "etc/acpi/tables", FIELDS_AT + 12, 2),
    add_pointer("etc/acpi/tables", "etc/acpi/tables", FIELDS_AT + 14, 1),
    add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 16, 4),
    add_checksum("etc/acpi/rsdp", 8, 0, 20),
]
FILES = {"etc/acpi/tables": TABLES, "etc/acpi/rsdp": RSDP}


def run_bios(loader: bytes, files=FILES, **options) -> tuple[Machine, str]:
    """A Machine with tinyvmm's BIOS and these fw_cfg files, run until the BIOS stops."""
    guest = Machine(fw_cfg={"etc/table-loader": loader, **files}, acpi=False, mem=MEM,
                    **options)
    try:
        result = guest.run(timeout=60, until_console="; stopping")
        log = guest.debugcon_output.decode(errors="replace")
        assert result.outcome.name == "EXPECTED", f"{result.message}\n{log}"
        assert "no bootable option ROM" in log
    except BaseException:
        guest.close()
        raise
    return guest, log


def find_rsdp(guest: Machine) -> int:
    """The RSDP as Linux finds it: 0xE0000-0xFFFFF on 16-byte steps, valid checksum."""
    area = guest.read_memory(0xE0000, 0x20000)
    for offset in range(0, len(area), 16):
        if area[offset:offset + 8] == b"RSD PTR " and sum(area[offset:offset + 20]) % 256 == 0:
            return 0xE0000 + offset
    raise AssertionError("no RSDP with a valid checksum in 0xE0000-0xFFFFF")


def e820(guest: Machine) -> list[tuple[int, int, int]]:
    """The memory map INT 15h E820h serves: (base, length, type), from the EBDA."""
    ebda = guest.read_memory(layout.EBDA_START, layout.EBDA_SIZE)
    count = struct.unpack_from("<H", ebda, EBDA_E820_COUNT)[0]
    return [struct.unpack_from("<QQI", ebda, EBDA_E820_TABLE + 20 * i) for i in range(count)]


def check_tables(guest: Machine) -> tuple[int, int]:
    """The installed RSDP and tables are consistent; returns their addresses."""
    rsdp = find_rsdp(guest)
    rsdt = struct.unpack("<I", guest.read_memory(rsdp + 16, 4))[0]
    tables = rsdt - RSDT_AT
    assert tables % 64 == 0
    assert guest.read_memory(rsdt, 4) == b"RSDT" and sum(guest.read_memory(rsdt, 40)) % 256 == 0
    test = struct.unpack("<I", guest.read_memory(rsdt + 36, 4))[0]
    assert test == tables + TEST_AT
    assert guest.read_memory(test, 4) == b"TEST" and sum(guest.read_memory(test, TEST_LENGTH)) % 256 == 0
    fields = struct.unpack("<QIHB", guest.read_memory(tables + FIELDS_AT, 15))
    assert fields == ((FIELD8 + tables) % (1 << 64), FIELD4 + tables,
                      (FIELD2 + tables) & 0xFFFF, (FIELD1 + tables) & 0xFF)
    return rsdp, tables


def test_the_bios_installs_the_tables_and_reserves_them():
    guest, log = run_bios(script(*GOOD))
    with guest:
        rsdp, tables = check_tables(guest)
        # The top of RAM, aligned as asked; the RSDP at the top of the E-segment.
        assert tables == (MEM - len(TABLES)) & ~63
        assert rsdp == FSEG_END - 32                    # 20 bytes, 16-byte aligned
        assert f"acpi: etc/acpi/rsdp at {rsdp:08x}\n" in log
        assert f"acpi: etc/acpi/tables at {tables:08x}\n" in log
        assert "skipped" not in log
        # The 64-bit add carried into the high dword (FIELD8 + address crosses 2**33).
        assert guest.read_memory(tables + FIELDS_AT + 4, 4) == struct.pack("<I", 2)
        # e820: RAM up to the tables' page, then reserved to the old end, sorted.
        reserved = tables & ~0xFFF
        entries = e820(guest)
        assert (layout.HIGH_MEMORY_START, reserved - layout.HIGH_MEMORY_START, 1) in entries
        assert (reserved, MEM - reserved, 2) in entries
        assert entries == sorted(entries)
        # E801h follows: 64 KiB blocks above 16 MiB end below the tables.
        ebda = guest.read_memory(layout.EBDA_START, 0x20)
        assert struct.unpack_from("<H", ebda, EBDA_E801_HIGH_64K)[0] == (reserved - 16 * layout.MiB) >> 16
        # Option ROMs now end where the RSDP begins.
        assert struct.unpack_from("<H", ebda, EBDA_ROM_AREA_END)[0] == rsdp >> 4
        # Nothing else was written in the zones.
        zone = MEM - HIGH_ZONE
        assert guest.read_memory(zone, tables - zone) == bytes(tables - zone)
        assert guest.read_memory(FSEG_START, rsdp - FSEG_START) == bytes(rsdp - FSEG_START)


def test_the_port_interface_installs_them_too_and_write_pointer_needs_dma():
    loader = script(*GOOD, write_pointer("etc/acpi/rsdp", "etc/acpi/tables", 0, 0, 4))
    guest, log = run_bios(loader, fw_cfg_dma=False)
    with guest:
        assert "fw_cfg: traditional interface" in log
        check_tables(guest)
        assert "acpi: command 000b: etc/acpi/rsdp: WRITE_POINTER needs fw_cfg DMA; skipped\n" in log


def test_write_pointer_reaches_the_vmm_through_a_dma_write():
    written = []
    guest = Machine(fw_cfg={"etc/table-loader": script(
        *GOOD,
        write_pointer("etc/vmgenid_addr", "etc/acpi/tables", 8, RSDT_AT, 8),
        write_pointer("etc/vmgenid_addr", "etc/acpi/tables", 12, 0, 8)),      # past the end
        **FILES}, acpi=False, mem=MEM)
    with guest:
        with pytest.warns(UserWarning, match="not under"):     # QEMU's name, as vmgenid's
            guest.add_fw_cfg_file("etc/vmgenid_addr", bytes(16), write=lambda *a: written.append(a))
        result = guest.run(timeout=60, until_console="; stopping")
        log = guest.debugcon_output.decode(errors="replace")
        assert result.outcome.name == "EXPECTED", log
        _, tables = check_tables(guest)
        assert written == [(8, struct.pack("<Q", tables + RSDT_AT))]
        assert ("acpi: command 000c: etc/vmgenid_addr: offset or length outside the file; "
                "skipped\n") in log


BAD = [
    (allocate("etc/nothing", 16, HIGH), "etc/nothing: no such fw_cfg file"),
    (allocate("etc/big", 16, HIGH), "etc/big: does not fit in its zone"),
    (allocate("etc/acpi/tables", 24, HIGH), "etc/acpi/tables: alignment not a power of two"),
    (allocate("etc/acpi/tables", 0, HIGH), "etc/acpi/tables: alignment not a power of two"),
    (allocate("etc/acpi/tables", 64, 3), "etc/acpi/tables: unknown zone"),
    (allocate("etc/fseg-big", 16, FSEG), "etc/fseg-big: does not fit in its zone"),
    (allocate("etc/empty", 16, HIGH), "etc/empty: empty"),
    (add_checksum("etc/acpi/tables", 9, 0, 40), "etc/acpi/tables: not allocated"),
    (struct.pack("<I", ALLOCATE) + b"x" * 56 + struct.pack("<IB", 16, HIGH),
     "x" * 56 + ": name without its NUL"),
    (struct.pack("<I", 7), "unknown command"),
]
AFTER_ALLOCATION = [
    (allocate("etc/acpi/tables", 64, HIGH), "etc/acpi/tables: allocated twice"),
    (add_pointer("etc/acpi/tables", "etc/acpi/tables", 4094, 4),
     "etc/acpi/tables: offset or length outside the file"),
    (add_pointer("etc/acpi/tables", "etc/acpi/tables", 0xFFFFFFFF, 1),
     "etc/acpi/tables: offset or length outside the file"),
    (add_pointer("etc/acpi/tables", "etc/acpi/tables", 0, 3),
     "etc/acpi/tables: pointer size not 1, 2, 4 or 8"),
    (add_pointer("etc/acpi/tables", "etc/acpi/rsdp", 0, 4), "etc/acpi/rsdp: not allocated"),
    (add_checksum("etc/acpi/tables", 4096, 0, 1), "etc/acpi/tables: offset or length outside the file"),
    (add_checksum("etc/acpi/tables", 9, 4000, 97), "etc/acpi/tables: offset or length outside the file"),
    (add_checksum("etc/acpi/tables", 9, 0xFFFFFF00, 0x200),
     "etc/acpi/tables: offset or length outside the file"),
]


def test_bad_commands_are_skipped_with_a_message_and_write_nothing():
    files = {**FILES, "etc/big": bytes(HIGH_ZONE + 1), "etc/fseg-big": bytes(0x10001),
             "etc/empty": b""}
    commands = [c for c, _ in BAD] + [allocate("etc/acpi/tables", 64, HIGH)] + \
               [c for c, _ in AFTER_ALLOCATION]
    guest, log = run_bios(script(*commands), files)
    with guest:
        for index, (_, message) in enumerate(BAD):
            assert f"acpi: command {index:04x}: {message}; skipped\n" in log, log
        for index, (_, message) in enumerate(AFTER_ALLOCATION, start=len(BAD) + 1):
            assert f"acpi: command {index:04x}: {message}; skipped\n" in log, log
        assert log.count("; skipped") == len(BAD) + len(AFTER_ALLOCATION)
        tables = (MEM - len(TABLES)) & ~63
        assert f"acpi: etc/acpi/tables at {tables:08x}\n" in log
        # The file as it came, and nothing around it.
        assert guest.read_memory(tables, len(TABLES)) == TABLES
        zone = MEM - HIGH_ZONE
        assert guest.read_memory(zone, tables - zone) == bytes(tables - zone)
        assert guest.read_memory(FSEG_START, FSEG_END - FSEG_START) == bytes(FSEG_END - FSEG_START)


def test_without_a_loader_the_memory_map_is_unchanged():
    guest = Machine(acpi=False, mem=MEM)
    with guest:
        guest.run(timeout=60, until_console="; stopping")
        assert "acpi:" not in guest.debugcon_output.decode()
        assert (layout.HIGH_MEMORY_START, MEM - layout.HIGH_MEMORY_START, 1) in e820(guest)
        assert all(kind != 2 or base < layout.HIGH_MEMORY_START or base >= MEM
                   for base, _, kind in e820(guest))


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists(SEABIOS_256K), reason="needs Debian's seabios")
def test_seabios_installs_the_same_script_alike():
    """SeaBIOS runs the same script: its RSDP and tables pass the same checks."""
    guest = Machine(SEABIOS_256K, fw_cfg={"etc/table-loader": script(*GOOD), **FILES},
                    acpi=False, mem=MEM)
    with guest:
        result = guest.run(timeout=120, until_console="No bootable device")
        assert result.outcome.name == "EXPECTED", result.message
        _, tables = check_tables(guest)
        assert MEM - HIGH_ZONE <= tables < MEM
