"""Unmodified SeaBIOS and qboot (Debian's images) on tinyvmm's i440FX machine, on /dev/kvm.

Each boot reaches the test kernel's "Linux version" banner: through SeaBIOS with
tinyvmm's linuxboot ROM and with QEMU's own ROMs, and through qboot's built-in
fw_cfg loader; with fw_cfg DMA and without. The firmware's own log (port 0x402)
must show the chipset it expects: RAM unlocked through PAM, the PCI devices of
QEMU's pc machine, no timeouts.
"""

import json
from pathlib import Path

import pytest
from command_line import tinyvmm

SEABIOS = Path("/usr/share/seabios/bios.bin")
SEABIOS_256K = Path("/usr/share/seabios/bios-256k.bin")
QBOOT = Path("/usr/share/qemu/qboot.rom")
QEMU_ROMS = Path("/usr/share/qemu")


def needs(*paths: Path):
    missing = [str(p) for p in paths if not p.exists()]
    package = "seabios" if any("seabios" in m for m in missing) else "qemu-system-data"
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} "
                                                    f"(Debian package {package}; make setup)")


def boot(tmp_path, firmware: Path, *options):
    timing, log = tmp_path / "timing.json", tmp_path / "firmware.log"
    result = tinyvmm("boot", "--bios", str(firmware), "--expect", "Linux version",
                     "--timeout", "200", "--serial", f"file:{tmp_path / 'serial.txt'}",
                     "--debugcon", f"file:{log}", "--timing-json", str(timing), *options,
                     timeout=300, text=True, errors="replace")
    serial = (tmp_path / "serial.txt").read_text(errors="replace")
    assert result.returncode == 0, result.stderr[-3000:] + serial[-2000:]
    assert "Linux version" in serial
    marks = [m["event"] for m in json.loads(timing.read_text())["marks"]]
    # Boundaries the firmware wrote nothing for, taken by tinyvmm: do_boot, then the kernel entry.
    assert marks.index("milestone 0xf4:5") < marks.index("milestone 0xf4:3") < marks.index("banner")
    return log.read_text(errors="replace")


def check_seabios_log(log: str) -> None:
    assert "Running on QEMU (i440fx)" in log
    assert "Unable to unlock ram" not in log and "No space for init relocation" not in log
    assert "Found 3 PCI devices" in log and "PCI: init bdf=00:01.3 id=8086:7113" in log
    assert "WARNING" not in log and "Timeout" not in log, log
    assert "Booting from ROM" in log


pytestmark = [pytest.mark.kvm, pytest.mark.slow]


@pytest.mark.kernel
@needs(SEABIOS, SEABIOS_256K)
@pytest.mark.parametrize("firmware", [SEABIOS, SEABIOS_256K], ids=["bios.bin", "bios-256k.bin"])
def test_seabios_with_tinyvmms_rom(tmp_path, firmware):
    check_seabios_log(boot(tmp_path, firmware))


@pytest.mark.kernel
@needs(SEABIOS, SEABIOS_256K, QEMU_ROMS / "linuxboot_dma.bin", QEMU_ROMS / "linuxboot.bin")
@pytest.mark.parametrize("firmware", [SEABIOS, SEABIOS_256K], ids=["bios.bin", "bios-256k.bin"])
@pytest.mark.parametrize("rom,options", [("linuxboot_dma.bin", []),
                                         ("linuxboot.bin", ["--no-fw-cfg-dma"])],
                         ids=["linuxboot_dma", "linuxboot-legacy"])
def test_seabios_with_qemus_roms(tmp_path, firmware, rom, options):
    log = boot(tmp_path, firmware, "--option-rom", str(QEMU_ROMS / rom), *options)
    check_seabios_log(log)
    assert f"/rom@genroms/{rom}" in log


@pytest.mark.kernel
@needs(QBOOT)
@pytest.mark.parametrize("options", [[], ["--no-fw-cfg-dma"]], ids=["dma", "legacy"])
def test_qboot(tmp_path, options):
    boot(tmp_path, QBOOT, *options)


@pytest.mark.kernel
@needs(QBOOT, SEABIOS_256K, QEMU_ROMS / "linuxboot_dma.bin")
@pytest.mark.parametrize("firmware", ["qboot", "seabios", "tinyvmm"])
@pytest.mark.parametrize("mem", ["256M", "3328M"])
def test_a_large_initrd_goes_at_the_top_of_ram_the_firmware_saw(tmp_path, firmware, mem):
    """The firmware's memory map comes from etc/e820: with QEMU's form of it, each firmware
    sees all the RAM, and the initrd (30 MiB) goes at its top, below the kernel's limit."""
    from tinyvmm import layout
    from tinyvmm.cli.arguments import parse_size
    from tinyvmm.spec import check_mem
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(30 * layout.MiB))
    options = {"qboot": ["--bios", str(QBOOT)],
               "seabios": ["--bios", str(SEABIOS_256K), "--option-rom",
                           str(QEMU_ROMS / "linuxboot_dma.bin")],
               "tinyvmm": []}[firmware]
    serial = tmp_path / "serial.txt"
    result = tinyvmm("boot", *options, "--initrd", str(initrd), "--mem", mem,
                     "--expect", "Kernel command line", "--timeout", "250",
                     "--serial", f"file:{serial}", timeout=300, text=True)
    text = serial.read_text(errors="replace")
    assert result.returncode == 0, result.stderr[-2000:] + text[-2000:]
    assert "BIOS-88" not in text and "Cannot find place for new RAMDISK" not in text
    ramdisk = [line for line in text.splitlines() if "RAMDISK: [mem " in line][0]
    start, end = (int(value, 16) for value in ramdisk.split("[mem ")[1].rstrip("]").split("-"))
    # At the top of RAM below 4 GiB (the kernel's XLF_CAN_BE_LOADED_ABOVE_4G lifts its
    # initrd_addr_max, as QEMU reads it), or below initrd_addr_max (2 GiB - 1 for the test
    # kernel), where qboot and tinyvmm's ROM keep it; a few MiB down for SeaBIOS's tables.
    low_end = layout.low_ram_end(check_mem(parse_size(mem), mem))
    assert end + 1 - start >= 30 * layout.MiB
    assert any(top - 4 * layout.MiB <= end < top for top in (low_end, min(low_end, 1 << 31)))


@needs(SEABIOS)
def test_seabios_without_a_kernel_reports_no_bootable_device(tmp_path):
    log = tmp_path / "firmware.log"
    result = tinyvmm("run", "--bios", str(SEABIOS), "--debugcon", f"file:{log}", "--serial", "none",
                     "--expect", "No bootable device", "--timeout", "120",
                     timeout=300, text=True, errors="replace")
    assert result.returncode == 0, result.stderr[-3000:]
    text = log.read_text(errors="replace")
    assert "Relocating init from" in text and "PS2 keyboard initialized" in text
    assert "e820 map has" in text
