"""Loading Linux the way QEMU's -kernel does: place and patch, then publish everything through fw_cfg.

Nothing is written into guest memory here. The loader decides where setup,
command line, kernel and initrd go, patches the header fields a boot loader
owns, and publishes the pieces as fw_cfg items; the linuxboot option ROM
(chosen here, shipped in tinyvmm/firmware) copies them into place.
"""

import os
import struct

from .. import layout
from ..errors import ConfigError
from ..fw_cfg import items as fwc
from . import bzimage as bz

# Where the pieces go (boot protocol 2.02+, as QEMU places them).
SETUP_ADDR = 0x10000
CMDLINE_ADDR = layout.BOOT_CMDLINE_START
KERNEL_ADDR = 0x100000
KERNEL_ENTRY = SETUP_ADDR + 0x200   # the real-mode entry, segment SETUP_ADDR / 16 + 0x20, offset 0
LOADER_TYPE = 0xB0            # boot loader id 0xB (QEMU), version 0: Linux treats us like QEMU
HEAP_END = CMDLINE_ADDR - SETUP_ADDR - 0x200
INITRD_ALIGN = 4096


class BootConfigError(ConfigError):
    """Kernel, initrd and command line that cannot be booted in this machine."""


class BootPlan:
    """Where each piece goes and what it holds once patched."""

    __slots__ = ("image", "setup", "cmdline", "initrd", "initrd_addr")

    def __init__(self, image: bz.BzImage, setup: bytes, cmdline: bytes,
                 initrd: bytes | memoryview | None, initrd_addr: int):
        self.image = image
        self.setup = setup              # patched boot sector + setup
        self.cmdline = cmdline          # with its NUL
        self.initrd = initrd
        self.initrd_addr = initrd_addr

    def load_ranges(self) -> list[tuple[int, int]]:
        """(guest address, size) of every piece the ROM will copy into RAM."""
        ranges = [(SETUP_ADDR, len(self.setup)), (CMDLINE_ADDR, len(self.cmdline)),
                  (KERNEL_ADDR, self.image.kernel_size)]
        if self.initrd is not None:
            ranges.append((self.initrd_addr, len(self.initrd)))
        return ranges


def initrd_limit(image: bz.BzImage, ram_size: int) -> int:
    """The highest address the initrd may end at, below RAM's end and the kernel's limit."""
    if image.protocol >= 0x20C and image.xloadflags & bz.XLF_CAN_BE_LOADED_ABOVE_4G:
        kernel_max = 0xFFFFFFFF
    else:
        kernel_max = image.initrd_addr_max
    return min(kernel_max + 1, layout.low_ram_end(ram_size))


def plan_boot(image: bz.BzImage, cmdline: str, initrd: bytes | None, ram_size: int) -> BootPlan:
    raw_cmdline = os.fsencode(cmdline)      # bytes from the command line stay as given
    if len(raw_cmdline) > image.cmdline_size:
        raise BootConfigError(f"the command line is {len(raw_cmdline)} bytes; this kernel "
                              f"accepts at most {image.cmdline_size}")
    if b"\0" in raw_cmdline:
        raise BootConfigError("the command line contains a NUL byte")
    # Its run-time footprint, not just its image: a kernel decompresses itself to where it
    # runs (pref_address, 16 MiB for most) and needs init_size bytes there.
    kernel_end = image.footprint_end(KERNEL_ADDR)
    run_at = image.run_address(KERNEL_ADDR)
    low_ram_end = layout.low_ram_end(ram_size)
    if kernel_end > low_ram_end:
        raise BootConfigError(
            f"the kernel needs RAM up to {kernel_end / layout.MiB:.1f} MiB (it runs from "
            f"{run_at / layout.MiB:.0f} MiB and needs {image.init_size / layout.MiB:.1f} MiB "
            f"there); RAM below 4 GiB ends at {low_ram_end / layout.MiB:.0f} MiB: give the guest "
            f"at least --mem {-(-kernel_end // layout.MiB)}M")
    initrd_addr = 0
    if initrd is not None:
        limit = initrd_limit(image, ram_size)
        initrd_addr = (limit - len(initrd)) & ~(INITRD_ALIGN - 1)
        if initrd_addr < kernel_end:
            raise BootConfigError(
                f"the initrd ({len(initrd) / layout.MiB:.1f} MiB) must lie above the kernel's "
                f"run-time footprint, which ends at {kernel_end / layout.MiB:.1f} MiB, and below "
                f"{limit / layout.MiB:.0f} MiB: give the guest at least --mem "
                f"{-(-(kernel_end + len(initrd) + INITRD_ALIGN) // layout.MiB)}M")
    setup = bytearray(image.setup)
    setup[bz.HDR_TYPE_OF_LOADER] = LOADER_TYPE
    setup[bz.HDR_LOADFLAGS] |= bz.CAN_USE_HEAP
    struct.pack_into("<H", setup, bz.HDR_HEAP_END_PTR, HEAP_END)
    struct.pack_into("<I", setup, bz.HDR_CMD_LINE_PTR, CMDLINE_ADDR)
    if initrd is not None:
        struct.pack_into("<II", setup, bz.HDR_RAMDISK_IMAGE, initrd_addr, len(initrd))
    return BootPlan(image, bytes(setup), raw_cmdline + b"\0", initrd, initrd_addr)


def publish(plan: BootPlan, items: fwc.FwCfgItems, rom_name: str, rom: bytes | None) -> None:
    """Put the plan into fw_cfg: the kernel keys, the ROM under genroms/, and bootorder
    naming it. With rom None, genroms/<rom_name> is already there (--option-rom)."""
    items.add_u32(fwc.FW_CFG_SETUP_ADDR, SETUP_ADDR)
    items.add_u32(fwc.FW_CFG_SETUP_SIZE, len(plan.setup))
    items.add_item(fwc.FW_CFG_SETUP_DATA, plan.setup)
    publish_loaded(items, KERNEL_ADDR, plan.image.kernel, plan.cmdline, plan.initrd, plan.initrd_addr)
    items.add_boot_rom(rom_name, rom)


def publish_loaded(items: fwc.FwCfgItems, kernel_addr: int, kernel, cmdline: bytes, initrd,
                   initrd_addr: int) -> None:
    """The kernel, command line (at CMDLINE_ADDR) and initrd, each as its address, size and
    data keys, the way QEMU publishes what a boot ROM copies into place."""
    items.add_u32(fwc.FW_CFG_KERNEL_ADDR, kernel_addr)
    items.add_u32(fwc.FW_CFG_KERNEL_SIZE, len(kernel))
    items.add_item(fwc.FW_CFG_KERNEL_DATA, kernel)
    items.add_u32(fwc.FW_CFG_CMDLINE_ADDR, CMDLINE_ADDR)
    items.add_u32(fwc.FW_CFG_CMDLINE_SIZE, len(cmdline))
    items.add_item(fwc.FW_CFG_CMDLINE_DATA, cmdline)
    if initrd is not None:
        items.add_u32(fwc.FW_CFG_INITRD_ADDR, initrd_addr)
        items.add_u32(fwc.FW_CFG_INITRD_SIZE, len(initrd))
        items.add_item(fwc.FW_CFG_INITRD_DATA, initrd)
