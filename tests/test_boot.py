"""`tinyvmm boot` end to end: the test payload through both ROMs, bad input, then the real kernel.

What the payload checks of the boot protocol is tested in test_firmware.py.
"""

import json
import os
from pathlib import Path

import pytest
from command_line import tinyvmm
from payloads import KERNEL_INITRD, VMLINUX

from tinyvmm.boot.bzimage import parse_bzimage
from tinyvmm.kvm.system import is_emulating_host

ROOT = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT = 600      # seconds: a real kernel under an emulating KVM takes minutes


def boot_payload(payload, initrd, *extra):
    return tinyvmm("boot", "--kernel", str(payload), "--initrd", str(initrd),
                   "--append", "console=ttyS0", "--debugcon", "none", "--timeout", "120",
                   "--mem", "64M", *extra, timeout=BOOT_TIMEOUT)


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


# How the test kernel boots to its init: directly (PVH, and the bzImage's 64-bit entry),
# through tinyvmm's BIOS and each of its ROMs, through SeaBIOS and through qboot. On a host
# whose KVM emulates guest code, what its emulator lacks is completed by tinyvmm
# (tinyvmm.completion).
BOOTS = {
    "pvh": ["--kernel", str(VMLINUX), "--initrd", str(KERNEL_INITRD)],
    "direct64": ["--boot", "direct"],
    "dma": [],
    "legacy": ["--no-fw-cfg-dma"],
    "seabios": ["--bios", "/usr/share/seabios/bios.bin"],
    "qboot": ["--bios", "/usr/share/qemu/qboot.rom"],
}


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("boot", BOOTS)
def test_linux_runs_our_init_to_its_end(boot):
    firmware = BOOTS[boot][1] if BOOTS[boot][:1] == ["--bios"] else None
    if firmware and not os.path.exists(firmware):
        pytest.fail(f"{firmware} is missing: make setup installs it")
    result = tinyvmm("boot", "--timeout", "400", *BOOTS[boot],
                     "--fw-cfg", "name=opt/tinyvmm/test,string=hello", "--stats", cwd=ROOT,
                     timeout=BOOT_TIMEOUT)
    console, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, console[-3000:] + err[-3000:]
    assert "TINYVMM-INIT-OK" in console
    # Linux's fw_cfg sysfs driver, an independent client, listed our files and read one
    assert "fw_cfg: etc/e820 (size " in console
    assert "fw_cfg: opt/tinyvmm/test = hello" in console
    assert "init: restarting the machine" in console
    if is_emulating_host():
        completed = err.split("completed", 1)[1]
        assert "clac" in completed and "int3" in completed and "syscall" in completed


def test_append_keeps_what_the_machine_needs_unless_told_not_to(monkeypatch):
    from tinyvmm.boot import payload
    monkeypatch.setattr(payload, "is_emulating_host", lambda: True)
    line = payload.kernel_cmdline("console=ttyS0 quiet", dma=True)
    assert line == "console=ttyS0 quiet qemu_fw_cfg.ioport=0xc@0x510:0:1:4 noxsave"
    assert payload.kernel_cmdline("console=ttyS0 noxsave", dma=False).split().count("noxsave") == 1
    assert payload.kernel_cmdline("console=ttyS0", dma=True, as_is=True) == "console=ttyS0"
    assert "noxsave" in payload.kernel_cmdline(None, dma=True)


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
def test_a_32_bit_init_makes_its_system_calls_through_int_0x80():
    result = tinyvmm("boot", "--kernel", str(VMLINUX), "--initrd", str(KERNEL_INITRD),
                     "--timeout", "400", "--stats",
                     "--append", "console=ttyS0 reboot=k panic=-1 rdinit=/init32", cwd=ROOT,
                     timeout=BOOT_TIMEOUT)
    console, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, console[-3000:] + err[-3000:]
    assert "TINYVMM-INIT32-OK" in console
    if is_emulating_host():
        counts = {line[:18].strip(): line[18:].split()[0] for line in err.splitlines()
                  if line.startswith("int 0x80")}
        assert counts == {"int 0x80 (user)": "3"}      # open, write, reboot
