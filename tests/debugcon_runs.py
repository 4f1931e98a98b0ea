"""One firmware image run under tinyvmm and under QEMU 7.2's pc machine, each writing its debug
console (port 0x402) to a file: the runs the fw_cfg comparisons with QEMU share."""

import shutil
import subprocess
from pathlib import Path

import pytest
from command_line import tinyvmm

from tinyvmm.cpu import _host_cpu

QEMU = "qemu-system-x86_64"
QEMU_MARKS = [pytest.mark.kvm, pytest.mark.qemu,
              pytest.mark.skipif(shutil.which(QEMU) is None,
                                 reason="needs qemu-system-x86_64 (make setup installs it)")]


def run_qemu(image: Path, mem_mib: int, tmp_path: Path, fw_cfg: tuple[str, ...] = ()) -> str:
    """The debug console of QEMU running IMAGE as its BIOS; `fw_cfg`: -fw_cfg arguments."""
    out = tmp_path / "qemu.txt"
    vendor = _host_cpu()[0] or "AuthenticAMD"
    # QEMU's qemu64 vCPU, with the host's vendor: KVM gives tinyvmm's guest the host's.
    items = [arg for item in fw_cfg for arg in ("-fw_cfg", item)]
    result = subprocess.run([QEMU, "-accel", "kvm", "-machine", "pc", "-m", str(mem_mib),
                             "-cpu", f"qemu64,vendor={vendor}", "-bios", str(image), "-nographic",
                             "-nodefaults", "-serial", "none", "-monitor", "none", "-no-reboot",
                             "-chardev", f"file,id=dump,path={out}",
                             "-device", "isa-debugcon,iobase=0x402,chardev=dump", *items],
                            capture_output=True, timeout=120)
    assert result.returncode == 0, f"QEMU ended with status {result.returncode}: {result.stderr!r}"
    return out.read_text()


def run_tinyvmm(image: Path, mem_mib: int, tmp_path: Path, fw_cfg: tuple[str, ...] = ()) -> str:
    """The debug console of tinyvmm running IMAGE as its BIOS; `fw_cfg`: --fw-cfg arguments,
    spelled as QEMU's -fw_cfg."""
    out = tmp_path / "tinyvmm.txt"
    items = [arg for item in fw_cfg for arg in ("--fw-cfg", item)]
    result = tinyvmm("run", "--bios", str(image), "--mem", f"{mem_mib}M", "--serial", "none",
                     "--debugcon", f"file:{out}", "--timeout", "60", *items)
    assert result.returncode == 0, result.stderr
    return out.read_text()
