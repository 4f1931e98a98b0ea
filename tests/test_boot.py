"""`tinyvmm boot` end to end: a test bzImage through both linuxboot ROMs, then the real kernel."""

import os
import random
import struct
import subprocess
import sys

import pytest

from tinyvmm.kvm.system import is_emulating_host

from conftest import KERNEL

GUESTS = os.path.join(os.path.dirname(__file__), "guests")
INITRAMFS = KERNEL.parent / "initramfs.cpio"


def tinyvmm(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tinyvmm", *args], capture_output=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """A bzImage whose real-mode part checks what the ROM promised, with random kernel and initrd."""
    out = tmp_path_factory.mktemp("payload")
    subprocess.run(["gcc", "-E", "-P", "-x", "assembler-with-cpp", os.path.join(GUESTS, "payload.S"),
                    "-o", out / "payload.s"], check=True)
    subprocess.run(["as", "--32", "-o", out / "payload.o", out / "payload.s"], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext", "0", "--oformat", "binary",
                    "-o", out / "setup.bin", out / "payload.o"], check=True)
    setup = bytearray((out / "setup.bin").read_bytes())
    rng = random.Random(2015)
    kernel = rng.randbytes(192 * 1024)
    initrd = rng.randbytes(70001)
    struct.pack_into("<I", setup, 0x1F4, len(kernel) // 16)
    (out / "bzImage").write_bytes(bytes(setup) + kernel)
    (out / "initrd").write_bytes(initrd)
    return out, sum(kernel), sum(initrd)


def boot_payload(payload, *extra):
    out, _, _ = payload
    return tinyvmm("boot", "--kernel", str(out / "bzImage"), "--initrd", str(out / "initrd"),
                   "--append", "root=/dev/null hello", "--debugcon", "stdio", "--timeout", "120",
                   "--mem", "64M", *extra)


@pytest.mark.kvm
@pytest.mark.parametrize("rom_options", [[], ["--no-fw-cfg-dma"]], ids=["dma", "legacy"])
def test_payload_gets_what_the_protocol_promises(payload, rom_options, tmp_path):
    _, kernel_sum, initrd_sum = payload
    timing = tmp_path / "timing.json"
    result = boot_payload(payload, *rom_options, "--timing-json", str(timing))
    console = result.stdout.decode()
    assert result.returncode == 0, console + result.stderr.decode()
    rom = "linuxboot.bin" if rom_options else "linuxboot_dma.bin"
    assert f"boot: genroms/{rom}" in console
    line = [l for l in console.splitlines() if l.startswith("payload:")][0]
    assert line == (f"payload: ok kernel {kernel_sum & 0xFFFFFFFF:08x} "
                    f"initrd {initrd_sum & 0xFFFFFFFF:08x} cmdline root=/dev/null hello")
    import json
    events = [mark["event"] for mark in json.loads(timing.read_text())["marks"]]
    assert events == ["milestone 0xf5:1", "milestone 0xf4:5", "milestone 0xf4:3"]


@pytest.mark.kvm
def test_legacy_rom_moves_the_payload_by_port_io_and_dma_rom_by_dma(payload, tmp_path):
    import json
    moved = {}
    for name, options in (("dma", []), ("legacy", ["--no-fw-cfg-dma"])):
        timing = tmp_path / f"{name}.json"
        assert boot_payload(payload, *options, "--timing-json", str(timing)).returncode == 0
        marks = {m["event"]: m for m in json.loads(timing.read_text())["marks"]}
        start, end = marks["milestone 0xf4:5"], marks["milestone 0xf4:3"]
        moved[name] = (end["pio_bytes"] - start["pio_bytes"], end["dma_bytes"] - start["dma_bytes"])
    payload_bytes = 192 * 1024 + 70001
    assert moved["legacy"][0] >= payload_bytes and moved["legacy"][1] == 0
    assert moved["dma"][1] >= payload_bytes and moved["dma"][0] < 4096


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing", "cannot read kernel"),
    (lambda d: (d / "elf").write_bytes(b"\x7fELF" + bytes(2000)) and d / "elf", "not a bzImage"),
])
def test_bad_kernel_is_a_usage_error(tmp_path, make, message):
    result = tinyvmm("boot", "--kernel", str(make(tmp_path)))
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_too_long_command_line_is_a_usage_error(payload):
    out, _, _ = payload
    result = tinyvmm("boot", "--kernel", str(out / "bzImage"), "--append", "x" * 300)
    assert result.returncode == 2 and b"accepts at most 255" in result.stderr


def test_initrd_larger_than_ram_is_a_usage_error(payload, tmp_path):
    out, _, _ = payload
    big = tmp_path / "big"
    big.write_bytes(bytes(40 << 20))
    result = tinyvmm("boot", "--kernel", str(out / "bzImage"), "--initrd", str(big), "--mem", "32M")
    assert result.returncode == 2 and b"do not fit" in result.stderr


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("rom_options", [[], ["--no-fw-cfg-dma"]], ids=["dma", "legacy"])
def test_linux_prints_its_banner(rom_options):
    result = tinyvmm("boot", "--expect", "Linux version 6.1", "--timeout", "240", *rom_options)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.endswith(b"Linux version 6.1")     # the run ended as soon as it appeared


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
