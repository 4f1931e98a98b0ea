"""The bzImage format: the setup header of Linux's x86 boot protocol, parsed and checked.

Offsets are those of Documentation/arch/x86/boot.rst (absolute in the file).
"""

import struct

SECTOR = 512
HDR_SETUP_SECTS = 0x1F1
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
HDR_XLOADFLAGS = 0x236
HDR_CMDLINE_SIZE = 0x238
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


class BzImageError(ValueError):
    """The file is not a bzImage this loader can boot."""


class BzImage:
    """A parsed bzImage: the file's bytes and the header fields the loader needs.

    setup_size: boot sector + real-mode setup, bytes; cmdline_size: the longest
    command line accepted, without the NUL; init_size: memory the kernel needs
    from its load address (0 if unknown).
    """
    __slots__ = ("data", "protocol", "setup_size", "loadflags", "xloadflags", "initrd_addr_max",
                 "cmdline_size", "init_size", "kernel_version")

    def __init__(self, data: bytes, protocol: int, setup_size: int, loadflags: int,
                 xloadflags: int, initrd_addr_max: int, cmdline_size: int, init_size: int,
                 kernel_version: str):
        self.data = data
        self.protocol = protocol
        self.setup_size = setup_size
        self.loadflags = loadflags
        self.xloadflags = xloadflags
        self.initrd_addr_max = initrd_addr_max
        self.cmdline_size = cmdline_size
        self.init_size = init_size
        self.kernel_version = kernel_version

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
    if setup_size >= len(data):
        raise BzImageError(f"{name} is truncated: {len(data)} bytes, but its setup alone "
                           f"takes {setup_size}")
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
        kernel_version=kernel_version)
