"""fw_cfg from a real guest on /dev/kvm: tests/guests/fwcfg_test.S through the ports and through MMIO.

The guest prints one line per observation on the debug console; these tests
compute what each line must say from the items the host put in fw_cfg.
"""

from pathlib import Path

import pytest
from command_line import tinyvmm
from guest_build import build_guest, toolchain_missing

from tinyvmm import layout
from tinyvmm.kvm.system import kvm_status

MMIO_BASE = 0xFEF00000
RAM_SIZE = 256 * layout.MiB
BLOB = bytes((i * 131 + (i >> 7) * 17 + 5) & 0xFF for i in range(5000))
RW_INITIAL = b"rw-initial-16byt"

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory) -> bytes:
    reason = kvm_status()
    if reason:
        pytest.skip(f"/dev/kvm is not usable: {reason}")
    missing = toolchain_missing()
    if missing:
        pytest.skip(f"cannot build the guest: {missing}")
    data = build_guest("fwcfg_test").bin_path.read_bytes()
    assert len(data) == 64 * layout.KiB, f"guest image is {len(data)} bytes"
    return data


def run_guest(machine, image: bytes, tmp_path: Path, **fw_cfg_options):
    """Run the guest with these fw_cfg options (Machine's); returns (lines by (mode, label),
    fw_cfg)."""
    from tinyvmm import Outcome
    blob_path = tmp_path / "blob.bin"
    blob_path.write_bytes(BLOB)
    guest = machine(image, mem=RAM_SIZE, fw_cfg={"opt/test/blob": blob_path}, **fw_cfg_options)
    guest.add_fw_cfg_file("opt/test/rw", RW_INITIAL, write=lambda offset, data: None)
    result = guest.run(timeout=60)
    text = guest.debugcon_output.decode("latin-1")
    assert result.outcome is Outcome.RESET, guest.summary()
    lines = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("pio", "mmio"):
            lines[(words[0], words[1])] = words[2:]
    assert text.endswith("end\n"), text
    return lines, guest.fw_cfg


def checksum(data: bytes) -> str:
    value = 0
    for byte in data:
        value = (value * 31 + byte) & 0xFFFFFFFF
    return f"{value:08x}"


def expect_common(lines, mode, fw_cfg, dma: bool):
    items = fw_cfg.items
    assert lines[(mode, "sig")] == ["554d4551"]                      # "QEMU"
    assert lines[(mode, "id")] == ["00000003" if dma else "00000001"]
    assert lines[(mode, "dmasig")] == (["554d4551", "47464320"] if dma else ["ffffffff"] * 2)
    assert lines[(mode, "ram")] == [f"{RAM_SIZE >> 32:08x}", f"{RAM_SIZE & 0xFFFFFFFF:08x}"]
    assert lines[(mode, "files")] == [f"{len(items.file_names()):08x}"]
    assert lines[(mode, "blob")] == [f"{items.file_key('opt/test/blob'):08x}", f"{len(BLOB):08x}"]
    assert lines[(mode, "rw")] == [f"{items.file_key('opt/test/rw'):08x}", f"{len(RW_INITIAL):08x}"]
    assert lines[(mode, "sum-data")] == [checksum(BLOB)]


def expect_dma(lines, mode):
    ok, error = "00000000", "00000001"
    assert lines[(mode, "sum-dma")] == [ok, checksum(BLOB)]
    assert lines[(mode, "skip")] == [ok, ok, BLOB[100:116].hex()]
    assert lines[(mode, "tail")] == [ok, (BLOB[-4:] + bytes(4)).hex()]
    assert lines[(mode, "shared")] == [ok, BLOB[:4].hex()]
    assert lines[(mode, "write")] == [ok, (b"WRITTEN!" + RW_INITIAL[8:]).hex()]
    assert lines[(mode, "write-ro")] == [error]
    assert lines[(mode, "write-long")] == [error]
    assert lines[(mode, "read-rom")] == [error, b"ROM!".hex()]
    assert lines[(mode, "read-hole")] == [error]
    assert lines[(mode, "read-edge")] == [error, "55" * 8]
    # Beyond RAM with the high half set: nothing happens; low half alone: the transfer runs.
    assert lines[(mode, "high")] == ["0000000a", "00000000", ok, "554d4551"]


def test_ports_and_mmio_with_dma(machine, guest_image, tmp_path):
    lines, fw_cfg = run_guest(machine, guest_image, tmp_path, fw_cfg_mmio=MMIO_BASE)
    for mode in ("pio", "mmio"):
        expect_common(lines, mode, fw_cfg, dma=True)
        expect_dma(lines, mode)
    assert bytes(fw_cfg.items.file("opt/test/rw").data) == b"WRITTEN!" + RW_INITIAL[8:]


def test_without_dma_the_guest_sees_id_1_and_no_dma_register(machine, guest_image, tmp_path):
    lines, fw_cfg = run_guest(machine, guest_image, tmp_path, fw_cfg_dma=False,
                              fw_cfg_mmio=MMIO_BASE)
    for mode in ("pio", "mmio"):
        expect_common(lines, mode, fw_cfg, dma=False)
        assert (mode, "nodma") in lines and (mode, "sum-dma") not in lines
    assert bytes(fw_cfg.items.file("opt/test/rw").data) == RW_INITIAL


def test_mmio_instead_of_the_ports(machine, guest_image, tmp_path):
    lines, fw_cfg = run_guest(machine, guest_image, tmp_path, fw_cfg_ports=False,
                              fw_cfg_mmio=MMIO_BASE)
    assert ("pio", "absent") in lines and ("pio", "sig") not in lines
    expect_common(lines, "mmio", fw_cfg, dma=True)
    expect_dma(lines, "mmio")


def test_ports_only_guest_finds_no_mmio(machine, guest_image, tmp_path):
    lines, fw_cfg = run_guest(machine, guest_image, tmp_path)
    expect_common(lines, "pio", fw_cfg, dma=True)
    expect_dma(lines, "pio")
    assert ("mmio", "absent") in lines


def test_cli_run_with_fw_cfg_options_and_trace(guest_image, tmp_path):
    """The same guest through `python3 -m tinyvmm run --bios`, with --fw-cfg and --trace fw_cfg."""
    image = tmp_path / "fwcfg_test.bin"
    image.write_bytes(guest_image)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(BLOB)
    root = Path(__file__).resolve().parent.parent
    done = tinyvmm("run", "--bios", str(image), "--debugcon", "stdio", "--serial", "none",
                   "--timeout", "60", "--trace", "fw_cfg",
                   "--fw-cfg", f"name=opt/test/blob,file={blob}", "--fw-cfg-mmio", hex(MMIO_BASE),
                   cwd=root, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    for mode in ("pio", "mmio"):
        assert f"{mode} sig 554d4551" in lines
        assert f"{mode} dmasig 554d4551 47464320" in lines
        assert f"{mode} nofile" in lines       # no writable opt/test/rw from the command line
    trace = done.stderr.splitlines()
    assert any("fw_cfg" in line and "select key 0x0019 (file_dir)" in line for line in trace)
    assert any("fw_cfg" in line and "read key 0x0000 (signature)" in line and "length 4 moved 4"
               in line for line in trace)
