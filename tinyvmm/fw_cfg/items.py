"""What fw_cfg serves: numbered items and named files, the file directory, etc/e820 and user items.

Numbers, formats and limits follow QEMU's fw_cfg (docs/specs/fw_cfg.rst,
include/standard-headers/linux/qemu_fw_cfg.h). Numeric items are
little-endian; the file directory is big-endian. Files are kept sorted by
name and file i of that order has key FILE_FIRST + i, as in QEMU, so a file's
key is only final once every file has been added (before the guest starts).
"""

import os
import struct
import sys
from collections import namedtuple

from .. import layout
from ..errors import ConfigError
from ..spec import split_options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# --- keys (qemu_fw_cfg.h) ----------------------------------------------------
FW_CFG_SIGNATURE = 0x00
FW_CFG_ID = 0x01
FW_CFG_UUID = 0x02
FW_CFG_RAM_SIZE = 0x03
FW_CFG_NOGRAPHIC = 0x04
FW_CFG_NB_CPUS = 0x05
FW_CFG_MACHINE_ID = 0x06
FW_CFG_KERNEL_ADDR = 0x07
FW_CFG_KERNEL_SIZE = 0x08
FW_CFG_KERNEL_CMDLINE = 0x09
FW_CFG_INITRD_ADDR = 0x0A
FW_CFG_INITRD_SIZE = 0x0B
FW_CFG_BOOT_DEVICE = 0x0C
FW_CFG_NUMA = 0x0D
FW_CFG_BOOT_MENU = 0x0E
FW_CFG_MAX_CPUS = 0x0F
FW_CFG_KERNEL_ENTRY = 0x10
FW_CFG_KERNEL_DATA = 0x11
FW_CFG_INITRD_DATA = 0x12
FW_CFG_CMDLINE_ADDR = 0x13
FW_CFG_CMDLINE_SIZE = 0x14
FW_CFG_CMDLINE_DATA = 0x15
FW_CFG_SETUP_ADDR = 0x16
FW_CFG_SETUP_SIZE = 0x17
FW_CFG_SETUP_DATA = 0x18
FW_CFG_FILE_DIR = 0x19
FW_CFG_FILE_FIRST = 0x20

FW_CFG_WRITE_CHANNEL = 0x4000    # historical flag bit, ignored for lookup
FW_CFG_ARCH_LOCAL = 0x8000       # selects the architecture's own table
FW_CFG_ENTRY_MASK = 0x3FFF
FW_CFG_INVALID = 0xFFFF

# x86 architecture-local keys (hw/i386/fw_cfg.h)
FW_CFG_ACPI_TABLES = FW_CFG_ARCH_LOCAL + 0
FW_CFG_SMBIOS_ENTRIES = FW_CFG_ARCH_LOCAL + 1
FW_CFG_IRQ0_OVERRIDE = FW_CFG_ARCH_LOCAL + 2
FW_CFG_E820_TABLE = FW_CFG_ARCH_LOCAL + 3
FW_CFG_HPET = FW_CFG_ARCH_LOCAL + 4

# The items a boot ROM copies into RAM whole (of the setup data, a PVH ROM reads only headers).
PAYLOAD_DATA_KEYS = (FW_CFG_KERNEL_DATA, FW_CFG_INITRD_DATA, FW_CFG_CMDLINE_DATA)

# The keys only a Linux loader reads: their first select marks the firmware's do_boot.
KERNEL_KEYS = frozenset({FW_CFG_KERNEL_ADDR, FW_CFG_KERNEL_SIZE, FW_CFG_INITRD_ADDR,
                         FW_CFG_INITRD_SIZE, FW_CFG_KERNEL_ENTRY, FW_CFG_KERNEL_DATA,
                         FW_CFG_INITRD_DATA, FW_CFG_CMDLINE_ADDR, FW_CFG_CMDLINE_SIZE,
                         FW_CFG_CMDLINE_DATA, FW_CFG_SETUP_ADDR, FW_CFG_SETUP_SIZE,
                         FW_CFG_SETUP_DATA})

FW_CFG_VERSION = 0x01            # ID bit: the traditional interface
FW_CFG_VERSION_DMA = 0x02        # ID bit: the DMA interface

FW_CFG_SIGNATURE_BYTES = b"QEMU"
FW_CFG_FILE_SLOTS_DEFAULT = 0x20  # QEMU's default number of file keys
FW_CFG_MAX_ITEM_SIZE = 0xFFFFFFFF   # a directory entry's size field is 32 bits
FW_CFG_MAX_FILE_PATH = 56        # name field of a directory entry, NUL included
FILE_DIR_ENTRY = struct.Struct(">IHH56s")   # size, select, reserved, name

# Well-known files
FILE_E820 = "etc/e820"
FILE_BOOT_FAIL_WAIT = "etc/boot-fail-wait"
FILE_BOOTORDER = "bootorder"
GENROMS_PREFIX = "genroms/"
USER_PREFIX = "opt/"

KEY_NAMES = {
    FW_CFG_SIGNATURE: "signature", FW_CFG_ID: "id", FW_CFG_UUID: "uuid",
    FW_CFG_RAM_SIZE: "ram_size", FW_CFG_NOGRAPHIC: "nographic", FW_CFG_NB_CPUS: "nb_cpus",
    FW_CFG_MACHINE_ID: "machine_id", FW_CFG_KERNEL_ADDR: "kernel_addr",
    FW_CFG_KERNEL_SIZE: "kernel_size", FW_CFG_KERNEL_CMDLINE: "kernel_cmdline",
    FW_CFG_INITRD_ADDR: "initrd_addr", FW_CFG_INITRD_SIZE: "initrd_size",
    FW_CFG_BOOT_DEVICE: "boot_device", FW_CFG_NUMA: "numa", FW_CFG_BOOT_MENU: "boot_menu",
    FW_CFG_MAX_CPUS: "max_cpus", FW_CFG_KERNEL_ENTRY: "kernel_entry",
    FW_CFG_KERNEL_DATA: "kernel_data", FW_CFG_INITRD_DATA: "initrd_data",
    FW_CFG_CMDLINE_ADDR: "cmdline_addr", FW_CFG_CMDLINE_SIZE: "cmdline_size",
    FW_CFG_CMDLINE_DATA: "cmdline_data", FW_CFG_SETUP_ADDR: "setup_addr",
    FW_CFG_SETUP_SIZE: "setup_size", FW_CFG_SETUP_DATA: "setup_data",
    FW_CFG_FILE_DIR: "file_dir",
    FW_CFG_ACPI_TABLES: "acpi_tables", FW_CFG_SMBIOS_ENTRIES: "smbios_entries",
    FW_CFG_IRQ0_OVERRIDE: "irq0_override", FW_CFG_E820_TABLE: "e820_table",
    FW_CFG_HPET: "hpet",
}


class FwCfgConfigError(ConfigError):
    """fw_cfg content that cannot be served: found before the guest starts."""


class FwCfgEntry:
    """One populated key. `data` is a memoryview: read-only unless the item is writable (or
    refilled by host code at each select).

    Host code may watch a file: `on_select(entry)` is called each time the guest selects
    it (before any byte is read: it may rewrite a writable entry's data), `on_write(offset,
    data)` after each DMA write into it, with the bytes written at that offset (QEMU's
    select and write callbacks); on_write returning False fails the transfer.
    """
    __slots__ = ("key", "name", "data", "writable", "is_file", "on_select", "on_write")

    def __init__(self, key: int, name: str, data: memoryview, writable: bool, is_file: bool = False):
        self.key = key
        self.name = name
        self.data = data
        self.writable = writable
        self.is_file = is_file
        self.on_select: Callable[[FwCfgEntry], object] | None = None
        self.on_write: Callable[[int, bytes], object] | None = None

    @property
    def size(self) -> int:
        return len(self.data)


def _as_view(data, writable: bool) -> memoryview:
    """Keep the bytes in one buffer the device can slice without copying."""
    if writable:
        return memoryview(bytearray(data))
    if isinstance(data, bytes):
        return memoryview(data)
    if isinstance(data, memoryview) and isinstance(data.obj, bytes) and data.c_contiguous:
        return data.cast("B")        # a slice of immutable bytes (a bzImage's kernel): no copy
    return memoryview(bytes(data))


def name_bytes(name: str) -> bytes:
    """A name as the guest sees it (command-line bytes that are not UTF-8 survive)."""
    return name.encode("utf-8", "surrogateescape")


def key_name(key: int) -> str:
    return KEY_NAMES.get(key, f"key {key:#06x}")


class FwCfgItems:
    """The registry: numbered items by key, files by name, and the FILE_DIR built from them."""

    def __init__(self, file_slots: int = FW_CFG_FILE_SLOTS_DEFAULT):
        if not 0x10 <= file_slots <= FW_CFG_ENTRY_MASK + 1 - FW_CFG_FILE_FIRST:
            raise FwCfgConfigError(f"fw_cfg: {file_slots} file slots is out of range")
        self.file_slots = file_slots
        self._items: dict[int, FwCfgEntry] = {}
        self._files: dict[str, FwCfgEntry] = {}
        self._by_key: dict[int, FwCfgEntry] | None = None   # file keys, rebuilt after a change
        self._file_dir: FwCfgEntry | None = None

    @property
    def max_entry(self) -> int:
        """Exclusive limit of key & FW_CFG_ENTRY_MASK (QEMU's fw_cfg_max_entry)."""
        return FW_CFG_FILE_FIRST + self.file_slots

    # --- numbered items ---------------------------------------------------------
    def add_item(self, key: int, data, writable: bool = False, replace: bool = False) -> None:
        """Serve `data` (bytes-like) under a numbered key; read-only unless `writable`."""
        index = key & FW_CFG_ENTRY_MASK
        if key & FW_CFG_WRITE_CHANNEL or not 0 <= key <= 0xFFFF:
            raise FwCfgConfigError(f"fw_cfg: {key:#x} is not an item key")
        if key & FW_CFG_ARCH_LOCAL == 0 and index >= FW_CFG_FILE_DIR:
            raise FwCfgConfigError(f"fw_cfg: key {key:#06x} belongs to the file directory or "
                                   "a file; use add_file")
        if index >= self.max_entry:
            raise FwCfgConfigError(f"fw_cfg: key {key:#06x} is beyond the last key "
                                   f"{self.max_entry - 1:#06x}")
        if key in self._items and not replace:
            raise FwCfgConfigError(f"fw_cfg: key {key:#06x} ({key_name(key)}) is already set")
        if len(data) >= 1 << 32:
            raise FwCfgConfigError(f"fw_cfg: item {key_name(key)} is 4 GiB or larger")
        self._items[key] = FwCfgEntry(key, key_name(key), _as_view(data, writable), writable)

    def add_u16(self, key: int, value: int, replace: bool = False) -> None:
        self.add_item(key, struct.pack("<H", value), replace=replace)

    def add_u32(self, key: int, value: int, replace: bool = False) -> None:
        self.add_item(key, struct.pack("<I", value), replace=replace)

    def add_u64(self, key: int, value: int, replace: bool = False) -> None:
        self.add_item(key, struct.pack("<Q", value), replace=replace)

    def add_string(self, key: int, text: str, replace: bool = False) -> None:
        """A NUL-terminated string item (as CMDLINE_DATA)."""
        self.add_item(key, text.encode() + b"\0", replace=replace)

    # --- files ------------------------------------------------------------------
    def add_file(self, name: str, data, writable: bool = False, replace: bool = False) -> FwCfgEntry:
        """Serve `data` as the named file; its key is fixed by the sorted order of all names.
        With `replace`, a file of that name gets new contents. Returns the new entry."""
        check_file_name(name)
        if name in self._files and replace:
            del self._files[name]
        if name in self._files:
            raise FwCfgConfigError(f"fw_cfg: duplicate file name {name!r}")
        if len(self._files) >= self.file_slots:
            raise FwCfgConfigError(f"fw_cfg: no room for {name!r}: all {self.file_slots} file "
                                   "slots are used")
        if len(data) >= 1 << 32:
            raise FwCfgConfigError(f"fw_cfg: file {name!r} is 4 GiB or larger")
        entry = self._files[name] = FwCfgEntry(0, name, _as_view(data, writable), writable, is_file=True)
        self._by_key = None
        self._file_dir = None
        return entry

    def add_boot_rom(self, rom_name: str, rom: bytes | None) -> None:
        """Name genroms/<rom_name> in bootorder, as QEMU does for the ROM that boots -kernel,
        adding the ROM itself unless `rom` is None (the user gave it with --option-rom)."""
        path = GENROMS_PREFIX + rom_name
        if rom is not None:
            self.add_file(path, rom)
        self.add_boot_device(f"/rom@{path}")

    def add_boot_device(self, path: str) -> None:
        """Append a device path (OpenFirmware style, as QEMU's bootindex writes them) to the
        bootorder file, one path a line in boot order."""
        entry = self._files.get(FILE_BOOTORDER)
        lines = bytes(entry.data).rstrip(b"\0").split(b"\n") if entry is not None else []
        self.add_file(FILE_BOOTORDER, b"\n".join(lines + [path.encode()]) + b"\0", replace=True)

    def file_names(self) -> list[str]:
        """File names in directory order (byte order of the names, as QEMU's strcmp)."""
        return sorted(self._files, key=name_bytes)

    def file_key(self, name: str) -> int:
        self._index_files()
        return self._files[name].key

    def file(self, name: str) -> FwCfgEntry:
        self._index_files()
        return self._files[name]

    def _index_files(self) -> dict[int, FwCfgEntry]:
        if self._by_key is None:
            self._by_key = {}
            for index, name in enumerate(self.file_names()):
                entry = self._files[name]
                entry.key = FW_CFG_FILE_FIRST + index
                self._by_key[entry.key] = entry
        return self._by_key

    def file_dir(self) -> bytes:
        """The FILE_DIR blob: big-endian count, then one 64-byte entry per file slot.

        Like QEMU, the blob covers every slot; entries past `count` are zero.
        """
        files = self._index_files()
        blob = bytearray(4 + FILE_DIR_ENTRY.size * self.file_slots)
        struct.pack_into(">I", blob, 0, len(files))
        for i, entry in enumerate(sorted(files.values(), key=lambda e: e.key)):
            FILE_DIR_ENTRY.pack_into(blob, 4 + FILE_DIR_ENTRY.size * i, entry.size, entry.key,
                                     0, name_bytes(entry.name))
        return bytes(blob)

    # --- lookup -----------------------------------------------------------------
    def lookup(self, key: int) -> FwCfgEntry | None:
        """The entry a selector value reaches (bit 0x4000 ignored), or None if none is populated."""
        key &= FW_CFG_ARCH_LOCAL | FW_CFG_ENTRY_MASK
        entry = self._items.get(key)
        if entry is not None or key & FW_CFG_ARCH_LOCAL:
            return entry
        if key >= FW_CFG_FILE_FIRST:
            return self._index_files().get(key)
        if key == FW_CFG_FILE_DIR and self._files:
            return self._file_dir_entry()
        return None

    def _file_dir_entry(self) -> FwCfgEntry:
        """The file directory's entry, built again when first wanted after a file was added."""
        if self._file_dir is None:
            self._file_dir = FwCfgEntry(FW_CFG_FILE_DIR, key_name(FW_CFG_FILE_DIR),
                                        memoryview(self.file_dir()), False)
        return self._file_dir

    def entries(self) -> list[FwCfgEntry]:
        """Every populated key, in key order (arch-local ones last): what a guest can read."""
        keys = sorted(self._items)
        found = [self._items[k] for k in keys if not k & FW_CFG_ARCH_LOCAL]
        if self._files:
            found.append(self._file_dir_entry())
            found.extend(sorted(self._index_files().values(), key=lambda e: e.key))
        found.extend(self._items[k] for k in keys if k & FW_CFG_ARCH_LOCAL)
        return found


def check_file_name(name: str) -> None:
    encoded = name_bytes(name)
    if not encoded:
        raise FwCfgConfigError("fw_cfg: a file name cannot be empty")
    if b"\0" in encoded:
        raise FwCfgConfigError(f"fw_cfg: file name {name!r} contains a NUL byte")
    if len(encoded) > FW_CFG_MAX_FILE_PATH - 1:
        raise FwCfgConfigError(f"fw_cfg: file name {name!r} is {len(encoded)} bytes long; "
                               f"the limit is {FW_CFG_MAX_FILE_PATH - 1}")


# --- content builders ---------------------------------------------------------
E820_ENTRY = struct.Struct("<QQI")


def e820_file(ram_size: int, amd_ht_hole: bool) -> bytes:
    """etc/e820: packed little-endian {u64 address, u64 length, u32 type}, the entries of
    tinyvmm.layout.fw_cfg_e820 (QEMU's, in its order)."""
    return b"".join(E820_ENTRY.pack(address, length, kind)
                    for address, length, kind in layout.fw_cfg_e820(ram_size, amd_ht_hole))


class UserItemSpec(namedtuple("UserItemSpec", "name string file data", defaults=(None, None, None))):
    """One `--fw-cfg name=...,string=...|file=...` option, checked for syntax only; or, from
    the Python API, the item's bytes as `data`."""
    __slots__ = ()

    def load(self, limit: int = FW_CFG_MAX_ITEM_SIZE) -> bytes:
        """The item's content: the string without a NUL (as QEMU), the file's bytes or `data`,
        at most `limit` of them (a file's size checked from stat before reading)."""
        if self.string is not None or self.data is not None:
            data = os.fsencode(self.string) if self.string is not None else self.data
            if len(data) > limit:
                raise FwCfgConfigError(f"fw_cfg: {self.name!r} is {len(data)} bytes; at most "
                                       f"{limit} bytes fit (the guest's RAM)")
            return data
        from ..files import FileTooLarge, NotAFile, read_bounded
        try:
            return read_bounded(self.file, limit)
        except FileTooLarge as exc:
            raise FwCfgConfigError(f"fw_cfg: {self.file} for {self.name!r} {exc}; at most "
                                   f"{limit} bytes fit (the guest's RAM)") from None
        except NotAFile as exc:
            raise FwCfgConfigError(f"fw_cfg: cannot load a file for {self.name!r}: {exc}") from None
        except OSError as exc:
            raise FwCfgConfigError(f"fw_cfg: cannot load {self.file} for {self.name!r}: "
                                   f"{exc.strerror or exc}") from None


USER_ITEM_KEYS = ("name", "string", "file")


def parse_user_item(text: str) -> UserItemSpec:
    """Parse QEMU's -fw_cfg syntax: [name=]NAME,string=TEXT or [name=]NAME,file=PATH."""
    values: dict[str, str] = {}
    for position, part in enumerate(split_options(text)):
        key, sep, value = part.partition("=")
        if not sep:
            if position == 0 and part:
                key, value = "name", part        # QEMU's implied first option
            else:
                raise FwCfgConfigError(f"fw_cfg: {part!r} in {text!r} is not KEY=VALUE")
        if key not in USER_ITEM_KEYS:
            hint = " (generated items are not supported)" if key == "gen_id" else ""
            raise FwCfgConfigError(f"fw_cfg: unknown parameter {key!r} in {text!r}; expected "
                                   f"name, string or file{hint}")
        values[key] = value                      # the last one wins, as in QEMU
    name = values.get("name", "")
    sources = [k for k in ("string", "file") if values.get(k)]
    if not name or len(sources) != 1:
        raise FwCfgConfigError(f"fw_cfg: {text!r} needs name= and exactly one non-empty "
                               "string= or file=")
    check_file_name(name)
    return UserItemSpec(name, values.get("string") or None, values.get("file") or None)


def user_item_warning(name: str) -> str | None:
    """The warning for a user item named outside opt/, which QEMU reserves for users."""
    if name.startswith(USER_PREFIX):
        return None
    return (f"warning: fw_cfg item {name!r} is not under \"{USER_PREFIX}\"; names outside "
            f"{USER_PREFIX} belong to QEMU and firmware and may clash with theirs")


def add_user_items(items: FwCfgItems, specs, warn=None, limit: int = FW_CFG_MAX_ITEM_SIZE) -> None:
    """Load and add every user item; a bad one raises FwCfgConfigError before any guest runs."""
    warn = warn or (lambda text: print(f"tinyvmm: {text}", file=sys.stderr))
    for spec in specs:
        message = user_item_warning(spec.name)
        if message:
            warn(message)
        items.add_file(spec.name, spec.load(limit))
