"""Legacy x86 option ROMs: signing an image after linking, and checking one.

Layout (the PCI Firmware Specification's expansion ROM header, with the BIOS
Boot Specification's PnP header): bytes 55 AA, the size in 512-byte blocks at
offset 2, the init entry at offset 3, the offset of a PCI data structure at
0x18 and of a PnP expansion header ("$PnP") at 0x1A. The bytes of the whole ROM sum to 0 mod
256; so do the bytes of the PnP header (its length field counts 16-byte units).

    python3 -m tinyvmm.optionrom sign IN OUT     pad, set the size byte and checksums
    python3 -m tinyvmm.optionrom check FILE      print what validate() finds
"""

import sys
from collections import namedtuple

from .checksum import checksum_byte
from .errors import ConfigError

SIGNATURE = b"\x55\xaa"
BLOCK = 512
MAX_BLOCKS = 255
SIZE_OFFSET = 2
INIT_OFFSET = 3
PCI_POINTER = 0x18
PNP_POINTER = 0x1A
HEADER_SIZE = 0x1C

PNP_SIGNATURE = b"$PnP"
PNP_LENGTH = 0x05             # in 16-byte units
PNP_CHECKSUM = 0x09
PNP_MANUFACTURER = 0x0E
PNP_PRODUCT = 0x10
PNP_BEV = 0x1A
PNP_MIN_SIZE = 0x20


class OptionRomError(ConfigError):
    """An image that is not a valid option ROM, or cannot be made one."""


class OptionRomInfo(namedtuple("OptionRomInfo", "size pnp_offset bev manufacturer product")):
    """size in bytes (from the size byte); bev: the bootstrap entry vector, an offset into the ROM."""
    __slots__ = ()


def _pnp_range(image: bytes | bytearray) -> tuple[int, int] | None:
    """(offset, length) of the PnP header the ROM header points at, if it has one."""
    offset = int.from_bytes(image[PNP_POINTER:PNP_POINTER + 2], "little")
    if offset == 0:
        return None
    if offset + PNP_MIN_SIZE > len(image):
        raise OptionRomError(f"PnP header offset {offset:#x} is outside the ROM")
    if image[offset:offset + 4] != PNP_SIGNATURE:
        raise OptionRomError(f"no $PnP signature at {offset:#x}")
    length = image[offset + PNP_LENGTH] * 16
    if length < PNP_MIN_SIZE or offset + length > len(image):
        raise OptionRomError(f"PnP header length {length} at {offset:#x} is invalid")
    return offset, length


def sign(raw: bytes) -> bytes:
    """The ROM padded to whole 512-byte blocks, with its size byte and checksums set.

    One byte past the code is always left for the ROM checksum, which becomes
    the last byte of the image.
    """
    if len(raw) < HEADER_SIZE or raw[:2] != SIGNATURE:
        raise OptionRomError("not an option ROM: no 55 AA header")
    blocks = (len(raw) + 1 + BLOCK - 1) // BLOCK
    if blocks > MAX_BLOCKS:
        raise OptionRomError(f"{len(raw)} bytes do not fit in {MAX_BLOCKS} blocks of {BLOCK}")
    image = bytearray(raw) + bytes(blocks * BLOCK - len(raw))
    image[SIZE_OFFSET] = blocks
    pnp = _pnp_range(image)
    if pnp is not None:
        offset, length = pnp
        image[offset + PNP_CHECKSUM] = 0
        image[offset + PNP_CHECKSUM] = checksum_byte(image[offset:offset + length])
    image[-1] = 0
    image[-1] = checksum_byte(image)
    return bytes(image)


def _string_at(image: bytes, offset: int) -> str:
    if offset == 0:
        return ""
    if offset >= len(image):
        raise OptionRomError(f"string offset {offset:#x} is outside the ROM")
    end = image.find(b"\0", offset)
    if end < 0:
        raise OptionRomError(f"string at {offset:#x} has no terminating NUL")
    return image[offset:end].decode("ascii", "replace")


def check_loadable(image: bytes) -> list[str]:
    """Check what a BIOS needs to load a ROM at all: the 55 AA signature and a size byte
    that the image fills. Raises OptionRomError; returns warnings for what a BIOS may
    forgive (a bad checksum: SeaBIOS loads it when etc/optionroms-checksum is 0)."""
    if len(image) < 3 or image[:2] != SIGNATURE:
        raise OptionRomError("no 55 AA signature at its start")
    size = image[SIZE_OFFSET] * BLOCK
    if size == 0:
        raise OptionRomError("its size byte (offset 2) is 0")
    if size > len(image):
        raise OptionRomError(f"its size byte says {size} bytes, but the file has {len(image)}")
    if sum(image[:size]) & 0xFF:
        return [f"checksum: its {size} bytes sum to {sum(image[:size]) & 0xFF:#04x}, not 0, so "
                "SeaBIOS refuses it unless etc/optionroms-checksum is 0"]
    return []


def validate(image: bytes) -> OptionRomInfo:
    """Check signature, size, checksums and the PnP header; raise OptionRomError if bad."""
    if len(image) < HEADER_SIZE:
        raise OptionRomError("no 55 AA signature at its start")
    checksum_problems = check_loadable(image)
    if checksum_problems:
        raise OptionRomError(checksum_problems[0])
    size = image[SIZE_OFFSET] * BLOCK
    rom = image[:size]
    pnp = _pnp_range(rom)
    if pnp is None:
        raise OptionRomError("no PnP expansion header, so no bootstrap entry vector")
    offset, length = pnp
    if sum(rom[offset:offset + length]) & 0xFF:
        raise OptionRomError(f"PnP header checksum at {offset:#x} does not sum to 0")
    bev = int.from_bytes(rom[offset + PNP_BEV:offset + PNP_BEV + 2], "little")
    if bev == 0 or bev >= size:
        raise OptionRomError(f"bootstrap entry vector {bev:#x} is not inside the ROM")
    word = lambda at: int.from_bytes(rom[at:at + 2], "little")  # noqa: E731
    return OptionRomInfo(size=size, pnp_offset=offset, bev=bev,
                         manufacturer=_string_at(rom, word(offset + PNP_MANUFACTURER)),
                         product=_string_at(rom, word(offset + PNP_PRODUCT)))


# A legacy ROM's size byte counts at most 255 blocks; SeaBIOS places ROMs in 0xC0000-0xEFFFF.
MAX_FILE_SIZE = 192 * 1024


def read_option_rom(path: str) -> tuple[bytes, list[str]]:
    """An option ROM file, its size checked before it is read; (bytes, warnings).
    Raises OptionRomError (with the path) or OSError."""
    from .files import FileTooLarge, NotAFile, read_bounded
    try:
        data = read_bounded(path, MAX_FILE_SIZE)
    except FileTooLarge as exc:
        raise OptionRomError(f"option ROM {path} {exc}; at most {MAX_FILE_SIZE // 1024} KiB "
                             "fit the option ROM area") from None
    except NotAFile as exc:
        raise OptionRomError(f"option ROM {exc}") from None
    try:
        warnings = check_loadable(data)
    except OptionRomError as exc:
        raise OptionRomError(f"option ROM {path}: {exc}") from None
    return data, [f"option ROM {path}: {w}" for w in warnings]


def main(argv: list[str]) -> int:
    usage = "usage: python3 -m tinyvmm.optionrom sign IN OUT | check FILE"
    try:
        if len(argv) == 3 and argv[0] == "sign":
            with open(argv[1], "rb") as f:
                signed = sign(f.read())
            with open(argv[2], "wb") as f:
                f.write(signed)
            return 0
        if len(argv) == 2 and argv[0] == "check":
            with open(argv[1], "rb") as f:
                info = validate(f.read())
            print(f"{argv[1]}: {info.size} bytes, BEV {info.bev:#x}, "
                  f"{info.manufacturer!r} {info.product!r}")
            return 0
    except OptionRomError as exc:
        print(f"{argv[1]}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
