"""The shipped firmware: image format, option ROM signing, reproducible rebuild, and boots.

The boot tests use the test payload firmware/tests/payload.S (a tiny bzImage that
reports on the debug console what the firmware handed it) under QEMU (`-bios`,
with the shipped ROMs found first through `-L`) and under tinyvmm, and the test
kernel of `make -C kernels` under QEMU.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import payloads
import pytest
from command_line import tinyvmm
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st
from payloads import FIRMWARE_SOURCES, KERNEL, KERNEL_INITRD, make_firmware, toolchain_missing

from tinyvmm import firmware, layout, optionrom
from tinyvmm.optionrom import OptionRomError, sign, validate

ROOT = Path(__file__).resolve().parent.parent
RAM_MIB = 256
PAYLOAD_CMDLINE = "console=ttyS0 tinyvmm firmware test"


def elf_symbols(path: Path) -> dict[str, int]:
    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


def elf_loaded_bytes(path: Path) -> dict[int, bytes]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {s["sh_addr"]: s.data() for s in elf.iter_sections()
                if s["sh_flags"] & 2 and s["sh_type"] == "SHT_PROGBITS"}


# --- the shipped images ----------------------------------------------------

def test_bios_image_is_64k_and_its_reset_vector_jumps_to_the_entry():
    image = firmware.read_image(firmware.BIOS)
    assert len(image) == 64 * layout.KiB
    reset = image[0xFFF0:0xFFF5]
    assert reset[0] == 0xEA, "the reset vector must be a far jump"
    offset = int.from_bytes(reset[1:3], "little")
    segment = int.from_bytes(reset[3:5], "little")
    assert segment == 0xF000
    assert offset == elf_symbols(firmware.image_path("bios.elf"))["bios_entry"]


def test_bios_elf_describes_the_shipped_bytes():
    image = firmware.read_image(firmware.BIOS)
    sections = elf_loaded_bytes(firmware.image_path("bios.elf"))
    assert sections, "no loadable sections in bios.elf"
    for address, data in sections.items():
        assert image[address:address + len(data)] == data, f"section at {address:#x} differs"
    symbols = elf_symbols(firmware.image_path("bios.elf"))
    for name in ("int15_system", "int10_video", "fw_cfg_read", "optionroms_load", "boot_rom"):
        assert 0 < symbols[name] < 0xFFF0


@pytest.mark.parametrize("name, product", [
    (firmware.LINUXBOOT_DMA, "tinyvmm Linux loader DMA"),
    (firmware.LINUXBOOT, "tinyvmm Linux loader"),
])
def test_linuxboot_roms_are_valid_option_roms(name, product):
    image = firmware.read_image(name)
    info = validate(image)
    assert info.size == len(image) and len(image) % 512 == 0
    assert info.product == product and info.manufacturer == "tinyvmm"
    assert image[3] == 0xCB, "the init entry should just return (retf)"
    elf = firmware.image_path(name.replace(".bin", ".elf"))
    assert info.bev == elf_symbols(elf)["linuxboot_bev"]


def test_legacy_rom_reads_with_rep_insb_and_the_dma_rom_does_not():
    addr32_rep_insb = b"\x67\xf3\x6c"
    assert addr32_rep_insb in firmware.read_image(firmware.LINUXBOOT)
    assert addr32_rep_insb not in firmware.read_image(firmware.LINUXBOOT_DMA)


def test_firmware_module_names_and_errors():
    assert firmware.linuxboot_name(dma=True) == "linuxboot_dma.bin"
    assert firmware.linuxboot_name(dma=False) == "linuxboot.bin"
    assert os.path.dirname(firmware.image_path(firmware.BIOS)) == firmware.DIRECTORY
    with pytest.raises(ValueError):
        firmware.image_path("../firmware/bios.bin")
    with pytest.raises(FileNotFoundError):
        firmware.read_image("no-such-image.bin")


def test_layout_inc_is_generated_from_layout_py():
    assert (FIRMWARE_SOURCES / "layout.inc").read_text() == layout.asm_symbols()


# --- option ROM signing and validation -------------------------------------

def minimal_rom(body: bytes = b"", bev: int = 0x40) -> bytes:
    """A ROM header pointing at a PnP header at 0x20 whose BEV is `bev`, then `body`."""
    rom = bytearray(0x40)
    rom[0:2] = b"\x55\xaa"
    rom[3] = 0xCB
    rom[0x1A:0x1C] = (0x20).to_bytes(2, "little")
    rom[0x20:0x24] = b"$PnP"
    rom[0x24], rom[0x25] = 1, 2
    rom[0x3A:0x3C] = bev.to_bytes(2, "little")
    return bytes(rom) + body + b"\xcb"


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=3000))
def test_signed_rom_sums_to_zero_and_keeps_the_code(body):
    raw = minimal_rom(body)
    signed = sign(raw)
    assert len(signed) % 512 == 0 and len(signed) > len(raw)
    assert signed[2] * 512 == len(signed)
    assert sum(signed) % 256 == 0
    assert sum(signed[0x20:0x40]) % 256 == 0, "PnP header checksum"
    changed = [i for i in range(len(raw)) if raw[i] != signed[i]]
    assert set(changed) <= {2, 0x29}, "signing may only touch the size byte and the PnP checksum"
    assert validate(signed).bev == 0x40


def set_byte(offset: int, value: int):
    return lambda rom: rom.__setitem__(offset, value)


@pytest.mark.parametrize("damage, fix_checksum, message", [
    (set_byte(0, 0x54), True, "signature"),
    (set_byte(100, 0xEE), False, "checksum"),
    (set_byte(2, 2), True, "size byte says"),
    (set_byte(2, 0), True, r"size byte \(offset 2\) is 0"),
    (set_byte(0x21, ord("X")), True, "PnP"),
    (set_byte(0x29, 0x55), True, "PnP header checksum"),
])
def test_validate_rejects_damaged_roms(damage, fix_checksum, message):
    rom = bytearray(sign(minimal_rom(bytes(range(200)))))
    assert len(rom) == 512
    damage(rom)
    if fix_checksum:
        rom[-1] = 0
        rom[-1] = -sum(rom) & 0xFF
    with pytest.raises(OptionRomError, match=message):
        validate(bytes(rom))


def test_validate_rejects_a_bev_outside_the_rom():
    with pytest.raises(OptionRomError, match="bootstrap entry vector"):
        validate(sign(minimal_rom(bev=0x4000)))
    with pytest.raises(OptionRomError, match="bootstrap entry vector"):
        validate(sign(minimal_rom(bev=0)))


def test_sign_refuses_non_roms_and_oversized_images():
    with pytest.raises(OptionRomError):
        sign(b"MZ" + bytes(100))
    with pytest.raises(OptionRomError, match="do not fit"):
        sign(minimal_rom(bytes(255 * 512)))


def test_optionrom_command_line(tmp_path, capsys):
    raw, out = tmp_path / "rom.raw", tmp_path / "rom.bin"
    raw.write_bytes(minimal_rom(b"hello"))
    assert optionrom.main(["sign", str(raw), str(out)]) == 0
    assert validate(out.read_bytes()).size == 512
    assert optionrom.main(["check", str(out)]) == 0
    assert "512 bytes, BEV 0x40" in capsys.readouterr().out
    assert optionrom.main(["check", str(raw)]) == 1
    assert optionrom.main(["frobnicate"]) == 2


# --- rebuilding ------------------------------------------------------------

def test_rebuild_from_source_gives_the_shipped_bytes(tmp_path):
    missing = toolchain_missing()
    if missing:
        pytest.skip(missing)
    make_firmware(tmp_path)
    for name in ("bios.bin", "bios.elf", "linuxboot.bin", "linuxboot.elf",
                 "linuxboot_dma.bin", "linuxboot_dma.elf"):
        assert (tmp_path / name).read_bytes() == firmware.read_image(name), \
            f"{name} differs from a fresh build: run `make -C firmware` and commit the result"


# --- booting the test payload ----------------------------------------------

def parse_payload_report(text: str) -> dict:
    return payloads.parse_report(text, "payload", lists=("e820",))


def check_payload_report(text: str, payload: Path, initrd: Path) -> dict:
    report = parse_payload_report(text)
    assert "done" in report, f"the payload did not finish:\n{text}"
    entry, regs, header = report["entry"], report["regs"], report["header"]
    setup_segment = entry["ds"]
    assert entry["cs"] == setup_segment + 0x20
    assert entry["es"] == entry["fs"] == entry["gs"] == entry["ss"] == setup_segment
    assert entry["esp"] == header["cmdline"] - setup_segment * 16 - 16
    assert entry["eflags"] & 0x200 == 0, "the kernel must be entered with interrupts off"
    assert all(value == 0 for name, value in regs.items() if name != "eax"), regs
    assert header["loader"] != 0 and header["loadflags"] & 0x80
    assert report["cmdline"] == PAYLOAD_CMDLINE

    image = payload.read_bytes()
    data = initrd.read_bytes()
    setup_size = (image[0x1F1] + 1) * 512
    assert report["sums"]["kernel"] == sum(image[setup_size:]) & 0xFFFFFFFF
    assert report["sums"]["initrd"] == sum(data) & 0xFFFFFFFF
    # The RAM from 1 MiB ends at the end of RAM, or below the ACPI tables the BIOS installed
    # from etc/table-loader (QEMU publishes one), whose pages it reserves.
    ram_end = RAM_MIB * layout.MiB
    ram = [e for e in report["e820"] if e["type"] == 1 and e["base_hi"] == 0]
    ram_top = next(e["base"] + e["length"] for e in ram
                   if e["base"] <= layout.HIGH_MEMORY_START < e["base"] + e["length"])
    if ram_top != ram_end:
        assert "acpi: etc/acpi/tables at " in text
        assert 0 < ram_end - ram_top <= 0x40000
        assert {"base_hi": 0, "base": ram_top, "length_hi": 0, "length": ram_end - ram_top,
                "type": 2} in [{k: e[k] for k in ("base_hi", "base", "length_hi", "length", "type")}
                               for e in report["e820"]]
    # The ROM moves the initrd to the top of the RAM E801h reports.
    assert header["initrd_size"] == len(data)
    e801_top = 16 * layout.MiB + ((ram_top - 16 * layout.MiB) & ~0xFFFF)     # in 64 KiB units
    assert header["initrd"] == (e801_top - len(data)) & ~0xFFF
    assert report["e820"][-1]["next"] == 0
    assert report["e801"] == {"ax": 0x3C00, "bx": (ram_top - 16 * layout.MiB) >> 16,
                              "cx": 0x3C00, "dx": (ram_top - 16 * layout.MiB) >> 16, "cf": 0}
    assert report["int15_88"] == {"ax": 63 * 1024, "cf": 0}
    assert report["int12"] == {"ax": 639}
    assert report["a20"]["cf"] == 0
    assert set(report["unsupported"].values()) == {1}, "unsupported services must set CF"
    assert "payload: int10 teletype" in text
    return report


def qemu_boot(tmp_path: Path, kernel: Path, dma: bool, append: str, initrd: Path | None = None,
              timeout: float = 60, expect_serial: str | None = None) -> tuple[str, str]:
    """Boot KERNEL under QEMU TCG with the shipped BIOS and ROMs -> (debug console, serial)."""
    roms = tmp_path / "roms"
    roms.mkdir(exist_ok=True)
    for name in (firmware.LINUXBOOT, firmware.LINUXBOOT_DMA):
        shutil.copy(firmware.image_path(name), roms / name)
    debug_log, serial_log = tmp_path / "debugcon.log", tmp_path / "serial.log"
    command = ["qemu-system-x86_64", "-L", str(roms), "-accel", "tcg", "-cpu", "max",
               "-m", f"{RAM_MIB}M", "-display", "none", "-no-reboot", "-net", "none",
               "-bios", str(firmware.image_path(firmware.BIOS)),
               "-kernel", str(kernel), "-append", append,
               "-chardev", f"file,id=dbg,path={debug_log}",
               "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
               "-chardev", f"file,id=ser,path={serial_log}", "-serial", "chardev:ser",
               "-monitor", "none"]
    if initrd:
        command += ["-initrd", str(initrd)]
    if not dma:
        command += ["-global", "fw_cfg_io.dma_enabled=off"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        if expect_serial is None:
            process.wait(timeout)
        else:
            _wait_for_text(process, serial_log, expect_serial, timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        process.kill()
        process.wait()
    return debug_log.read_text(errors="replace"), serial_log.read_text(errors="replace")


def _wait_for_text(process, path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)


ROM_CASES = [pytest.param(True, "linuxboot_dma.bin", "DMA interface", id="dma"),
             pytest.param(False, "linuxboot.bin", "traditional interface", id="legacy")]


@pytest.mark.qemu
@pytest.mark.parametrize("dma, rom, interface", ROM_CASES)
def test_payload_boots_under_qemu(tmp_path, payload, initrd, dma, rom, interface):
    debug, _ = qemu_boot(tmp_path, payload, dma, PAYLOAD_CMDLINE, initrd)
    assert "tinyvmm BIOS" in debug
    # QEMU's etc/table-loader: the RSDP below the BIOS, the tables at the top of RAM.
    assert "acpi: etc/acpi/rsdp at 000e" in debug and "acpi: command" not in debug, debug
    assert f"fw_cfg: {interface}" in debug
    assert f"boot: genroms/{rom} through its BEV" in debug
    check_payload_report(debug, payload, initrd)


@pytest.mark.qemu
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("dma, rom, interface", ROM_CASES)
def test_linux_reaches_init_under_qemu(tmp_path, dma, rom, interface):
    # TCG runs Linux fully; /init exists only in the initramfs the ROM loaded.
    debug, serial = qemu_boot(tmp_path, KERNEL, dma, "console=ttyS0 earlyprintk=serial panic=-1",
                              initrd=KERNEL_INITRD, timeout=120,
                              expect_serial="Run /init as init process")
    assert f"boot: genroms/{rom} through its BEV" in debug
    assert "Linux version" in serial, f"no banner on the serial console:\n{serial[-2000:]}"
    assert "Run /init as init process" in serial, serial[-2000:]


# --- on tinyvmm ------------------------------------------------------------

@pytest.mark.kvm
def test_bios_on_tinyvmm_without_fw_cfg_stops_with_a_message(tmp_path):
    log = tmp_path / "debugcon.log"
    result = tinyvmm("run", "--bios", str(firmware.image_path(firmware.BIOS)), "--no-fw-cfg-ports",
                     "--fw-cfg-mmio", "0xfef00000",
                     "--debugcon", f"file:{log}", "--expect", "; stopping", "--timeout", "60",
                     "--trace", "milestones", cwd=ROOT, text=True)
    assert result.returncode == 0, result.stderr
    assert log.read_text().startswith("tinyvmm BIOS\n")
    assert log.read_text().endswith("\nno fw_cfg device: nothing to boot; stopping")
    assert "port 0xf5 value 1" in result.stderr


@pytest.mark.kvm
def test_bios_on_tinyvmm_without_a_rom_stops_with_a_message(tmp_path):
    log = tmp_path / "debugcon.log"
    result = tinyvmm("run", "--bios", str(firmware.image_path(firmware.BIOS)),
                     "--debugcon", f"file:{log}", "--expect", "; stopping", "--timeout", "60",
                     cwd=ROOT, text=True)
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert "fw_cfg: DMA interface" in text
    assert "no bootable option ROM in fw_cfg genroms/; stopping" in text


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.parametrize("dma, rom, interface", ROM_CASES)
def test_payload_boots_on_tinyvmm(tmp_path, payload, initrd, dma, rom, interface):
    log = tmp_path / "debugcon.log"
    args = ["boot", "--kernel", str(payload), "--initrd", str(initrd), "--append", PAYLOAD_CMDLINE,
            "--append-as-is", "--mem", f"{RAM_MIB}M", "--debugcon", f"file:{log}", "--serial", "none",
            "--timeout", "100", "--trace", "milestones"]
    if not dma:
        args.append("--no-fw-cfg-dma")
    result = tinyvmm(*args, cwd=ROOT, text=True)
    text = log.read_text()
    assert result.returncode == 0, f"{result.stderr}\n{text}"
    assert f"fw_cfg: {interface}" in text
    assert f"boot: genroms/{rom} through its BEV" in text
    check_payload_report(text, payload, initrd)
    order = [m for m in ("port 0xf5 value 1", "port 0xf4 value 5", "port 0xf4 value 3")
             if m in result.stderr]
    assert order == ["port 0xf5 value 1", "port 0xf4 value 5", "port 0xf4 value 3"]
    assert result.stderr.index("value 5") < result.stderr.index("value 3")


@pytest.mark.kvm
def test_bios_on_tinyvmm_skips_a_bad_rom_and_follows_bootorder(tmp_path):
    good = firmware.read_image(firmware.LINUXBOOT_DMA)
    bad = bytearray(good)
    bad[0x100] ^= 0xFF                  # checksum no longer 0
    (tmp_path / "bad.bin").write_bytes(bad)
    log = tmp_path / "debugcon.log"
    rom = str(firmware.image_path(firmware.LINUXBOOT_DMA))
    result = tinyvmm("run", "--bios", str(firmware.image_path(firmware.BIOS)),
                     "--fw-cfg", f"name=genroms/a-bad.bin,file={tmp_path / 'bad.bin'}",
                     "--fw-cfg", f"name=genroms/b-first.bin,file={rom}",
                     "--fw-cfg", f"name=genroms/c-chosen.bin,file={rom}",
                     "--fw-cfg", "name=bootorder,string=/pci@i0cf8/ide@1\n/rom@genroms/c-chosen.bin\n",
                     "--debugcon", f"file:{log}", "--expect", "; stopping", "--timeout", "60",
                     cwd=ROOT, text=True)
    text = log.read_text()
    assert result.returncode == 0, f"{result.stderr}\n{text}"
    assert "rom genroms/a-bad.bin: bad signature, size or checksum; skipped" in text
    # The first good ROM takes the first 2 KiB slot, the second the next one.
    assert "rom genroms/b-first.bin at c000:0000, BEV 0040" in text
    assert "rom genroms/c-chosen.bin at c080:0000, BEV 0040" in text
    assert "boot: genroms/c-chosen.bin through its BEV c080:0040" in text
    assert "Linux loader: no kernel in fw_cfg; stopping" in text
