"""Unmodified OVMF (Debian's ovmf package) on tinyvmm: QEMU's two pflash units or a ROM image,
the UEFI Shell on COM1, its commands seeing the machine, a non-volatile variable surviving a
restart, `reset -s` powering off, and Linux started through OVMF (from fw_cfg, and from a
virtio disk's EFI system partition) to its init. Run through the software CPU
(--software-cpu on): under KVM alone an emulating host takes about 14 minutes to the shell."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
VENDOR = "3b2a9c4e-6f1d-4c7a-9e58-0d2b7a61c4f3"      # a vendor GUID of the test's own
PROMPT = b"Shell> "
# One run's limit: the boot to the prompt (about 40 s here; room for a slow host) and the
# commands. A boot that hangs ends in tinyvmm's timeout report (where the vCPU was), which the
# test's failure then shows.
RUN_S = 600

pytestmark = [pytest.mark.kvm, pytest.mark.slow,
              pytest.mark.skipif(not (OVMF_CODE.exists() and OVMF_VARS.exists()),
                                 reason="needs /usr/share/OVMF/OVMF_CODE.fd and OVMF_VARS.fd "
                                        "(Debian package ovmf; make setup)")]


def ovmf_command(command: str, variables: Path) -> list[str]:
    """`tinyvmm COMMAND` with the software CPU on Debian's OVMF: QEMU's two pflash units, the
    code read-only and `variables` the store."""
    return [sys.executable, "-m", "tinyvmm", command, "--software-cpu", "on",
            "--drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "--drive", f"if=pflash,format=raw,unit=1,file={variables}"]


def fresh_variables(tmp_path: Path) -> Path:
    """A copy of Debian's empty variable store in `tmp_path`."""
    variables = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, variables)
    return variables


def bios_command(command: str, image: Path) -> list[str]:
    """`tinyvmm COMMAND` with the software CPU on OVMF as a ROM image (--bios), whose
    variables then live in RAM (OVMF's emulated store)."""
    return [sys.executable, "-m", "tinyvmm", command, "--software-cpu", "on", "--bios", str(image)]


class Shell:
    """One OVMF run on COM1 (--serial stdio over pipes), typed at like a person at a terminal:
    `firmware` is the run's command line (ovmf_command or bios_command)."""

    def __init__(self, firmware: list[str]):
        command = firmware + ["--serial", "stdio", "--timeout", str(RUN_S)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.output = b""

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            chunk = os.read(self.process.stdout.fileno(), 65536)
        except BlockingIOError:
            chunk = b""
        self.output += chunk
        if not chunk:
            time.sleep(0.05)

    def wait_for(self, text: bytes, start: int, seconds: float) -> int:
        """Where `text` appears in the output after `start`; fails after `seconds`, or when
        the run ends without it (its report then in the failure)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.output.find(text, start)
            if found >= 0:
                return found + len(text)
            if self.process.poll() is not None:
                self._read()
                break
            self._read()
        found = self.output.find(text, start)
        if found < 0:
            raise AssertionError(f"no {text!r} after {seconds} s:\n{self.transcript()}")
        return found + len(text)

    def _send(self, line: str) -> None:
        """`line` and Enter, a key at a time."""
        assert self.process.stdin is not None
        for char in line + "\r":
            self.process.stdin.write(char.encode())
            self.process.stdin.flush()
            time.sleep(0.05)

    def type(self, line: str, start: int, seconds: float = 120) -> tuple[str, int]:
        """Type `line` and Enter at the prompt; the command's output and where it ends."""
        self._send(line)
        end = self.wait_for(PROMPT, start, seconds)
        return _plain(self.output[start:end]), end

    def finish(self, seconds: float = 120) -> int:
        """`reset -s`: the run's exit status."""
        self._send("reset -s")
        status = self.process.wait(seconds)
        self._read()
        return status

    def __enter__(self) -> "Shell":
        return self

    def __exit__(self, *_exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def transcript(self) -> str:
        assert self.process.stderr is not None
        err = b""
        if self.process.poll() is not None:
            err = self.process.stderr.read() or b""
        return _plain(self.output)[-3000:] + "\n--- stderr ---\n" + err.decode(errors="replace")[-3000:]


def _plain(data: bytes) -> str:
    """Console output without its ANSI escape sequences."""
    return re.sub(r"\x1b\[[0-9;=?]*[A-Za-z]", "", data.decode(errors="replace"))


def test_ovmf_reaches_the_shell_and_keeps_a_variable_across_a_restart(tmp_path):
    variables = fresh_variables(tmp_path)

    with Shell(ovmf_command("run", variables)) as shell:
        at = shell.wait_for(PROMPT, 0, RUN_S + 30)
        assert b"UEFI v2" in shell.output
        listing, at = shell.type("pci", at)
        # QEMU's pc machine as OVMF enumerates it: i440FX, PIIX3 ISA, PIIX4 PM
        for device in ("Device 1237", "Device 7000", "Device 7113"):
            assert device in listing, listing
        _, at = shell.type(f"setvar TinyvmmTest -guid {VENDOR} -nv -bs =74696E79766D6D", at)
        shown, at = shell.type(f"setvar TinyvmmTest -guid {VENDOR}", at)
        assert "74 69 6E 79 76 6D 6D" in shown, shown
        assert shell.finish() == 0, shell.transcript()

    with Shell(ovmf_command("run", variables)) as shell:    # a new machine, the same store
        at = shell.wait_for(PROMPT, 0, RUN_S + 30)
        shown, at = shell.type(f"setvar TinyvmmTest -guid {VENDOR}", at)
        assert "74 69 6E 79 76 6D 6D" in shown, shown
        assert shell.finish() == 0, shell.transcript()


@pytest.mark.parametrize("image", ["code", "combined"])
def test_ovmf_as_a_rom_image_reaches_the_shell_with_variables_in_ram(tmp_path, image):
    # --bios maps the image read-only, as QEMU's -bios: OVMF finds no flash and keeps its
    # variables in RAM. "combined" is OVMF.fd's layout (the variable store's volume, then
    # the code), which Debian does not ship: made here the way the firmware's build makes it.
    if image == "code":
        firmware = OVMF_CODE
    else:
        firmware = tmp_path / "OVMF.fd"
        firmware.write_bytes(OVMF_VARS.read_bytes() + OVMF_CODE.read_bytes())
    before = firmware.read_bytes()
    with Shell(bios_command("run", firmware)) as shell:
        at = shell.wait_for(PROMPT, 0, RUN_S + 30)
        _, at = shell.type(f"setvar TinyvmmTest -guid {VENDOR} -nv -bs =74696E79766D6D", at)
        shown, at = shell.type(f"setvar TinyvmmTest -guid {VENDOR}", at)
        assert "74 69 6E 79 76 6D 6D" in shown, shown
        assert shell.finish() == 0, shell.transcript()
    assert firmware.read_bytes() == before          # a ROM: nothing reached the file


def test_a_report_names_the_uefi_module_the_vcpu_is_in(tmp_path):
    # OVMF's images carry no debug symbols here: the report finds the image's headers in
    # memory and names it by its firmware-volume file ("LocalApicTimerDxe+0x7e0")
    variables = fresh_variables(tmp_path)
    result = subprocess.run(ovmf_command("run", variables) + ["--timeout", "15"],
                            capture_output=True, timeout=300)
    report = result.stderr.decode()
    assert result.returncode == 4, report
    where = re.search(r"where: long 0038:[0-9a-f]{16} (\w+)\+0x[0-9a-f]+\n", report)
    assert where, report
    from tinyvmm.debug.uefi_images import modules
    assert where[1] in {name for name, _ in modules(OVMF_CODE.read_bytes())}, report


def check_linux_boot(result: subprocess.CompletedProcess, how: str) -> None:
    """Debian's cloud kernel came from OVMF (`how`: the EFI stub's line saying where its
    initrd came from) to the test init, which listed fw_cfg through the driver module and
    powered the machine off (status 0)."""
    console, err = _plain(result.stdout), result.stderr.decode(errors="replace")
    context = console[-3000:] + "\n--- stderr ---\n" + err[-3000:]
    assert result.returncode == 0, context
    for line in (how, "cloud-amd64", "TINYVMM-INIT-OK", "fw_cfg: etc/e820 (size ",
                 "init: powering the machine off"):
        assert line in console, f"no {line!r}:\n{context}"


@pytest.mark.kernel
@pytest.mark.parametrize("dma", [True, False], ids=["dma", "legacy"])
def test_ovmf_boots_linux_through_its_fw_cfg_kernel_loader(tmp_path, dma):
    # OVMF reads the kernel, initrd and command line from fw_cfg (through DMA, or the data
    # port when the device offers no DMA), starts the kernel's EFI stub, which takes the
    # initrd OVMF offers; the test init then lists fw_cfg through Linux's driver (found by
    # the ACPI tables OVMF installed) and powers the machine off through ACPI.
    from payloads import KERNEL_INITRD, cloud_kernel, initramfs_with_module
    kernel, module = cloud_kernel()
    initrd = initramfs_with_module(KERNEL_INITRD, module, tmp_path / "initramfs.cpio")
    variables = fresh_variables(tmp_path)
    result = subprocess.run(ovmf_command("boot", variables) + [
        "--kernel", str(kernel), "--initrd", str(initrd), *([] if dma else ["--no-fw-cfg-dma"]),
        "--timeout", str(RUN_S)], capture_output=True, timeout=RUN_S + 60)
    check_linux_boot(result, "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID")


@pytest.mark.kernel
@pytest.mark.parametrize("firmware, dma", [("bios", True), ("pflash", False)],
                         ids=["bios-dma", "pflash-legacy"])
def test_ovmf_boots_the_pc_test_kernel_through_its_efi_stub_to_its_init(tmp_path, firmware, dma,
                                                                         pc_kernel):
    # kernels/pc.config has the EFI stub: OVMF loads the bzImage from fw_cfg as a PE image
    # and starts it; the test init lists fw_cfg and powers off through ACPI.
    kernel = pc_kernel
    command = (bios_command("boot", OVMF_CODE) if firmware == "bios"
               else ovmf_command("boot", fresh_variables(tmp_path)))
    timing = tmp_path / "timing.json"
    result = subprocess.run(command + [
        "--kernel", str(kernel.bzimage), "--initrd", str(kernel.initrd), "--timing-json", str(timing),
        *([] if dma else ["--no-fw-cfg-dma"]), "--timeout", str(RUN_S)],
        capture_output=True, timeout=RUN_S + 60)
    console, err = _plain(result.stdout), result.stderr.decode(errors="replace")
    context = console[-3000:] + "\n--- stderr ---\n" + err[-3000:]
    assert result.returncode == 0, context
    for line in ("EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID", "TINYVMM-INIT-OK",
                 "fw_cfg: etc/e820 (size ", "init: powering the machine off"):
        assert line in console, f"no {line!r}:\n{context}"
    # The bench's marks: do_boot at OVMF's first select of a kernel item, the kernel's entry
    # at the EFI stub's first line, and every byte of the payload moved between them.
    from tinyvmm.bench import phases_from_timeline
    timeline = json.loads(timing.read_text())
    events = [mark["event"] for mark in timeline["marks"]]
    assert events.index("milestone 0xf4:5") < events.index("milestone 0xf4:3") < events.index("banner")
    phases = phases_from_timeline(timeline, timeline["start_ns"])
    assert phases["kernel_setup_s"] > 0 and phases["bios_startup_s"] > 0
    moved = phases["setup"]["dma_bytes" if dma else "pio_bytes"]
    assert moved >= kernel.bzimage.stat().st_size + kernel.initrd.stat().st_size


STARTUP_SCRIPT = "fs0:\r\n\\EFI\\Linux\\linux.efi {cmdline} initrd=\\initrd.cpio\r\n"


def esp_disk(path: Path, kernel: Path, initrd: Path, cmdline: str) -> Path:
    """A GPT disk whose one partition is an EFI system partition (FAT) holding the kernel's
    EFI stub image, the initrd and a startup.nsh that starts the kernel with its command
    line, made with Debian's sgdisk and mtools."""
    for tool, package in (("sgdisk", "gdisk"), ("mformat", "mtools")):
        if shutil.which(tool) is None:
            pytest.fail(f"needs {tool} (Debian package {package}; make setup installs it)")
    with open(path, "wb") as disk:
        disk.truncate(64 << 20)
    fat = f"{path}@@1M"                         # the partition starts at sector 2048

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    run("sgdisk", "--new=1:2048:0", "--typecode=1:ef00", "--change-name=1:ESP", str(path))
    run("mformat", "-i", fat, "-v", "ESP", "::")
    run("mmd", "-i", fat, "::/EFI", "::/EFI/Linux")
    run("mcopy", "-i", fat, str(kernel), "::/EFI/Linux/linux.efi")
    run("mcopy", "-i", fat, str(initrd), "::/initrd.cpio")
    script = path.with_name("startup.nsh")
    script.write_text(STARTUP_SCRIPT.format(cmdline=cmdline))
    run("mcopy", "-i", fat, str(script), "::/startup.nsh")
    return path


@pytest.mark.kernel
def test_ovmf_boots_linux_from_an_efi_system_partition_on_a_virtio_disk(tmp_path):
    # OVMF's own virtio-pci and virtio-blk drivers read the disk, its FAT driver the ESP; the
    # disk has no EFI/BOOT/BOOTX64.EFI (a kernel started from there gets no command line, so
    # no console), so the boot falls through to the shell, whose startup.nsh starts the
    # kernel's EFI stub with a command line; the stub reads the initrd from the ESP
    from payloads import KERNEL_INITRD, cloud_kernel, initramfs_with_module

    from tinyvmm.boot.payload import kernel_cmdline
    kernel, module = cloud_kernel()
    initrd = initramfs_with_module(KERNEL_INITRD, module, tmp_path / "initramfs.cpio")
    disk = esp_disk(tmp_path / "esp.img", kernel, initrd, kernel_cmdline(None, dma=True))
    variables = fresh_variables(tmp_path)
    result = subprocess.run(ovmf_command("run", variables) + [
        "--drive", f"file={disk},if=virtio,format=raw", "--timeout", str(RUN_S)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_S + 60)
    check_linux_boot(result, "EFI stub: Loaded initrd from command line option")


@pytest.mark.kernel
def test_the_bench_times_ovmf_loading_the_kernel_by_dma_and_through_the_data_port(tmp_path):
    # BIOS startup to OVMF's first select of a kernel item, kernel setup to the EFI stub's
    # first line, the pc kernel's whole payload moved between (by DMA, or byte by byte)
    from payloads import PC_KERNEL
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tinyvmm", "bench", "--firmware", "ovmf",
                             "--systems", "tinyvmm-ovmf-dma,tinyvmm-ovmf-legacy", "--runs", "1",
                             "--no-banner", "--payload", "test", "--json", str(out)],
                            capture_output=True, timeout=2 * RUN_S)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    table = result.stdout.decode()
    summary = json.loads(out.read_text())["payloads"]["test"]["summary"]
    size = PC_KERNEL.bzimage.stat().st_size
    dma, legacy = summary["tinyvmm-ovmf-dma"], summary["tinyvmm-ovmf-legacy"]
    for entry in (dma, legacy):
        assert entry["bios_startup_s"] > 0 and entry["kernel_setup_s"] > 0
    assert dma["setup"]["dma_bytes"] > size and legacy["setup"]["pio_bytes"] > size
    assert "tinyvmm+OVMF kernel setup, legacy / DMA" in table
    assert "OVMF columns: /usr/share/OVMF/OVMF_CODE.fd" in table
