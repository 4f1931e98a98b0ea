"""The PVH boot of an ELF kernel: placement, struct hvm_start_info, and its fw_cfg items.

Layout of the start info and its tables (Xen's public arch-x86/hvm/start_info.h,
version 1), all little-endian:

    hvm_start_info (56 bytes)        hvm_modlist_entry (32)   hvm_memmap_table_entry (24)
      0  u32 magic 0x336ec578          0  u64 paddr              0  u64 addr
      4  u32 version (1)               8  u64 size               8  u64 size
      8  u32 flags                    16  u64 cmdline_paddr     16  u32 type (e820)
     12  u32 nr_modules               24  u64 reserved          20  u32 reserved
     16  u64 modlist_paddr
     24  u64 cmdline_paddr
     32  u64 rsdp_paddr
     40  u64 memmap_paddr
     48  u32 memmap_entries
     52  u32 reserved

Linux takes module 0 as its initrd and builds its e820 table from the memory map.
Where everything goes is declared in tinyvmm.layout (PVH_*, BOOT_CMDLINE_START).
"""

import os
import struct

from .. import layout
from ..errors import ConfigError
from ..fw_cfg import items as fwc
from .elf import ElfKernel
from .linux import publish_loaded

START_INFO_MAGIC = 0x336EC578
START_INFO_VERSION = 1             # version 1 has the memory map
START_INFO = struct.Struct("<IIIIQQQQII")
MODLIST_ENTRY = struct.Struct("<QQQQ")
MEMMAP_ENTRY = struct.Struct("<QQII")
# x86 Linux copies at most COMMAND_LINE_SIZE (2048) bytes of the command line, NUL included.
CMDLINE_MAX = 2047
INITRD_ALIGN = 4096
# QEMU gives the first 8 KiB of the file as setup data, so firmware (qboot) can tell an ELF.
HEADER_PEEK_SIZE = 8192


class PvhConfigError(ConfigError):
    """An ELF kernel, initrd or command line that cannot be booted through PVH here."""


class PvhPlan:
    """Where the kernel's segments, command line and initrd go; `header` is the file's start."""
    __slots__ = ("kernel", "cmdline", "initrd", "initrd_addr", "header")

    def __init__(self, kernel: ElfKernel, cmdline: bytes, initrd, initrd_addr: int, header: bytes):
        self.kernel = kernel
        self.cmdline = cmdline          # with its NUL
        self.initrd = initrd
        self.initrd_addr = initrd_addr
        self.header = header

    @property
    def entry(self) -> int:
        entry = self.kernel.pvh_entry
        assert entry is not None            # plan_pvh refuses a kernel without one
        return entry

    def load_ranges(self) -> list[tuple[int, int]]:
        """(guest address, size) of everything a boot ROM writes into RAM: the kernel's image
        is one range, gaps between its segments included, as KERNEL_DATA carries it."""
        ranges = [(self.kernel.low, self.kernel.loaded_high - self.kernel.low),
                  (layout.BOOT_CMDLINE_START, len(self.cmdline))]
        if self.initrd is not None:
            ranges.append((self.initrd_addr, len(self.initrd)))
        return ranges


def plan_pvh(kernel: ElfKernel, cmdline: str, initrd, ram_size: int, header: bytes) -> PvhPlan:
    """Check that the kernel has a PVH entry and fits in RAM from 1 MiB up, and place the
    initrd at the top of RAM below 4 GiB, above the kernel. Raises PvhConfigError."""
    if kernel.pvh_entry is None:
        raise PvhConfigError(
            f"{kernel.name} has no PVH entry point (no Xen ELF note of type 18, "
            "XEN_ELFNOTE_PHYS32_ENTRY): boot its bzImage instead, or build the kernel with "
            "CONFIG_PVH=y")
    raw_cmdline = os.fsencode(cmdline)
    if len(raw_cmdline) > CMDLINE_MAX:
        raise PvhConfigError(f"the command line is {len(raw_cmdline)} bytes; a PVH kernel "
                             f"accepts at most {CMDLINE_MAX}")
    if b"\0" in raw_cmdline:
        raise PvhConfigError("the command line contains a NUL byte")
    low_ram_end = layout.low_ram_end(ram_size)
    for segment in kernel.segments:
        if segment.paddr < layout.HIGH_MEMORY_START or segment.end > low_ram_end:
            # More RAM helps only when every segment lies between 1 MiB and the PCI hole.
            fits = kernel.low >= layout.HIGH_MEMORY_START and kernel.high < layout.LOW_RAM_LIMIT
            raise PvhConfigError(
                f"{kernel.name} has a segment at {segment.paddr:#x}-{segment.end:#x}; kernel "
                f"segments must lie in RAM from 1 MiB to the end of RAM below 4 GiB "
                f"({low_ram_end:#x} with this --mem)"
                + (f": give the guest at least --mem {-(-kernel.high // layout.MiB)}M" if fits else ""))
    # In a gap between two segments the entry would run whatever the RAM holds there.
    if not any(s.paddr <= kernel.pvh_entry < s.end for s in kernel.segments):
        spans = ", ".join(f"{s.paddr:#x}-{s.end:#x}" for s in kernel.segments)
        raise PvhConfigError(f"{kernel.name}: its PVH entry {kernel.pvh_entry:#x} is outside "
                             f"its segments ({spans})")
    initrd_addr = 0
    if initrd is not None:
        initrd_addr = (low_ram_end - len(initrd)) & ~(INITRD_ALIGN - 1)
        if initrd_addr < kernel.high:
            raise PvhConfigError(
                f"the initrd ({len(initrd) / layout.MiB:.1f} MiB) must lie above the kernel, "
                f"which ends at {kernel.high / layout.MiB:.1f} MiB, and below "
                f"{low_ram_end / layout.MiB:.0f} MiB: give the guest at least --mem "
                f"{-(-(kernel.high + len(initrd) + INITRD_ALIGN) // layout.MiB)}M")
    return PvhPlan(kernel, raw_cmdline + b"\0", initrd, initrd_addr, bytes(header[:HEADER_PEEK_SIZE]))


def start_info(plan: PvhPlan, memory_map: list[tuple[int, int, int]],
               rsdp: int = 0) -> list[tuple[int, bytes]]:
    """The start info, its module list and memory map as (guest address, bytes) to write;
    `memory_map` is the e820 table, (address, length, type) entries; `rsdp` the ACPI RSDP's
    address (0: none)."""
    if len(memory_map) > layout.PVH_MEMMAP_MAX_ENTRIES:
        raise PvhConfigError(f"the memory map has {len(memory_map)} entries; at most "
                             f"{layout.PVH_MEMMAP_MAX_ENTRIES} fit")
    modules = 0 if plan.initrd is None else 1
    info = START_INFO.pack(
        START_INFO_MAGIC, START_INFO_VERSION, 0, modules,
        layout.PVH_MODLIST if modules else 0, layout.BOOT_CMDLINE_START, rsdp,
        layout.PVH_MEMMAP, len(memory_map), 0)
    memmap = b"".join(MEMMAP_ENTRY.pack(addr, size, kind, 0) for addr, size, kind in memory_map)
    writes = [(layout.PVH_START_INFO, info), (layout.PVH_MEMMAP, memmap),
              (layout.BOOT_CMDLINE_START, plan.cmdline)]
    if modules:
        writes.append((layout.PVH_MODLIST, MODLIST_ENTRY.pack(plan.initrd_addr, len(plan.initrd), 0, 0)))
    return writes


def publish(plan: PvhPlan, items: fwc.FwCfgItems, rom_name: str, rom: bytes | None) -> None:
    """Put the plan into fw_cfg as QEMU does for its pvh.bin: the entry, the image with its
    address and size, command line, initrd, and the file's first 8 KiB as setup data; plus
    KERNEL_DATA (the image as it lies in memory from KERNEL_ADDR, up to its last file byte)
    and CMDLINE_ADDR, which
    tinyvmm's own PVH ROMs load from. With rom None, genroms/<rom_name> is already there."""
    items.add_u32(fwc.FW_CFG_KERNEL_ENTRY, plan.entry)
    # The image ends with the last file byte: the bss after it is already zero in RAM (fresh
    # anonymous memory, or zeroed by Payload.fill before foreign firmware runs), so a
    # kernel with a bss of gigabytes costs neither an image that large nor its copy.
    publish_loaded(items, plan.kernel.low, plan.kernel.image(plan.kernel.loaded_high),
                   plan.cmdline, plan.initrd, plan.initrd_addr)
    items.add_u32(fwc.FW_CFG_SETUP_SIZE, len(plan.header))
    items.add_item(fwc.FW_CFG_SETUP_DATA, plan.header)
    items.add_boot_rom(rom_name, rom)
