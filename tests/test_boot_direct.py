"""ELF kernels, the PVH start info, and the direct 64-bit entry: layouts byte by byte, bad input."""

import struct

import pytest
from command_line import tinyvmm
from elf_files import EM_AARCH64, elf32, elf64, pvh_note
from hypothesis import given, settings
from hypothesis import strategies as st
from payloads import KERNEL_INITRD, VMLINUX

from tinyvmm import layout
from tinyvmm.boot import direct, elf, pvh
from tinyvmm.boot.bzimage import parse_bzimage
from tinyvmm.boot.linux import plan_boot
from tinyvmm.boot.payload import PayloadError, load_payload
from tinyvmm.cli import main

MiB = layout.MiB
ENTRY = 0x100040
CODE = b"\xf4" * 0x100


def kernel_file(tmp_path, data: bytes, name="vmlinux"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def good_elf(**kwargs) -> bytes:
    return elf64([(0x100000, CODE, 0x3000), (0x200000, b"data", 0x10)], pvh_note(ENTRY), **kwargs)


# --- the ELF reader -------------------------------------------------------

def test_segments_and_pvh_entry_are_read():
    kernel = elf.parse_elf_kernel(good_elf())
    assert kernel.pvh_entry == ENTRY
    assert [(s.paddr, bytes(s.data), s.memsize) for s in kernel.segments] == [
        (0x100000, CODE, 0x3000), (0x200000, b"data", 0x10)]
    assert (kernel.low, kernel.high) == (0x100000, 0x200010)
    image = kernel.image()
    assert len(image) == 0x100010
    assert image[:0x100] == CODE and not any(image[0x100:0x100000]) and image[0x100000:0x100004] == b"data"


def test_an_eight_byte_pvh_note_gives_its_low_32_bits():
    data = elf64([(0x100000, CODE, 0x100)], pvh_note(ENTRY, size=8))
    assert elf.parse_elf_kernel(data).pvh_entry == ENTRY


def test_other_notes_are_not_the_pvh_entry():
    from elf_files import note
    data = elf64([(0x100000, CODE, 0x100)], note(b"GNU\0", 18, b"\1\2\3\4") + note(b"Xen\0", 5, b"xen"))
    assert elf.parse_elf_kernel(data).pvh_entry is None


@pytest.mark.parametrize("data,message", [
    (elf32(0x100000, CODE), "32-bit ELF"),
    (good_elf(machine=EM_AARCH64), "not x86-64"),
    (good_elf()[:40], "shorter than an ELF header"),
    (good_elf()[:64], "damaged or truncated"),
    (good_elf()[:64 + 56 * 3 + 10], "truncated"),
    (elf64([(0x100000, CODE, 0x3000), (0x102000, CODE, 0x100)], pvh_note(ENTRY)), "overlap"),
    (elf64([(0x100000, CODE, 0x10)], pvh_note(ENTRY)), "more file bytes"),
    (elf64([], pvh_note(ENTRY)), "no loadable segments"),
    (elf64([(0x100000, CODE, 0x100)], pvh_note(ENTRY)[:12] + b"Xen\0" + b"\1\2"), "PVH entry note"),
])
def test_bad_elf_files_are_refused(data, message):
    with pytest.raises(elf.ElfKernelError, match=message):
        elf.parse_elf_kernel(data, "vmlinux")


def pyelftools_view(data: bytes):
    """What pyelftools reads from the same file: (paddr, file bytes, memsz) of each PT_LOAD with
    memory, in address order, and the last Xen PHYS32_ENTRY note's entry (or None)."""
    import io

    from elftools.elf.elffile import ELFFile
    file = ELFFile(io.BytesIO(data))
    loads, entry = [], None
    for segment in file.iter_segments():
        if segment["p_type"] == "PT_LOAD" and segment["p_memsz"]:
            loads.append((segment["p_paddr"], segment.data(), segment["p_memsz"]))
        elif segment["p_type"] == "PT_NOTE":
            for found in segment.iter_notes():
                if found["n_name"] == "Xen" and found["n_type"] == 18:
                    entry = int.from_bytes(found["n_descdata"][:4], "little")
    return sorted(loads), entry


def own_view(kernel):
    return [(s.paddr, bytes(s.data), s.memsize) for s in kernel.segments], kernel.pvh_entry


@pytest.mark.kernel
def test_the_test_vmlinux_reads_as_pyelftools_reads_it():
    with open(VMLINUX, "rb") as f:
        data = f.read()
    kernel = elf.parse_elf_kernel(data, VMLINUX)
    assert own_view(kernel) == pyelftools_view(data)
    assert kernel.pvh_entry is not None and len(kernel.segments) >= 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64 + 56 * 3 + 40), st.integers(0, 255)), max_size=6))
def test_damaged_files_are_refused_or_read_as_pyelftools_reads_them(changes):
    """Bytes changed in the headers and the note: the reader refuses the file with a usage
    error, or finds what pyelftools finds."""
    data = bytearray(good_elf())
    for offset, value in changes:
        data[offset] = value
    try:
        kernel = elf.parse_elf_kernel(bytes(data), "vmlinux")
    except elf.ElfKernelError:
        return
    assert own_view(kernel) == pyelftools_view(bytes(data))


# --- placement -----------------------------------------------------------

def plan(data=None, initrd=None, ram=64 * MiB, cmdline="console=ttyS0"):
    data = good_elf() if data is None else data
    return pvh.plan_pvh(elf.parse_elf_kernel(data, "vmlinux"), cmdline, initrd, ram, data)


def test_no_pvh_note_says_what_to_boot_instead():
    with pytest.raises(pvh.PvhConfigError, match="no PVH entry point.*bzImage.*CONFIG_PVH=y"):
        plan(elf64([(0x100000, CODE, 0x100)]))


@pytest.mark.parametrize("paddr,ram,message", [
    (0x8000, 64 * MiB, "from 1 MiB"),                     # over the start info and the BIOS area
    (0xF0000, 64 * MiB, "from 1 MiB"),
    (63 * MiB, 64 * MiB, "at least --mem 65M"),           # runs past RAM's end
    (0xF0000000, 64 * MiB, "segments must lie in RAM"),   # in the hole below 4 GiB
    (5 * layout.GiB, 8 * layout.GiB, "segments must lie in RAM"),  # above 4 GiB
])
def test_segments_outside_ram_are_refused(paddr, ram, message):
    data = elf64([(paddr, CODE, 1 * MiB + 0x1000)], pvh_note(paddr & 0xFFFFFFFF))
    with pytest.raises(pvh.PvhConfigError, match=message):
        plan(data, ram=ram)


def test_an_entry_outside_the_segments_is_refused():
    with pytest.raises(pvh.PvhConfigError, match="outside its segments"):
        plan(elf64([(0x100000, CODE, 0x100)], pvh_note(0x300000)))


def test_the_initrd_goes_at_the_top_of_ram_above_the_kernel():
    p = plan(initrd=b"x" * 5000, ram=64 * MiB)
    assert p.initrd_addr == (64 * MiB - 5000) & ~0xFFF
    with pytest.raises(pvh.PvhConfigError, match="must lie above the kernel"):
        plan(elf64([(0x100000, CODE, 3 * MiB)], pvh_note(ENTRY)), initrd=bytes(2 * MiB), ram=5 * MiB)


def test_command_line_limits():
    with pytest.raises(pvh.PvhConfigError, match="at most 2047"):
        plan(cmdline="x" * 2048)
    assert plan(cmdline="x" * 2047).cmdline == b"x" * 2047 + b"\0"


# --- the start info, byte by byte -------------------------------------------

def test_start_info_layout():
    p = plan(initrd=b"initrd")
    memory_map = layout.e820_map(64 * MiB, 64 * 1024)
    writes = dict(pvh.start_info(p, memory_map))
    info = writes[layout.PVH_START_INFO]
    assert len(info) == 56
    assert info[0:4] == bytes.fromhex("78c56e33")                  # magic 0x336ec578, LE
    assert struct.unpack_from("<III", info, 4) == (1, 0, 1)       # version, flags, nr_modules
    assert struct.unpack_from("<QQQQ", info, 16) == (
        layout.PVH_MODLIST, layout.BOOT_CMDLINE_START, 0, layout.PVH_MEMMAP)
    assert struct.unpack_from("<II", info, 48) == (len(memory_map), 0)
    assert writes[layout.PVH_MODLIST] == struct.pack("<QQQQ", p.initrd_addr, 6, 0, 0)
    memmap = writes[layout.PVH_MEMMAP]
    assert len(memmap) == 24 * len(memory_map)
    for i, (addr, size, kind) in enumerate(memory_map):
        assert memmap[24 * i:24 * i + 24] == struct.pack("<QQII", addr, size, kind, 0)
    assert writes[layout.BOOT_CMDLINE_START] == b"console=ttyS0\0"
    assert layout.PVH_MEMMAP + len(memmap) <= layout.BOOT_PAGE_TABLES_START


def test_start_info_without_initrd_has_no_modules():
    info = dict(pvh.start_info(plan(), layout.e820_map(64 * MiB, 64 * 1024)))[layout.PVH_START_INFO]
    assert struct.unpack_from("<IQ", info, 12) == (0, 0)


def test_fw_cfg_items_follow_qemu_and_add_the_image():
    from tinyvmm.fw_cfg import items as fwc
    p = plan(initrd=b"initrd")
    items = fwc.FwCfgItems()
    pvh.publish(p, items, "pvh_dma.bin", b"\x55\xaa" + bytes(510))

    def u32(key):
        return int.from_bytes(bytes(items.lookup(key).data), "little")
    assert u32(fwc.FW_CFG_KERNEL_ENTRY) == ENTRY
    assert u32(fwc.FW_CFG_KERNEL_ADDR) == 0x100000
    assert u32(fwc.FW_CFG_KERNEL_SIZE) == 0x100004             # up to b"data": no bss tail
    assert bytes(items.lookup(fwc.FW_CFG_KERNEL_DATA).data) == p.kernel.image()[:0x100004]
    assert bytes(items.lookup(fwc.FW_CFG_SETUP_DATA).data) == good_elf()[:8192]
    assert u32(fwc.FW_CFG_INITRD_ADDR) == p.initrd_addr and u32(fwc.FW_CFG_INITRD_SIZE) == 6
    assert bytes(items.file("bootorder").data) == b"/rom@genroms/pvh_dma.bin\0"


# --- the 64-bit entry: GDT, page tables, zero page ----------------------------

def test_gdt_descriptors():
    assert struct.unpack("<5Q", direct.gdt(long_mode=True))[2:4] == (0x00AF9B000000FFFF, 0x00CF93000000FFFF)
    assert struct.unpack("<5Q", direct.gdt(long_mode=False))[2:5] == (
        0x00CF9B000000FFFF, 0x00CF93000000FFFF, 0x0000_8B00_0000_0067)


def test_page_tables_identity_map_4_gib():
    tables = dict(direct.page_tables())
    base = layout.BOOT_PAGE_TABLES_START
    pml4 = struct.unpack("<Q", tables[base])[0]
    assert pml4 == base + 0x1000 | 3
    directories = tuple(base + 0x2000 + i * 0x1000 | 3 for i in range(4))
    assert struct.unpack("<4Q", tables[base + 0x1000]) == directories
    for gib in range(4):
        entries = struct.unpack("<512Q", tables[base + 0x2000 + gib * 0x1000])
        assert entries[0] == gib << 30 | 0x83 and entries[511] == (gib << 30) + (511 << 21) | 0x83
    assert base + 0x6000 == layout.BOOT_PAGE_TABLES_END


def test_zero_page(payload):
    image = parse_bzimage(payload.read_bytes())
    p = plan_boot(image, "console=ttyS0", b"initrd", 64 * MiB)
    memory_map = layout.e820_map(64 * MiB, 64 * 1024)
    page = direct.zero_page(p.setup, memory_map)
    assert len(page) == 4096
    header_end = 0x202 + p.setup[0x201]
    assert page[0x1F1:header_end] == p.setup[0x1F1:header_end]
    assert not any(page[:0x1F1]) or page[0x1E8] == len(memory_map)
    assert page[0x1E8] == len(memory_map) and page[0x1EF] == 0      # sentinel stays 0
    assert struct.unpack_from("<I", page, 0x228)[0] == layout.BOOT_CMDLINE_START
    assert struct.unpack_from("<II", page, 0x218) == (p.initrd_addr, 6)
    for i, entry in enumerate(memory_map):
        assert struct.unpack_from("<QQI", page, 0x2D0 + 20 * i) == entry
    assert not any(page[header_end:0x2D0]) and not any(page[0x2D0 + 20 * len(memory_map):])


def test_direct_needs_a_64_bit_entry(tmp_path, payload):
    data = bytearray(payload.read_bytes())
    struct.pack_into("<H", data, 0x236, 0)                          # no XLF_KERNEL_64
    path = kernel_file(tmp_path, bytes(data), "bzImage")
    with pytest.raises(PayloadError, match="no 64-bit entry.*--boot firmware"):
        load_payload(path, None, None, True, 64 * MiB, boot="direct")
    assert load_payload(path, None, None, True, 64 * MiB).boot == "firmware"


# --- the command line: status 2 before the guest starts ----------------------

@pytest.mark.parametrize("data,message", [
    (elf64([(0x100000, CODE, 0x100)]), "no PVH entry point"),
    (elf32(0x100000, CODE), "32-bit ELF"),
    (good_elf()[:100], "truncated"),
    (elf64([(0x8000, CODE, 0x100)], pvh_note(0x8000)), "from 1 MiB"),
])
def test_bad_elf_kernels_are_usage_errors(tmp_path, capsys, data, message):
    assert main(["boot", "--kernel", kernel_file(tmp_path, data), "--mem", "64M"]) == 2
    assert message in capsys.readouterr().err


def test_direct_boot_takes_no_firmware(tmp_path, capsys):
    path = kernel_file(tmp_path, good_elf())
    assert main(["boot", "--kernel", path, "--boot", "direct", "--bios", "bios.bin"]) == 2
    assert "--boot direct runs no firmware: drop --bios" in capsys.readouterr().err


# --- the test kernel on /dev/kvm -----------------------------------------------

def boot_kernel(*options, timeout=240):
    return tinyvmm("boot", "--initrd", str(KERNEL_INITRD), "--expect", "Linux version 6.1",
                   "--timeout", str(timeout), *options, timeout=timeout + 60)


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.parametrize("options", [
    ["--boot", "direct"],                                          # the PVH entry, no firmware
    ["--boot", "firmware"],                                        # BIOS + PVH ROM, DMA
    ["--boot", "firmware", "--no-fw-cfg-dma"],                     # BIOS + PVH ROM, rep insb
], ids=["direct", "rom-dma", "rom-legacy"])
def test_vmlinux_reaches_the_banner(tmp_path, options):
    timing = tmp_path / "timing.json"
    result = boot_kernel("--kernel", str(VMLINUX), "--timing-json", str(timing), *options)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.endswith(b"Linux version 6.1\n")
    events = [mark["event"] for mark in __import__("json").loads(timing.read_text())["marks"]]
    if "firmware" in options:
        assert events == ["milestone 0xf5:1", "milestone 0xf4:5", "milestone 0xf4:4", "banner"]
    else:
        assert events == ["banner"]


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
def test_bzimage_reaches_the_banner_through_its_64_bit_entry():
    result = boot_kernel("--boot", "direct")
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.endswith(b"Linux version 6.1\n")


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.parametrize("firmware", [
    ["--bios", "/usr/share/seabios/bios-256k.bin", "--option-rom", "/usr/share/qemu/pvh.bin"],
    ["--bios", "/usr/share/qemu/qboot.rom"],
], ids=["seabios+qemu-pvh.bin", "qboot"])
def test_vmlinux_through_qemu_firmware(tmp_path, firmware):
    import os
    missing = [path for path in firmware if path.startswith("/") and not os.path.exists(path)]
    if missing:
        pytest.skip(f"{missing[0]} is not installed (Debian packages seabios, qemu-system-data)")
    timing = tmp_path / "timing.json"
    result = boot_kernel("--kernel", str(VMLINUX), "--boot", "firmware",
                         "--timing-json", str(timing), *firmware)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"Linux version 6.1" in result.stdout
    events = [mark["event"] for mark in __import__("json").loads(timing.read_text())["marks"]]
    assert "milestone 0xf4:5" in events and "milestone 0xf4:4" in events     # marked for them


@pytest.mark.kvm
def test_direct_pvh_entry_state_and_start_info(pvh_payload, initrd):
    """The test PVH kernel checks its entry state and start info and reports (no firmware)."""
    import re
    result = boot_kernel_file(str(pvh_payload), "--initrd", str(initrd), "--boot", "direct",
                              "--append", "console=ttyS0 direct", "--append-as-is", "--mem", "64M")
    out = result.stdout.decode()
    assert result.returncode == 0 and "pvh-payload: done" in out, out + result.stderr.decode()
    assert "pvh-payload: checks failed=00000000" in out
    assert "pvh-payload: cmdline=console=ttyS0 direct\n" in out
    entry = dict(re.findall(r" (\w+)=([0-9a-f]+)", re.search(r"pvh-payload: entry(.*)", out)[1]))
    assert int(entry["ebx"], 16) == layout.PVH_START_INFO and int(entry["cr0"], 16) == 0x11
    memmap = re.findall(r"pvh-payload: memmap addr=(\w+) size=(\w+) type=(\w+)", out)
    assert [tuple(int(x, 16) for x in m) for m in memmap] == layout.e820_map(64 * MiB, 64 * 1024, acpi=True)
    module = dict(re.findall(r" (\w+)=([0-9a-f]+)", re.search(r"pvh-payload: module0(.*)", out)[1]))
    assert int(module["size"], 16) == initrd.stat().st_size


def boot_kernel_file(*options):
    return tinyvmm("boot", "--timeout", "60", "--kernel", *options)


def test_relocatable_big_endian_and_empty_kernels_are_refused(tmp_path, capsys):
    rel = bytearray(good_elf())
    rel[16] = 1                                                   # e_type ET_REL
    big = bytearray(good_elf())
    big[5] = 2                                                    # EI_DATA: big-endian
    for data, message in ((rel, "not an executable kernel"), (big, "big-endian"), (b"", "is empty")):
        assert main(["boot", "--kernel", kernel_file(tmp_path, bytes(data)), "--mem", "64M"]) == 2
        assert message in capsys.readouterr().err


def test_naming_firmware_boots_a_vmlinux_through_it(tmp_path, capsys):
    path = kernel_file(tmp_path, good_elf())
    assert main(["fw-cfg", "list", "--kernel", path, "--bios", "bios.bin"]) == 0
    listing = capsys.readouterr().out
    assert "kernel_entry" in listing and "genroms/pvh_dma.bin" in listing
    assert main(["fw-cfg", "list", "--kernel", path]) == 0         # direct: no boot items
    assert "kernel_entry" not in capsys.readouterr().out


def test_ram_advice_covers_every_segment():
    data = elf64([(20 * MiB, CODE, MiB), (24 * MiB, b"x", 2 * MiB)], pvh_note(20 * MiB))
    with pytest.raises(pvh.PvhConfigError, match="at least --mem 26M"):
        plan(data, ram=16 * MiB)


def test_bench_takes_the_vmlinux_with_its_own_option(tmp_path, capsys):
    path = kernel_file(tmp_path, good_elf())
    assert main(["bench", "--kernel", path, "--runs", "1"]) == 2
    assert "give the bzImage with --kernel and the vmlinux with --vmlinux" in capsys.readouterr().err


def test_an_unwritable_timing_json_is_refused_before_the_run(tmp_path, capsys):
    path = kernel_file(tmp_path, good_elf())
    assert main(["boot", "--kernel", path, "--timing-json", str(tmp_path / "no" / "t.json")]) == 2
    assert "--timing-json" in capsys.readouterr().err


@pytest.mark.kvm
def test_stop_at_kernel_on_a_direct_boot_runs_no_guest_code(pvh_payload, tmp_path):
    import json
    timing = tmp_path / "t.json"
    result = boot_kernel_file(str(pvh_payload), "--boot", "direct", "--stop-at-kernel",
                              "--timing-json", str(timing))
    assert result.returncode == 0, result.stderr.decode()
    assert b"pvh-payload" not in result.stdout                  # the payload never ran
    assert json.loads(timing.read_text())["start_ns"]           # VMM startup still ends at KVM_RUN


def test_a_boot_rom_for_the_other_format_is_named(tmp_path, capsys):
    path = kernel_file(tmp_path, good_elf())
    assert main(["fw-cfg", "list", "--kernel", path, "--option-rom", "linuxboot_dma.bin"]) == 0
    assert "linuxboot_dma.bin boots a bzImage, and the kernel is an ELF vmlinux" in capsys.readouterr().err
    assert main(["fw-cfg", "list", "--kernel", path, "--option-rom", "pvh_dma.bin"]) == 0
    assert "warning" not in capsys.readouterr().err


# --- header fields that point outside the file or memory (issue 24) ----------

PHDR = struct.Struct("<IIQQQQQQ")


def patch_phdr(data: bytes, index: int, **fields) -> bytes:
    """`data` with program header `index`'s fields replaced (p_offset, p_paddr, p_memsz ...)."""
    names = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")
    at = 64 + PHDR.size * index
    values = dict(zip(names, PHDR.unpack_from(data, at)))
    values.update(fields)
    return data[:at] + PHDR.pack(*(values[n] for n in names)) + data[at + PHDR.size:]


def patch_header(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt):]


def test_a_note_offset_past_2_to_the_63_is_a_usage_error(tmp_path, capsys):
    # The fuzzed instance: OverflowError from pyelftools' seek, status 1 with a traceback.
    data = patch_phdr(good_elf(), 2, p_offset=0xFFFFFFFF00001070)
    with pytest.raises(elf.ElfKernelError, match="PT_NOTE segment needs file bytes"):
        elf.parse_elf_kernel(data, "vmlinux")
    assert main(["boot", "--kernel", kernel_file(tmp_path, data), "--mem", "64M"]) == 2
    err = capsys.readouterr().err
    assert "PT_NOTE" in err and "Traceback" not in err


@pytest.mark.parametrize("data,message", [
    (patch_phdr(good_elf(), 0, p_offset=1 << 63), "PT_LOAD segment needs file bytes"),
    (patch_phdr(good_elf(), 2, p_filesz=(1 << 64) - 1), "PT_NOTE segment needs file bytes"),
    (patch_phdr(good_elf(), 1, p_type=0x6474E550, p_offset=1 << 62), "PT_GNU_EH_FRAME segment"),
    (patch_phdr(good_elf(), 1, p_type=0x12345, p_offset=1 << 62), "type 0x12345 segment"),
    (patch_phdr(good_elf(), 0, p_paddr=(1 << 64) - 0x1000), "wraps the address space"),
    (patch_header(good_elf(), 32, "<Q", 0xFFFFFFFF00000040), "program headers at offset"),
    (patch_header(good_elf(), 54, "<H", 32), "program headers are 32 bytes"),
])
def test_every_offset_and_size_field_is_checked(data, message):
    with pytest.raises(elf.ElfKernelError, match=message):
        elf.parse_elf_kernel(data, "vmlinux")


def test_an_entry_in_the_gap_between_segments_is_refused():
    # The instance: low <= entry < high, but in no segment.
    with pytest.raises(pvh.PvhConfigError, match=r"outside its segments \(0x100000-0x103000, "
                                                  r"0x200000-0x200010\)"):
        plan(good_elf().replace(pvh_note(ENTRY), pvh_note(0x180000)))


def test_an_entry_in_a_segments_bss_or_second_segment_is_taken():
    data = good_elf()
    for entry in (0x102FFF, 0x200000):
        assert plan(data.replace(pvh_note(ENTRY), pvh_note(entry))).entry == entry
    with pytest.raises(pvh.PvhConfigError, match="outside its segments"):
        plan(data.replace(pvh_note(ENTRY), pvh_note(0x200010)))       # one past the end


def test_a_bss_larger_than_ram_is_refused_at_once():
    import time
    start = time.monotonic()
    with pytest.raises(pvh.PvhConfigError, match="segments must lie in RAM"):
        plan(elf64([(0x100000, CODE, 5 * layout.GiB // 2)], pvh_note(ENTRY)), ram=1 * layout.GiB)
    assert time.monotonic() - start < 1


def test_a_large_bss_that_fits_costs_no_time_or_host_memory():
    import resource
    import time

    from tinyvmm.memory import GuestMemory
    memory = GuestMemory.for_layout(1 * layout.GiB, b"\xff" * 0x10000)
    memory.write(0x300000, b"\x55" * 0x4000)             # written before: must read zero after
    kernel = elf.parse_elf_kernel(elf64([(0x100000, CODE, 768 * MiB + 0x123)], pvh_note(ENTRY)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    direct.load_segments(memory, kernel)
    assert time.monotonic() - start < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024   # KiB
    assert memory.read(0x100000, 0x100) == CODE
    assert not any(memory.read(0x100100, 0x300000)) and not any(memory.read(0x30100000 - 0x10, 0x133))


def test_a_large_bss_costs_a_firmware_boot_nothing_either():
    # The firmware path: KERNEL_DATA and the pages faulted in ahead end with the file's bytes.
    import time

    from tinyvmm.fw_cfg import items as fwc
    data = elf64([(0x100000, CODE, 5 * layout.GiB // 2)], pvh_note(ENTRY))
    start = time.monotonic()
    p = plan(data, ram=3 * layout.GiB)
    items = fwc.FwCfgItems()
    pvh.publish(p, items, "pvh_dma.bin", b"\x55\xaa" + bytes(510))
    assert time.monotonic() - start < 1
    assert bytes(items.lookup(fwc.FW_CFG_KERNEL_DATA).data) == CODE
    assert p.load_ranges()[0] == (0x100000, len(CODE))


# --- reading a vmlinux by ranges -------------------------------------------

def test_a_file_is_read_as_its_bytes_are(tmp_path):
    data = good_elf()
    from_file = elf.read_elf_kernel(kernel_file(tmp_path, data))
    assert own_view(from_file) == own_view(elf.parse_elf_kernel(data))
    assert from_file.image() == elf.parse_elf_kernel(data).image()


def test_only_what_a_boot_needs_is_read_so_a_vmlinux_may_be_larger_than_ram(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(good_elf())
    with open(path, "r+b") as f:
        f.truncate(4 * layout.GiB)          # sparse "debugging sections" past the segments
    loaded = load_payload(str(path), None, None, True, 64 * MiB)
    assert loaded.is_elf and loaded.plan.entry == ENTRY
    assert bytes(loaded.plan.kernel.segments[0].data) == CODE


def test_a_vmlinux_that_shrinks_after_its_check_is_a_usage_error(tmp_path):
    from tinyvmm.memory import GuestMemory
    path = kernel_file(tmp_path, good_elf())
    kernel = elf.read_elf_kernel(path)
    with open(path, "r+b") as f:
        f.truncate(400)
    with pytest.raises(elf.ElfKernelError, match="became shorter while it was read"):
        direct.load_segments(GuestMemory.for_layout(64 * MiB, bytes(4096)), kernel)


def test_a_huge_note_segment_is_refused_unread(tmp_path):
    data = patch_phdr(good_elf(), 2, p_filesz=elf.NOTES_MAX + 1)
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    with open(path, "r+b") as f:
        f.truncate(2 * elf.NOTES_MAX + len(data))
    with pytest.raises(elf.ElfKernelError, match="PT_NOTE segment of"):
        elf.read_elf_kernel(str(path))


@pytest.mark.kvm
def test_a_vmlinux_that_shrinks_before_the_machine_loads_it_is_a_usage_error(tmp_path):
    """The segments are read when the machine is built, after the file's check: a file that
    has changed since is a usage error there, and the machine is not built."""
    import unittest.mock

    from tinyvmm import Machine
    from tinyvmm.boot.payload import LinuxPayload
    from tinyvmm.errors import ConfigError
    path = kernel_file(tmp_path, good_elf())
    real_fill = LinuxPayload.fill

    def shrink_then_fill(self, memory, foreign_firmware=False):
        with open(path, "r+b") as f:
            f.truncate(400)
        real_fill(self, memory, foreign_firmware)
    with unittest.mock.patch.object(LinuxPayload, "fill", shrink_then_fill):
        with pytest.raises(ConfigError, match="became shorter while it was read"):
            Machine(kernel=path, mem=64 * MiB)
