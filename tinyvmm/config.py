"""From options to checked parts: the firmware image, the fw_cfg items, the kernel payload and
the disks, everything read and checked before KVM is touched (ConfigError otherwise).

The command line and tinyvmm.machine.Machine both start here, so a bad input gets the same
message from either.
"""

import os
import sys

from . import layout
from .errors import ConfigError


class MachineOptions:
    """What a machine is made of, spelt as the command line's options (QEMU's names):

    bios            firmware image path, or a shipped image's bare name; None: tinyvmm's BIOS
    mem             guest RAM in bytes (layout.RAM_MIN_SIZE to RAM_MAX_SIZE, a multiple of 4 KiB)
    kernel, initrd  paths; `kernel` None with `boot_linux`: the default test kernel
    append          kernel command line; `append_as_is` False adds what the machine needs
    boot            "firmware", "direct" or None (direct for an ELF vmlinux without firmware named)
    fw_cfg          fw_cfg.items.UserItemSpec list (--fw-cfg)
    option_roms     paths (--option-rom)
    fw_cfg_dma, fw_cfg_ports, fw_cfg_mmio   the fw_cfg interfaces offered
    drives          virtio.drive.DriveSpec list (--drive)
    """
    __slots__ = ("bios", "mem", "kernel", "initrd", "append", "append_as_is", "boot", "fw_cfg",
                 "option_roms", "fw_cfg_dma", "fw_cfg_ports", "fw_cfg_mmio", "drives")

    def __init__(self, **values):
        self.bios = self.kernel = self.initrd = self.append = self.boot = self.fw_cfg_mmio = None
        self.mem = 256 * layout.MiB
        self.append_as_is = False
        self.fw_cfg_dma = self.fw_cfg_ports = True
        self.fw_cfg, self.option_roms, self.drives = [], [], []
        for name, value in values.items():
            setattr(self, name, value)          # AttributeError names an unknown option

    @classmethod
    def from_args(cls, args) -> "MachineOptions":
        """The options a parsed command line gives (absent ones keep their defaults)."""
        return cls(**{name: getattr(args, name) for name in cls.__slots__
                      if getattr(args, name, None) is not None})


def read_firmware(path: str) -> bytes:
    """The firmware image at `path` (or the shipped image so named), its size checked from stat
    before reading against the machine's rule: a multiple of 64 KiB from 64 KiB to 16 MiB."""
    from . import firmware as shipped
    from .files import FileTooLarge, NotAFile, read_bounded
    path = shipped.resolve(path)
    try:
        data = read_bounded(path, layout.FIRMWARE_MAX_SIZE)
        layout.check_firmware_size(len(data))
    except FileTooLarge as exc:
        size = f"this one is {exc.size} bytes" if exc.size is not None else "this one holds more than 16 MiB"
        raise ConfigError(f"firmware {path}: {layout.FIRMWARE_SIZE_RULE}; {size}") from None
    except NotAFile as exc:
        raise ConfigError(f"firmware {exc}") from None     # it names the path
    except ValueError as exc:
        raise ConfigError(f"firmware {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read firmware {path}: {exc.strerror}") from None
    return data


def firmware_image(options: MachineOptions) -> bytes:
    """--bios, or tinyvmm's own BIOS."""
    from . import firmware as shipped
    return read_firmware(options.bios) if options.bios else shipped.read_image(shipped.BIOS)


def prepare_items(options: MachineOptions, firmware: bytes, boot_linux: bool):
    """(fw_cfg items, kernel payload or None) for these options; `options.boot` is set to
    the method chosen. ConfigError for anything that cannot be served."""
    from .boot.payload import PayloadError, cmdline_warning, load_payload
    from .fw_cfg.items import FwCfgConfigError
    from .fw_cfg.options import build_fw_cfg_items
    option_roms = options.option_roms
    try:
        payload = None
        if boot_linux:
            boot = options.boot
            if boot is None and (options.bios or option_roms):
                boot = "firmware"           # firmware named: it boots the kernel, whatever the format
            payload = load_payload(options.kernel, options.initrd, options.append, options.fw_cfg_dma,
                                   options.mem, options.append_as_is, boot)
            if payload.boot == "direct" and (options.bios or option_roms):
                raise ConfigError(f"--boot direct runs no firmware: drop "
                                  f"{'--bios' if options.bios else '--option-rom'}")
            if payload.boot == "firmware" and option_roms:
                warn_rom_mismatch(os.path.basename(option_roms[0]), payload.is_elf)
            warning = cmdline_warning(payload.plan.cmdline.rstrip(b"\0").decode("latin-1"))
            if warning:
                print(f"tinyvmm: warning: {warning}", file=sys.stderr)
            options.boot = payload.boot         # as chosen: the debugging aids follow it
        firmware_boot = payload is not None and payload.boot == "firmware"
        booting_drives = sorted((d.bootindex, i) for i, d in enumerate(options.drives)
                                if d.bootindex is not None)
        # Files added after the standard ones: the boot ROM (unless --option-rom gave it)
        # and the bootorder file, when a kernel or a drive is to be booted.
        loader_files = int(firmware_boot and not option_roms) + int(firmware_boot or bool(booting_drives))
        items = build_fw_cfg_items(options, options.mem, len(firmware), loader_files=loader_files)
        if firmware_boot:
            payload.publish(items, option_roms)
        for _, index in booting_drives:     # after the kernel's ROM, as QEMU gives it bootindex 0
            items.add_boot_device(drive_boot_path(index))
    except (FwCfgConfigError, PayloadError) as exc:
        raise ConfigError(str(exc)) from None
    return items, payload


def warn_rom_mismatch(rom: str, elf_kernel: bool) -> None:
    """QEMU's and tinyvmm's boot ROMs are named for the format they boot: say so when the first
    --option-rom looks like the other kind, before the guest crashes in it."""
    if elf_kernel and "linuxboot" in rom:
        print(f"tinyvmm: warning: {rom} boots a bzImage, and the kernel is an ELF vmlinux: give a "
              "PVH ROM (pvh.bin)", file=sys.stderr)
    elif not elf_kernel and rom.startswith("pvh"):
        print(f"tinyvmm: warning: {rom} boots an ELF vmlinux through its PVH entry, and the kernel "
              "is a bzImage: give a linuxboot ROM", file=sys.stderr)


def drive_boot_path(index: int) -> str:
    """The bootorder path of the `index`th drive, as QEMU writes it for a virtio-blk disk
    (SeaBIOS matches the PCI part)."""
    return f"/pci@i0cf8/scsi@{layout.VIRTIO_FIRST_SLOT + index:x}/disk@0,0"


def open_disks(specs):
    """The drives' images opened and checked, as virtio-blk models; and a function closing them."""
    if not specs:
        return [], lambda: None             # no virtio modules to import on the way to KVM_RUN
    from .virtio.blk import BlockBackend, BlockDevice
    from .virtio.drive import DriveError, check_drives, open_drive
    models, fds = [], []

    def close():
        for fd in fds:
            os.close(fd)
    try:
        check_drives(specs)
        for spec in specs:
            fd, size = open_drive(spec, warn=lambda text: print(f"tinyvmm: warning: {text}",
                                                                 file=sys.stderr))
            fds.append(fd)
            models.append(BlockDevice(BlockBackend(fd, size=size, read_only=spec.read_only,
                                                   serial=spec.serial or f"tinyvmm-disk{len(models)}")))
    except DriveError as exc:
        close()
        raise ConfigError(str(exc)) from None
    return models, close
