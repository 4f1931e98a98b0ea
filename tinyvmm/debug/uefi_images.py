"""Names for addresses in UEFI firmware without debug symbols, as a debugger finds them.

An address falls in a loaded PE/COFF (or TE) image whose headers sit at the image's base in
guest memory: UefiImages looks back from the address for them. The image is named by the
firmware-volume file it was loaded from: UEFI firmware (OVMF) ships its modules as files of
its firmware volumes (PI specification, volume 3), each with a user-interface section that
holds the module's name ("DxeCore"), often inside an LZMA-compressed volume. The files are
matched to loaded images by the parts of their headers a loader leaves as they are.
"""

from __future__ import annotations

import hashlib
import lzma
import struct
import uuid

from ..firmware import FV_SIGNATURE, FV_SIGNATURE_OFFSET
from .symbols import Symbol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

FFS_HEADER = 24
FFS_LARGE_FILE = 0x01                   # attribute: a 32-byte header with a 64-bit size
FFS_FREE_SPACE = 0xF0                   # file type of the padding at a volume's end
SECTION_COMPRESSION, SECTION_GUID_DEFINED = 0x01, 0x02
SECTION_PE32, SECTION_TE, SECTION_UI, SECTION_FV = 0x10, 0x12, 0x15, 0x17
LZMA_GUID = uuid.UUID("ee4e5898-3914-4259-9d6e-dc7bd79403cf").bytes_le
NESTING_MAX = 8                         # volumes in sections in volumes ...
DECOMPRESSED_MAX = 256 << 20            # what one LZMA section may expand to
SCAN_BYTES = 4 << 20                    # how far below an address its image's base may be
HEADER_ALIGN = 32                       # PE/COFF and TE headers start 32-byte aligned
PAGE = 0x1000
NOTHING_MAX = 4096
TE_HEADER = 40
SECTION_HEADER = 40


def fingerprint(image: bytes) -> tuple[bytes, int, int] | None:
    """(key, header length, size in memory) of the PE32/PE32+ or TE image that `image`
    starts with, or None. The key covers the COFF (or TE) header's fixed fields, the entry
    point and the section table, which loading leaves unchanged (ImageBase it rewrites);
    the header length counts the bytes up to the section table's end."""
    if image[:2] == b"MZ" and len(image) >= 0x40:
        pe = struct.unpack_from("<I", image, 0x3C)[0]
        if pe > 0x1000 or image[pe:pe + 4] != b"PE\0\0" or len(image) < pe + 24 + 96:
            return None
        sections, optional_size = struct.unpack_from("<H", image, pe + 6)[0], \
            struct.unpack_from("<H", image, pe + 20)[0]
        optional = pe + 24
        if struct.unpack_from("<H", image, optional)[0] not in (0x10B, 0x20B):
            return None
        entry, size = struct.unpack_from("<I", image, optional + 16)[0], \
            struct.unpack_from("<I", image, optional + 56)[0]
        table = optional + optional_size
        end = table + sections * SECTION_HEADER
        if sections > 96 or len(image) < end:
            return None
        key = image[pe + 4:pe + 24] + struct.pack("<I", entry) + image[table:end]
        return hashlib.sha1(key).digest(), end, size
    if image[:2] == b"VZ" and len(image) >= TE_HEADER:
        sections, stripped, entry = image[4], struct.unpack_from("<H", image, 6)[0], \
            struct.unpack_from("<I", image, 8)[0]
        end = TE_HEADER + sections * SECTION_HEADER
        if len(image) < end or stripped < TE_HEADER:
            return None
        table = image[TE_HEADER:end]
        extent = max((struct.unpack_from("<II", table, i * SECTION_HEADER + 8)
                      for i in range(sections)), key=sum, default=(0, 0))
        # a TE image's RVAs count from where its stripped PE headers would have begun
        size = sum(extent) - stripped + TE_HEADER
        key = image[:4] + struct.pack("<I", entry) + table
        return hashlib.sha1(key).digest(), end, max(size, TE_HEADER)
    return None


def index_firmware(data: bytes) -> dict[bytes, str]:
    """Every module of the firmware volumes in `data` (a flash image) that has both an image
    and a name: {fingerprint key: name}. Unreadable parts are passed over."""
    names: dict[bytes, str] = {}
    for name, image in modules(data):
        found = fingerprint(image)
        if found is not None:
            names[found[0]] = name
    return names


def modules(data: bytes) -> list[tuple[str, bytes]]:
    """(name, image) of each file of the firmware volumes in `data` that holds a PE32 or TE
    image and a user-interface section, compressed volumes (LZMA) opened."""
    found: list[tuple[str, bytes]] = []
    at = data.find(FV_SIGNATURE, FV_SIGNATURE_OFFSET)
    while at >= 0:
        start = at - FV_SIGNATURE_OFFSET
        length = _volume(data, start, found, 0)
        at = data.find(FV_SIGNATURE, start + max(length, FV_SIGNATURE_OFFSET + 4) + FV_SIGNATURE_OFFSET)
    return found


def _volume(data: bytes, start: int, found: list[tuple[str, bytes]], depth: int) -> int:
    """The files of the volume at `start` into `found`; its length (0 if it is not one)."""
    if depth > NESTING_MAX or len(data) < start + 0x38 or \
            data[start + FV_SIGNATURE_OFFSET:start + FV_SIGNATURE_OFFSET + 4] != FV_SIGNATURE:
        return 0
    length = struct.unpack_from("<Q", data, start + 32)[0]
    header, _, ext = struct.unpack_from("<HHH", data, start + 48)
    if length > len(data) - start or header < 0x38:
        return 0
    at = start + header
    if ext and start + ext + 20 <= len(data):
        at = start + ext + struct.unpack_from("<I", data, start + ext + 16)[0]
    end = start + length
    while True:
        at = (at + 7) & ~7
        if at + FFS_HEADER > end:
            break
        kind, attributes = data[at + 18], data[at + 19]
        size = int.from_bytes(data[at + 20:at + 23], "little")
        body = at + FFS_HEADER
        if attributes & FFS_LARGE_FILE:
            size = struct.unpack_from("<Q", data, at + FFS_HEADER)[0]
            body += 8
        if size == 0xFFFFFF and kind == 0xFF or size < FFS_HEADER or at + size > end:
            break                           # erased flash, or not a file
        if kind != FFS_FREE_SPACE:
            images: list[bytes] = []
            name = [""]
            _sections(data[body:at + size], images, name, found, depth)
            found += [(name[0], image) for image in images if name[0]]
        at += size
    return length


def _sections(data: bytes, images: list[bytes], name: list[str], found: list[tuple[str, bytes]],
              depth: int) -> None:
    at = 0
    while at + 4 <= len(data):
        size, kind = int.from_bytes(data[at:at + 3], "little"), data[at + 3]
        body = at + 4
        if size == 0xFFFFFF:
            if at + 8 > len(data):
                return
            size, body = struct.unpack_from("<I", data, at + 4)[0], at + 8
        if size < 4 or at + size > len(data):
            return
        content = data[body:at + size]
        if kind in (SECTION_PE32, SECTION_TE):
            images.append(content)
        elif kind == SECTION_UI:
            name[0] = content.decode("utf-16-le", "replace").split("\0")[0]
        elif kind == SECTION_FV:
            _volume(content, 0, found, depth + 1)
        elif kind == SECTION_GUID_DEFINED and len(content) >= 20 and content[:16] == LZMA_GUID:
            offset = struct.unpack_from("<H", content, 16)[0] - (body - at)
            try:
                decoder = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
                inner = decoder.decompress(content[offset:], max_length=DECOMPRESSED_MAX)
            except lzma.LZMAError:
                inner = b""
            _sections(inner, images, name, found, depth + 1)
        elif kind == SECTION_COMPRESSION and len(content) >= 5 and content[4] == 0:
            _sections(content[5:], images, name, found, depth + 1)      # stored, not compressed
        at = (at + size + 3) & ~3


class UefiImages:
    """A symbol source (as tinyvmm.debug.symbols.SymbolFile looks addresses up) for UEFI
    firmware: `firmware()` gives the flash image's bytes (called at the first lookup),
    `read(linear, size)` reads guest memory as the vCPU sees it (bytes, fewer where it
    stops; raises ValueError or OSError where it cannot read at all). An address is named
    "Module+0xoffset", the module's base being its image's headers."""

    def __init__(self, firmware: Callable[[], bytes], read: Callable[[int, int], bytes]):
        self._firmware = firmware
        self._read = read
        self._names: dict[bytes, str] | None = None
        # (base, end, name, headers) of the images seen so far: one is still there while
        # its headers (up to the section table's end) read the same
        self._found: list[tuple[int, int, str, bytes]] = []
        self._nothing: set[int] = set()         # pages looked up in vain (until it fills)

    def names(self) -> dict[bytes, str]:
        if self._names is None:
            self._names = index_firmware(self._firmware() or b"")
        return self._names

    def lookup(self, linear: int) -> tuple[Symbol, int] | None:
        for base, end, name, headers in self._found:
            if base <= linear < end and self._reads(base, headers):
                return Symbol(base, end - base, name, 0), linear - base
        image = self._scan(linear)
        if image is None:
            return None
        base, end, name, _ = image
        self._found = [f for f in self._found if f[0] != base][-63:] + [image]
        return Symbol(base, end - base, name, 0), linear - base

    def _reads(self, base: int, headers: bytes) -> bool:
        try:
            return self._read(base, len(headers)) == headers
        except (ValueError, OSError):
            return False

    def _scan(self, linear: int) -> tuple[int, int, str, bytes] | None:
        """The image below `linear` whose extent covers it: headers looked for page by page
        downwards, through readable memory only."""
        page = linear - linear % PAGE
        if page in self._nothing or not self.names():
            return None
        high = linear + 1
        while high > 0 and linear - high < SCAN_BYTES:
            low = max(0, (high - 1) - (high - 1) % PAGE)
            try:
                piece = self._read(low, high - low)
            except (ValueError, OSError):
                break
            if len(piece) < high - low:
                break
            for signature in (b"MZ", b"VZ"):
                at = len(piece)
                while (at := piece.rfind(signature, 0, at)) >= 0:
                    if (low + at) % HEADER_ALIGN == 0:
                        image = self._image_at(low + at)
                        if image is not None and linear < image[1]:
                            return image
            high = low
        if len(self._nothing) >= NOTHING_MAX:
            self._nothing.clear()               # firmware loads images as it goes
        self._nothing.add(page)
        return None

    def _image_at(self, base: int) -> tuple[int, int, str, bytes] | None:
        try:
            page = self._read(base, PAGE)
        except (ValueError, OSError):
            return None
        found = fingerprint(page)
        if found is None or found[0] not in self.names():
            return None
        key, header_length, size = found
        return base, base + size, self.names()[key], page[:header_length]

    def address_of(self, name: str) -> int | None:
        return next((base for base, _, known, _ in self._found if known == name), None)

    def gdb_command(self) -> str | None:
        return None
