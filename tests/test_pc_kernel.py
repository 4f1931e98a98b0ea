"""The pc test kernel (kernels/pc.config) as a client of the PC machine: through SeaBIOS, Linux's
own virtio-pci and virtio-blk drivers read a disk made here, and the run ends as its init said."""

import json
from pathlib import Path

import pytest
from command_line import tinyvmm

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
BOOT_TIMEOUT = 600      # seconds: a real kernel under an emulating KVM takes minutes
DISK_SECTORS = 2048
DISK_START = b"TINYVMM-PC-DISK\x01"     # the 16 bytes /init shows: text, and one '.' for 0x01


@pytest.mark.kvm
@pytest.mark.slow
def test_the_pc_kernel_reads_the_virtio_disk_through_seabios(tmp_path, pc_kernel):
    if not SEABIOS.exists():
        pytest.fail(f"{SEABIOS} is missing: make setup installs it (Debian package seabios)")
    disk = tmp_path / "disk.img"
    disk.write_bytes(DISK_START + bytes(DISK_SECTORS * 512 - len(DISK_START)))
    timing = tmp_path / "timing.json"
    result = tinyvmm("boot", "--bios", str(SEABIOS), "--kernel", str(pc_kernel.bzimage),
                     "--initrd", str(pc_kernel.initrd), "--drive", f"file={disk},if=virtio,format=raw",
                     "--timeout", "400", "--timing-json", str(timing), timeout=BOOT_TIMEOUT)
    console, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    assert result.returncode == 0, console[-3000:] + err[-3000:]
    assert "TINYVMM-INIT-OK" in console
    # Linux found the disk on PCI, drove it through virtio-pci and read its first sector
    assert (f"virtio-blk: vda {DISK_SECTORS} sectors, sector 0 = TINYVMM-PC-DISK. "
            f"({DISK_START.hex()})") in console, console[-3000:]
    assert "cpus: online 0" in console
    # The run ends the way /init announced: powered off through ACPI, or restarted
    outcome = json.loads(timing.read_text())["outcome"]
    if "init: powering the machine off" in console:
        assert outcome == "POWEROFF" and "reboot: Power down" in console
    else:
        assert "init: restarting the machine" in console
        assert outcome == "RESET" and "reboot: Restarting system" in console
