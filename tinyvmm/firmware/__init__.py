"""The firmware images shipped in the package, built from firmware/ by `make -C firmware`.

bios.bin is the 64 KiB BIOS; linuxboot.bin (fw_cfg through the data port) and
linuxboot_dma.bin (fw_cfg DMA) are the option ROMs that boot a Linux bzImage
from fw_cfg, pvh.bin and pvh_dma.bin their counterparts that boot an ELF kernel
(vmlinux) through its PVH entry. Each *.bin has its ELF beside it (*.elf) for symbols.
"""

import os

DIRECTORY = os.path.dirname(os.path.realpath(__file__))

BIOS = "bios.bin"
LINUXBOOT = "linuxboot.bin"
LINUXBOOT_DMA = "linuxboot_dma.bin"
PVH = "pvh.bin"
PVH_DMA = "pvh_dma.bin"
IMAGES = (BIOS, LINUXBOOT, LINUXBOOT_DMA, PVH, PVH_DMA)


def image_path(name: str) -> str:
    """The path of a shipped image (or its ELF, "bios.elf"); FileNotFoundError if absent."""
    if os.path.basename(name) != name or name in ("", ".", ".."):
        raise ValueError(f"{name!r}: expected a bare file name such as {BIOS!r}")
    path = os.path.join(DIRECTORY, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: run `make -C firmware`")
    return path


def resolve(path: str) -> str:
    """A firmware or option ROM path as given, or, for a bare name that is no file here, the
    shipped image of that name (`--bios bios.bin`), as QEMU's -bios looks in its data folder."""
    if os.sep in path or os.path.exists(path) or path not in IMAGES:
        return path
    return os.path.join(DIRECTORY, path)


def read_image(name: str) -> bytes:
    """The bytes of a shipped image, e.g. read_image("bios.bin")."""
    with open(image_path(name), "rb") as f:
        return f.read()


def linuxboot_name(dma: bool = True) -> str:
    """The file name of the linuxboot ROM for a fw_cfg device with or without DMA."""
    return LINUXBOOT_DMA if dma else LINUXBOOT


def pvh_name(dma: bool = True) -> str:
    """The file name of the PVH boot ROM for a fw_cfg device with or without DMA."""
    return PVH_DMA if dma else PVH


# A UEFI (PI) firmware image begins with a firmware volume, whose header holds this
# signature at this offset (PI specification, volume 3, EFI_FIRMWARE_VOLUME_HEADER):
# OVMF_CODE.fd, and OVMF.fd whose first volume is the variable store.
FV_SIGNATURE = b"_FVH"
FV_SIGNATURE_OFFSET = 40


def is_uefi(image: bytes) -> bool:
    """Whether the firmware image `image` (or flash unit 0) is UEFI firmware such as OVMF:
    it starts with a firmware volume."""
    return image[FV_SIGNATURE_OFFSET:FV_SIGNATURE_OFFSET + len(FV_SIGNATURE)] == FV_SIGNATURE


RESET_VECTOR_OFFSET = 0xFFF0        # in a 64 KiB image: linear 0xffff0 (and 0xfffffff0)


def real_mode_image(code: bytes) -> bytes:
    """A 64 KiB firmware image that runs `code` (16-bit, at most 65520 bytes) from F000:0000,
    linear 0xf0000: a far jump there at the reset vector, the rest zero. For tests whose
    guest is a few instructions."""
    if len(code) > RESET_VECTOR_OFFSET:
        raise ValueError(f"{len(code)} bytes of code do not fit below the reset vector")
    image = bytearray(0x10000)
    image[:len(code)] = code
    image[RESET_VECTOR_OFFSET:RESET_VECTOR_OFFSET + 5] = b"\xea\x00\x00\x00\xf0"   # ljmp f000:0000
    return bytes(image)
