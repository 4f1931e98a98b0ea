"""Names for guest addresses, from the ELF files the firmware and kernels were linked into.

A file's symbols are at link addresses; `base` is the linear address of link
address 0. Real-mode images linked at 0 (everything below 64 KiB, like the
test guests and 16-bit firmware run with CS = 0xF000) are found twice: at
0xF0000 where the firmware runs after its first far jump, and at 4 GiB - 64 KiB
where the CPU starts it. Anything else is taken at its link addresses.
"""

import bisect
from collections import namedtuple
from pathlib import Path

from ..errors import ConfigError

SEGMENT_SIZE = 0x10000
FIRMWARE_SEGMENT_BASES = (0xF0000, 0xFFFF0000)  # CS = 0xF000, and the reset alias below 4 GiB


class SymbolFileError(ConfigError):
    """The file is missing, not ELF, or has no symbol table."""


# address: the link address; section: its section index, so a name never covers another section
Symbol = namedtuple("Symbol", "address size name section")


# Among symbols at one address, the most telling name wins.
_TYPE_RANK = {"STT_FUNC": 0, "STT_OBJECT": 1, "STT_NOTYPE": 2}
_BIND_RANK = {"STB_GLOBAL": 0, "STB_WEAK": 1, "STB_LOCAL": 2}


class SymbolFile:
    def __init__(self, path: str | Path, bases: tuple[int, ...] | None = None):
        try:
            from elftools.common.exceptions import ELFError
            from elftools.elf.elffile import ELFFile
        except ImportError:
            # e.g. `python -S`, as tinyvmm bench starts its boots: no site-packages
            raise SymbolFileError(f"cannot read symbols from {path}: pyelftools is not "
                                  "installed (pip install pyelftools)") from None
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                self._load(elf)
        except OSError as exc:
            raise SymbolFileError(f"cannot read {path}: {exc.strerror}") from None
        except ELFError as exc:
            raise SymbolFileError(f"{path} is not an ELF file: {exc}") from None
        if not self.symbols:
            raise SymbolFileError(f"{path} has no symbols (was it stripped?)")
        top = max(end for _, end in self.sections.values())
        self.real_mode_image = top <= SEGMENT_SIZE
        if bases is None:
            bases = FIRMWARE_SEGMENT_BASES if self.real_mode_image else (0,)
        self.bases = tuple(bases)

    def _load(self, elf) -> None:
        self.sections = {}
        for index, section in enumerate(elf.iter_sections()):
            if section["sh_flags"] & 0x2 and section["sh_size"]:      # SHF_ALLOC
                self.sections[index] = (section["sh_addr"], section["sh_addr"] + section["sh_size"])
        best: dict[int, tuple] = {}
        symtab = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
        for sym in symtab.iter_symbols() if symtab else ():
            kind, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
            shndx = sym["st_shndx"]
            if (kind not in _TYPE_RANK or not sym.name or sym.name.startswith(".L")
                    or not isinstance(shndx, int) or shndx not in self.sections):
                continue
            rank = (_TYPE_RANK[kind], _BIND_RANK.get(bind, 3), sym.name)
            candidate = (rank, Symbol(sym["st_value"], sym["st_size"], sym.name, shndx))
            if sym["st_value"] not in best or candidate[0] < best[sym["st_value"]][0]:
                best[sym["st_value"]] = candidate
        self.symbols = [best[address][1] for address in sorted(best)]
        self._addresses = [s.address for s in self.symbols]
        self._by_name = {s.name: s for s in self.symbols}

    def symbol_at(self, link_address: int) -> tuple[Symbol, int] | None:
        """The symbol covering a link address and the offset into it."""
        index = bisect.bisect_right(self._addresses, link_address) - 1
        if index < 0:
            return None
        sym = self.symbols[index]
        start, end = self.sections[sym.section]
        if not start <= link_address < end:
            return None
        return sym, link_address - sym.address

    def lookup(self, linear: int) -> tuple[Symbol, int] | None:
        for base in self.bases:
            found = self.symbol_at(linear - base) if linear >= base else None
            if found:
                return found
        return None

    def address_of(self, name: str) -> int | None:
        """The linear address of a symbol (at the first base)."""
        sym = self._by_name.get(name)
        return None if sym is None else self.bases[0] + sym.address

    def gdb_command(self) -> str:
        """What to type into gdb to get this file's symbols at the addresses they run at."""
        return f"add-symbol-file {self.path} -o {self.bases[0]:#x}"


def format_symbol(found: tuple[Symbol, int] | None) -> str:
    if found is None:
        return ""
    sym, offset = found
    return f"{sym.name}+{offset:#x}" if offset else sym.name


class SymbolTable:
    """All the symbol files of a run; looks addresses up in each in turn."""

    def __init__(self, files: list[SymbolFile] | None = None):
        self.files = list(files or [])

    def __bool__(self) -> bool:
        return bool(self.files)

    def lookup(self, linear: int) -> tuple[Symbol, int] | None:
        for f in self.files:
            found = f.lookup(linear)
            if found:
                return found
        return None

    def name(self, linear: int) -> str:
        """'name+0xoff', or '' when no file covers the address."""
        return format_symbol(self.lookup(linear))

    def address_of(self, name: str) -> int | None:
        for f in self.files:
            address = f.address_of(name)
            if address is not None:
                return address
        return None

    def gdb_commands(self) -> list[str]:
        """gdb's commands to load the files' symbols (a source without a file has none)."""
        return [command for f in self.files if (command := f.gdb_command()) is not None]


def parse_symbol_spec(spec: str) -> SymbolFile:
    """FILE, or FILE@ADDRESS for a file whose link address 0 sits at linear ADDRESS."""
    path, sep, base = spec.rpartition("@")
    if sep and path:
        try:
            return SymbolFile(path, (int(base, 0),))
        except ValueError as exc:
            if isinstance(exc, SymbolFileError):
                raise
            raise SymbolFileError(f"{spec}: {base!r} is not an address") from None
    return SymbolFile(spec)
