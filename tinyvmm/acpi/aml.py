"""An encoder for the ACPI Machine Language: the few terms a PC's DSDT needs, as bytes.

Encodings follow the ACPI specification 6.5, chapter 20 (AML grammar: package lengths
20.2.4, name strings 20.2.2, data objects 20.2.3, named objects 20.2.5, type 1 and 2
opcodes 20.2.5.3-4) and section 6.4 (resource descriptors). Each function returns the
term's bytes, so a table reads as nested calls in the order of its ASL.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# Opcodes (ACPI 6.5 table 20.2.x)
ZERO_OP = 0x00
ONE_OP = 0x01
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
METHOD_OP = 0x14
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F
EXT_OP_PREFIX = 0x5B
ROOT_CHAR = 0x5C
PARENT_PREFIX = 0x5E
ARG0_OP = 0x68
STORE_OP = 0x70
AND_OP = 0x7B
OR_OP = 0x7D
CREATE_DWORD_FIELD_OP = 0x8A
LLESS_OP = 0x95
IF_OP = 0xA0
RETURN_OP = 0xA4
# After EXT_OP_PREFIX
OP_REGION_OP = 0x80
FIELD_OP = 0x81
DEVICE_OP = 0x82

# Operation region spaces (19.6.100): 0 SystemMemory, 1 SystemIO, 2 PCI_Config
PCI_CONFIG = 0x02

# Field flags (19.6.48): access type in bits 3:0, lock rule bit 4, update rule bits 6:5
BYTE_ACC = 0x01
NO_LOCK = 0x00
PRESERVE = 0x00

MAX_PKG_LENGTH = 1 << 28


def pkg_length(body_length: int) -> bytes:
    """The PkgLength encoding of a package whose contents after it are `body_length` bytes:
    the encoded value counts its own bytes too (20.2.4)."""
    if body_length + 1 < 0x40:
        return bytes([body_length + 1])
    for extra in (1, 2, 3):
        total = body_length + 1 + extra
        if total < 1 << (4 + 8 * extra):
            lead = extra << 6 | (total & 0x0F)
            return bytes([lead]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"an AML package of {body_length} bytes is longer than PkgLength allows")


def package_term(opcode: bytes, body: bytes) -> bytes:
    return opcode + pkg_length(len(body)) + body


def name_seg(segment: str) -> bytes:
    """One 4-character name: A-Z or '_' first, then A-Z, 0-9 or '_', padded with '_'."""
    if not 1 <= len(segment) <= 4 or not (segment[0].isupper() or segment[0] == "_") \
            or not all(c.isupper() or c.isdigit() or c == "_" for c in segment) \
            or not segment.isascii():
        raise ValueError(f"{segment!r} is not an ACPI name segment")
    return segment.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    """A NameString: '\\' (root) or '^' (parent) prefixes, then segments joined by '.'."""
    prefix = b""
    while path[:1] in ("\\", "^"):
        prefix += bytes([ROOT_CHAR if path[0] == "\\" else PARENT_PREFIX])
        path = path[1:]
    segments = [name_seg(s) for s in path.split(".")] if path else []
    if not segments:
        return prefix + bytes([ZERO_OP])         # NullName
    if len(segments) == 1:
        return prefix + segments[0]
    if len(segments) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segments)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segments)]) + b"".join(segments)


# --- data objects -----------------------------------------------------------------
def integer(value: int) -> bytes:
    """The shortest encoding of an integer constant (Zero, One, Byte ... QWord)."""
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"{value} does not fit an AML integer")
    for prefix, fmt, limit in ((BYTE_PREFIX, "<B", 1 << 8), (WORD_PREFIX, "<H", 1 << 16),
                               (DWORD_PREFIX, "<I", 1 << 32), (QWORD_PREFIX, "<Q", 1 << 64)):
        if value < limit:
            return bytes([prefix]) + struct.pack(fmt, value)
    raise AssertionError("unreachable")


def string(text: str) -> bytes:
    return bytes([STRING_PREFIX]) + text.encode("ascii") + b"\0"


def eisa_id(text: str) -> bytes:
    """A compressed EISA ID ("PNP0A03"): three letters in 5 bits each, four hex digits,
    as the DWord ASL's EisaId() makes."""
    if len(text) != 7 or not text[:3].isupper() or not text[:3].isascii():
        raise ValueError(f"{text!r} is not an EISA ID")
    letters = [ord(c) - 0x40 for c in text[:3]]
    digits = int(text[3:], 16)
    encoded = bytes([letters[0] << 2 | letters[1] >> 3, (letters[1] & 7) << 5 | letters[2],
                     digits >> 8, digits & 0xFF])
    return integer(int.from_bytes(encoded, "little"))


def buffer(data: bytes) -> bytes:
    return package_term(bytes([BUFFER_OP]), integer(len(data)) + data)


def package(elements: Iterable[bytes]) -> bytes:
    """A Package of already-encoded elements (integers, strings, name references)."""
    items = list(elements)
    if len(items) > 255:
        raise ValueError("a Package holds at most 255 elements (use a VarPackage)")
    return package_term(bytes([PACKAGE_OP]), bytes([len(items)]) + b"".join(items))


# --- named objects and scopes --------------------------------------------------------
def name(path: str, value: bytes) -> bytes:
    return bytes([NAME_OP]) + name_string(path) + value


def scope(path: str, *terms: bytes) -> bytes:
    return package_term(bytes([SCOPE_OP]), name_string(path) + b"".join(terms))


def device(path: str, *terms: bytes) -> bytes:
    return package_term(bytes([EXT_OP_PREFIX, DEVICE_OP]), name_string(path) + b"".join(terms))


def method(path: str, args: int, *terms: bytes, serialized: bool = False) -> bytes:
    if not 0 <= args <= 7:
        raise ValueError("a method takes 0 to 7 arguments")
    flags = args | (0x08 if serialized else 0)
    return package_term(bytes([METHOD_OP]), name_string(path) + bytes([flags]) + b"".join(terms))


def operation_region(path: str, space: int, offset: int, length: int) -> bytes:
    return (bytes([EXT_OP_PREFIX, OP_REGION_OP]) + name_string(path) + bytes([space])
            + integer(offset) + integer(length))


def field(region: str, flags: int, units: Iterable[tuple[str, int]]) -> bytes:
    """A Field over `region`: (name, width in bits) units in order."""
    body = name_string(region) + bytes([flags])
    for unit, bits in units:
        body += name_seg(unit) + pkg_length_value(bits)
    return package_term(bytes([EXT_OP_PREFIX, FIELD_OP]), body)


def pkg_length_value(value: int) -> bytes:
    """A PkgLength holding a plain value (a field unit's width), not a byte count."""
    if value < 0x40:
        return bytes([value])
    for extra in (1, 2, 3):
        if value < 1 << (4 + 8 * extra):
            return bytes([extra << 6 | (value & 0x0F)]) + (value >> 4).to_bytes(extra, "little")
    raise ValueError(f"{value} is too large for a PkgLength")


# --- statements and expressions ---------------------------------------------------------
ARG0 = bytes([ARG0_OP])
NO_TARGET = bytes([ZERO_OP])


def ref(path: str) -> bytes:
    """A reference to a named object, as an operand or a target."""
    return name_string(path)


def return_(value: bytes) -> bytes:
    return bytes([RETURN_OP]) + value


def store(source: bytes, target: bytes) -> bytes:
    return bytes([STORE_OP]) + source + target


def and_(left: bytes, right: bytes, target: bytes = NO_TARGET) -> bytes:
    return bytes([AND_OP]) + left + right + target


def or_(left: bytes, right: bytes, target: bytes = NO_TARGET) -> bytes:
    return bytes([OR_OP]) + left + right + target


def lless(left: bytes, right: bytes) -> bytes:
    return bytes([LLESS_OP]) + left + right


def if_(predicate: bytes, *terms: bytes) -> bytes:
    return package_term(bytes([IF_OP]), predicate + b"".join(terms))



def create_dword_field(source: bytes, byte_index: int, field_name: str) -> bytes:
    return bytes([CREATE_DWORD_FIELD_OP]) + source + integer(byte_index) + name_string(field_name)


# --- resource descriptors (ACPI 6.5 section 6.4) ------------------------------------------
END_TAG = b"\x79\x00"                   # End Tag with a zero checksum ("treat as correct")


def resource_template(*descriptors: bytes) -> bytes:
    """A ResourceTemplate: the descriptors and the End Tag, in a Buffer."""
    return buffer(b"".join(descriptors) + END_TAG)


def io_port(base: int, length: int, alignment: int = 1) -> bytes:
    """IO(Decode16, base, base, alignment, length): a fixed range of I/O ports."""
    return struct.pack("<BBHHBB", 0x47, 0x01, base, base, alignment, length)


def irq_no_flags(*irqs: int) -> bytes:
    """IRQNoFlags(){...}: ISA interrupts, edge-triggered, active-high."""
    mask = 0
    for irq in irqs:
        mask |= 1 << irq
    return struct.pack("<BH", 0x22, mask)


# Extended interrupt flags (6.4.3.6): consumer, level-triggered, active-high, shared
INTERRUPT_CONSUMER = 0x01
INTERRUPT_EDGE = 0x02
INTERRUPT_ACTIVE_LOW = 0x04
INTERRUPT_SHARED = 0x08


def interrupt(flags: int, *numbers: int) -> bytes:
    """Interrupt(...){numbers}: the Extended Interrupt descriptor."""
    return (struct.pack("<BHBB", 0x89, 2 + 4 * len(numbers), flags, len(numbers))
            + b"".join(struct.pack("<I", n) for n in numbers))


# Address space descriptors (6.4.3.5): resource types and general flags
RESOURCE_MEMORY = 0
RESOURCE_IO = 1
RESOURCE_BUS = 2
MIN_MAX_FIXED = 0x0C                    # _MIF and _MAF set, positive decode, producer
IO_ENTIRE_RANGE = 0x03
MEMORY_READ_WRITE = 0x01
MEMORY_CACHEABLE = 0x02


def word_address(kind: int, type_flags: int, minimum: int, maximum: int) -> bytes:
    """WordBusNumber / WordIO: a 16-bit range the device decodes and passes on."""
    return struct.pack("<BHBBBHHHHH", 0x88, 13, kind, MIN_MAX_FIXED, type_flags, 0, minimum,
                       maximum, 0, maximum - minimum + 1)


def dword_memory(type_flags: int, minimum: int, maximum: int) -> bytes:
    """DWordMemory: a 32-bit memory window the device decodes and passes on."""
    return struct.pack("<BHBBBIIIII", 0x87, 23, RESOURCE_MEMORY, MIN_MAX_FIXED, type_flags, 0,
                       minimum, maximum, 0, maximum - minimum + 1)


def memory32_fixed(base: int, length: int, writable: bool = True) -> bytes:
    return struct.pack("<BHBII", 0x86, 9, int(writable), base, length)
