"""fw_cfg unit tests: registry, legacy ports, DMA, MMIO, options, `fw-cfg list`, trace; no KVM needed."""

import argparse
import io
import json
import struct
from types import SimpleNamespace

import pytest
from fw_cfg_client import DATA_PORT, DMA_PORT, SELECTOR_PORT, MmioClient, PortClient
from guest_memory import guest_memory
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tinyvmm import cli, layout
from tinyvmm.bus import Bus, PioBus, RegisterDevice
from tinyvmm.cli.arguments import machine_spec, parse_fw_cfg_mmio
from tinyvmm.cpu import guest_has_amd_ht_hole
from tinyvmm.debug.trace import Tracer
from tinyvmm.fw_cfg import items as fwi
from tinyvmm.fw_cfg.attach import attach_fw_cfg, build_fw_cfg_items, check_mmio_window, describe_fw_cfg
from tinyvmm.fw_cfg.device import (
    DMA_DESCRIPTOR,
    FW_CFG_DMA_CTL_ERROR,
    FW_CFG_DMA_CTL_READ,
    FW_CFG_DMA_CTL_SELECT,
    FW_CFG_DMA_CTL_SKIP,
    FW_CFG_DMA_CTL_WRITE,
    MMIO_DMA,
    MMIO_SIZE,
    FwCfg,
    FwCfgDmaPorts,
    FwCfgIoPorts,
    FwCfgMmio,
)
from tinyvmm.fw_cfg.items import FwCfgConfigError, FwCfgItems
from tinyvmm.memory import GuestMemory, GuestMemoryError

READ, WRITE, SKIP, SELECT, ERROR = (FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_WRITE,
                                    FW_CFG_DMA_CTL_SKIP, FW_CFG_DMA_CTL_SELECT,
                                    FW_CFG_DMA_CTL_ERROR)

# The fake guest memory: RAM, a ROM, a hole, two adjacent RAM regions, and a page
# at the very top of the 64-bit space (for wrap-around cases).
RAM0 = (0x0, 0x10000)
ROM = (0x10000, 0x2000)
RAM1 = (0x20000, 0x10000)
RAM2 = (0x30000, 0x1000)          # directly follows RAM1
TOP = ((1 << 64) - 0x1000, 0x1000)
HOLE = 0x18000
MMIO_BASE = 0xFEF00000
BLOB = bytes((i * 7 + 3) & 0xFF for i in range(3000))


def make_memory() -> GuestMemory:
    rom = bytearray(b"\xc3" * ROM[1])
    return guest_memory(RAM0, (ROM[0], rom, False), RAM1, RAM2, TOP)


def snapshot(memory: GuestMemory) -> list[bytes]:
    return [memory.read(gpa, size) for gpa, size, _ in memory.regions]


def make_items() -> FwCfgItems:
    items = FwCfgItems()
    items.add_u64(fwi.FW_CFG_RAM_SIZE, 0x1234_5678_9ABC)
    items.add_u16(fwi.FW_CFG_NB_CPUS, 1)
    items.add_file("opt/blob", BLOB)
    items.add_file("opt/rw", bytes(range(16)), writable=True)
    items.add_file("etc/e820", fwi.e820_file(64 * layout.MiB, amd_ht_hole=False))
    items.add_item(fwi.FW_CFG_IRQ0_OVERRIDE, struct.pack("<I", 1))
    return items


class Rig:
    """A device with its three faces on a port bus and an MMIO bus over make_memory()."""

    def __init__(self, dma=True, tracer=None, items=None):
        self.memory = make_memory()
        self.items = items or make_items()
        self.fw = FwCfg(self.items, self.memory, dma_enabled=dma, tracer=tracer)
        self.pio = PioBus()
        self.mmio = Bus("mmio")
        self.pio.register(*layout.PORTS["fw_cfg"], FwCfgIoPorts(self.fw))
        if dma:
            self.pio.register(*layout.PORTS["fw_cfg_dma"], FwCfgDmaPorts(self.fw))
        self.mmio.register(MMIO_BASE, MMIO_SIZE if dma else MMIO_DMA, FwCfgMmio(self.fw, dma))
        self.port = PortClient(self.pio, self.memory, scratch=0x100)
        self.mm = MmioClient(self.mmio, MMIO_BASE, self.memory, scratch=0x100)

    def key(self, name):
        return self.items.file_key(name)


@pytest.fixture
def rig():
    return Rig()


# --- registry -------------------------------------------------------------------------
def test_well_known_key_numbers_match_the_spec():
    expected = {"SIGNATURE": 0, "ID": 1, "UUID": 2, "RAM_SIZE": 3, "NOGRAPHIC": 4, "NB_CPUS": 5,
                "KERNEL_ADDR": 7, "KERNEL_SIZE": 8, "INITRD_ADDR": 0x0A, "INITRD_SIZE": 0x0B,
                "BOOT_MENU": 0x0E, "MAX_CPUS": 0x0F, "KERNEL_ENTRY": 0x10, "KERNEL_DATA": 0x11,
                "INITRD_DATA": 0x12, "CMDLINE_ADDR": 0x13, "CMDLINE_SIZE": 0x14,
                "CMDLINE_DATA": 0x15, "SETUP_ADDR": 0x16, "SETUP_SIZE": 0x17,
                "SETUP_DATA": 0x18, "FILE_DIR": 0x19, "FILE_FIRST": 0x20}
    for name, number in expected.items():
        assert getattr(fwi, "FW_CFG_" + name) == number, name


def test_files_get_keys_from_0x20_in_name_order_whatever_the_insertion_order():
    items = FwCfgItems()
    for name in ("opt/zeta", "bootorder", "genroms/linuxboot_dma.bin", "etc/e820", "opt/a"):
        items.add_file(name, name.encode())
    assert items.file_names() == ["bootorder", "etc/e820", "genroms/linuxboot_dma.bin",
                                  "opt/a", "opt/zeta"]
    assert [items.file_key(n) for n in items.file_names()] == [0x20, 0x21, 0x22, 0x23, 0x24]
    assert bytes(items.lookup(0x23).data) == b"opt/a"


def test_file_dir_blob_is_big_endian_count_then_64_byte_entries_for_every_slot():
    items = FwCfgItems(file_slots=0x10)
    items.add_file("opt/b", b"x" * 0x1234)
    items.add_file("opt/a", b"")
    blob = bytes(items.lookup(fwi.FW_CFG_FILE_DIR).data)
    assert len(blob) == 4 + 64 * 0x10
    assert blob[:4] == b"\x00\x00\x00\x02"
    first, second = blob[4:68], blob[68:132]
    assert first[:4] == b"\x00\x00\x00\x00" and first[4:6] == b"\x00\x20"
    assert first[8:] == b"opt/a".ljust(56, b"\0")
    assert second[:4] == b"\x00\x00\x12\x34" and second[4:6] == b"\x00\x21"
    assert second[6:8] == b"\0\0" and second[8:13] == b"opt/b"
    assert blob[132:] == bytes(len(blob) - 132)


def test_file_dir_is_absent_until_a_file_exists_and_tracks_later_files():
    items = FwCfgItems()
    assert items.lookup(fwi.FW_CFG_FILE_DIR) is None
    items.add_file("opt/one", b"1")
    assert bytes(items.lookup(fwi.FW_CFG_FILE_DIR).data)[:4] == b"\0\0\0\1"
    items.add_file("opt/two", b"22")
    assert bytes(items.lookup(fwi.FW_CFG_FILE_DIR).data)[:4] == b"\0\0\0\2"


@pytest.mark.parametrize("name, ok", [("o" * 55, True), ("o" * 56, False), ("", False),
                                      ("opt/\0x", False), ("opt/é" * 11, False)])
def test_file_name_limit_is_55_bytes(name, ok):
    items = FwCfgItems()
    if ok:
        items.add_file(name, b"")
        assert items.file(name).key == 0x20
    else:
        with pytest.raises(FwCfgConfigError):
            items.add_file(name, b"")


def test_registry_rejects_duplicates_full_slots_and_misplaced_keys():
    items = FwCfgItems(file_slots=0x10)
    items.add_file("opt/x", b"")
    with pytest.raises(FwCfgConfigError, match="duplicate"):
        items.add_file("opt/x", b"again")
    for i in range(0x0F):
        items.add_file(f"opt/{i:02}", b"")
    with pytest.raises(FwCfgConfigError, match="slots"):
        items.add_file("opt/one-too-many", b"")
    items.add_u32(fwi.FW_CFG_KERNEL_ADDR, 0x100000)
    with pytest.raises(FwCfgConfigError, match="already set"):
        items.add_u32(fwi.FW_CFG_KERNEL_ADDR, 0x200000)
    items.add_u32(fwi.FW_CFG_KERNEL_ADDR, 0x200000, replace=True)
    assert bytes(items.lookup(fwi.FW_CFG_KERNEL_ADDR).data) == b"\x00\x00\x20\x00"
    for key in (fwi.FW_CFG_FILE_DIR, 0x20, 0x4001, 0x10000, fwi.FW_CFG_ARCH_LOCAL | 0x30):
        with pytest.raises(FwCfgConfigError):
            items.add_item(key, b"x")


def test_numeric_items_are_little_endian_and_strings_nul_terminated():
    items = FwCfgItems()
    items.add_u16(fwi.FW_CFG_NB_CPUS, 0x0102)
    items.add_u32(fwi.FW_CFG_KERNEL_SIZE, 0x01020304)
    items.add_u64(fwi.FW_CFG_RAM_SIZE, 0x0102030405060708)
    items.add_string(fwi.FW_CFG_CMDLINE_DATA, "console=ttyS0")
    assert bytes(items.lookup(fwi.FW_CFG_NB_CPUS).data) == b"\x02\x01"
    assert bytes(items.lookup(fwi.FW_CFG_KERNEL_SIZE).data) == b"\x04\x03\x02\x01"
    assert bytes(items.lookup(fwi.FW_CFG_RAM_SIZE).data) == bytes(range(8, 0, -1))
    assert bytes(items.lookup(fwi.FW_CFG_CMDLINE_DATA).data) == b"console=ttyS0\0"


def decode_e820(blob: bytes) -> list[tuple[int, int, int]]:
    assert len(blob) % 20 == 0
    return [struct.unpack_from("<QQI", blob, i) for i in range(0, len(blob), 20)]


@pytest.mark.parametrize("ram, low, high", [
    (512 * layout.MiB, 512 * layout.MiB, 0),
    (3 * layout.GiB + 256 * layout.MiB, 3 * layout.GiB + 256 * layout.MiB, 0),   # below 3.5 GiB: all low
    (3584 * layout.MiB, 3 * layout.GiB, 512 * layout.MiB),                       # from 3.5 GiB: 3 GiB low
    (5 * layout.GiB, 3 * layout.GiB, 2 * layout.GiB),
])
def test_e820_file_is_qemus_map(ram, low, high):
    """QEMU 7.2's pc machine under KVM (observed with tests/guests/fwcfg_dump.S): the KVM pages,
    the AMD HyperTransport range for an AMD vCPU, RAM from 0 (firmware carves its own areas),
    RAM above 4 GiB; in that order."""
    kvm_pages = (0xFEFFC000, 0x4000, 2)
    expected = [kvm_pages, (0, low, 1)] + ([(4 * layout.GiB, high, 1)] if high else [])
    assert decode_e820(fwi.e820_file(ram, amd_ht_hole=False)) == expected
    assert decode_e820(fwi.e820_file(ram, amd_ht_hole=True)) == \
        [kvm_pages, (0xFD_0000_0000, 12 * layout.GiB, 2)] + expected[1:]
    assert layout.low_ram_end(ram) == low


# --- user items (--fw-cfg) ---------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("name=opt/a,string=hello", fwi.UserItemSpec("opt/a", string="hello")),
    ("opt/a,file=/x/y", fwi.UserItemSpec("opt/a", file="/x/y")),
    ("name=opt/a,string=a,,b,,", fwi.UserItemSpec("opt/a", string="a,b,")),
    ("file=/p,name=opt/q", fwi.UserItemSpec("opt/q", file="/p")),
])
def test_user_item_syntax_is_qemus(text, expected):
    assert fwi.parse_user_item(text) == expected


@pytest.mark.parametrize("text, message", [
    ("string=x", "name="), ("name=opt/a", "exactly one"), ("name=opt/a,string=", "exactly one"),
    ("name=opt/a,string=x,file=/y", "exactly one"), ("name=opt/a,size=3", "unknown parameter"),
    ("name=opt/a,gen_id=g", "not supported"), ("name=opt/a,string=x,junk", "KEY=VALUE"),
    ("name=opt/" + "x" * 52 + ",string=x", "limit is 55"),
])
def test_bad_user_items_are_refused_with_a_reason(text, message):
    with pytest.raises(FwCfgConfigError, match=message):
        fwi.parse_user_item(text)


def test_user_string_has_no_nul_and_files_are_read_whole(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"\x00\x01binary\xff")
    assert fwi.parse_user_item("name=opt/s,string=abc").load() == b"abc"
    assert fwi.parse_user_item(f"name=opt/f,file={path}").load() == b"\x00\x01binary\xff"


def test_unreadable_user_files_fail_before_the_guest_with_the_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FwCfgConfigError, match=str(missing)):
        fwi.parse_user_item(f"name=opt/m,file={missing}").load()
    with pytest.raises(FwCfgConfigError, match="directory"):
        fwi.add_user_items(FwCfgItems(), [fwi.parse_user_item(f"name=opt/d,file={tmp_path}")])


def test_names_outside_opt_get_a_warning_and_opt_names_none():
    warnings = []
    specs = [fwi.parse_user_item("name=opt/fine,string=1"),
             fwi.parse_user_item("name=etc/mine,string=2")]
    items = FwCfgItems()
    fwi.add_user_items(items, specs, warn=warnings.append)
    assert len(warnings) == 1 and "etc/mine" in warnings[0] and "opt/" in warnings[0]
    assert bytes(items.file("etc/mine").data) == b"2"


def test_warning_goes_to_stderr_by_default(capsys):
    fwi.add_user_items(FwCfgItems(), [fwi.parse_user_item("name=mine,string=2")])
    assert "warning" in capsys.readouterr().err


# --- the legacy interface -----------------------------------------------------------------
def test_signature_and_id_through_the_ports(rig):
    assert rig.port.item(fwi.FW_CFG_SIGNATURE, 4) == b"QEMU"
    assert rig.port.item(fwi.FW_CFG_ID, 4) == b"\x03\x00\x00\x00"
    assert Rig(dma=False).port.item(fwi.FW_CFG_ID, 4) == b"\x01\x00\x00\x00"


def test_device_starts_on_the_signature_and_reset_reselects_it(rig):
    assert rig.port.read(4) == b"QEMU"
    rig.port.select(fwi.FW_CFG_RAM_SIZE)
    rig.port.read(3)
    rig.fw.reset()
    assert rig.port.read(4) == b"QEMU"


def test_selecting_resets_the_offset(rig):
    key = rig.key("opt/blob")
    rig.port.select(key)
    assert rig.port.read(10) == BLOB[:10]
    rig.port.select(key)
    assert rig.port.read(5) == BLOB[:5]
    assert rig.port.read_bytewise(5) == BLOB[5:10]


def test_write_channel_bit_is_ignored_for_lookup(rig):
    rig.port.select(0x4000 | fwi.FW_CFG_ID)
    assert rig.port.read(4) == b"\x03\0\0\0"
    rig.port.select(0x4000 | rig.key("opt/blob"))
    assert rig.port.read(8) == BLOB[:8]


def test_arch_local_keys_have_their_own_table(rig):
    rig.port.select(fwi.FW_CFG_IRQ0_OVERRIDE)
    assert rig.port.read(4) == b"\1\0\0\0"
    rig.port.select(fwi.FW_CFG_IRQ0_OVERRIDE & 0x3FFF)      # 0x0002, UUID: not populated here
    assert rig.port.read(4) == bytes(4)
    rig.port.select(0x8000 | fwi.FW_CFG_ID)                  # nothing in the arch table at 1
    assert rig.port.read(4) == bytes(4)


def test_reads_past_the_end_return_zero_and_the_offset_stays_at_the_end(rig):
    rig.port.select(fwi.FW_CFG_NB_CPUS)
    assert rig.port.read(6) == b"\1\0\0\0\0\0"
    assert rig.port.read_bytewise(3) == bytes(3)
    assert rig.fw.offset == 2


@pytest.mark.parametrize("key", [fwi.FW_CFG_BOOT_DEVICE, 0x20 + 0x20, 0x3FFF, 0xBFFF, 0x8123])
def test_unpopulated_and_out_of_range_keys_read_zero(rig, key):
    rig.port.select(key)
    assert rig.port.read(16) == bytes(16)
    assert rig.port.read_bytewise(2) == b"\0\0"


def test_data_port_writes_are_ignored(rig):
    key = rig.key("opt/rw")
    rig.port.select(key)
    rig.port.read(2)
    rig.pio.write(DATA_PORT, 1, b"\xaa\xbb\xcc")              # also as string I/O
    rig.pio.write(SELECTOR_PORT, 1, b"\x00")                  # a byte at 0x510 is a data write
    assert rig.fw.selected == key
    assert rig.port.read(3) == bytes([2, 3, 4])
    assert bytes(rig.items.file("opt/rw").data) == bytes(range(16))


def test_byte_reads_at_the_selector_port_read_data_as_in_qemu(rig):
    rig.port.select(fwi.FW_CFG_SIGNATURE)
    assert rig.pio.read(SELECTOR_PORT, 1) == b"Q"
    assert rig.pio.read(DATA_PORT, 1) == b"E"


def test_wide_port_reads_are_invalid_and_read_zero_without_moving(rig):
    rig.port.select(fwi.FW_CFG_SIGNATURE)
    assert rig.pio.read(SELECTOR_PORT, 2) == b"\0\0"
    assert rig.port.read(4) == b"QEMU"


def test_rep_insb_of_1024_bytes_is_one_slice(rig):
    rig.port.select(rig.key("opt/blob"))
    assert rig.port.read(1024) == BLOB[:1024]
    assert rig.port.read(1024) == BLOB[1024:2048]
    assert rig.port.read(1024) == BLOB[2048:] + bytes(3 * 1024 - len(BLOB))


def test_rep_outsw_to_the_selector_selects_each_in_turn(rig):
    rig.pio.write(SELECTOR_PORT, 2, b"\x01\x00\x00\x00")
    assert rig.fw.selected == 0 and rig.port.read(4) == b"QEMU"


def test_file_directory_through_the_ports_lists_every_file_sorted(rig):
    listing = rig.port.file_dir()
    assert [name for name, _, _ in listing] == ["etc/e820", "opt/blob", "opt/rw"]
    assert [key for _, key, _ in listing] == [0x20, 0x21, 0x22]
    assert [size for _, _, size in listing] == [len(fwi.e820_file(64 * layout.MiB, amd_ht_hole=False)),
                                                len(BLOB), 16]
    key, size = rig.port.find("opt/blob")
    assert rig.port.item(key, size) == BLOB


# --- the DMA interface -----------------------------------------------------------------------
def test_dma_register_reads_qemu_cfg_at_every_width(rig):
    assert rig.port.dma_signature() == b"QEMU CFG"
    assert b"".join(rig.pio.read(DMA_PORT + i, 1) for i in range(8)) == b"QEMU CFG"
    assert rig.pio.read(DMA_PORT + 2, 2) == b"MU"
    # Misaligned, as QEMU 7.2 reads them: split into aligned reads, each valid.
    assert rig.pio.read(DMA_PORT + 1, 2) == b"EM"
    assert rig.pio.read(DMA_PORT + 3, 4) == b"U CF"
    assert rig.pio.read(DMA_PORT + 6, 2) == b"FG"
    assert rig.pio.read(DMA_PORT + 4, 4, count=2) == b" CFG CFG"


def test_dma_read_with_select_copies_the_item(rig):
    status = rig.port.dma_read(rig.key("opt/blob"), len(BLOB), 0x2000)
    assert status == 0
    assert rig.memory.read(0x2000, len(BLOB)) == BLOB
    assert rig.fw.offset == len(BLOB)
    assert (rig.fw.dma_transfers, rig.fw.dma_bytes) == (1, len(BLOB))


def test_dma_counters_count_item_bytes_moved_not_skips_or_zero_fill(rig):
    rig.port.dma(rig.key("opt/rw") << 16 | SELECT | SKIP, 4, 0)
    rig.port.dma(WRITE, 4, 0x4000)
    rig.port.dma(READ, 100, 0x4000)                # 8 item bytes, then zeros
    rig.port.dma(READ, 4, HOLE)                    # an error moves nothing
    rig.port.start_dma(HOLE)                       # nor does an unreadable descriptor
    assert (rig.fw.dma_transfers, rig.fw.dma_bytes) == (5, 4 + 8)


def test_dma_control_is_written_back_big_endian_and_only_there(rig):
    rig.memory.write(0x100, DMA_DESCRIPTOR.pack(SELECT | WRITE | fwi.FW_CFG_SIGNATURE << 16,
                                                4, 0x3000))
    before = snapshot(rig.memory)
    rig.port.start_dma(0x100)
    after = snapshot(rig.memory)
    assert rig.memory.read(0x100, 4) == b"\0\0\0\1"
    changed = [i for i, (a, b) in enumerate(zip(before[0], after[0])) if a != b]
    assert changed and all(0x100 <= i < 0x104 for i in changed)
    assert before[1:] == after[1:]


@pytest.mark.parametrize("control", range(32))
def test_every_control_bit_combination(control):
    """SELECT picks the key in bits 31..16; READ wins over WRITE, which wins over SKIP."""
    rig = Rig()
    rw, blob = rig.key("opt/rw"), rig.key("opt/blob")
    rig.port.select(blob)                           # what stays current without SELECT
    rig.port.read(3)
    rig.memory.write(0x4000, b"\xaa" * 8)
    rig.memory.write(0x5000, b"WRITTEN!")
    length = 8
    address = 0x5000 if control & WRITE and not control & READ else 0x4000
    before_rw = bytes(rig.items.file("opt/rw").data)
    status = rig.port.dma(rw << 16 | control, length, address)

    current, offset = (rw, 0) if control & SELECT else (blob, 3)
    item = bytes(rig.items.lookup(current).data)
    if control & READ:
        assert status == 0
        assert rig.memory.read(0x4000, 8) == item[offset:offset + 8]
        assert rig.fw.offset == offset + 8
    elif control & WRITE:
        if current == rw:
            assert status == 0
            assert bytes(rig.items.file("opt/rw").data) == b"WRITTEN!" + before_rw[8:]
        else:
            assert status == ERROR
            assert rig.items.file("opt/blob").data == BLOB
        assert rig.fw.offset == offset + 8
    elif control & SKIP:
        assert status == 0
        assert rig.fw.offset == offset + 8
    else:
        assert status == 0
        assert rig.fw.offset == offset
    assert rig.fw.selected == current
    if not control & READ:
        assert rig.memory.read(0x4000, 8) == b"\xaa" * 8
    if not (control & WRITE and not control & READ and current == rw):
        assert bytes(rig.items.file("opt/rw").data) == before_rw


def test_dma_read_past_the_end_zero_fills_without_error(rig):
    rig.memory.write(0x4000, b"\xaa" * 8)
    rig.port.select(fwi.FW_CFG_NB_CPUS)
    assert rig.port.dma(READ, 8, 0x4000) == 0
    assert rig.memory.read(0x4000, 8) == b"\1\0" + bytes(6)
    assert rig.fw.offset == 2


@pytest.mark.parametrize("key", [fwi.FW_CFG_BOOT_DEVICE, 0x3FFF])
def test_dma_on_unpopulated_keys_reads_zero_skips_fine_and_refuses_writes(rig, key):
    rig.memory.write(0x4000, b"\xaa" * 8)
    assert rig.port.dma(key << 16 | SELECT | READ, 8, 0x4000) == 0
    assert rig.memory.read(0x4000, 8) == bytes(8)
    assert rig.port.dma(key << 16 | SELECT | SKIP, 8, 0) == 0
    assert rig.port.dma(key << 16 | SELECT | WRITE, 8, 0x4000) == ERROR


def test_dma_offset_is_shared_with_the_data_port(rig):
    key = rig.key("opt/blob")
    rig.port.select(key)
    assert rig.port.read(2) == BLOB[:2]
    assert rig.port.dma(READ, 2, 0x4000) == 0
    assert rig.memory.read(0x4000, 2) == BLOB[2:4]
    assert rig.port.dma(SKIP, 100, 0) == 0
    assert rig.port.read(2) == BLOB[104:106]


def test_dma_skip_stops_at_the_end_of_the_item(rig):
    rig.port.select(rig.key("opt/rw"))
    assert rig.port.dma(SKIP, 1000, 0) == 0
    assert rig.fw.offset == 16


def test_dma_write_to_a_writable_item_is_seen_by_later_reads(rig):
    key = rig.key("opt/rw")
    rig.memory.write(0x5000, b"abcd")
    assert rig.port.dma(key << 16 | SELECT | SKIP, 4, 0) == 0
    assert rig.port.dma(WRITE, 4, 0x5000) == 0
    assert rig.port.item(key, 16) == bytes(range(4)) + b"abcd" + bytes(range(8, 16))


def test_dma_write_that_does_not_fit_is_dropped_entirely(rig):
    key = rig.key("opt/rw")
    rig.memory.write(0x5000, b"z" * 32)
    rig.port.dma(key << 16 | SELECT | SKIP, 10, 0)
    assert rig.port.dma(WRITE, 8, 0x5000) == ERROR
    assert bytes(rig.items.file("opt/rw").data) == bytes(range(16))
    assert rig.fw.offset == 16                     # QEMU moves past what it refused
    assert rig.port.dma(WRITE, 1, 0x5000) == ERROR  # at the end: nothing left to write


def test_dma_write_to_read_only_items_sets_error(rig):
    rig.memory.write(0x5000, b"evil")
    assert rig.port.dma(fwi.FW_CFG_SIGNATURE << 16 | SELECT | WRITE, 4, 0x5000) == ERROR
    assert rig.port.dma(fwi.FW_CFG_FILE_DIR << 16 | SELECT | WRITE, 4, 0x5000) == ERROR
    assert rig.port.item(fwi.FW_CFG_SIGNATURE, 4) == b"QEMU"
    assert rig.port.file_dir()[0][0] == "etc/e820"


def test_dma_write_may_take_its_source_from_rom(rig):
    key = rig.key("opt/rw")
    assert rig.port.dma(key << 16 | SELECT | WRITE, 4, ROM[0]) == 0
    assert bytes(rig.items.file("opt/rw").data)[:4] == b"\xc3" * 4


def test_dma_write_and_control_across_adjacent_ram_regions(rig):
    key = rig.key("opt/rw")
    rig.memory.write(RAM2[0] - 3, b"abc")       # the source straddles the seam
    rig.memory.write(RAM2[0], b"defgh")
    assert rig.port.dma(key << 16 | SELECT | WRITE, 8, RAM2[0] - 3) == 0
    assert bytes(rig.items.file("opt/rw").data)[:8] == b"abcdefgh"
    descriptor = RAM2[0] - 2                    # so does the descriptor's control word
    raw = DMA_DESCRIPTOR.pack(key << 16 | SELECT | READ, 4, 0x4000)
    rig.memory.write(descriptor, raw[:2])
    rig.memory.write(RAM2[0], raw[2:])
    rig.port.start_dma(descriptor)
    assert rig.memory.read(descriptor, 2) + rig.memory.read(RAM2[0], 2) == b"\0\0\0\0"
    assert rig.memory.read(0x4000, 4) == b"abcd"


def test_dma_read_across_adjacent_ram_regions(rig):
    address = RAM2[0] - 100
    assert rig.port.dma_read(rig.key("opt/blob"), 300, address) == 0
    assert rig.memory.read(address, 100) + rig.memory.read(RAM2[0], 200) == BLOB[:300]


@pytest.mark.parametrize("address, length", [
    (ROM[0], 16),                        # into ROM
    (ROM[0] - 8, 16),                    # RAM running into ROM
    (RAM0[1] - 8, 16),                   # off the end of RAM into nothing
    (HOLE, 4),                           # a hole (would be MMIO in a real VM)
    (TOP[0] + TOP[1] - 8, 16),           # wraps past 2**64
    ((1 << 64) - 1, 0xFFFFFFFF),         # wraps by a lot
    (RAM2[0] + RAM2[1] - 4, 8),          # past the end of the adjacent pair
])
def test_dma_read_into_bad_memory_sets_error_and_changes_nothing(rig, address, length):
    rig.port.select(rig.key("opt/blob"))
    rig.memory.write(0x100, DMA_DESCRIPTOR.pack(READ, length, address))
    before = snapshot(rig.memory)
    rig.port.start_dma(0x100)
    after = snapshot(rig.memory)
    assert rig.memory.read(0x100, 4) == b"\0\0\0\1"
    before[0] = before[0][:0x100] + b"\0\0\0\1" + before[0][0x104:]   # only the control word
    assert after == before


def test_dma_read_failing_in_the_zero_fill_writes_no_item_bytes(rig):
    rig.port.select(fwi.FW_CFG_NB_CPUS)             # 2 item bytes, then zero fill into ROM
    before = rig.memory.read(ROM[0] - 2, 2)
    assert rig.port.dma(READ, 8, ROM[0] - 2) == ERROR
    assert rig.memory.read(ROM[0] - 2, 2) == before


@pytest.mark.parametrize("descriptor", [HOLE, ROM[0] + 0x10, (1 << 64) - 2, 0x7FFF_FFFF_0000])
def test_unreadable_descriptor_changes_nothing_anywhere(descriptor):
    rig = Rig()
    before = snapshot(rig.memory)
    if descriptor >> 32:
        rig.port.start_dma(descriptor, high=descriptor >> 32)
    else:
        rig.port.start_dma(descriptor)
    assert snapshot(rig.memory) == before


@pytest.mark.parametrize("descriptor, region", [(RAM0[1] - 8, 0), (TOP[0] + TOP[1] - 8, 4)])
def test_descriptor_straddling_the_end_of_ram_gets_error_in_its_control(descriptor, region):
    rig = Rig()                                 # control and length in RAM, address is not
    rig.memory.write(descriptor, struct.pack(">II", READ, 4))
    before = snapshot(rig.memory)
    rig.port.start_dma(descriptor, high=descriptor >> 32)
    after = snapshot(rig.memory)
    assert rig.memory.read(descriptor, 4) == b"\0\0\0\1"
    offset = descriptor - rig.memory.regions[region][0]
    before[region] = before[region][:offset] + b"\0\0\0\1" + before[region][offset + 4:]
    assert after == before


@pytest.mark.parametrize("reads", ["nothing", "other bytes"])
def test_a_descriptor_in_a_segment_read_elsewhere_is_read_where_the_guest_reads_it(reads):
    """A PAM shadow segment written to RAM and read from the other side (write-only here, or
    another backing): the device reads the descriptor as a read would, not from the RAM behind
    it (the fuzzed instance: a READ the guest could not see made the device write 4 KiB)."""
    rig = Rig()
    segment, size = 0xC0000, 0x4000
    behind, other = bytearray(size), bytearray(size)
    rig.memory.replace(segment, segment + size, [
        (segment, size, None if reads == "nothing" else memoryview(other), memoryview(behind))])
    descriptor = segment + 0x762
    rig.memory.write(descriptor, DMA_DESCRIPTOR.pack(SELECT | READ | rig.key("opt/blob") << 16,
                                                     4, 0x4000))
    before = rig.memory.read(0x4000, 4)
    rig.port.start_dma(descriptor)
    assert rig.memory.read(0x4000, 4) == before         # what a read gives is no READ
    status = b"\0\0\0\1" if reads == "nothing" else b"\0\0\0\0"
    assert bytes(behind[0x762:0x766]) == status           # written back where writes go


def test_high_half_is_used_once_then_cleared(rig):
    key = rig.key("opt/blob")
    high_descriptor = TOP[0]
    rig.memory.write(high_descriptor, DMA_DESCRIPTOR.pack(key << 16 | SELECT | READ, 4,
                                                          TOP[0] + 0x100))
    rig.memory.write(0x100, DMA_DESCRIPTOR.pack(SELECT | READ, 4, 0x4000))
    rig.port.start_dma(high_descriptor, high=high_descriptor >> 32)
    assert rig.memory.read(TOP[0] + 0x100, 4) == BLOB[:4]
    assert rig.memory.read(high_descriptor, 4) == b"\0\0\0\0"
    rig.port.start_dma(0x100)                   # low half only: the high half was cleared
    assert rig.memory.read(0x4000, 4) == b"QEMU"


def test_only_4_byte_writes_at_0x514_and_0x518_count(rig):
    rig.memory.write(0x100, DMA_DESCRIPTOR.pack(SELECT | READ, 4, 0x4000))
    rig.pio.write(DMA_PORT + 4, 2, b"\x01\x00")
    rig.pio.write(DMA_PORT + 4, 1, b"\x00")
    rig.pio.write(DMA_PORT + 6, 2, b"\x01\x00")
    assert rig.memory.read(0x4000, 4) == bytes(4)
    rig.pio.write(DMA_PORT + 4, 4, (0x100).to_bytes(4, "big"))
    assert rig.memory.read(0x4000, 4) == b"QEMU"


def test_zero_length_and_no_op_transfers_complete(rig):
    rig.port.select(rig.key("opt/blob"))
    assert rig.port.dma(READ, 0, HOLE) == 0
    assert rig.port.dma(0, 100, HOLE) == 0
    assert rig.port.dma(ERROR, 100, HOLE) == 0     # a stale ERROR bit is cleared
    assert rig.fw.offset == 0


def test_without_dma_the_ports_are_absent_and_id_says_so():
    rig = Rig(dma=False)
    assert rig.port.dma_signature() == b"\xff" * 8
    assert rig.port.item(fwi.FW_CFG_ID, 4) == b"\1\0\0\0"
    assert rig.mmio.read(MMIO_BASE + MMIO_DMA, 8) == b"\xff" * 8


def test_dma_without_guest_memory_fails_quietly():
    fw = FwCfg(make_items(), None)
    assert fw.dma_transfer(0x100) == ERROR


def test_dma_read_of_a_large_item_is_a_straight_copy():
    items = FwCfgItems()
    big = bytes(range(256)) * 4096               # 1 MiB
    items.add_file("opt/big", big)
    memory = guest_memory((0, 2 << 20))
    fw = FwCfg(items, memory)
    fw.select(items.file_key("opt/big"))
    memory.write(0, DMA_DESCRIPTOR.pack(READ, len(big) + 4096, 0x1000))
    assert fw.dma_transfer(0) == 0
    assert memory.read(0x1000, len(big)) == big
    assert memory.read(0x1000 + len(big), 4096) == bytes(4096)


# --- MMIO ------------------------------------------------------------------------------------
def test_mmio_selector_is_big_endian_and_data_comes_out_in_item_order(rig):
    rig.mmio.write(MMIO_BASE + 8, 2, b"\x00\x01")
    assert rig.mmio.read(MMIO_BASE, 4) == b"\3\0\0\0"
    rig.mm.select(fwi.FW_CFG_SIGNATURE)
    assert rig.mmio.read(MMIO_BASE, 8) == b"QEMU\0\0\0\0"
    rig.mm.select(fwi.FW_CFG_SIGNATURE)
    assert rig.mmio.read(MMIO_BASE, 2) == b"QE" and rig.mmio.read(MMIO_BASE, 1) == b"M"


def test_mmio_file_dir_and_item_match_the_ports(rig):
    assert rig.mm.file_dir() == rig.port.file_dir()
    key, size = rig.mm.find("opt/blob")
    rig.mm.select(key)
    assert rig.mm.read(size) == BLOB


def test_mmio_invalid_accesses_read_zero_and_are_ignored(rig):
    rig.mm.select(fwi.FW_CFG_SIGNATURE)
    for offset in (1, 4, 8, 10, 12):
        assert rig.mmio.read(MMIO_BASE + offset, 1) == b"\0"
    rig.mmio.write(MMIO_BASE + 8, 1, b"\x01")      # selector takes 16-bit writes only
    rig.mmio.write(MMIO_BASE + 8, 4, b"\0\1\0\0")
    rig.mmio.write(MMIO_BASE, 8, b"garbage!")      # data writes are ignored
    assert rig.fw.selected == 0 and rig.mm.read(4) == b"QEMU"


def test_mmio_dma_with_64_and_32_bit_writes(rig):
    assert rig.mm.dma_signature() == b"QEMU CFG"
    assert rig.mmio.read(MMIO_BASE + MMIO_DMA + 4, 4) == b" CFG"
    key = rig.key("opt/blob")
    assert rig.mm.dma_read(key, 64, 0x4000) == 0
    assert rig.memory.read(0x4000, 64) == BLOB[:64]
    rig.memory.write(0x100, DMA_DESCRIPTOR.pack(READ, 16, 0x4100))
    rig.mm.start_dma(0x100, high=0)
    assert rig.memory.read(0x4100, 16) == BLOB[64:80]


# --- options, attach and `fw-cfg list` -----------------------------------------------------------
class FakeBoard:
    """What attach_fw_cfg needs from tinyvmm.board.Board, without KVM."""

    def __init__(self, ram_size=32 * layout.MiB, tracer=None):
        self.config = SimpleNamespace(ram_size=ram_size, firmware=bytes(64 * layout.KiB))
        self.power_management = None            # no ACPI: the PIIX4 PM function is absent
        self.memory = GuestMemory.for_layout(ram_size, self.config.firmware)
        self.pio = PioBus()
        self.mmio = Bus("mmio")
        self.tracer = tracer

    def add_pio(self, name, device):
        self.pio.register(*layout.PORTS[name], device)


def parse(argv):
    """The FwCfgSpec of `tinyvmm fw-cfg list` with these options."""
    args = cli.build_parser("fw-cfg").parse_args(["fw-cfg", "list", *argv])
    return machine_spec(args, boot_linux=False).fw_cfg


def test_attach_serves_the_standard_keys_of_the_machine(tmp_path):
    user = tmp_path / "user.bin"
    user.write_bytes(b"from a file")
    board = FakeBoard()
    fw = attach_fw_cfg(board, parse(["--fw-cfg", "name=opt/s,string=hi",
                                     "--fw-cfg", f"name=opt/f,file={user}"]))
    client = PortClient(board.pio, board.memory)
    assert client.item(fwi.FW_CFG_SIGNATURE, 4) == b"QEMU"
    assert client.item(fwi.FW_CFG_ID, 4) == b"\3\0\0\0"
    assert client.item(fwi.FW_CFG_UUID, 16) == bytes(16)
    assert client.item(fwi.FW_CFG_RAM_SIZE, 8) == (32 * layout.MiB).to_bytes(8, "little")
    assert client.item(fwi.FW_CFG_NOGRAPHIC, 2) == b"\1\0"
    assert client.item(fwi.FW_CFG_NB_CPUS, 2) == b"\1\0"
    assert client.item(fwi.FW_CFG_MAX_CPUS, 2) == b"\1\0"
    assert client.item(fwi.FW_CFG_BOOT_MENU, 2) == b"\0\0"
    assert client.item(*client.find("etc/e820")) == fwi.e820_file(32 * layout.MiB, guest_has_amd_ht_hole())
    assert client.item(*client.find("opt/s")) == b"hi"
    assert client.item(*client.find("opt/f")) == b"from a file"
    assert client.dma_read(client.find("opt/f")[0], 11, 0x8000) == 0
    assert board.memory.read(0x8000, 11) == b"from a file"
    assert fw.items is not None and board.mmio.devices() == []


def test_attach_without_dma_leaves_the_dma_ports_unclaimed():
    board = FakeBoard()
    attach_fw_cfg(board, parse(["--no-fw-cfg-dma"]))
    assert board.pio.read(DMA_PORT, 4) == b"\xff" * 4
    assert PortClient(board.pio).item(fwi.FW_CFG_ID, 4) == b"\1\0\0\0"


def test_attach_mmio_beside_or_instead_of_the_ports():
    board = FakeBoard()
    attach_fw_cfg(board, parse(["--fw-cfg-mmio", "0xfef00000"]))
    assert MmioClient(board.mmio, 0xFEF00000).item(0, 4) == b"QEMU"
    assert PortClient(board.pio).item(0, 4) == b"QEMU"
    board = FakeBoard()
    attach_fw_cfg(board, parse(["--fw-cfg-mmio", "0xfef00000", "--no-fw-cfg-ports"]))
    assert MmioClient(board.mmio, 0xFEF00000).item(0, 4) == b"QEMU"
    assert board.pio.read(SELECTOR_PORT + 1, 1) == b"\xff"


def test_attach_refuses_a_window_that_overlaps_another_mmio_device():
    board = FakeBoard()
    board.mmio.register(0xFEF00010, 0x10, RegisterDevice())
    with pytest.raises(FwCfgConfigError, match="overlaps"):
        attach_fw_cfg(board, parse(["--fw-cfg-mmio", "0xfef00000"]))


def test_no_ports_and_no_mmio_is_an_error():
    with pytest.raises(FwCfgConfigError, match="--fw-cfg-mmio"):
        build_fw_cfg_items(parse(["--no-fw-cfg-ports"]), 32 * layout.MiB, 64 * layout.KiB)


def test_duplicate_and_reserved_user_names_are_errors():
    with pytest.raises(FwCfgConfigError, match="twice"):
        build_fw_cfg_items(parse(["--fw-cfg", "opt/a,string=1", "--fw-cfg", "opt/a,string=2"]),
                           32 * layout.MiB, 64 * layout.KiB)
    with pytest.raises(FwCfgConfigError, match="already provided"):
        build_fw_cfg_items(parse(["--fw-cfg", "etc/e820,string=1"]), 32 * layout.MiB,
                           64 * layout.KiB)


@pytest.mark.parametrize("text, message", [
    ("0xfef00004", "aligned"), ("banana", "not an address"), ("0x1000", "outside the hole"),
    ("0xfec00ff8", "I/O APIC"), ("0xfee00000", "local APIC"), ("0xfeffbff0", "outside the hole"),
    ("0x100000000", "outside the hole"),
])
def test_bad_mmio_bases_are_refused(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_fw_cfg_mmio(text)


def test_mmio_window_must_be_above_ram():
    check_mmio_window(0xB0000000, 256 * layout.MiB)
    with pytest.raises(FwCfgConfigError, match="outside the hole"):
        check_mmio_window(0xB0000000, 3 * layout.GiB)
    assert parse_fw_cfg_mmio("0xfef00000") == 0xFEF00000


def test_bad_fw_cfg_spec_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--fw-cfg", "name=opt/x"])
    assert exc.value.code == 2
    assert "exactly one" in capsys.readouterr().err


def test_fw_cfg_list_table_needs_no_kvm(monkeypatch, capsys, tmp_path):
    import tinyvmm.kvm.system as system

    def no_kvm(*args, **kwargs):
        raise AssertionError("fw-cfg list must not open /dev/kvm")
    monkeypatch.setattr(system.Kvm, "__init__", no_kvm)
    bios = tmp_path / "bios.bin"
    bios.write_bytes(bytes(128 * layout.KiB))
    assert cli.main(["fw-cfg", "list", "--bios", str(bios), "--mem", "64", "--fw-cfg",
                     "name=mine,string=abc"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "NAME", "SIZE", "WRITABLE"]
    rows = {line.split()[1]: line.split() for line in lines[1:-1]}
    assert rows["signature"] == ["0x0000", "signature", "4", "no"]
    assert rows["ram_size"][0] == "0x0003"
    assert rows["mine"][2] == "3"
    assert rows["etc/e820"][2] == str(len(fwi.e820_file(64 * layout.MiB, guest_has_amd_ht_hole())))
    assert rows["file_dir"][2] == str(4 + 64 * fwi.FW_CFG_FILE_SLOTS_DEFAULT)
    assert "ports 0x510" in lines[-1]
    assert "warning" in err and "mine" in err


def test_fw_cfg_list_json(capsys):
    assert cli.main(["fw-cfg", "list", "--json", "--no-fw-cfg-dma", "--fw-cfg-mmio",
                     "0xfef00000"]) == 0
    description = json.loads(capsys.readouterr().out)
    assert description["interfaces"] == {"ports": True, "dma": False, "selector_port": 0x510,
                                         "dma_port": None, "mmio": 0xFEF00000}
    by_name = {item["name"]: item for item in description["items"]}
    assert by_name["id"]["size"] == 4 and by_name["id"]["key"] == 1
    assert by_name["etc/e820"]["file"] and not by_name["etc/e820"]["writable"]
    assert [i["key"] for i in description["items"]] == sorted(i["key"] for i in description["items"])


def test_listing_of_prepared_items_shows_what_the_boot_loader_added():
    spec = parse([])
    items = build_fw_cfg_items(spec, 32 * layout.MiB, 64 * layout.KiB)
    items.add_u32(fwi.FW_CFG_KERNEL_ADDR, 0x100000)
    items.add_file("genroms/linuxboot_dma.bin", bytes(1536))
    by_name = {i["name"]: i for i in describe_fw_cfg(spec, items)["items"]}
    assert by_name["kernel_addr"]["key"] == 7 and by_name["kernel_addr"]["size"] == 4
    assert by_name["genroms/linuxboot_dma.bin"]["size"] == 1536
    assert by_name["signature"]["size"] == 4 and by_name["id"]["size"] == 4


def test_fw_cfg_list_reports_unreadable_files_with_status_2(capsys, tmp_path):
    assert cli.main(["fw-cfg", "list", "--fw-cfg", f"name=opt/x,file={tmp_path / 'nope'}"]) == 2
    assert "nope" in capsys.readouterr().err


# --- trace --------------------------------------------------------------------------------------
def test_trace_shows_selects_reads_and_dma_with_sizes_and_times():
    out = io.StringIO()
    rig = Rig(tracer=Tracer(out, {"fw_cfg"}))
    key = rig.key("opt/blob")
    rig.port.select(key)
    rig.port.read(10)
    rig.port.dma(READ, 5000, 0x4000)
    rig.port.dma(SELECT | READ, 4, HOLE)
    lines = out.getvalue().splitlines()
    select = next(line for line in lines if "select" in line and f"{key:#06x}" in line)
    assert "opt/blob" in select and f"size {len(BLOB)}" in select
    read = next(line for line in lines if " read key" in line)
    assert "length 10 moved 10" in read and " us" in read
    dma = [line for line in lines if " dma " in line]
    assert "length 5000" in dma[0] and f"moved {len(BLOB) - 10}" in dma[0] and "ok" in dma[0]
    assert "ERROR" in dma[1] and "signature" in dma[1]


def test_untraced_device_keeps_the_plain_read_path():
    rig = Rig(tracer=Tracer(io.StringIO(), {"io"}))
    assert "read_data" not in vars(rig.fw)
    assert "read_data" in vars(Rig(tracer=Tracer(io.StringIO(), {"fw_cfg"})).fw)


# --- property tests -----------------------------------------------------------------------------
REGION_EDGES = [RAM0[0], RAM0[0] + RAM0[1], ROM[0], ROM[0] + ROM[1], RAM1[0], RAM2[0],
                RAM2[0] + RAM2[1], TOP[0], HOLE, 1 << 63]
near_edges = st.builds(lambda edge, delta: (edge + delta) % (1 << 64),
                       st.sampled_from(REGION_EDGES), st.integers(-64, 64))
addresses = st.one_of(near_edges, near_edges, st.integers(0, (1 << 64) - 1),
                      st.integers(0x100, RAM0[1] - 1), st.integers(RAM1[0], RAM2[0] + RAM2[1]))
lengths = st.one_of(st.integers(0, 80), st.integers(0, 80), st.integers(0, 5000),
                    st.integers(0, (1 << 32) - 1))
controls = st.builds(lambda key, bits: key << 16 | bits,
                     st.sampled_from([0, 1, 2, 0x19, 0x20, 0x21, 0x22, 0x4021, 0x8002, 0x3FFF,
                                      0xFFFF]),
                     st.integers(0, 0xFFFF))


def in_memory(memory, gpa, size):
    try:
        return b"".join(bytes(v) for v in memory.views(gpa, size))
    except GuestMemoryError:
        return None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(descriptor=0x200, control=READ, length=32, address=ROM[0] - 16, preselect=0x20,
         preread=0)                                       # RAM running into ROM
@example(descriptor=0x200, control=0x21 << 16 | SELECT | READ, length=64,
         address=RAM2[0] + RAM2[1] - 32, preselect=0, preread=0)   # off the end of RAM
@example(descriptor=TOP[0] + 0x800, control=READ, length=0x1000, address=TOP[0] + 0x800,
         preselect=0x21, preread=5)                       # wraps past 2**64
@example(descriptor=ROM[0] - 8, control=READ, length=8, address=0x300, preselect=0x21,
         preread=0)                                       # descriptor running into ROM
@given(descriptor=addresses, control=controls, length=lengths, address=addresses,
       preselect=st.integers(0, 0xFFFF), preread=st.integers(0, 40))
def test_random_descriptors_only_touch_the_named_buffer(descriptor, control, length, address,
                                                        preselect, preread):
    rig = Rig()
    rig.port.select(preselect)
    rig.port.read(preread)
    try:
        rig.memory.write(descriptor, DMA_DESCRIPTOR.pack(control, length, address))
    except ValueError:
        pass
    written_descriptor = in_memory(rig.memory, descriptor, 16)
    before = snapshot(rig.memory)
    items_before = {e.key: bytes(e.data) for e in rig.items.entries()}
    regions = rig.memory.regions
    rig.port.start_dma(descriptor, high=descriptor >> 32)
    after = snapshot(rig.memory)

    allowed = []
    if written_descriptor is not None:
        allowed.append((descriptor, 4))
        control_, length_, address_ = DMA_DESCRIPTOR.unpack(written_descriptor)
        if control_ & READ:
            allowed.append((address_, length_))
    elif in_memory(rig.memory, descriptor, 4) is not None:
        allowed.append((descriptor, 4))
    for (gpa, size, writable), old, new in zip(regions, before, after):
        if not writable:
            assert old == new
            continue
        for i in (i for i in range(size) if old[i] != new[i]):
            assert any(a <= gpa + i < a + n for a, n in allowed), hex(gpa + i)
    for entry in rig.items.entries():
        if entry.name != "opt/rw":
            assert bytes(entry.data) == items_before[entry.key]


class ModelFwCfg:
    """An independent byte-at-a-time model of the selector and data register."""

    def __init__(self, items: FwCfgItems):
        self.table = {e.key: bytes(e.data) for e in items.entries()}
        self.limit = items.max_entry
        self.key, self.offset = 0, 0

    def select(self, key):
        self.key, self.offset = key, 0

    def read(self, count):
        if self.key & 0x3FFF >= self.limit:
            return bytes(count)
        data = self.table.get(self.key & 0xBFFF, b"")
        out = bytearray()
        for _ in range(count):
            if self.offset < len(data):
                out.append(data[self.offset])
                self.offset += 1
            else:
                out.append(0)
        return bytes(out)


operations = st.lists(st.one_of(
    st.tuples(st.just("select"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("mmio-select"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("read"), st.integers(1, 1024)),
    st.tuples(st.just("mmio-read"), st.sampled_from([1, 2, 4, 8])),
    st.tuples(st.just("skip"), st.integers(0, 4000)),
    st.tuples(st.just("noise"), st.integers(0, 0xFFFFFFFF)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops=operations)
def test_random_selector_and_data_sequences_match_a_byte_model(ops):
    rig = Rig()
    model = ModelFwCfg(rig.items)
    for op, value in ops:
        if op == "select":
            rig.port.select(value)
            model.select(value)
        elif op == "mmio-select":
            rig.mm.select(value)
            model.select(value)
        elif op == "read":
            assert rig.port.read(value) == model.read(value)
        elif op == "mmio-read":
            assert rig.mmio.read(MMIO_BASE, value) == model.read(value)
        elif op == "skip":
            assert rig.port.dma(SKIP, value, 0) == 0
            model.read(value)
        else:
            # Stray accesses elsewhere on the device must not disturb the data stream.
            rig.pio.write(DATA_PORT, 1, bytes([value & 0xFF]))
            rig.mmio.write(MMIO_BASE + 12, 4, value.to_bytes(4, "little"))
            rig.mmio.read(MMIO_BASE + 8, 2)
            rig.pio.read(DMA_PORT + (value & 7), 1)
