"""What `tinyvmm boot` boots: kernel, initrd and command line from options or defaults, checked before KVM."""

import os
import stat

from .. import firmware as shipped
from .. import layout
from ..errors import ConfigError
from ..files import FileTooLarge, NotAFile, read_bounded
from ..fw_cfg.items import FwCfgItems
from ..kvm.system import is_emulating_host
from . import bzimage, direct, elf, linux, pvh

# Paths are plain strings: pathlib would add its imports to every boot.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
KERNELS_VARIABLE = "TINYVMM_KERNELS"
DEFAULT_KERNEL_DIR = os.environ.get(KERNELS_VARIABLE) or os.path.join(REPO_ROOT, "kernels", "build")
DEFAULT_KERNEL = os.path.join(DEFAULT_KERNEL_DIR, "bzImage")
DEFAULT_INITRD = os.path.join(DEFAULT_KERNEL_DIR, "initramfs.cpio")
DEFAULT_VMLINUX = os.path.join(DEFAULT_KERNEL_DIR, "vmlinux")      # the same kernel, as ELF

# Serial console from the first instruction of setup on; reboot through the keyboard
# controller (the VMM ends the run on it); reboot at once on panic.
BASE_CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1"
# Without ACPI, Linux's fw_cfg sysfs driver learns where the device is from this.
FW_CFG_CMDLINE = {True: "qemu_fw_cfg.ioport=0xc@0x510:0:1:4", False: "qemu_fw_cfg.ioport=2@0x510:0:1"}
# An emulating KVM (kvm_pvm) runs the guest's CPUID natively, so XSAVE cannot be
# hidden there; Linux must be told not to use it.
EMULATED_HOST_CMDLINE = "noxsave"


class PayloadError(ConfigError):
    """A kernel, initrd or command line that cannot be booted; the message says why."""


class LinuxPayload:
    """A checked kernel, initrd and command line, and how they boot.

    format: "bzImage" or "ELF"; boot: "firmware" (a boot ROM loads them from fw_cfg:
    linuxboot for a bzImage, the PVH ROM for an ELF) or "direct" (tinyvmm writes them into
    RAM and starts the vCPU at the kernel's entry: the 64-bit entry of a bzImage, the PVH
    entry of an ELF). plan: a linux.BootPlan or a pvh.PvhPlan; rom_name and rom: the boot
    ROM's fw_cfg file name and bytes (None for a direct boot).
    """
    __slots__ = ("kernel_path", "format", "boot", "plan", "rom_name", "rom")

    def __init__(self, kernel_path: str, format: str, boot: str, plan, rom_name: str | None,
                 rom: bytes | None):
        self.kernel_path = kernel_path
        self.format = format
        self.boot = boot
        self.plan = plan
        self.rom_name = rom_name
        self.rom = rom

    @property
    def is_elf(self) -> bool:
        return self.format == "ELF"

    def load_ranges(self) -> list[tuple[int, int]]:
        """(guest address, size) of everything that will be written into RAM."""
        return self.plan.load_ranges()

    def kernel_entry(self) -> tuple[int, int]:
        """(address, milestone value) of the kernel's entry a firmware boot reaches: the
        real-mode entry of a bzImage (milestone 3), the PVH entry of an ELF (milestone 4)."""
        if self.is_elf:
            return self.plan.entry, layout.MILESTONE_PVH_BOOT
        return linux.KERNEL_ENTRY, layout.MILESTONE_LINUX_START_BOOT

    def publish(self, items: FwCfgItems, option_roms=()) -> None:
        """The plan's fw_cfg items and its ROM; when the user gave option ROMs (already in
        genroms/), the first of them boots the kernel instead."""
        publish = pvh.publish if self.is_elf else linux.publish
        if option_roms:
            publish(self.plan, items, os.path.basename(option_roms[0]), None)
        else:
            assert self.rom_name is not None    # only a firmware boot publishes, and it has a ROM
            publish(self.plan, items, self.rom_name, self.rom)

    def fill(self, memory, foreign_firmware: bool = False) -> None:
        """What goes into RAM before the vCPU starts: a direct ELF boot's segments, loaded from
        the file; for a firmware boot, the pages the ROM will copy into faulted in (its copy
        then runs at memory speed), and for
        `foreign_firmware` (QEMU's pvh.bin, qboot) an ELF's segments loaded as QEMU loads them."""
        from .direct import load_segments
        if self.boot == "firmware":
            memory.prefault(self.load_ranges())
        if self.is_elf and (self.boot == "direct" or foreign_firmware):
            load_segments(memory, self.plan.kernel)

    def enter(self, memory, vcpu, memory_map: list[tuple[int, int, int]], rsdp: int = 0) -> None:
        """A direct boot, once fill() has run: write the rest into RAM and set the vCPU at the
        kernel's entry; `rsdp`: where the ACPI tables start (0: none)."""
        from . import direct
        if self.is_elf:
            direct.enter_pvh(memory, vcpu, self.plan, memory_map, rsdp)
        else:
            direct.enter_64bit(memory, vcpu, self.plan, memory_map, rsdp)


def host_cmdline(dma: bool) -> list[str]:
    """What this machine needs on every command line: where fw_cfg is (no ACPI tells Linux),
    and `noxsave` where KVM emulates guest code."""
    parts = [FW_CFG_CMDLINE[dma]]
    if is_emulating_host():
        parts.append(EMULATED_HOST_CMDLINE)
    return parts


def default_cmdline(dma: bool) -> str:
    return " ".join([BASE_CMDLINE] + host_cmdline(dma))


def kernel_cmdline(append: str | None, dma: bool, as_is: bool = False) -> str:
    """The command line for --append (None: the default one). The machine's own parameters
    follow the user's text unless `as_is`; parameters already given are not repeated."""
    if append is None:
        return default_cmdline(dma)
    if as_is:
        return append
    given = set(append.split())
    return " ".join([append] + [part for part in host_cmdline(dma) if part not in given]).strip()


# SMAP as x86 Linux's clearcpuid= names it (X86_FEATURE_SMAP, 9*32+20). An emulating host's
# user system calls are completed at the kernel entry's clac (tinyvmm.completion), which a
# kernel without SMAP does not execute.
SMAP_FEATURE = ("308", "smap")


def cmdline_warning(cmdline: str) -> str | None:
    """What a user should hear of a command line that cannot work on this host, or None:
    SMAP hidden by clearcpuid= (Linux takes the last one; a comma-separated list)."""
    values = [part.split("=", 1)[1] for part in cmdline.split() if part.startswith("clearcpuid=")]
    if values and is_emulating_host() and \
            any(item.strip().lower() in SMAP_FEATURE for item in values[-1].split(",")):
        return (f"clearcpuid={values[-1]} turns SMAP off, and this host's KVM needs the kernel's "
                "clac to hand user system calls to tinyvmm: the first one will fail (SIGSEGV)")
    return None


def _peek_elf(path: str) -> bytes | None:
    """The first bytes of a regular file that starts as an ELF file does (as many as a PVH
    boot hands on as setup data), or None for anything else, which is then read whole."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):      # never open a FIFO: it would wait
            return None
        with open(path, "rb") as f:
            head = f.read(pvh.HEADER_PEEK_SIZE)
    except OSError:
        return None             # _read says why, in the same words as for any file
    return head if elf.is_elf(head) else None


def _read(path: str, what: str, ram_size: int) -> bytes:
    """A kernel or initrd: it must fit in the guest's RAM below 4 GiB, which is checked
    before it is read (from stat; other files are read through that bound)."""
    limit = layout.low_ram_end(ram_size)
    try:
        return read_bounded(path, limit)
    except FileTooLarge as exc:
        size = f"is {exc.size} bytes, more" if exc.size is not None else "holds more"
        raise PayloadError(f"{what} {path} {size} than the guest's {limit // layout.MiB} MiB "
                           "of RAM below 4 GiB (--mem)") from None
    except NotAFile as exc:
        raise PayloadError(f"{what} {exc}") from None
    except OSError as exc:
        raise PayloadError(f"cannot read {what} {path}: {exc.strerror}") from None


def load_payload(kernel: str | None, initrd: str | None, append: str | None, dma: bool,
                 ram_size: int, append_as_is: bool = False, boot: str | None = None) -> LinuxPayload:
    """Read and check everything; with no kernel given, use the default kernel and initramfs.
    `boot` None: "firmware" for a bzImage, "direct" for an ELF kernel."""
    if kernel is None:
        if not os.path.exists(DEFAULT_KERNEL):
            if os.environ.get(KERNELS_VARIABLE):
                how = (f"{KERNELS_VARIABLE} names {DEFAULT_KERNEL_DIR}, which holds no bzImage; "
                       "put one there, or give --kernel BZIMAGE")
            elif os.path.exists(os.path.join(REPO_ROOT, "kernels", "Makefile")):
                how = "build it with `make -C kernels` (a few minutes; see kernels/README.md)"
            else:       # an installed package: there is no kernels/ folder to build in
                how = ("give --kernel BZIMAGE, or set TINYVMM_KERNELS to a folder holding "
                       "bzImage (and initramfs.cpio); a checkout of tinyvmm builds one with "
                       "`make -C kernels`")
            raise PayloadError(f"no --kernel given and there is no default kernel at "
                               f"{DEFAULT_KERNEL}: {how}")
        kernel_path = DEFAULT_KERNEL
        if initrd is None and os.path.exists(DEFAULT_INITRD):
            initrd = DEFAULT_INITRD
    else:
        kernel_path = kernel
    # A regular ELF file is read by ranges (its headers now, its segments when loaded): a
    # vmlinux is mostly symbols and debugging sections a boot does not need.
    header = _peek_elf(kernel_path)
    data = header if header is not None else _read(kernel_path, "kernel", ram_size)
    if not data:
        raise PayloadError(f"kernel {kernel_path} is empty")
    initrd_data = _read(initrd, "initrd", ram_size) if initrd is not None else None
    cmdline = kernel_cmdline(append, dma, append_as_is)
    try:
        if elf.is_elf(data):
            boot = boot or "direct"
            try:
                kernel_image = (elf.read_elf_kernel(kernel_path) if header is not None else
                                elf.parse_elf_kernel(data, kernel_path))
            except OSError as exc:
                raise PayloadError(f"cannot read kernel {kernel_path}: {exc.strerror}") from None
            pvh_plan = pvh.plan_pvh(kernel_image, cmdline, initrd_data, ram_size, data)
            return LinuxPayload(kernel_path, "ELF", boot, pvh_plan, *_rom(boot, True, dma))
        boot = boot or "firmware"
        image = bzimage.parse_bzimage(data, kernel_path)
        if boot == "direct":
            direct.check_64bit_entry(image, kernel_path)
        plan = linux.plan_boot(image, cmdline, initrd_data, ram_size)
        return LinuxPayload(kernel_path, "bzImage", boot, plan,
                            *_rom(boot, False, dma))
    except (bzimage.BzImageError, elf.ElfKernelError, pvh.PvhConfigError, linux.BootConfigError,
            direct.DirectBootError) as exc:
        raise PayloadError(str(exc)) from None


def _rom(boot: str, pvh_kernel: bool, dma: bool) -> tuple[str | None, bytes | None]:
    """The boot ROM a firmware boot needs, for the fw_cfg device's mode: its name and bytes."""
    if boot != "firmware":
        return None, None
    name = shipped.pvh_name(dma) if pvh_kernel else shipped.linuxboot_name(dma)
    return name, shipped.read_image(name)
