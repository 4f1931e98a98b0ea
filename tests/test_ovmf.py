"""Unmodified OVMF (Debian's ovmf package) on tinyvmm: QEMU's two pflash units, the UEFI Shell
on COM1, its commands seeing the machine, a non-volatile variable surviving a restart, and
`reset -s` powering off. Run through the software CPU (--software-cpu on): under KVM alone an
emulating host takes about 14 minutes to the shell."""

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


class SoftwareCpuCorruption(AssertionError):
    """A boot that ended the way issue 23's open software-CPU bug ends OVMF on an emulating
    host (about one boot in five here): OVMF's own exception dump (a #GP or #PF in DxeCore on
    state it corrupted), or the vCPU executing zeros after a jump to about address 0 in SEC.
    The tests that boot OVMF expect it (xfail, not strict); any other failure fails them."""


ZEROS_RUN = re.compile(r"=> [0-9a-f]{4}:[0-9a-f]+ +00 00 +add byte ptr \[rax\], al")


def known_corruption(console: bytes, transcript: str) -> bool:
    """Whether a boot ended as SoftwareCpuCorruption says."""
    return b"!!!! X64 Exception Type" in console or ZEROS_RUN.search(transcript) is not None


# Issue 23's open bug: a boot may end as SoftwareCpuCorruption says; the run is reported.
KNOWN_BUG = pytest.mark.xfail(raises=SoftwareCpuCorruption, strict=False,
                              reason="issue 23: the software CPU corrupts about one OVMF boot in five")


class Shell:
    """One OVMF run on COM1 (--serial stdio over pipes), typed at like a person at a terminal."""

    def __init__(self, variables: Path):
        command = [sys.executable, "-m", "tinyvmm", "run", "--software-cpu", "on",
                   "--drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                   "--drive", f"if=pflash,format=raw,unit=1,file={variables}",
                   "--serial", "stdio", "--timeout", str(RUN_S)]
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
            transcript = self.transcript()
            if known_corruption(self.output, transcript):
                raise SoftwareCpuCorruption(f"no {text!r}: {transcript}")
            raise AssertionError(f"no {text!r} after {seconds} s:\n{transcript}")
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


@KNOWN_BUG
def test_ovmf_reaches_the_shell_and_keeps_a_variable_across_a_restart(tmp_path):
    variables = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, variables)

    with Shell(variables) as shell:
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

    with Shell(variables) as shell:            # a new machine on the same variable store
        at = shell.wait_for(PROMPT, 0, RUN_S + 30)
        shown, at = shell.type(f"setvar TinyvmmTest -guid {VENDOR}", at)
        assert "74 69 6E 79 76 6D 6D" in shown, shown
        assert shell.finish() == 0, shell.transcript()


@KNOWN_BUG
def test_a_report_names_the_uefi_module_the_vcpu_is_in(tmp_path):
    # OVMF's images carry no debug symbols here: the report finds the image's headers in
    # memory and names it by its firmware-volume file ("LocalApicTimerDxe+0x7e0")
    variables = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, variables)
    result = subprocess.run([sys.executable, "-m", "tinyvmm", "run", "--software-cpu", "on",
                             "--drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                             "--drive", f"if=pflash,format=raw,unit=1,file={variables}",
                             "--timeout", "15"], capture_output=True, timeout=300)
    report = result.stderr.decode()
    assert result.returncode == 4, report
    where = re.search(r"where: long 0038:[0-9a-f]{16} (\w+)\+0x[0-9a-f]+\n", report)
    if where is None and known_corruption(result.stdout, report):
        raise SoftwareCpuCorruption(report)
    assert where, report
    from tinyvmm.debug.uefi_images import modules
    assert where[1] in {name for name, _ in modules(OVMF_CODE.read_bytes())}, report
