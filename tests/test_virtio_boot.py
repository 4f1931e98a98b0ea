"""A virtio-blk disk on /dev/kvm: unmodified SeaBIOS boots from it and reads it through INT 13h;
--drive's bad input is refused before the guest starts."""

import os
import struct
from pathlib import Path

import guest_build
import pytest
from command_line import tinyvmm

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
DISK_SECTORS = 2048


def disk_image(path: Path, chunk_sectors: int = 8, reads: int = 16) -> Path:
    """The disk_read boot sector, then sectors whose first 4 bytes are their LBA."""
    build = path.parent / f"disk_read-{chunk_sectors}-{reads}"
    image = guest_build.assemble(guest_build.GUESTS / "disk_read.S", build,
                                 {"CHUNK_SECTORS": chunk_sectors, "DISK_READS": reads,
                                  "DISK_SECTORS": DISK_SECTORS},
                                 linker_script=guest_build.GUESTS / "bootsector.ld")
    boot = image.bin_path.read_bytes()
    assert len(boot) == 512 and boot[-2:] == b"\x55\xaa"
    path.write_bytes(boot + b"".join(struct.pack("<I", lba) + bytes(508) for lba in range(1, DISK_SECTORS)))
    return path


def seabios_missing():
    return None if SEABIOS.exists() else f"{SEABIOS} is not installed (Debian package seabios)"


@pytest.mark.kvm
@pytest.mark.parametrize("chunk", [8, 128], ids=["4KiB", "64KiB"])
def test_seabios_boots_the_disk_and_reads_it(tmp_path, chunk):
    if seabios_missing():
        pytest.skip(seabios_missing())
    disk = disk_image(tmp_path / "disk.img", chunk_sectors=chunk)
    log = tmp_path / "seabios.log"
    result = tinyvmm("run", "--bios", str(SEABIOS), "--drive", f"file={disk},if=virtio,format=raw",
                     "--debugcon", f"file:{log}", "--timeout", "60")
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, out + result.stderr.decode()
    assert "disk-read: start" in out and "disk-read: ok" in out and "error" not in out
    text = log.read_text(errors="replace")
    assert "found virtio-blk at 00:02.0" in text and "using modern (1.0) virtio mode" in text
    assert "Booting from Hard Disk" in text


@pytest.mark.kvm
def test_a_read_only_drive_boots_and_the_image_is_unchanged(tmp_path):
    if seabios_missing():
        pytest.skip(seabios_missing())
    disk = disk_image(tmp_path / "disk.img")
    before = disk.read_bytes()
    os.chmod(disk, 0o444)
    result = tinyvmm("run", "--bios", str(SEABIOS), "--timeout", "60",
                     "--drive", f"file={disk},if=virtio,format=raw,readonly=on")
    assert result.returncode == 0 and b"disk-read: ok" in result.stdout, result.stderr.decode()
    assert disk.read_bytes() == before


@pytest.mark.kvm
def test_bootindex_names_the_disk_in_bootorder(tmp_path):
    if seabios_missing():
        pytest.skip(seabios_missing())
    disk = disk_image(tmp_path / "disk.img")
    listing = tinyvmm("fw-cfg", "list", "--drive", f"file={disk},if=virtio,format=raw,bootindex=1",
                      "--json")
    assert listing.returncode == 0, listing.stderr.decode()
    assert b"bootorder" in listing.stdout
    log = tmp_path / "seabios.log"
    result = tinyvmm("run", "--bios", str(SEABIOS), "--timeout", "60", "--debugcon", f"file:{log}",
                     "--drive", f"file={disk},if=virtio,format=raw,bootindex=1")
    assert result.returncode == 0 and b"disk-read: ok" in result.stdout
    text = log.read_text(errors="replace")
    assert "/pci@i0cf8/scsi@2/disk@0,0" in text        # SeaBIOS read our bootorder


def test_drive_bootorder_path_follows_qemu():
    from tinyvmm.build import drive_boot_path
    assert drive_boot_path(0) == "/pci@i0cf8/scsi@2/disk@0,0"
    assert drive_boot_path(9) == "/pci@i0cf8/scsi@b/disk@0,0"


@pytest.mark.parametrize("spec,message", [
    ("file=/nonexistent.img,if=virtio,format=raw", "cannot open disk image /nonexistent.img"),
    ("file={dir},if=virtio,format=raw", "is a directory"),
    ("file={empty},if=virtio,format=raw", "needs at least one 512-byte sector"),
    ("file={ok},if=ide,format=raw", "only if=virtio"),
    ("file={ok},if=virtio,format=qcow2", "only format=raw"),
    ("file={ok},if=virtio,format=raw,readonly=maybe", "expected on or off"),
    ("file={ok},if=virtio,format=raw,cache=none", "unknown drive option 'cache'"),
    ("file={ok},serial=abcdefghijklmnopqrstuvwxyz", "at most 20"),
    ("if=virtio,format=raw", "no file=PATH"),
    ("{ok}", "expected key=value"),
])
def test_bad_drives_are_usage_errors(tmp_path, spec, message):
    (tmp_path / "ok.img").write_bytes(bytes(4096))
    (tmp_path / "empty.img").write_bytes(bytes(100))
    spec = spec.format(dir=tmp_path, ok=tmp_path / "ok.img", empty=tmp_path / "empty.img")
    result = tinyvmm("run", "--bios", "bios.bin", "--drive", spec, "--timeout", "5")
    assert result.returncode == 2, result.stderr.decode()
    assert message in result.stderr.decode() and b"Traceback" not in result.stderr


@pytest.mark.kvm
def test_an_odd_sized_image_is_rounded_down_with_a_warning(tmp_path):
    image = tmp_path / "odd.img"
    image.write_bytes(bytes(512 * 3 + 100))
    result = tinyvmm("run", "--bios", "bios.bin", "--disk", str(image), "--timeout", "5",
                     "--expect", "tinyvmm BIOS")
    assert b"is 1636 bytes, not a multiple of 512: the guest sees its first 3 whole sectors" in result.stderr
    assert b"tinyvmm's BIOS boots only from fw_cfg, not from disks" in result.stderr


def test_a_read_only_file_needs_readonly_on(tmp_path, monkeypatch):
    """An image the OS will only open read-only (a read-only mount, EROFS; a mode-0444 file for
    a user other than root, EACCES) is refused unless readonly=on."""
    from tinyvmm.spec import DriveSpec
    from tinyvmm.virtio.drive import DriveError, open_drive
    image = tmp_path / "ro.img"
    image.write_bytes(bytes(4096))
    real_open = os.open

    def read_only_mount(path, flags, *rest):
        if str(path) == str(image) and flags & os.O_RDWR:
            raise OSError(30, "Read-only file system")
        return real_open(path, flags, *rest)
    monkeypatch.setattr(os, "open", read_only_mount)
    with pytest.raises(DriveError, match="Read-only file system; give readonly=on"):
        open_drive(DriveSpec(str(image)))
    fd, size = open_drive(DriveSpec(str(image), read_only=True))
    os.close(fd)
    assert size == 4096


def test_drives_that_cannot_go_together_are_usage_errors(tmp_path):
    image = tmp_path / "a.img"
    image.write_bytes(bytes(4096))
    other = tmp_path / "b.img"
    other.write_bytes(bytes(4096))
    for drives, message in (
            (["--disk", str(image), "--disk", str(image)], "is given twice"),
            (["--drive", f"file={image},bootindex=1", "--drive", f"file={other},bootindex=1"],
             "bootindex=1 is given to two drives"),
            (["--disk", str(image)] * 31, "at most 30 fit"),
            (["--drive", f"file={image},bootindex=99999999999"], "from 0 to 2147483647")):
        result = tinyvmm("run", "--bios", "bios.bin", "--timeout", "5", *drives)
        assert result.returncode == 2 and message in result.stderr.decode(), result.stderr.decode()
        assert b"Traceback" not in result.stderr
    shared = tinyvmm("fw-cfg", "list", "--drive", f"file={image},readonly=on",
                     "--drive", f"file={image},readonly=on")
    assert shared.returncode == 0, shared.stderr.decode()         # read-only twice is fine


def test_doubled_commas_stand_for_one():
    from tinyvmm.virtio.drive import parse_drive
    spec = parse_drive("file=a,,b.img,if=virtio,format=raw,serial=x,,y")
    assert spec.path == "a,b.img" and spec.serial == "x,y"


def test_fw_cfg_list_checks_the_images(tmp_path):
    result = tinyvmm("fw-cfg", "list", "--disk", str(tmp_path / "missing.img"))
    assert result.returncode == 2 and b"cannot open disk image" in result.stderr
