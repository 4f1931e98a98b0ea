"""`--drive file=disk.img,if=virtio,format=raw[,readonly=on][,serial=S][,bootindex=N]` and
`--drive if=pflash,format=raw,unit=0|1,file=PATH[,readonly=on]` (QEMU's spelling): parsed, then
the image opened and checked before the guest starts."""

import errno
import fcntl
import os
import stat

from ..spec import BOOTINDEX_MAX, DriveError, DriveSpec, PflashSpec, split_options

SECTOR = 512
KNOWN_KEYS = ("file", "if", "format", "readonly", "serial", "bootindex", "unit")
PFLASH_KEYS = ("file", "if", "format", "readonly", "unit")


def _flag(key: str, value: str) -> bool:
    if value in ("on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    raise DriveError(f"{key}={value}: expected on or off (yes/no and true/false also work)")


def parse_drive(text: str) -> DriveSpec | PflashSpec:
    """QEMU's -drive syntax, the parts a virtio disk and a flash unit use: a DriveSpec for
    if=virtio (the default), a PflashSpec for if=pflash (unit -1 when unit= is not given:
    tinyvmm.spec.split_drives numbers it). Raises DriveError."""
    fields: dict[str, str] = {}
    for part in split_options(text):
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
    interface = fields.get("if", "virtio")
    if interface not in ("virtio", "pflash"):
        raise DriveError(f"if={interface}: only if=virtio (a virtio-blk PCI disk) and if=pflash "
                         "(a flash unit below 4 GiB) are supported")
    if fields.get("format", "raw") != "raw":
        raise DriveError(f"format={fields['format']}: only format=raw images are supported")
    if interface == "pflash":
        return _parse_pflash(fields)
    if "unit" in fields:
        raise DriveError("unit= numbers if=pflash drives; a virtio disk's place is its order")
    bootindex = fields.get("bootindex")
    if bootindex is not None and not bootindex.isdigit():
        raise DriveError(f"bootindex={bootindex}: expected a number from 0 to {BOOTINDEX_MAX}")
    # DriveSpec checks the serial and the boot index's range (the API's drives too).
    return DriveSpec(fields["file"], _flag("readonly", fields.get("readonly", "off")),
                     fields.get("serial"), int(bootindex) if bootindex is not None else None)


def _parse_pflash(fields: dict[str, str]) -> PflashSpec:
    for key in fields:
        if key not in PFLASH_KEYS:
            raise DriveError(f"{key}= is not a pflash option; known: {', '.join(PFLASH_KEYS)}")
    unit = fields.get("unit")
    if unit is not None and not unit.isdigit():
        raise DriveError(f"unit={unit}: expected 0 or 1")
    return PflashSpec(fields["file"], int(unit) if unit is not None else -1,
                      _flag("readonly", fields.get("readonly", "off")))


def open_image(path: str, read_only: bool, what: str) -> int:
    """The file descriptor of a disk or flash image (`what` names it in messages), opened for
    reading, or reading and writing. Raises DriveError, with a hint when only writing failed."""
    try:
        return os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    except OSError as exc:
        hint = "; give readonly=on to use it read-only" if not read_only and \
            exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM) else ""
        raise DriveError(f"cannot open {what} {path} for "
                         f"{'reading' if read_only else 'reading and writing'}: "
                         f"{exc.strerror}{hint}") from None


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
    fd = open_image(spec.path, spec.read_only, "disk image")
    if stat.S_ISBLK(mode) and not spec.read_only and _block_device_read_only(fd):
        os.close(fd)
        raise DriveError(f"disk image {spec.path} is a read-only block device; give readonly=on "
                         "to use it read-only")
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    except OSError as exc:                  # /proc files and the like cannot be seeked
        os.close(fd)
        raise DriveError(f"disk image {spec.path} has no size ({exc.strerror}); give a regular "
                         "file or a block device") from None
    usable = size - size % SECTOR
    if usable == 0:
        os.close(fd)
        raise DriveError(f"disk image {spec.path} is {size} bytes; a disk needs at least one "
                         f"{SECTOR}-byte sector")
    if usable != size and warn is not None:
        warn(f"disk image {spec.path} is {size} bytes, not a multiple of {SECTOR}: the guest "
             f"sees its first {usable // SECTOR} whole sectors ({usable} bytes)")
    return fd, usable


BLKROGET = 0x125E                   # linux/fs.h: _IO(0x12, 94), an int: 1 when read-only


def _block_device_read_only(fd: int) -> bool:
    flag = bytearray(4)
    try:
        fcntl.ioctl(fd, BLKROGET, flag)
    except OSError:
        return False
    return int.from_bytes(flag, "little") != 0


def check_drives(specs) -> None:
    """Raise DriveError for drives that cannot go together: more than the PCI slots hold, one
    image given twice (two writable views of one file would corrupt it), a boot index used
    twice."""
    from .. import layout
    if len(specs) > layout.VIRTIO_MAX_DEVICES:
        raise DriveError(f"{len(specs)} drives: at most {layout.VIRTIO_MAX_DEVICES} fit (PCI slots "
                         f"{layout.VIRTIO_FIRST_SLOT} to 31 of bus 0)")
    seen: dict[tuple[int, int], DriveSpec] = {}
    for spec in specs:
        try:
            info = os.stat(spec.path)
        except OSError:
            continue                    # open_drive says why
        key = (info.st_dev, info.st_ino)
        other = seen.get(key)
        if other is not None and not (spec.read_only and other.read_only):
            raise DriveError(f"disk image {spec.path} is given twice ({other.path}); two "
                             "writable disks on one image would corrupt it (readonly=on on both "
                             "shares it)")
        seen[key] = spec
    indexes = [spec.bootindex for spec in specs if spec.bootindex is not None]
    for index in set(indexes):
        if indexes.count(index) > 1:
            raise DriveError(f"bootindex={index} is given to two drives")
