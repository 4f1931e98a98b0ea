"""QEMU beside tinyvmm in `tinyvmm bench --vs-qemu`: the same boot, its phases from QEMU's trace log.

QEMU timestamps nothing itself, so each run enables two trace events
(`-trace enable=kvm_vcpu_ioctl,enable=fw_cfg_select`), whose log lines carry
gettimeofday() stamps, and reads the serial console from a pipe:
  VMM startup    process start -> the first KVM_RUN ioctl
  BIOS startup   -> the first select of a kernel item (KERNEL_KEYS): the boot ROM
                  (SeaBIOS's linuxboot ROMs) or qboot itself starts loading Linux
  kernel setup   -> the last select of a kernel item: loading ends (the last item
                  read is small, the command line, or moved by DMA); under OVMF, which
                  goes on booting after it loaded the kernel, -> the EFI stub's first
                  line on the console, as tinyvmm's OVMF rows end it
  banner         process start -> "Linux version" on the serial console
"""

import os
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..boot.marks import EFI_STUB_LINE
from ..fw_cfg.items import KERNEL_KEYS
from .firmware import FIRMWARE_FILES, OVMF_CODE, QBOOT, SEABIOS

KVM_RUN_TYPE = "0xae80"
LINE = re.compile(r"^\d+@(\d+)\.(\d+):(\w+) (.*)$")
SELECT_KEY = re.compile(r"key 0x([0-9a-fA-F]+)")

# SeaBIOS named explicitly (the pc machine's default is bios-256k.bin), so that QEMU runs
# the image tinyvmm's SeaBIOS columns run; QEMU picks linuxboot_dma.bin or linuxboot.bin
# from its data directory by whether fw_cfg DMA is on.
SYSTEMS = {
    "qemu-seabios-dma": ["-bios", SEABIOS],
    "qemu-seabios-legacy": ["-bios", SEABIOS, "-global", "fw_cfg_io.dma_enabled=off"],
    "qemu-qboot": ["-bios", QBOOT],
    "qemu-qboot-pvh": ["-bios", QBOOT],
    "qemu-ovmf-dma": ["-bios", OVMF_CODE],
    "qemu-ovmf-legacy": ["-bios", OVMF_CODE, "-global", "fw_cfg_io.dma_enabled=off"],
}
# Booted only with `--firmware ovmf`, and not where KVM emulates guest code (QEMU stops at
# OVMF's first x87 instruction there); they boot a kernel with an EFI stub.
OVMF_SYSTEMS = ("qemu-ovmf-dma", "qemu-ovmf-legacy")
LEGACY_SYSTEMS = ("qemu-seabios-legacy", "qemu-ovmf-legacy")
# The systems given the vmlinux instead of the bzImage: QEMU boots an ELF kernel through
# its PVH entry (qboot reads it from fw_cfg; QEMU has loaded the segments).
PVH_SYSTEMS = ("qemu-qboot-pvh",)


def qemu_missing() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not found (Debian package qemu-system-x86)"
    for path, package in {**FIRMWARE_FILES["seabios"], **FIRMWARE_FILES["qboot"]}.items():
        if not Path(path).is_file():
            return f"{path} not found (Debian package {package})"
    return None


def parse_trace(log: str, start_wall_ns: int) -> dict:
    """Phase boundaries (seconds from process start) from a QEMU trace log."""
    first_run = first_kernel = last_kernel = None
    for line in log.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        stamp = int(match.group(1)) * 10**9 + int(match.group(2)) * 1000 - start_wall_ns
        event, rest = match.group(3), match.group(4)
        if event == "kvm_vcpu_ioctl" and f"type {KVM_RUN_TYPE}," in rest and first_run is None:
            first_run = stamp
        elif event == "fw_cfg_select" and first_run is not None:
            key = SELECT_KEY.search(rest)
            if key and int(key.group(1), 16) & 0x3FFF in KERNEL_KEYS:
                first_kernel = stamp if first_kernel is None else first_kernel
                last_kernel = stamp
    if first_run is None or first_kernel is None or last_kernel is None:
        raise RuntimeError("QEMU's trace shows no KVM_RUN or no kernel loading")
    return {"vmm_startup_s": first_run / 1e9,
            "bios_startup_s": (first_kernel - first_run) / 1e9,
            "kernel_setup_s": (last_kernel - first_kernel) / 1e9,
            "total_s": last_kernel / 1e9}


def qemu_command(system: str, options, cmdline: str, kernel: str, initrd: str | None,
                 log: Path) -> list[str]:
    """The qemu-system-x86_64 command line of one run of `system`."""
    command = ["qemu-system-x86_64", "-accel", "kvm", "-m", str(options.mem // (1 << 20)),
               "-kernel", kernel, "-append", cmdline, "-display", "none", "-nodefaults",
               "-serial", "stdio", "-no-reboot", "-D", str(log), "-msg", "timestamp=on",
               "-trace", "enable=kvm_vcpu_ioctl", "-trace", "enable=fw_cfg_select"]
    if initrd:
        command += ["-initrd", initrd]
    return command + SYSTEMS[system]


def qemu_run(system: str, options, cmdline: str, kernel: str, initrd: str | None,
             workdir: Path, index: int) -> dict:
    log = workdir / f"qemu-{system}-{index}.log"
    command = qemu_command(system, options, cmdline, kernel, initrd, log)
    start_wall, start = time.time_ns(), time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen: dict[bytes, float] = {}
    try:
        efi = system in OVMF_SYSTEMS
        banner = _wait_for_banner(proc, start, options.timeout,
                                  log if options.no_banner and not efi else None, seen,
                                  stop_at_stub=options.no_banner and efi)
    except BaseException:                   # an interrupted bench leaves no QEMU behind
        proc.kill()
        proc.wait()
        raise
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    result = parse_trace(log.read_text(errors="replace"), start_wall)
    result["banner_s"] = banner
    if system in OVMF_SYSTEMS:
        if EFI_STUB_LINE not in seen:
            raise RuntimeError("the kernel's EFI stub printed nothing on the console")
        entry = seen[EFI_STUB_LINE]
        result["kernel_setup_s"] = entry - result["total_s"] + result["kernel_setup_s"]
        result["total_s"] = entry
    log.unlink()
    return result


def _wait_for_banner(proc, start: float, timeout: float, log: Path | None,
                     lines: dict[bytes, float], stop_at_stub: bool = False) -> float | None:
    """Seconds from start to "Linux version" on the console; with `log`, stop at the
    command line's select instead (no banner), with `stop_at_stub` at the EFI stub's first
    line. `lines` gets the seconds at which that line appeared, if it did."""
    seen = b""
    fd = proc.stdout.fileno()
    while time.monotonic() - start < timeout:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                return None
            seen = (seen + data)[-4096:]
            if EFI_STUB_LINE not in lines and EFI_STUB_LINE in seen:
                lines[EFI_STUB_LINE] = time.monotonic() - start
                if stop_at_stub:
                    return None
            if log is None and b"Linux version" in seen:
                return time.monotonic() - start
        if log is not None and log.exists() and "key 0x0015" in log.read_text(errors="replace"):
            time.sleep(0.05)            # let the last transfer finish
            return None
    raise RuntimeError(f"QEMU did not reach the banner within {timeout:g} s")
