"""The bzImage format: the setup header of Linux's x86 boot protocol, parsed and checked.

Offsets are those of Documentation/arch/x86/boot.rst (absolute in the file).
"""

import struct

from ..errors import ConfigError

SECTOR = 512
HDR_SETUP_SECTS = 0x1F1
HDR_SYSSIZE = 0x1F4
HDR_VID_MODE = 0x1FA
HDR_BOOT_FLAG = 0x1FE
HDR_MAGIC = 0x202
HDR_VERSION = 0x206
HDR_KERNEL_VERSION = 0x20E
HDR_TYPE_OF_LOADER = 0x210
HDR_LOADFLAGS = 0x211
HDR_RAMDISK_IMAGE = 0x218
HDR_RAMDISK_SIZE = 0x21C
HDR_HEAP_END_PTR = 0x224
HDR_CMD_LINE_PTR = 0x228
HDR_INITRD_ADDR_MAX = 0x22C
HDR_KERNEL_ALIGNMENT = 0x230
HDR_RELOCATABLE_KERNEL = 0x234
HDR_XLOADFLAGS = 0x236
HDR_CMDLINE_SIZE = 0x238
HDR_PREF_ADDRESS = 0x258
HDR_INIT_SIZE = 0x260

BOOT_FLAG = 0xAA55
MAGIC = b"HdrS"
LOADED_HIGH = 0x01
CAN_USE_HEAP = 0x80
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02
MIN_PROTOCOL = 0x202          # cmd_line_ptr: every bzImage since Linux 2.4
DEFAULT_SETUP_SECTS = 4       # a setup_sects of 0 means 4
OLD_CMDLINE_SIZE = 255        # before protocol 2.06 the limit was fixed
OLD_INITRD_ADDR_MAX = 0x37FFFFFF
PARAGRAPH = 16                # syssize counts 16-byte units
# Boot sector + real-mode setup: at most 32 KiB, so that its heap and stack fit below the
# command line (boot.rst's memory layout for protocol 2.02 and newer).
MAX_SETUP_SIZE = 0x8000


class BzImageError(ConfigError):
    """The file is not a bzImage this loader can boot."""


class BzImage:
    """A parsed bzImage: the file's bytes and the header fields the loader needs.

    setup_size: boot sector + real-mode setup, bytes; cmdline_size: the longest
    command line accepted, without the NUL; init_size: memory the kernel needs
    from its load address (0 if unknown).
    """
    __slots__ = ("data", "protocol", "setup_size", "loadflags", "xloadflags", "initrd_addr_max",
                 "cmdline_size", "init_size", "kernel_version", "relocatable", "kernel_alignment",
                 "pref_address")

    def __init__(self, data: bytes, protocol: int, setup_size: int, loadflags: int,
                 xloadflags: int, initrd_addr_max: int, cmdline_size: int, init_size: int,
                 kernel_version: str, relocatable: bool = False, kernel_alignment: int = 0,
                 pref_address: int | None = None):
        self.data = data
        self.protocol = protocol
        self.setup_size = setup_size
        self.loadflags = loadflags
        self.xloadflags = xloadflags
        self.initrd_addr_max = initrd_addr_max
        self.cmdline_size = cmdline_size
        self.init_size = init_size
        self.kernel_version = kernel_version
        self.relocatable = relocatable          # protocol 2.05+: may run away from pref_address
        self.kernel_alignment = kernel_alignment
        self.pref_address = pref_address        # protocol 2.10+: where it prefers to run

    def run_address(self, load_address: int) -> int:
        """Where the kernel runs once it has decompressed itself, loaded at `load_address`:
        max(align_up(load, kernel_alignment), pref_address) when relocatable, pref_address
        when not (boot.rst, "pref_address" and "init_size"); the load address before 2.10."""
        if not self.pref_address:               # before 2.10 (or an empty field)
            return load_address
        if not self.relocatable:
            return self.pref_address
        align = self.kernel_alignment or 1
        return max(-(-load_address // align) * align, self.pref_address)

    def footprint_end(self, load_address: int) -> int:
        """The first byte past the memory the kernel needs: its image where it is loaded, and
        init_size bytes from where it runs."""
        return max(load_address + self.kernel_size, self.run_address(load_address) + self.init_size)

    @property
    def kernel_size(self) -> int:
        return len(self.data) - self.setup_size

    @property
    def setup(self) -> memoryview:
        return memoryview(self.data)[:self.setup_size]

    @property
    def kernel(self) -> memoryview:
        return memoryview(self.data)[self.setup_size:]

    @property
    def protocol_text(self) -> str:
        return f"{self.protocol >> 8}.{self.protocol & 0xFF:02d}"


def _u8(data, off):
    return data[off]


def _u16(data, off):
    return struct.unpack_from("<H", data, off)[0]


def _u32(data, off):
    return struct.unpack_from("<I", data, off)[0]


def parse_bzimage(data: bytes, name: str = "kernel") -> BzImage:
    """Check that data is a bzImage of boot protocol 2.02 or newer and read its header."""
    if len(data) < HDR_INIT_SIZE + 4 or _u16(data, HDR_BOOT_FLAG) != BOOT_FLAG \
            or data[HDR_MAGIC:HDR_MAGIC + 4] != MAGIC:
        raise BzImageError(f"{name} is not a bzImage (no Linux x86 boot header)")
    protocol = _u16(data, HDR_VERSION)
    if protocol < MIN_PROTOCOL:
        raise BzImageError(f"{name} uses boot protocol {protocol >> 8}.{protocol & 0xFF:02d}; "
                           f"2.02 or newer is needed")
    loadflags = _u8(data, HDR_LOADFLAGS)
    if not loadflags & LOADED_HIGH:
        raise BzImageError(f"{name} is a zImage (loaded low); only bzImages are supported")
    setup_sects = _u8(data, HDR_SETUP_SECTS) or DEFAULT_SETUP_SECTS
    setup_size = (setup_sects + 1) * SECTOR
    if setup_size > MAX_SETUP_SIZE:
        raise BzImageError(f"{name}: setup_sects {setup_sects} makes {setup_size} bytes of "
                           f"real-mode setup; at most {MAX_SETUP_SIZE} fit below its heap and "
                           "the command line")
    if setup_size >= len(data):
        raise BzImageError(f"{name} is truncated: {len(data)} bytes, but its setup alone "
                           f"takes {setup_size}")
    syssize = _u32(data, HDR_SYSSIZE) * PARAGRAPH
    if len(data) - setup_size <= syssize - PARAGRAPH:      # syssize is rounded up to a paragraph
        raise BzImageError(f"{name} is truncated: its header says the protected-mode kernel is "
                           f"{syssize} bytes (syssize), the file holds {len(data) - setup_size} "
                           "after the setup")
    version_ptr = _u16(data, HDR_KERNEL_VERSION)
    kernel_version = ""
    if version_ptr and version_ptr + 0x200 < setup_size:
        raw = data[version_ptr + 0x200:setup_size]
        kernel_version = raw[:raw.find(b"\0")].decode("ascii", "replace")
    return BzImage(
        data=data, protocol=protocol, setup_size=setup_size, loadflags=loadflags,
        xloadflags=_u16(data, HDR_XLOADFLAGS) if protocol >= 0x20C else 0,
        initrd_addr_max=_u32(data, HDR_INITRD_ADDR_MAX) if protocol >= 0x203 else OLD_INITRD_ADDR_MAX,
        cmdline_size=_u32(data, HDR_CMDLINE_SIZE) if protocol >= 0x206 else OLD_CMDLINE_SIZE,
        init_size=_u32(data, HDR_INIT_SIZE) if protocol >= 0x20A else 0,
        kernel_version=kernel_version,
        relocatable=protocol >= 0x205 and bool(_u8(data, HDR_RELOCATABLE_KERNEL)),
        kernel_alignment=_u32(data, HDR_KERNEL_ALIGNMENT) if protocol >= 0x205 else 0,
        pref_address=struct.unpack_from("<Q", data, HDR_PREF_ADDRESS)[0] if protocol >= 0x20A
        else None)
