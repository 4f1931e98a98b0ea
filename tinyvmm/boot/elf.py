"""ELF kernels (an uncompressed vmlinux): loadable segments and the PVH entry, read with pyelftools.

A kernel built with CONFIG_PVH announces a 32-bit entry point in an ELF note
named "Xen" of type XEN_ELFNOTE_PHYS32_ENTRY (18) (Xen's public elfnote.h; the
x86/HVM direct boot ABI, xen docs/misc/pvh.pandoc). Its PT_LOAD segments are
loaded at their physical addresses (p_paddr). Only 64-bit x86 kernels are taken.

Every field that points into the file or into memory is checked before
pyelftools follows it: a program header table or a segment of any type (a
PT_NOTE is read too) running past the file's end, or a segment wrapping the
64-bit address space, is an ElfKernelError (a usage error), never a traceback.
"""

from ..errors import ConfigError

ELF_MAGIC = b"\x7fELF"
ELF64_HEADER_SIZE = 64
ELF64_PHDR_SIZE = 56
ADDRESS_LIMIT = 1 << 64
XEN_NOTE_NAME = "Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18


class ElfKernelError(ConfigError):
    """The file is not an ELF kernel this loader can boot; the message says why."""


class Segment:
    """A PT_LOAD segment: `size` bytes of `data` (p_filesz) at guest-physical `paddr`, then
    zeros up to `memsize` (p_memsz)."""
    __slots__ = ("paddr", "data", "memsize")

    def __init__(self, paddr: int, data: memoryview, memsize: int):
        self.paddr = paddr
        self.data = data
        self.memsize = memsize

    @property
    def end(self) -> int:
        return self.paddr + self.memsize


class ElfKernel:
    """A checked ELF kernel: its segments in address order and its PVH entry (None without the
    note). `low` and `high` bound the memory the segments cover, [low, high)."""
    __slots__ = ("name", "segments", "pvh_entry", "entry")

    def __init__(self, name: str, segments: list[Segment], pvh_entry: int | None, entry: int):
        self.name = name
        self.segments = segments
        self.pvh_entry = pvh_entry
        self.entry = entry          # e_entry: a virtual address, not used for PVH

    @property
    def low(self) -> int:
        return self.segments[0].paddr

    @property
    def high(self) -> int:
        return max(segment.end for segment in self.segments)

    @property
    def loaded_high(self) -> int:
        """The end of the last byte taken from the file: above it, up to `high`, only bss."""
        return max(segment.paddr + len(segment.data) for segment in self.segments)

    def image(self, end: int | None = None) -> bytearray:
        """The bytes of [low, end) (default: [low, high)) as they must lie in memory: segment
        data, zeros elsewhere (bss and gaps)."""
        image = bytearray((self.high if end is None else end) - self.low)
        for segment in self.segments:
            start = segment.paddr - self.low
            data = segment.data[:max(len(image) - start, 0)]
            image[start:start + len(data)] = data
        return image


def is_elf(data) -> bool:
    return bytes(data[:4]) == ELF_MAGIC


def parse_elf_kernel(data: bytes, name: str = "kernel") -> ElfKernel:
    """Check that `data` is a 64-bit x86 ELF whose loadable segments are inside the file and
    do not overlap, and find its PVH entry. Raises ElfKernelError."""
    try:
        from elftools.common.exceptions import ELFError
        from elftools.construct import ConstructError
        from elftools.elf.elffile import ELFFile
    except ImportError:
        raise ElfKernelError(f"{name} is an ELF file; reading it needs pyelftools "
                             "(pip install pyelftools)") from None
    import io
    import struct
    if len(data) < ELF64_HEADER_SIZE:
        raise ElfKernelError(f"{name} is truncated: {len(data)} bytes, shorter than an ELF header")
    try:
        elf = ELFFile(io.BytesIO(data))
        return _read(elf, data, name)
    # OverflowError: a seek past 2**63 in a field _check_headers does not cover (a section
    # header offset); the file is damaged either way.
    except (ELFError, ConstructError, struct.error, EOFError, ValueError, OverflowError) as exc:
        if isinstance(exc, ElfKernelError):
            raise
        raise ElfKernelError(f"{name} is a damaged or truncated ELF file ({exc})") from None


def _read(elf, data: bytes, name: str) -> ElfKernel:
    if elf.elfclass != 64:
        raise ElfKernelError(f"{name} is a {elf.elfclass}-bit ELF file; tinyvmm boots 64-bit "
                             "x86 kernels (an x86_64 vmlinux, or a bzImage)")
    if not elf.little_endian:
        raise ElfKernelError(f"{name} is a big-endian ELF file, not an x86-64 kernel")
    if elf["e_machine"] != "EM_X86_64":
        raise ElfKernelError(f"{name} is an ELF file for {elf['e_machine']}, not x86-64")
    if elf["e_type"] != "ET_EXEC":
        raise ElfKernelError(f"{name} is an ELF {elf['e_type']} file, not an executable kernel "
                             "(a vmlinux is ET_EXEC)")
    headers = _check_headers(elf, len(data), name)
    view = memoryview(data)
    segments = []
    pvh_entry = None
    for header in headers:
        if header.p_type == "PT_LOAD" and header.p_memsz:
            offset, filesz, memsz = header.p_offset, header.p_filesz, header.p_memsz
            if offset + filesz > len(data):
                raise ElfKernelError(
                    f"{name} is truncated: a segment for {header.p_paddr:#x} needs file bytes "
                    f"up to {offset + filesz}, the file has {len(data)}")
            if filesz > memsz:
                raise ElfKernelError(f"{name}: a segment for {header.p_paddr:#x} holds more "
                                     f"file bytes ({filesz}) than memory ({memsz})")
            segments.append(Segment(header.p_paddr, view[offset:offset + filesz], memsz))
    for segment in elf.iter_segments("PT_NOTE"):
        for note in segment.iter_notes():
            if note["n_name"] == XEN_NOTE_NAME and note["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                desc = note["n_descdata"]
                if len(desc) < 4:
                    raise ElfKernelError(f"{name}: its PVH entry note is {len(desc)} bytes long")
                pvh_entry = int.from_bytes(desc[:4], "little")   # a 32-bit entry, 4 or 8 bytes
    if not segments:
        raise ElfKernelError(f"{name} has no loadable segments")
    segments.sort(key=lambda s: s.paddr)
    for a, b in zip(segments, segments[1:]):
        if a.end > b.paddr:
            raise ElfKernelError(f"{name}: its segments at {a.paddr:#x}-{a.end:#x} and "
                                 f"{b.paddr:#x}-{b.end:#x} overlap")
    return ElfKernel(name, segments, pvh_entry, elf["e_entry"])


def _check_headers(elf, size: int, name: str) -> list:
    """The program headers, once the table and every segment's file bytes are inside the
    file (`size` bytes) and no segment wraps the address space. Raises ElfKernelError."""
    phoff, phnum, phentsize = elf["e_phoff"], elf["e_phnum"], elf["e_phentsize"]
    if phnum and phentsize != ELF64_PHDR_SIZE:
        raise ElfKernelError(f"{name}: its program headers are {phentsize} bytes each; an "
                             f"ELF64 file has {ELF64_PHDR_SIZE}")
    if phoff + phnum * phentsize > size:
        raise ElfKernelError(f"{name} is damaged or truncated: its {phnum} program headers at offset "
                             f"{phoff:#x} end past the file's {size} bytes")
    headers = [elf.get_segment(i).header for i in range(phnum)]
    for header in headers:
        kind = header.p_type if isinstance(header.p_type, str) else f"type {header.p_type:#x}"
        if header.p_offset + header.p_filesz > size:
            raise ElfKernelError(
                f"{name} is truncated or damaged: a {kind} segment needs file bytes "
                f"{header.p_offset:#x}-{header.p_offset + header.p_filesz:#x}, the file has "
                f"{size}")
        if header.p_type == "PT_LOAD" and header.p_paddr + header.p_memsz > ADDRESS_LIMIT:
            raise ElfKernelError(f"{name}: a segment at {header.p_paddr:#x} of {header.p_memsz:#x} "
                                 "bytes wraps the address space")
    return headers
