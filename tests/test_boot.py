"""`tinyvmm boot` end to end: the test payload through both ROMs, bad input, then the real kernel.

What the payload checks of the boot protocol is tested in test_firmware.py.
"""

import json
import subprocess
import sys

import pytest

from tinyvmm.boot.bzimage import parse_bzimage
from tinyvmm.kvm.system import is_emulating_host



def tinyvmm(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tinyvmm", *args], capture_output=True,
                          timeout=timeout)


def boot_payload(payload, initrd, *extra):
    return tinyvmm("boot", "--kernel", str(payload), "--initrd", str(initrd),
                   "--append", "console=ttyS0", "--debugcon", "none", "--timeout", "120",
                   "--mem", "64M", *extra)


@pytest.mark.kvm
def test_legacy_rom_moves_the_payload_by_port_io_and_dma_rom_by_dma(payload, initrd, tmp_path):
    moved = {}
    for name, options in (("dma", []), ("legacy", ["--no-fw-cfg-dma"])):
        timing = tmp_path / f"{name}.json"
        assert boot_payload(payload, initrd, *options, "--timing-json", str(timing)).returncode == 0
        timeline = json.loads(timing.read_text())
        assert [m["event"] for m in timeline["marks"]] == [
            "milestone 0xf5:1", "milestone 0xf4:5", "milestone 0xf4:3"]
        marks = {m["event"]: m for m in timeline["marks"]}
        start, end = marks["milestone 0xf4:5"], marks["milestone 0xf4:3"]
        moved[name] = (end["pio_bytes"] - start["pio_bytes"], end["dma_bytes"] - start["dma_bytes"])
    payload_bytes = parse_bzimage(payload.read_bytes()).kernel_size + initrd.stat().st_size
    assert moved["legacy"][0] >= payload_bytes and moved["legacy"][1] == 0
    assert moved["dma"][1] >= payload_bytes and moved["dma"][0] < 4096


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing", "cannot read kernel"),
    (lambda d: (d / "elf").write_bytes(b"\x7fELF" + bytes(2000)) and d / "elf", "damaged or truncated ELF"),
    (lambda d: (d / "zeros").write_bytes(bytes(2000)) and d / "zeros", "not a bzImage"),
])
def test_bad_kernel_is_a_usage_error(tmp_path, make, message):
    result = tinyvmm("boot", "--kernel", str(make(tmp_path)))
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_too_long_command_line_is_a_usage_error(payload):
    limit = int.from_bytes(payload.read_bytes()[0x238:0x23C], "little")
    result = tinyvmm("boot", "--kernel", str(payload), "--append", "x" * (limit + 1))
    assert result.returncode == 2 and f"accepts at most {limit}".encode() in result.stderr


def test_initrd_larger_than_ram_is_a_usage_error(payload, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(bytes(40 << 20))
    result = tinyvmm("boot", "--kernel", str(payload), "--initrd", str(big), "--mem", "32M")
    assert result.returncode == 2 and b"than the guest's 32 MiB of RAM" in result.stderr


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("rom_options", [[], ["--no-fw-cfg-dma"]], ids=["dma", "legacy"])
def test_linux_prints_its_banner(rom_options):
    result = tinyvmm("boot", "--expect", "Linux version 6.1", "--timeout", "240", *rom_options)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.endswith(b"Linux version 6.1\n")   # ended as soon as it appeared, then
    #                                                        the line is ended for the shell


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
def test_linux_reaches_our_init_and_powers_off():
    if is_emulating_host():
        pytest.skip("this host's KVM (kvm_pvm) emulates guest code and Linux stops after its early "
                    "messages; reaching init needs hardware virtualization")
    result = tinyvmm("boot", "--timeout", "120",
                     "--fw-cfg", "name=opt/tinyvmm/test,string=hello")
    console = result.stdout.decode()
    assert result.returncode == 0, console[-3000:]
    assert "TINYVMM-INIT-OK" in console
    assert "opt/tinyvmm/test" in console


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
def test_the_known_stop_of_an_emulating_host_is_one_line_with_the_report_kept():
    if not is_emulating_host():
        pytest.skip("only a KVM that emulates guest code (kvm_pvm) stops Linux at its int3 self-test")
    result = tinyvmm("boot", "--timeout", "200")
    err = result.stderr.decode()
    assert result.returncode == 3 and len(err.splitlines()) == 1, err[-3000:]
    assert "Linux stopped at its int3 self-test, as it always does on this host" in err
    report = err.rsplit("the crash report is in ", 1)[1].strip()
    text = open(report).read()
    assert "KVM internal error" in text and "int3" in text
    __import__("os").unlink(report)


def test_append_keeps_what_the_machine_needs_unless_told_not_to(monkeypatch):
    from tinyvmm.boot import payload
    monkeypatch.setattr(payload, "is_emulating_host", lambda: True)
    line = payload.kernel_cmdline("console=ttyS0 quiet", dma=True)
    assert line == "console=ttyS0 quiet qemu_fw_cfg.ioport=0xc@0x510:0:1:4 noxsave"
    assert payload.kernel_cmdline("console=ttyS0 noxsave", dma=False).split().count("noxsave") == 1
    assert payload.kernel_cmdline("console=ttyS0", dma=True, as_is=True) == "console=ttyS0"
    assert "noxsave" in payload.kernel_cmdline(None, dma=True)
