"""tinyvmm's PVH option ROMs, pvh.bin (fw_cfg ports) and pvh_dma.bin (fw_cfg DMA), booting
the test PVH kernel firmware/tests/pvh_payload.S (an ELF64 whose 32-bit PVH entry reports
on COM1 what it was handed) from fw_cfg, under tinyvmm's BIOS and under SeaBIOS.

`publish_pvh` is this test's own publisher of the fw_cfg contract the ROMs read, so that
tests can vary the items; `tinyvmm boot --boot firmware` publishes them through
tinyvmm.boot.pvh.publish, which the last test goes through.
"""

import struct
from pathlib import Path

import payloads
import pytest
from command_line import tinyvmm
from elftools.elf.elffile import ELFFile
from payloads import make_firmware, toolchain_missing

from tinyvmm import firmware, layout
from tinyvmm.cpu import guest_has_amd_ht_hole
from tinyvmm.fw_cfg import items as fwc
from tinyvmm.optionrom import validate

ROOT = Path(__file__).resolve().parent.parent
SEABIOS_256K = Path("/usr/share/seabios/bios-256k.bin")
RAM = 64 * layout.MiB
CMDLINE = "console=ttyS0 pvh rom test"
START_INFO_MAGIC = 0x336EC578
HEADER_PEEK_SIZE = 8192
MODULE_SUM_LIMIT = 0x10000          # the payload sums the first 64 KiB of module 0


# --- the test's own publisher of the contract --------------------------------

def read_elf_kernel(path: Path) -> tuple[int, int, bytes]:
    """(PVH entry, lowest PT_LOAD address, the image from there as it lies in memory)."""
    from tinyvmm.boot.elf import parse_elf_kernel
    kernel = parse_elf_kernel(path.read_bytes(), str(path))
    assert kernel.pvh_entry is not None, f"{path} has no PVH note"
    return kernel.pvh_entry, kernel.low, bytes(kernel.image())


def publish_pvh(items: fwc.FwCfgItems, kernel: Path, rom_name: str, cmdline: str = CMDLINE,
                initrd: bytes | None = None, tail: bytes = b"", cmdline_addr: bool = True,
                entry: bool = True) -> dict:
    """Publish an ELF kernel as tinyvmm does for the PVH ROMs, and the ROM with bootorder
    naming it; returns where things go. `tail` is added to the image (a kernel-sized copy
    with a payload that knows nothing of it); without `cmdline_addr`, CMDLINE_ADDR is left
    out, as QEMU does."""
    pvh_entry, low, image = read_elf_kernel(kernel)
    image += tail
    if entry:
        items.add_u32(fwc.FW_CFG_KERNEL_ENTRY, pvh_entry)
    items.add_u32(fwc.FW_CFG_KERNEL_ADDR, low)
    items.add_u32(fwc.FW_CFG_KERNEL_SIZE, len(image))
    items.add_item(fwc.FW_CFG_KERNEL_DATA, image)
    if cmdline_addr:
        items.add_u32(fwc.FW_CFG_CMDLINE_ADDR, layout.BOOT_CMDLINE_START)
    raw = cmdline.encode() + b"\0"
    items.add_u32(fwc.FW_CFG_CMDLINE_SIZE, len(raw))
    items.add_item(fwc.FW_CFG_CMDLINE_DATA, raw)
    header = kernel.read_bytes()[:HEADER_PEEK_SIZE]
    items.add_u32(fwc.FW_CFG_SETUP_SIZE, len(header))
    items.add_item(fwc.FW_CFG_SETUP_DATA, header)
    initrd_addr = 0
    if initrd is not None:
        initrd_addr = (layout.low_ram_end(RAM) - len(initrd)) & ~0xFFF
        items.add_u32(fwc.FW_CFG_INITRD_ADDR, initrd_addr)
        items.add_u32(fwc.FW_CFG_INITRD_SIZE, len(initrd))
        items.add_item(fwc.FW_CFG_INITRD_DATA, initrd)
    items.add_boot_rom(rom_name, firmware.read_image(rom_name))
    return {"entry": pvh_entry, "low": low, "size": len(image), "initrd_addr": initrd_addr}


# --- running a board -----------------------------------------------------------

class Boot:
    """One run: its result, console texts, milestones (port, value), timeline marks by
    event, and the guest memory kept after it."""

    def __init__(self, result, serial: str, debugcon: str, milestones, marks, memory):
        self.result = result
        self.serial = serial
        self.debugcon = debugcon
        self.milestones = [(m.port, m.value) for m in milestones]
        self.marks = {m["event"]: m for m in marks}
        self.memory = memory

    def between(self, first: str, second: str, field: str) -> int:
        return self.marks[second][field] - self.marks[first][field]


def run_board(bios: bytes, dma: bool, publish, timeout: float = 60,
              expect: bytes | None = None, keep=()) -> Boot:
    """Build tinyvmm's board with this firmware, let `publish(items)` add the boot
    items, and run it to its end; the guest memory of the (address, size) ranges in
    `keep` is read before the board goes."""
    from tinyvmm.board import Board, BoardConfig
    from tinyvmm.boot.marks import BootMarks
    from tinyvmm.console import Console
    from tinyvmm.fw_cfg.attach import attach_fw_cfg, build_fw_cfg_items
    from tinyvmm.runner import Runner
    from tinyvmm.spec import FwCfgSpec
    from tinyvmm.timeline import BootTimeline

    spec = FwCfgSpec(dma=dma)
    items = build_fw_cfg_items(spec, RAM, len(bios), loader_files=2)
    publish(items)
    serial, debugcon = bytearray(), bytearray()
    board = Board(BoardConfig(bios, RAM, Console("serial", serial.extend, expect),
                              Console("debugcon", debugcon.extend, expect)))
    try:
        fw_cfg = attach_fw_cfg(board, spec, items)
        runner = Runner(board, timeout=timeout)
        BootMarks(board, runner, fw_cfg, None)    # do_boot for a firmware that writes none
        timeline = BootTimeline(board, runner, fw_cfg)
        result = runner.run()
        memory = {address: board.memory.read(address, size) for address, size in keep}
    finally:
        board.close()
    return Boot(result, serial.decode("latin-1"), debugcon.decode("latin-1"), board.milestones,
                timeline.marks, memory)


def parse_report(text: str) -> dict:
    return payloads.parse_report(text, "pvh-payload", lists=("memmap", "segment"))


def check_report(boot: Boot, initrd: bytes | None, cmdline: str = CMDLINE) -> dict:
    from tinyvmm.runner import Outcome
    report = parse_report(boot.serial)
    assert "done" in report, f"the payload did not finish:\n{boot.serial}\n{boot.debugcon}"
    assert boot.result.outcome is Outcome.RESET, boot.result.message
    assert report["checks"]["failed"] == 0, boot.serial
    entry, info = report["entry"], report["start_info"]
    assert entry["ebx"] == layout.PVH_START_INFO
    assert entry["cr0"] == 0x11 and entry["cr4"] == 0
    assert entry["eflags"] & 0x200 == 0
    for segment in report["segment"]:
        assert (segment["base"], segment["limit"]) == (0, 0xFFFFFFFF), segment
    assert report["segment"][0]["ar"] == 0x00C09B00          # 32-bit code, 4 KiB pages, accessed
    assert info["magic"] == START_INFO_MAGIC and info["version"] == 1 and info["flags"] == 0
    assert info["cmdline_paddr"] == layout.BOOT_CMDLINE_START
    assert report["cmdline"] == cmdline
    assert info["memmap_paddr"] == layout.PVH_MEMMAP
    assert info["memmap_entries"] == len(report["memmap"]) > 0
    assert any(entry["type"] == 1 for entry in report["memmap"])
    assert report["image"]["data_sum"] == report["image"]["expected"]
    assert report["image"]["bss_dirty"] == 0
    if initrd is None:
        assert info["nr_modules"] == 0 and info["modlist_paddr"] == 0 and "module0" not in report
    else:
        module = report["module0"]
        assert info["nr_modules"] == 1 and info["modlist_paddr"] == layout.PVH_MODLIST
        assert module["size"] == len(initrd)
        # Inside RAM as the BIOS reports it (the ROM moves it down when it is not).
        assert any(m["type"] == 1 and m["addr"] <= module["paddr"]
                   and module["paddr"] + len(initrd) <= m["addr"] + m["size"]
                   for m in report["memmap"]), (module, report["memmap"])
        assert module["cmdline_paddr"] == 0
        assert (module["first"], module["last"]) == (initrd[0], initrd[-1])
        assert module["sum"] == sum(initrd[:MODULE_SUM_LIMIT])
    assert (0xF4, layout.MILESTONE_PVH_BOOT) in boot.milestones
    assert boot.milestones.index((0xF4, layout.MILESTONE_DO_BOOT)) < \
        boot.milestones.index((0xF4, layout.MILESTONE_PVH_BOOT))
    return report


def tinyvmm_bios() -> bytes:
    return firmware.read_image(firmware.BIOS)


def e820_entries(bios: bytes) -> list[dict]:
    """tinyvmm's BIOS's E820 table, sorted: the map a direct boot gives (layout.e820_map) but with
    conventional RAM up to the EBDA (the platform tables below it are a direct boot's), and
    QEMU's HyperTransport range for an AMD vCPU, which etc/e820 has and the BIOS keeps."""
    entries = [(0, layout.EBDA_START, layout.E820_RAM)]
    entries += [entry for entry in layout.e820_map(RAM, len(bios)) if entry[0] >= layout.EBDA_START]
    if guest_has_amd_ht_hole():
        entries.append((layout.AMD_HT_START, layout.AMD_HT_SIZE, 2))
    return [{"addr": addr, "size": size, "type": kind} for addr, size, kind in sorted(entries)]


# --- the shipped images --------------------------------------------------------

@pytest.mark.parametrize("name, product", [(firmware.PVH_DMA, "tinyvmm PVH loader DMA"),
                                           (firmware.PVH, "tinyvmm PVH loader")])
def test_pvh_roms_are_valid_option_roms(name, product):
    image = firmware.read_image(name)
    info = validate(image)
    assert info.size == len(image) and len(image) <= 2048
    assert info.product == product and info.manufacturer == "tinyvmm"
    with open(firmware.image_path(name.replace(".bin", ".elf")), "rb") as f:
        symbols = {s.name: s["st_value"] for s in ELFFile(f).get_section_by_name(".symtab")
                   .iter_symbols()}
    assert info.bev == symbols["pvh_bev"]
    # The GDT's descriptors are marked accessed: loading them writes nothing into the ROM.
    gdt = image[symbols["gdt"]:symbols["gdt_end"]]
    assert gdt == bytes(8) + bytes.fromhex("ffff00000093cf00") + bytes.fromhex("ffff0000009bcf00")


def test_legacy_rom_reads_with_rep_insb_and_the_dma_rom_does_not():
    addr32_rep_insb = b"\x67\xf3\x6c"
    assert addr32_rep_insb in firmware.read_image(firmware.PVH)
    assert addr32_rep_insb not in firmware.read_image(firmware.PVH_DMA)


def test_pvh_names():
    assert firmware.pvh_name(dma=True) == "pvh_dma.bin" and firmware.pvh_name(dma=False) == "pvh.bin"
    assert {"pvh.bin", "pvh_dma.bin"} <= set(firmware.IMAGES)


def test_rebuild_gives_the_shipped_pvh_roms(tmp_path):
    missing = toolchain_missing()
    if missing:
        pytest.skip(missing)
    make_firmware(tmp_path)
    for name in ("pvh.bin", "pvh.elf", "pvh_dma.bin", "pvh_dma.elf"):
        assert (tmp_path / name).read_bytes() == firmware.read_image(name), \
            f"{name} differs from a fresh build: run `make -C firmware` and commit the result"


def test_payload_is_an_elf64_pvh_kernel_above_1_mib(pvh_payload):
    with open(pvh_payload, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64 and elf["e_machine"] == "EM_X86_64"
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert len(loads) == 2 and all(s["p_paddr"] >= layout.HIGH_MEMORY_START for s in loads)
        assert loads[1]["p_memsz"] > loads[1]["p_filesz"], "no bss"
    entry, low, image = read_elf_kernel(pvh_payload)
    assert low == 0x100000 and low <= entry < low + len(image)


# --- booting -------------------------------------------------------------------

ROMS = [pytest.param(True, firmware.PVH_DMA, id="dma"), pytest.param(False, firmware.PVH, id="legacy")]


@pytest.mark.kvm
@pytest.mark.parametrize("dma, rom", ROMS)
@pytest.mark.parametrize("with_initrd", [True, False], ids=["initrd", "no-initrd"])
def test_pvh_rom_boots_the_payload(pvh_payload, initrd, dma, rom, with_initrd):
    data = initrd.read_bytes() if with_initrd else None
    bios = tinyvmm_bios()
    placed = {}
    tables = layout.PVH_MEMMAP + layout.PVH_MEMMAP_MAX_ENTRIES * 24 - layout.PVH_START_INFO
    boot = run_board(bios, dma, lambda items: placed.update(
        publish_pvh(items, pvh_payload, rom, initrd=data)), keep=[(layout.PVH_START_INFO, tables)])
    report = check_report(boot, data)
    # What the payload does not show: the reserved fields are 0.
    memory = boot.memory[layout.PVH_START_INFO]
    assert struct.unpack_from("<I", memory, 52) == (0,)
    modlist = layout.PVH_MODLIST - layout.PVH_START_INFO
    assert memory[modlist + 24:modlist + 32] == bytes(8)
    memmap = layout.PVH_MEMMAP - layout.PVH_START_INFO
    assert all(struct.unpack_from("<I", memory, memmap + 24 * i + 20) == (0,)
               for i in range(len(report["memmap"])))
    assert f"boot: genroms/{rom} through its BEV" in boot.debugcon
    if data:
        assert report["module0"]["paddr"] == placed["initrd_addr"]
    # The memory map is the BIOS's E820 table: etc/e820 with the BIOS's areas reserved.
    assert sorted(({k: e[k] for k in ("addr", "size", "type")} for e in report["memmap"]),
                  key=lambda e: e["addr"]) == e820_entries(bios)
    assert report["start_info"]["rsdp_paddr"] == 0, "Linux looks for the RSDP itself"
    assert boot.milestones == [(0xF5, layout.MILESTONE_FW_START), (0xF4, layout.MILESTONE_DO_BOOT),
                               (0xF4, layout.MILESTONE_PVH_BOOT)]
    # The legacy ROM moves everything through the data port, the DMA ROM by DMA.
    moved = placed["size"] + (len(data) if data else 0) + len(CMDLINE) + 1
    pio = boot.between("milestone 0xf4:5", "milestone 0xf4:4", "pio_bytes")
    dma_bytes = boot.between("milestone 0xf4:5", "milestone 0xf4:4", "dma_bytes")
    if dma:
        assert moved <= dma_bytes < moved + 64 and pio < 4096    # + the numbers read
    else:
        assert pio >= moved and dma_bytes == 0


@pytest.mark.kvm
@pytest.mark.parametrize("dma, rom", ROMS)
def test_without_cmdline_addr_the_command_line_goes_to_the_default_place(pvh_payload, dma, rom):
    boot = run_board(tinyvmm_bios(), dma, lambda items: publish_pvh(items, pvh_payload, rom,
                                                                    cmdline_addr=False))
    check_report(boot, None)


@pytest.mark.kvm
@pytest.mark.parametrize("dma, rom", ROMS)
@pytest.mark.parametrize("address", [RAM - 0x10000, RAM + 0x100000], ids=["across", "beyond"])
def test_an_initrd_past_the_end_of_ram_is_moved_below_it(pvh_payload, initrd, dma, rom, address):
    """The loader's idea of RAM and the BIOS's E820 can differ (SeaBIOS keeps its tables
    in the last pages): the ROM keeps the initrd in RAM as E820 reports it."""
    data = initrd.read_bytes()

    def publish(items):
        publish_pvh(items, pvh_payload, rom, initrd=data)
        items.add_u32(fwc.FW_CFG_INITRD_ADDR, address, replace=True)
    report = check_report(run_board(tinyvmm_bios(), dma, publish), data)
    assert report["module0"]["paddr"] == (RAM - len(data)) & ~0xFFF


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.parametrize("dma, rom", ROMS)
def test_a_kernel_sized_image_crosses_16_mib(pvh_payload, initrd, dma, rom):
    """12 MiB of image from 1 MiB up, as a real vmlinux: the copy goes past 16 MiB."""
    data = initrd.read_bytes()
    tail = bytes((i * 7 + 3) & 0xFF for i in range(4096)) * (12 * layout.MiB // 4096)
    placed = {}
    boot = run_board(tinyvmm_bios(), dma, lambda items: placed.update(
        publish_pvh(items, pvh_payload, rom, initrd=data, tail=tail)), timeout=120,
        keep=[(0x100000, 13 * layout.MiB)])
    check_report(boot, data)
    loaded = boot.memory[0x100000]
    image_end = placed["low"] + placed["size"] - 0x100000
    assert loaded[image_end - len(tail):image_end] == tail


@pytest.mark.kvm
@pytest.mark.parametrize("dma, rom", ROMS)
@pytest.mark.parametrize("what, message", [
    ("entry", "PVH loader: no PVH entry in fw_cfg (KERNEL_ENTRY is 0); stopping"),
    ("kernel", "PVH loader: no kernel in fw_cfg (KERNEL_SIZE is 0); stopping"),
])
def test_missing_kernel_items_stop_with_a_message(pvh_payload, dma, rom, what, message):
    def publish(items):
        if what == "entry":
            publish_pvh(items, pvh_payload, rom, entry=False)
        else:
            path = fwc.GENROMS_PREFIX + rom
            items.add_file(path, firmware.read_image(rom))
            items.add_file(fwc.FILE_BOOTORDER, f"/rom@{path}".encode() + b"\0")
    boot = run_board(tinyvmm_bios(), dma, publish, expect=b"; stopping")
    assert message in boot.debugcon, boot.debugcon
    assert (0xF4, layout.MILESTONE_PVH_BOOT) not in boot.milestones


@pytest.mark.kvm
def test_a_dma_error_stops_with_the_key(pvh_payload, initrd):
    """A kernel address outside RAM: the device answers the DMA transfer with ERROR."""
    def publish(items):
        publish_pvh(items, pvh_payload, firmware.PVH_DMA, initrd=initrd.read_bytes())
        items.add_u32(fwc.FW_CFG_KERNEL_ADDR, 0xE0000000, replace=True)
    boot = run_board(tinyvmm_bios(), True, publish, expect=b"; stopping")
    assert "PVH loader DMA: fw_cfg DMA error reading key 0011; stopping" in boot.debugcon
    assert (0xF4, layout.MILESTONE_PVH_BOOT) not in boot.milestones


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.skipif(not SEABIOS_256K.exists(),
                    reason=f"needs {SEABIOS_256K} (Debian package seabios)")
@pytest.mark.parametrize("dma, rom", ROMS)
def test_pvh_rom_under_seabios(pvh_payload, initrd, dma, rom):
    data = initrd.read_bytes()
    placed = {}
    boot = run_board(SEABIOS_256K.read_bytes(), dma, lambda items: placed.update(
        publish_pvh(items, pvh_payload, rom, initrd=data)), timeout=120)
    report = check_report(boot, data)
    assert f"/rom@genroms/{rom}" in boot.debugcon and "Booting from ROM" in boot.debugcon
    # The ROM leaves the ACPI RSDP for Linux to find, though SeaBIOS builds tables.
    assert report["start_info"]["rsdp_paddr"] == 0
    # It keeps them in the last pages of RAM, which its E820 reserves: the initrd the
    # loader put at the top of RAM was moved below them, page-aligned.
    ram = [m for m in report["memmap"] if m["type"] == 1 and m["addr"] <= placed["initrd_addr"]][-1]
    top = ram["addr"] + ram["size"]
    assert top < RAM
    assert report["module0"]["paddr"] == (top - len(data)) & ~0xFFF


@pytest.mark.kvm
@pytest.mark.parametrize("dma, rom", ROMS)
def test_tinyvmm_boot_through_the_pvh_rom(tmp_path, pvh_payload, initrd, dma, rom):
    """The same contract from tinyvmm's own loader: `tinyvmm boot --boot firmware`."""
    serial, log = tmp_path / "serial.txt", tmp_path / "debugcon.txt"
    options = [] if dma else ["--no-fw-cfg-dma"]
    result = tinyvmm("boot", "--boot", "firmware", "--kernel", str(pvh_payload),
                     "--initrd", str(initrd), "--append", CMDLINE, "--append-as-is", "--mem", "64M",
                     "--serial", f"file:{serial}", "--debugcon", f"file:{log}", "--timeout", "60",
                     "--trace", "milestones", *options, cwd=ROOT, text=True)
    text = serial.read_text(errors="replace")
    assert result.returncode == 0, result.stderr + text
    assert f"boot: genroms/{rom} through its BEV" in log.read_text()
    report = parse_report(text)
    assert report["checks"]["failed"] == 0 and "done" in report, text
    assert report["cmdline"] == CMDLINE
    data = initrd.read_bytes()
    module = report["module0"]
    assert (module["size"], module["first"], module["last"]) == (len(data), data[0], data[-1])
    assert module["sum"] == sum(data[:MODULE_SUM_LIMIT])
    assert "port 0xf4 value 4: PVH boot" in result.stderr
