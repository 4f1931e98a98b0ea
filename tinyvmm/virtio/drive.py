"""`--drive file=disk.img,if=virtio,format=raw[,readonly=on][,serial=S][,bootindex=N]` (QEMU's
spelling) and its short form `--disk FILE`: parsed, then the image opened and checked before the
guest starts."""

import argparse
import os
import stat

SECTOR = 512
KNOWN_KEYS = ("file", "if", "format", "readonly", "serial", "bootindex")
SERIAL_MAX = 20                     # virtio-blk GET_ID: 20 bytes


class DriveError(ValueError):
    """A drive that cannot be attached; the message says why."""


class DriveSpec:
    """One --drive: the image path, read-only or not, its GET_ID serial, its boot index."""
    __slots__ = ("path", "read_only", "serial", "bootindex")

    def __init__(self, path: str, read_only: bool = False, serial: str | None = None,
                 bootindex: int | None = None):
        self.path = path
        self.read_only = read_only
        self.serial = serial
        self.bootindex = bootindex


def _flag(key: str, value: str) -> bool:
    if value in ("on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    raise DriveError(f"{key}={value}: expected on or off")


def parse_drive(text: str) -> DriveSpec:
    """QEMU's -drive syntax, the parts a virtio disk uses. Raises DriveError."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise DriveError(f"{part!r}: expected key=value (file=PATH,if=virtio,format=raw)")
        if key not in KNOWN_KEYS:
            raise DriveError(f"unknown drive option {key!r}; known: {', '.join(KNOWN_KEYS)}")
        if key in fields:
            raise DriveError(f"{key} given twice")
        fields[key] = value
    if not fields.get("file"):
        raise DriveError("no file=PATH")
    if fields.get("if", "virtio") != "virtio":
        raise DriveError(f"if={fields['if']}: only if=virtio (a virtio-blk PCI disk) is supported")
    if fields.get("format", "raw") != "raw":
        raise DriveError(f"format={fields['format']}: only format=raw images are supported")
    serial = fields.get("serial")
    if serial is not None and (len(serial) > SERIAL_MAX or not serial.isascii()
                               or not serial.isprintable()):
        raise DriveError(f"serial={serial!r}: at most {SERIAL_MAX} printable ASCII characters")
    bootindex = fields.get("bootindex")
    if bootindex is not None and not bootindex.isdigit():
        raise DriveError(f"bootindex={bootindex}: expected a number")
    return DriveSpec(fields["file"], _flag("readonly", fields.get("readonly", "off")), serial,
                     int(bootindex) if bootindex is not None else None)


def parse_drive_option(text: str) -> DriveSpec:
    try:
        return parse_drive(text)
    except DriveError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_disk_option(text: str) -> DriveSpec:
    """`--disk FILE`: a raw image as a writable virtio disk."""
    if not text:
        raise argparse.ArgumentTypeError("--disk needs a file")
    return DriveSpec(text)


def add_drive_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("disks")
    group.add_argument("--drive", dest="drives", action="append", default=[], type=parse_drive_option,
                       metavar="file=PATH,if=virtio,format=raw[,readonly=on][,serial=S][,bootindex=N]",
                       help="a raw disk image as a virtio-blk PCI disk (QEMU's -drive spelling; "
                            "repeatable; the first is at 00:02.0). bootindex puts it in the "
                            "firmware's boot order (SeaBIOS), lowest first")
    group.add_argument("--disk", dest="drives", action="append", type=parse_disk_option,
                       metavar="FILE", help="short for --drive file=FILE,if=virtio,format=raw")


def open_drive(spec: DriveSpec, warn=None) -> tuple[int, int]:
    """Open the image: (fd, usable size in bytes). A size that is not a multiple of 512 is
    rounded down, as QEMU does, with a warning through `warn`. Raises DriveError."""
    try:
        mode = os.stat(spec.path).st_mode
    except OSError as exc:
        raise DriveError(f"cannot open disk image {spec.path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise DriveError(f"disk image {spec.path} is a directory")
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise DriveError(f"disk image {spec.path} is not a regular file or a block device")
    flags = os.O_RDONLY if spec.read_only else os.O_RDWR
    try:
        fd = os.open(spec.path, flags | os.O_CLOEXEC)
    except OSError as exc:
        hint = "; give readonly=on to use it read-only" if not spec.read_only and \
            exc.errno in (13, 30) else ""     # EACCES, EROFS
        raise DriveError(f"cannot open disk image {spec.path} for "
                         f"{'reading' if spec.read_only else 'reading and writing'}: "
                         f"{exc.strerror}{hint}") from None
    size = os.lseek(fd, 0, os.SEEK_END)
    usable = size - size % SECTOR
    if usable == 0:
        os.close(fd)
        raise DriveError(f"disk image {spec.path} is {size} bytes; a disk needs at least one "
                         f"{SECTOR}-byte sector")
    if usable != size and warn is not None:
        warn(f"disk image {spec.path} is {size} bytes, not a multiple of {SECTOR}: the guest "
             f"sees the first {usable} (as QEMU does)")
    return fd, usable
