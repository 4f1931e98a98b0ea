"""What `tinyvmm boot` boots: kernel, initrd and command line from options or defaults, checked before KVM."""

import os
from dataclasses import dataclass
from pathlib import Path

from .. import firmware as shipped
from ..fw_cfg.items import FwCfgItems
from ..kvm.system import is_emulating_host
from . import bzimage, linux

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KERNEL_DIR = Path(os.environ.get("TINYVMM_KERNELS", REPO_ROOT / "kernels" / "build"))
DEFAULT_KERNEL = DEFAULT_KERNEL_DIR / "bzImage"
DEFAULT_INITRD = DEFAULT_KERNEL_DIR / "initramfs.cpio"

# Serial console from the first instruction of setup on; reboot through the keyboard
# controller (the VMM ends the run on it); reboot at once on panic.
BASE_CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1"
# Without ACPI, Linux's fw_cfg sysfs driver learns where the device is from this.
FW_CFG_CMDLINE = {True: "qemu_fw_cfg.ioport=0xc@0x510:0:1:4", False: "qemu_fw_cfg.ioport=2@0x510:0:1"}
# An emulating KVM (kvm_pvm) runs the guest's CPUID natively, so XSAVE cannot be
# hidden there; Linux must be told not to use it.
EMULATED_HOST_CMDLINE = "noxsave"


class PayloadError(ValueError):
    """A kernel, initrd or command line that cannot be booted; the message says why."""


@dataclass(frozen=True)
class LinuxPayload:
    kernel_path: Path
    plan: linux.BootPlan
    rom_name: str
    rom: bytes


def default_cmdline(dma: bool) -> str:
    parts = [BASE_CMDLINE, FW_CFG_CMDLINE[dma]]
    if is_emulating_host():
        parts.append(EMULATED_HOST_CMDLINE)
    return " ".join(parts)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PayloadError(f"cannot read {what} {path}: {exc.strerror}") from None


def load_payload(kernel: str | None, initrd: str | None, append: str | None, dma: bool,
                 ram_size: int) -> LinuxPayload:
    """Read and check everything; with no kernel given, use the default kernel and initramfs."""
    if kernel is None:
        if not DEFAULT_KERNEL.exists():
            raise PayloadError(f"no --kernel given and the default kernel {DEFAULT_KERNEL} is not "
                               "built: run `make -C kernels` (a few minutes; see kernels/README.md)")
        kernel_path = DEFAULT_KERNEL
        if initrd is None and DEFAULT_INITRD.exists():
            initrd = str(DEFAULT_INITRD)
    else:
        kernel_path = Path(kernel)
    data = _read(kernel_path, "kernel")
    try:
        image = bzimage.parse_bzimage(data, str(kernel_path))
    except bzimage.BzImageError as exc:
        raise PayloadError(str(exc)) from None
    initrd_data = _read(Path(initrd), "initrd") if initrd is not None else None
    cmdline = default_cmdline(dma) if append is None else append
    try:
        plan = linux.plan_boot(image, cmdline, initrd_data, ram_size)
    except linux.BootConfigError as exc:
        raise PayloadError(str(exc)) from None
    rom_name = shipped.linuxboot_name(dma)
    return LinuxPayload(kernel_path, plan, rom_name, shipped.read_image(rom_name))


def publish(payload: LinuxPayload, items: FwCfgItems) -> None:
    linux.publish(payload.plan, items, payload.rom_name, payload.rom)
