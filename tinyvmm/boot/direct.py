"""Entering a kernel with no firmware: what the loader writes into RAM and the vCPU's first state.

Two entries, as Firecracker and Cloud Hypervisor make them:
- PVH (x86/HVM direct boot ABI, xen docs/misc/pvh.pandoc): 32-bit protected mode,
  paging off, flat CS/DS/ES/SS, a 32-bit TSS in TR, EBX = the hvm_start_info
  (tinyvmm.boot.pvh), at the ELF note's entry;
- the 64-bit boot protocol (Linux Documentation/arch/x86/boot.rst, "64-bit Boot
  Protocol"): long mode with an identity map of the first 4 GiB, CS = __BOOT_CS
  (0x10), DS/ES/SS = __BOOT_DS (0x18), RSI = the zero page (struct boot_params), at
  the protected-mode kernel + 0x200.
Addresses are tinyvmm.layout's BOOT_* and PVH_*.
"""

import struct

from .. import layout
from ..errors import ConfigError
from ..x86 import CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, RFLAGS_FIXED
from . import bzimage as bz
from . import linux, pvh

# GDT slots: __BOOT_CS and __BOOT_DS are 0x10 and 0x18 in the 64-bit protocol; the PVH
# entry leaves selectors free, so it uses the same ones.
CODE_SELECTOR = 0x10
DATA_SELECTOR = 0x18
TSS_SELECTOR = 0x20
GDT_ENTRIES = 5
# Access bytes with the accessed bit set, so the CPU never writes the descriptor back.
ACCESS_CODE = 0x9B                  # present, code, execute/read
ACCESS_DATA = 0x93                  # present, data, read/write
ACCESS_TSS = 0x8B                   # present, 32-bit TSS, busy (as LTR leaves it)
FLAGS_32 = 0xC                      # G (4 KiB granularity), D/B (32-bit)
FLAGS_64 = 0xA                      # G, L (64-bit code)
TSS_LIMIT = 0x67


PAGE_PRESENT_WRITABLE = 0x3
PAGE_SIZE_2M = 0x80
IDENTITY_MAP_GIB = 4

# boot_params (arch/x86/include/uapi/asm/bootparam.h) fields a loader fills.
ZERO_PAGE_SIZE = 4096
ZP_ACPI_RSDP_ADDR = 0x070           # u64, read by kernels from boot protocol 2.14
ZP_E820_ENTRIES = 0x1E8
ZP_SETUP_HEADER = 0x1F1
ZP_E820_TABLE = 0x2D0
E820_TABLE_MAX = 128
E820_ENTRY = struct.Struct("<QQI")
SETUP_HEADER_JUMP = 0x200           # its second byte says where the header ends
ENTRY_64_OFFSET = 0x200             # startup_64, from the protected-mode kernel's start
XLF_KERNEL_64 = 0x01
MIN_PROTOCOL_64 = 0x20C


class DirectBootError(ConfigError):
    """A kernel that cannot be entered directly; the message says why."""


def descriptor(base: int, limit: int, access: int, flags: int) -> int:
    """An 8-byte segment descriptor. `limit` counts pages when `flags` has G."""
    return ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40
            | ((limit >> 16) & 0xF) << 48 | flags << 52 | ((base >> 24) & 0xFF) << 56)


def gdt(long_mode: bool) -> bytes:
    entries = [0] * GDT_ENTRIES
    entries[CODE_SELECTOR >> 3] = descriptor(0, 0xFFFFF, ACCESS_CODE, FLAGS_64 if long_mode else FLAGS_32)
    entries[DATA_SELECTOR >> 3] = descriptor(0, 0xFFFFF, ACCESS_DATA, FLAGS_32)
    entries[TSS_SELECTOR >> 3] = descriptor(0, TSS_LIMIT, ACCESS_TSS, 0)
    return struct.pack(f"<{GDT_ENTRIES}Q", *entries)


def page_tables() -> list[tuple[int, bytes]]:
    """An identity map of the first 4 GiB in 2 MiB pages: PML4, PDPT and four page
    directories from BOOT_PAGE_TABLES_START; CR3 is that address."""
    pml4 = layout.BOOT_PAGE_TABLES_START
    pdpt = pml4 + layout.PAGE_SIZE
    directories = pdpt + layout.PAGE_SIZE
    writes = [(pml4, struct.pack("<Q", pdpt | PAGE_PRESENT_WRITABLE)),
              (pdpt, struct.pack(f"<{IDENTITY_MAP_GIB}Q", *(
                  directories + i * layout.PAGE_SIZE | PAGE_PRESENT_WRITABLE
                  for i in range(IDENTITY_MAP_GIB))))]
    for gib in range(IDENTITY_MAP_GIB):
        writes.append((directories + gib * layout.PAGE_SIZE, struct.pack("<512Q", *(
            (gib * 512 + i) << 21 | PAGE_PRESENT_WRITABLE | PAGE_SIZE_2M for i in range(512)))))
    assert directories + IDENTITY_MAP_GIB * layout.PAGE_SIZE <= layout.BOOT_PAGE_TABLES_END
    return writes


def check_64bit_entry(image: bz.BzImage, name: str) -> None:
    """Raise DirectBootError unless the bzImage declares a 64-bit entry (boot protocol 2.12+
    with XLF_KERNEL_64 in xloadflags)."""
    if image.protocol < MIN_PROTOCOL_64 or not image.xloadflags & XLF_KERNEL_64:
        raise DirectBootError(
            f"{name} has no 64-bit entry (boot protocol {image.protocol_text}, xloadflags "
            f"{image.xloadflags:#x}; --boot direct needs 2.12 or later with XLF_KERNEL_64): "
            "boot it with --boot firmware")


def zero_page(setup: bytes, memory_map: list[tuple[int, int, int]], rsdp: int = 0) -> bytes:
    """boot_params: zeros, the (already patched) setup header copied from `setup`, the e820
    table and the ACPI RSDP's address (`rsdp`, 0: none)."""
    if len(memory_map) > E820_TABLE_MAX:
        raise DirectBootError(f"the memory map has {len(memory_map)} entries; at most "
                              f"{E820_TABLE_MAX} fit in the zero page")
    page = bytearray(ZERO_PAGE_SIZE)
    header_end = SETUP_HEADER_JUMP + 2 + setup[SETUP_HEADER_JUMP + 1]
    page[ZP_SETUP_HEADER:header_end] = setup[ZP_SETUP_HEADER:header_end]
    page[ZP_E820_ENTRIES] = len(memory_map)
    struct.pack_into("<Q", page, ZP_ACPI_RSDP_ADDR, rsdp)
    for i, entry in enumerate(memory_map):
        E820_ENTRY.pack_into(page, ZP_E820_TABLE + i * E820_ENTRY.size, *entry)
    return bytes(page)


def _segment(kvm_segment, selector: int, access: int, flags: int, limit: int = 0xFFFFFFFF,
             base: int = 0) -> None:
    kvm_segment.base = base
    kvm_segment.limit = limit
    kvm_segment.selector = selector
    kvm_segment.type = access & 0xF
    kvm_segment.present = 1
    kvm_segment.dpl = 0
    kvm_segment.s = (access >> 4) & 1
    kvm_segment.db = (flags >> 2) & 1
    kvm_segment.l = (flags >> 1) & 1
    kvm_segment.g = (flags >> 3) & 1
    kvm_segment.avl = 0
    kvm_segment.unusable = 0


def set_entry_state(vcpu, long_mode: bool, rip: int, rbx: int = 0, rsi: int = 0) -> None:
    """The vCPU's registers at the kernel's entry, over its reset state."""
    sregs = vcpu.get_sregs()
    code_flags = FLAGS_64 if long_mode else FLAGS_32
    _segment(sregs.cs, CODE_SELECTOR, ACCESS_CODE, code_flags)
    for name in ("ds", "es", "ss", "fs", "gs"):
        _segment(getattr(sregs, name), DATA_SELECTOR, ACCESS_DATA, FLAGS_32)
    _segment(sregs.tr, TSS_SELECTOR, ACCESS_TSS, 0, limit=TSS_LIMIT)
    sregs.gdt.base = layout.BOOT_GDT_START
    sregs.gdt.limit = GDT_ENTRIES * 8 - 1
    sregs.idt.base = 0
    sregs.idt.limit = 0
    if long_mode:
        sregs.cr0 = CR0_PE | CR0_ET | CR0_PG
        sregs.cr3 = layout.BOOT_PAGE_TABLES_START
        sregs.cr4 = CR4_PAE
        sregs.efer = EFER_LME | EFER_LMA
    else:
        sregs.cr0 = CR0_PE | CR0_ET
        sregs.cr3 = 0
        sregs.cr4 = 0
        sregs.efer = 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"):
        setattr(regs, name, 0)
    regs.rip = rip
    regs.rbx = rbx
    regs.rsi = rsi
    regs.rsp = layout.BOOT_STACK_TOP if long_mode else 0
    regs.rflags = RFLAGS_FIXED      # interrupts off, no single-stepping
    vcpu.set_regs(regs)


def enter_pvh(memory, vcpu, plan: pvh.PvhPlan, memory_map: list[tuple[int, int, int]],
              rsdp: int = 0) -> None:
    """Write an ELF kernel's start info, command line and initrd (its segments are loaded
    already: load_segments), and set the vCPU at its PVH entry."""
    writes = [(layout.BOOT_GDT_START, gdt(long_mode=False))] + pvh.start_info(plan, memory_map, rsdp)
    if plan.initrd is not None:
        writes.append((plan.initrd_addr, plan.initrd))
    for gpa, data in writes:
        memory.write(gpa, data)
    set_entry_state(vcpu, long_mode=False, rip=plan.entry, rbx=layout.PVH_START_INFO)


def enter_64bit(memory, vcpu, plan: linux.BootPlan, memory_map: list[tuple[int, int, int]],
                rsdp: int = 0) -> None:
    """Load a bzImage's protected-mode kernel, zero page, command line and initrd, and set the
    vCPU at its 64-bit entry (the caller has checked it with check_64bit_entry)."""
    writes = [(layout.BOOT_GDT_START, gdt(long_mode=True)), *page_tables(),
              (layout.BOOT_PARAMS_START, zero_page(plan.setup, memory_map, rsdp)),
              (linux.CMDLINE_ADDR, plan.cmdline), (linux.KERNEL_ADDR, plan.image.kernel)]
    if plan.initrd is not None:
        writes.append((plan.initrd_addr, plan.initrd))
    for gpa, data in writes:
        memory.write(gpa, data)
    set_entry_state(vcpu, long_mode=True, rip=linux.KERNEL_ADDR + ENTRY_64_OFFSET,
                    rsi=layout.BOOT_PARAMS_START)


def load_segments(memory, kernel) -> None:
    """An ELF kernel's segments into RAM, read from the file straight into guest memory; their
    zero-filled tails (bss) cleared."""
    for segment in kernel.segments:
        done = 0
        for view in memory.views(segment.paddr, segment.filesz, True):
            segment.read_into(view, done)
            done += len(view)
        if segment.memsize > segment.filesz:
            memory.fill(segment.paddr + segment.filesz, segment.memsize - segment.filesz)
