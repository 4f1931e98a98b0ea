"""The pc test kernel (kernels/pc.config) as a client of the PC machine, on tinyvmm and on QEMU's
pc machine (TCG) alike: two CPUs from the MADT, fw_cfg found through ACPI, a disk made here read
by Linux's own virtio-pci and virtio-blk drivers with its interrupt routed by the DSDT's _PRT,
and power-off through \\_S5."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from command_line import tinyvmm

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
BOOT_TIMEOUT = 600      # seconds: a real kernel under an emulating KVM takes minutes
DISK_SECTORS = 2048
DISK_START = b"TINYVMM-PC-DISK\x01"     # the 16 bytes /init shows: text, and one '.' for 0x01


def disk_image(path: Path) -> Path:
    path.write_bytes(DISK_START + bytes(DISK_SECTORS * 512 - len(DISK_START)))
    return path


# What /init prints of the disk made by disk_image
DISK_LINE = (f"virtio-blk: vda {DISK_SECTORS} sectors, sector 0 = TINYVMM-PC-DISK. "
             f"({DISK_START.hex()})")


# What Linux shows of the machine as tinyvmm's tables and vCPUs describe it (as on QEMU's)
MACHINE_LINES = ["ACPI: Using ACPI (MADT) for SMP configuration information",
                 "smp: Brought up 1 node, 2 CPUs", "PCI: Using ACPI for IRQ routing",
                 "TINYVMM-INIT-OK", "fw_cfg: opt/tinyvmm/test = hello", "cpus: online 0-1",
                 DISK_LINE, "init: powering the machine off",
                 "ACPI: PM: Preparing to enter system sleep state S5", "reboot: Power down"]


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.parametrize("boot", ["seabios", "pvh"])
def test_the_pc_kernel_uses_the_machine_through_its_own_drivers(tmp_path, pc_kernel, boot):
    """Two vCPUs, the disk read through Linux's virtio-pci and virtio-blk drivers with its
    interrupt routed by the DSDT's _PRT, fw_cfg found through ACPI, power-off through \\_S5:
    through SeaBIOS (which installs tinyvmm's tables) and on a direct PVH boot."""
    if not SEABIOS.exists():
        pytest.fail(f"{SEABIOS} is missing: make setup installs it (Debian package seabios)")
    disk = disk_image(tmp_path / "disk.img")
    timing = tmp_path / "timing.json"
    how = (["--bios", str(SEABIOS), "--kernel", str(pc_kernel.bzimage)] if boot == "seabios"
           else ["--boot", "direct", "--kernel", str(pc_kernel.vmlinux)])
    result = tinyvmm("boot", *how, "--initrd", str(pc_kernel.initrd), "--smp", "2",
                     "--drive", f"file={disk},if=virtio,format=raw",
                     "--fw-cfg", "name=opt/tinyvmm/test,string=hello",
                     "--timeout", "500", "--timing-json", str(timing), timeout=BOOT_TIMEOUT)
    console, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    assert result.returncode == 0, console[-3000:] + err[-3000:]
    for line in MACHINE_LINES:
        assert line in console, f"{line!r} missing:\n{console[-3000:]}"
    for table in ("FACP", "DSDT", "FACS", "APIC"):        # tinyvmm's, not firmware's own
        assert re.search(rf"ACPI: {table} 0x[0-9A-F]+ [0-9A-F]+( \(v01 TINYVM |\r?$)", console, re.M), table
    assert json.loads(timing.read_text())["outcome"] == "POWEROFF"


# (kernel, words added to the command line, how /init ends the machine)
QEMU_BOOTS = {
    "bzimage": ("bzimage", "", ["init: powering the machine off", "reboot: Power down"]),
    "vmlinux": ("vmlinux", "", ["init: powering the machine off", "reboot: Power down"]),
    "restart-asked": ("vmlinux", " tinyvmm.restart",
                      ["init: restarting the machine", "reboot: Restarting system"]),
}


@pytest.mark.qemu
@pytest.mark.parametrize("boot", QEMU_BOOTS)
def test_the_pc_kernel_on_qemus_pc_machine(tmp_path, pc_kernel, boot):
    """bzimage: SeaBIOS and QEMU's linuxboot ROM; vmlinux: QEMU's PVH loader. Either way QEMU's
    own ACPI tables; no qemu_fw_cfg.ioport= on the command line, and a modern-only disk."""
    kernel, words, ending = QEMU_BOOTS[boot]
    disk = disk_image(tmp_path / "disk.img")
    result = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-smp", "2", "-m", "256M",
         "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot", "-net", "none",
         "-kernel", str(getattr(pc_kernel, kernel)), "-initrd", str(pc_kernel.initrd),
         "-append", "console=ttyS0 reboot=k panic=-1" + words,
         "-drive", f"file={disk},if=none,format=raw,id=disk",
         "-device", "virtio-blk-pci,drive=disk,disable-legacy=on",
         "-fw_cfg", "name=opt/tinyvmm/test,string=hello"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    console = result.stdout.decode(errors="replace")
    assert result.returncode == 0, console[-3000:] + result.stderr.decode(errors="replace")
    for line in ["ACPI: Using ACPI (MADT) for SMP configuration information",
                 "smp: Brought up 1 node, 2 CPUs", "PCI: Using ACPI for IRQ routing",
                 "TINYVMM-INIT-OK", "fw_cfg: opt/tinyvmm/test = hello", "cpus: online 0-1",
                 DISK_LINE, *ending]:
        assert line in console, f"{line!r} missing:\n{console[-3000:]}"


@pytest.mark.kvm
@pytest.mark.slow
def test_without_acpi_a_direct_boot_gets_its_cpus_and_disk_from_the_mp_table(tmp_path, pc_kernel):
    """--no-acpi: no tables, so the kernel takes the MP table tinyvmm writes instead: both vCPUs
    and the disk's interrupt (routed as firmware would route it); /init then restarts."""
    disk = disk_image(tmp_path / "disk.img")
    timing = tmp_path / "timing.json"
    result = tinyvmm("boot", "--boot", "direct", "--kernel", str(pc_kernel.vmlinux),
                     "--initrd", str(pc_kernel.initrd), "--smp", "2", "--no-acpi",
                     "--drive", f"file={disk},if=virtio,format=raw",
                     "--timeout", "500", "--timing-json", str(timing), timeout=BOOT_TIMEOUT)
    console, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    assert result.returncode == 0, console[-3000:] + err[-3000:]
    for line in ["found SMP MP-table", "smp: Brought up 1 node, 2 CPUs",
                 "PCI->APIC IRQ transform: INT A -> IRQ 10", "cpus: online 0-1", DISK_LINE,
                 "init: restarting the machine"]:
        assert line in console, f"{line!r} missing:\n{console[-3000:]}"
    assert "ACPI: RSDP" not in console
    assert json.loads(timing.read_text())["outcome"] == "RESET"
