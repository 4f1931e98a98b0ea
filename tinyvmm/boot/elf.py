"""ELF kernels (an uncompressed vmlinux): loadable segments and the PVH entry.

A kernel built with CONFIG_PVH announces a 32-bit entry point in an ELF note
named "Xen" of type XEN_ELFNOTE_PHYS32_ENTRY (18) (Xen's public elfnote.h; the
x86/HVM direct boot ABI, xen docs/misc/pvh.pandoc). Its PT_LOAD segments are
loaded at their physical addresses (p_paddr). Only 64-bit x86 kernels are taken.

A boot needs the file header, the program headers and the notes, whose layouts
the System V ABI fixes (ELF-64 Object File Format 1.5); they are read here with
struct. pyelftools (60 ms of imports) serves the debugging aids, which need the
symbol tables, and stays off the boot path. Every field that points into the file
or into memory is checked before it is followed: a program header table or a
segment of any type (a PT_NOTE is read too) running past the file's end, or a
segment wrapping the 64-bit address space, is an ElfKernelError (a usage error),
never a traceback.
"""

import os
import struct

from ..errors import ConfigError

ELF_MAGIC = b"\x7fELF"
ELF64_HEADER_SIZE = 64
ELF64_PHDR_SIZE = 56
ADDRESS_LIMIT = 1 << 64
XEN_NOTE_NAME = b"Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18
# e_ident[EI_CLASS], [EI_DATA]; then e_type ... e_shstrndx after the 16 identification bytes.
ELFCLASS64, ELFDATA2LSB = 2, 1
ELF64_HEADER = struct.Struct("<HHIQQQIHHHHHH")
# p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
NOTE_HEADER = struct.Struct("<III")     # n_namesz, n_descsz, n_type
ET_EXEC = 2
EM_X86_64 = 62
PT_LOAD, PT_NOTE = 1, 4
ELF_TYPES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
MACHINES = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390", 40: "EM_ARM",
            62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV", 258: "EM_LOONGARCH"}
SEGMENT_TYPES = {0: "PT_NULL", 1: "PT_LOAD", 2: "PT_DYNAMIC", 3: "PT_INTERP", 4: "PT_NOTE",
                 5: "PT_SHLIB", 6: "PT_PHDR", 7: "PT_TLS", 0x6474E550: "PT_GNU_EH_FRAME",
                 0x6474E551: "PT_GNU_STACK", 0x6474E552: "PT_GNU_RELRO",
                 0x6474E553: "PT_GNU_PROPERTY"}
# A kernel's notes are a few hundred bytes; a PT_NOTE claiming more is not read.
NOTES_MAX = 1 << 20


class ElfKernelError(ConfigError):
    """The file is not an ELF kernel this loader can boot; the message says why."""


class InMemory:
    """An ELF file already in memory (tests, and files that are not regular)."""
    __slots__ = ("data", "size")

    def __init__(self, data):
        self.data = memoryview(data).cast("B")
        self.size = len(self.data)

    def read(self, offset: int, size: int) -> memoryview:
        return self.data[offset:offset + size]

    def read_into(self, offset: int, view: memoryview) -> None:
        view[:] = self.data[offset:offset + len(view)]


class InFile:
    """A regular ELF file read by ranges: a boot takes its headers, notes and PT_LOAD bytes,
    not its symbols and debugging sections (most of a vmlinux)."""
    __slots__ = ("path", "size")

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size

    def read(self, offset: int, size: int) -> bytes:
        data = bytearray(size)
        self.read_into(offset, memoryview(data))
        return bytes(data)

    def read_into(self, offset: int, view: memoryview) -> None:
        """view's length in bytes from `offset`, straight into `view` (guest RAM, an image).
        ElfKernelError when the file no longer holds them (changed since it was checked)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                done = 0
                while done < len(view):
                    got = os.preadv(fd, [view[done:]], offset + done)
                    if got <= 0:
                        break
                    done += got
            finally:
                os.close(fd)
        except OSError as exc:
            raise ElfKernelError(f"cannot read {self.path}: {exc.strerror}") from None
        if done < len(view):
            raise ElfKernelError(f"{self.path} became shorter while it was read (it was "
                                 f"{self.size} bytes when checked)")


class Segment:
    """A PT_LOAD segment: `filesz` bytes of the file from `offset` (p_offset, p_filesz) at
    guest-physical `paddr`, then zeros up to `memsize` (p_memsz)."""
    __slots__ = ("paddr", "offset", "filesz", "memsize", "source")

    def __init__(self, paddr: int, offset: int, filesz: int, memsize: int, source):
        self.paddr = paddr
        self.offset = offset
        self.filesz = filesz
        self.memsize = memsize
        self.source = source

    @property
    def end(self) -> int:
        return self.paddr + self.memsize

    @property
    def data(self):
        """The segment's file bytes (read now, for a file)."""
        return self.source.read(self.offset, self.filesz)

    def read_into(self, view: memoryview, at: int = 0) -> None:
        """len(view) of its file bytes from `at` on, into `view`."""
        self.source.read_into(self.offset + at, view)


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
        return max(segment.paddr + segment.filesz for segment in self.segments)

    def image(self, end: int | None = None) -> bytearray:
        """The bytes of [low, end) (default: [low, high)) as they must lie in memory: segment
        data, zeros elsewhere (bss and gaps)."""
        image = bytearray((self.high if end is None else end) - self.low)
        view = memoryview(image)
        for segment in self.segments:
            start = segment.paddr - self.low
            segment.read_into(view[start:start + min(segment.filesz, max(len(image) - start, 0))])
        return image


def is_elf(data) -> bool:
    return bytes(data[:4]) == ELF_MAGIC


class ProgramHeader:
    """One ELF64 program header's fields, by their ABI names."""
    __slots__ = ("p_type", "p_offset", "p_paddr", "p_filesz", "p_memsz", "p_align")

    def __init__(self, raw: bytes):
        (self.p_type, _flags, self.p_offset, _vaddr, self.p_paddr, self.p_filesz, self.p_memsz,
         self.p_align) = ELF64_PHDR.unpack(raw)

    @property
    def kind(self) -> str:
        return SEGMENT_TYPES.get(self.p_type, f"type {self.p_type:#x}")


def parse_elf_kernel(data: bytes, name: str = "kernel") -> ElfKernel:
    """Check that `data` is a 64-bit x86 ELF whose loadable segments are inside the file and
    do not overlap, and find its PVH entry. Raises ElfKernelError."""
    return _parse(InMemory(data), name)


def read_elf_kernel(path: str, name: str | None = None) -> ElfKernel:
    """parse_elf_kernel for a regular file, reading only its headers and notes now; its
    segments are read when they are loaded (Segment.read_into, ElfKernel.image). Raises
    ElfKernelError, or OSError when the file cannot be opened."""
    return _parse(InFile(path, os.stat(path).st_size), path if name is None else name)


def _parse(source, name: str) -> ElfKernel:
    size = source.size
    if size < ELF64_HEADER_SIZE:
        raise ElfKernelError(f"{name} is truncated: {size} bytes, shorter than an ELF header")
    data = source.read(0, ELF64_HEADER_SIZE)
    if bytes(data[:4]) != ELF_MAGIC:
        raise ElfKernelError(f"{name} is not an ELF file")
    elf_class, encoding = data[4], data[5]
    if elf_class not in (1, 2) or encoding not in (1, 2):
        raise ElfKernelError(f"{name} is a damaged or truncated ELF file (EI_CLASS {elf_class}, "
                             f"EI_DATA {encoding})")
    if elf_class != ELFCLASS64:
        raise ElfKernelError(f"{name} is a 32-bit ELF file; tinyvmm boots 64-bit x86 kernels "
                             "(an x86_64 vmlinux, or a bzImage)")
    if encoding != ELFDATA2LSB:
        raise ElfKernelError(f"{name} is a big-endian ELF file, not an x86-64 kernel")
    (e_type, e_machine, _version, e_entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum,
     *_sections) = ELF64_HEADER.unpack_from(data, 16)
    if e_machine != EM_X86_64:
        raise ElfKernelError(f"{name} is an ELF file for {MACHINES.get(e_machine, e_machine)}, "
                             "not x86-64")
    if e_type != ET_EXEC:
        raise ElfKernelError(f"{name} is an ELF {ELF_TYPES.get(e_type, e_type)} file, not an "
                             "executable kernel (a vmlinux is ET_EXEC)")
    headers = _check_headers(source, e_phoff, e_phnum, e_phentsize, name)
    segments = []
    pvh_entry = None
    for header in headers:
        if header.p_type == PT_LOAD and header.p_memsz:
            offset, filesz, memsz = header.p_offset, header.p_filesz, header.p_memsz
            if filesz > memsz:
                raise ElfKernelError(f"{name}: a segment for {header.p_paddr:#x} holds more "
                                     f"file bytes ({filesz}) than memory ({memsz})")
            segments.append(Segment(header.p_paddr, offset, filesz, memsz, source))
        elif header.p_type == PT_NOTE:
            if header.p_filesz > NOTES_MAX:
                raise ElfKernelError(f"{name}: a PT_NOTE segment of {header.p_filesz} bytes; "
                                     f"a kernel's notes fit in {NOTES_MAX}")
            notes = memoryview(source.read(header.p_offset, header.p_filesz))
            entry = _pvh_entry(notes, 8 if header.p_align == 8 else 4, name)
            pvh_entry = entry if entry is not None else pvh_entry
    if not segments:
        raise ElfKernelError(f"{name} has no loadable segments")
    segments.sort(key=lambda s: s.paddr)
    for a, b in zip(segments, segments[1:]):
        if a.end > b.paddr:
            raise ElfKernelError(f"{name}: its segments at {a.paddr:#x}-{a.end:#x} and "
                                 f"{b.paddr:#x}-{b.end:#x} overlap")
    return ElfKernel(name, segments, pvh_entry, e_entry)


def _pvh_entry(notes: memoryview, align: int, name: str) -> int | None:
    """The PVH entry of the last Xen PHYS32_ENTRY note in one PT_NOTE segment's bytes, or None.
    Name and descriptor are each padded to `align`; a note running past the segment ends
    the walk."""
    entry = None
    offset = 0
    while offset + NOTE_HEADER.size <= len(notes):
        namesz, descsz, kind = NOTE_HEADER.unpack_from(notes, offset)
        name_at = offset + NOTE_HEADER.size
        desc_at = name_at + namesz + -namesz % align
        desc = notes[desc_at:desc_at + descsz]          # shorter when the segment ends first
        if bytes(notes[name_at:name_at + namesz]).rstrip(b"\0") == XEN_NOTE_NAME and \
                kind == XEN_ELFNOTE_PHYS32_ENTRY:
            if len(desc) < 4:
                raise ElfKernelError(f"{name}: its PVH entry note is {len(desc)} bytes long")
            entry = int.from_bytes(desc[:4], "little")  # a 32-bit entry, in 4 or 8 bytes
        if len(desc) < descsz:
            break
        offset = desc_at + descsz + -descsz % align
    return entry


def _check_headers(source, phoff: int, phnum: int, phentsize: int, name: str) -> list:
    """The program headers, once the table and every segment's file bytes are inside the
    file and no segment wraps the address space. Raises ElfKernelError."""
    size = source.size
    if phnum and phentsize != ELF64_PHDR_SIZE:
        raise ElfKernelError(f"{name}: its program headers are {phentsize} bytes each; an "
                             f"ELF64 file has {ELF64_PHDR_SIZE}")
    if phoff + phnum * phentsize > size:
        raise ElfKernelError(f"{name} is damaged or truncated: its {phnum} program headers at offset "
                             f"{phoff:#x} end past the file's {size} bytes")
    table = source.read(phoff, phnum * ELF64_PHDR_SIZE)      # at most 65535 headers: 3.5 MiB
    headers = [ProgramHeader(table[i * ELF64_PHDR_SIZE:(i + 1) * ELF64_PHDR_SIZE])
               for i in range(phnum)]
    for header in headers:
        if header.p_offset + header.p_filesz > size:
            raise ElfKernelError(
                f"{name} is truncated or damaged: a {header.kind} segment needs file bytes "
                f"{header.p_offset:#x}-{header.p_offset + header.p_filesz:#x}, the file has "
                f"{size}")
        if header.p_type == PT_LOAD and header.p_paddr + header.p_memsz > ADDRESS_LIMIT:
            raise ElfKernelError(f"{name}: a segment at {header.p_paddr:#x} of {header.p_memsz:#x} "
                                 "bytes wraps the address space")
    return headers
