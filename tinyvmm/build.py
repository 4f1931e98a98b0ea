"""From a MachineSpec to a machine ready to run, top-down in the order a boot needs it.

Every file is read and checked before KVM is touched (ConfigError otherwise): the firmware
or the pflash units, the kernel and initrd, the fw_cfg files and option ROMs, the disks. Then
the board (VM, guest memory, chipset, devices, vCPU), fw_cfg on it, the run loop, and the
kernel placed for the firmware or the vCPU pointed at its entry.
"""

from __future__ import annotations

import functools
import os
import sys

from . import layout
from .errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .board import Board
    from .boot.payload import LinuxPayload as Payload
    from .console import Console
    from .debug.trace import Tracer
    from .fw_cfg.device import FwCfg
    from .fw_cfg.items import FwCfgItems
    from .runner import Runner
    from .spec import DebugSpec, DriveSpec, MachineSpec


class BuiltMachine:
    """The parts of a machine built from `spec`, and what closes them (close())."""

    firmware: bytes
    payload: Payload | None
    tracer: Tracer | None
    serial: Console
    debugcon: Console
    serial_buffer: bytearray | None         # all COM1 wrote, when kept in memory
    debugcon_buffer: bytearray | None
    board: Board
    fw_cfg: FwCfg
    runner: Runner

    def __init__(self, spec: MachineSpec):
        self.spec = spec
        self.closers: list[Callable[[], None]] = []
        self.trace_error: str | None = None

    def close(self) -> None:
        """Free the VM and the files opened for it (safe to call twice)."""
        board = getattr(self, "board", None)
        closers, self.closers = self.closers, []
        try:
            if board is not None:
                board.close()
        finally:
            for close in closers:
                close()


def build(spec: MachineSpec, guard: Callable = lambda callback, what: callback) -> BuiltMachine:
    """The machine `spec` describes. `guard(callback, what)` wraps the user's console callables
    (exceptions in them must end the run, not the process). Raises ConfigError for bad input,
    tinyvmm.errors.HostError (KvmUnavailable, KvmError, HostMemoryError) when the host cannot
    run it; nothing stays open when it raises."""
    from .board import Board, BoardConfig
    from .fw_cfg.attach import attach_fw_cfg
    from .runner import Runner
    built = BuiltMachine(spec)
    try:
        flash = open_pflash(spec, built)
        built.firmware = flash[0].data if flash else firmware_image(spec)
        built.payload = payload = load_kernel(spec)
        items = fw_cfg_items(spec, built.firmware, payload)
        disks = open_disks(spec.drives, built)
        # Output files last: input that cannot be used must leave none behind.
        built.tracer = open_tracer(spec.debug, built)
        built.serial, built.serial_buffer = open_console(built, "serial", spec.serial, guard)
        built.debugcon, built.debugcon_buffer = open_console(built, "debugcon", spec.debugcon, guard)
        built.board = board = Board(BoardConfig(built.firmware, spec.mem, built.serial,
                                                built.debugcon, virtio_devices=disks,
                                                smp=spec.smp, acpi=spec.acpi, pflash=flash),
                                    tracer=built.tracer)
        built.fw_cfg = attach_fw_cfg(board, spec.fw_cfg, items)
        built.runner = Runner(board, tracer=built.tracer)
        built.runner.software_cpu = spec.software_cpu
        if payload is not None:
            place_kernel(spec, payload, board)
    except BaseException:
        built.close()
        raise
    return built


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


def open_pflash(spec: MachineSpec, built: BuiltMachine) -> list:
    """The flash units' files opened and read (tinyvmm.devices.pflash.open_flash_files; closed
    with `built`), unit 0 first; [] without pflash."""
    if not spec.pflash:
        return []
    from .devices.pflash import open_flash_files
    files = open_flash_files(spec.pflash, layout.FIRMWARE_MAX_SIZE)
    built.closers.extend(functools.partial(os.close, flash.fd) for flash in files)
    return files


def firmware_image(spec: MachineSpec) -> bytes:
    """The image the spec names (bytes as given, a path read), or tinyvmm's own BIOS."""
    from . import firmware as shipped
    if isinstance(spec.firmware, bytes):
        return spec.firmware
    return read_firmware(spec.firmware) if spec.firmware else shipped.read_image(shipped.BIOS)


def load_kernel(spec: MachineSpec) -> Payload | None:
    """The kernel, initrd and command line read and checked, and the boot method chosen
    (spec.kernel.boot, or: firmware when a firmware or an option ROM is named); None
    without a kernel. Warns on stderr about a command line or ROM that will not work."""
    if spec.kernel is None:
        return None
    from .boot.payload import cmdline_warning, load_payload
    kernel, option_roms = spec.kernel, spec.fw_cfg.option_roms
    boot = kernel.boot or ("firmware" if spec.runs_firmware else None)
    payload = load_payload(kernel.path, kernel.initrd, kernel.append, spec.fw_cfg.dma, spec.mem,
                           kernel.append_as_is, boot)
    if payload.boot == "firmware" and option_roms:
        warn_rom_mismatch(os.path.basename(option_roms[0]), payload.is_elf)
    warning = cmdline_warning(payload.plan.cmdline.rstrip(b"\0").decode("latin-1"))
    if warning:
        print(f"tinyvmm: warning: {warning}", file=sys.stderr)
    return payload


def fw_cfg_items(spec: MachineSpec, firmware: bytes, payload: Payload | None) -> FwCfgItems:
    """Every fw_cfg item the guest will see: the machine's own, the user's files and option
    ROMs, the boot ROM and kernel of a boot through firmware, the boot order."""
    from .fw_cfg.attach import build_fw_cfg_items
    firmware_boot = payload is not None and payload.boot == "firmware"
    booting_drives = sorted((d.bootindex, i) for i, d in enumerate(spec.drives)
                            if d.bootindex is not None)
    own_rom = firmware_boot and not spec.fw_cfg.option_roms
    # Files added after the standard ones: the boot ROM (unless an option ROM is it)
    # and the bootorder file, when a kernel or a drive is to be booted.
    loader_files = int(own_rom) + int(firmware_boot or bool(booting_drives))
    items = build_fw_cfg_items(spec.fw_cfg, spec.mem, len(firmware), cpus=spec.smp,
                               loader_files=loader_files, acpi=spec.acpi)
    if firmware_boot:
        assert payload is not None
        payload.publish(items, list(spec.fw_cfg.option_roms))
    for _, index in booting_drives:     # after the kernel's ROM, as QEMU gives it bootindex 0
        items.add_boot_device(drive_boot_path(index))
    return items


def warn_rom_mismatch(rom: str, elf_kernel: bool) -> None:
    """QEMU's and tinyvmm's boot ROMs are named for the format they boot: say so when the first
    option ROM looks like the other kind, before the guest crashes in it."""
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


def open_tracer(debug: DebugSpec, built: BuiltMachine) -> Tracer | None:
    """The Tracer of `debug.trace` (None without it), writing to stderr or `debug.trace_file`;
    a file that cannot be written is a ConfigError, one whose lines could not all be written
    is reported as built.trace_error when it is closed."""
    if not debug.trace:
        return None
    from .debug.trace import TraceFile, Tracer
    path = debug.trace_file
    if path is None:
        return Tracer(sys.stderr, debug.trace.categories)
    try:
        out = TraceFile(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the trace to {path}: {exc.strerror}") from None

    def close():
        try:
            out.close()
        except OSError as exc:
            built.trace_error = f"cannot write the trace to {path}: {exc.strerror}"
    built.closers.append(close)
    return Tracer(out, debug.trace.categories)


def open_console(built: BuiltMachine, name: str, sink, guard) -> tuple[Console, bytearray | None]:
    """The Console `name` writing where `sink` says (see MachineSpec), and the buffer keeping
    all it wrote when that is memory (else None)."""
    from .console import Console, open_sink
    expect = built.spec.expect
    if sink is None:
        buffer = bytearray()
        return Console(name, buffer.extend, expect), buffer
    if callable(sink):
        return Console(name, guard(sink, f"the {name} output callable"), expect), None
    write, close = open_sink(sink, name)
    built.closers.append(close)
    return Console(name, write, expect), None


def open_disks(specs: tuple[DriveSpec, ...], built: BuiltMachine) -> list:
    """The drives' images opened and checked, as virtio-blk models (closed with `built`)."""
    if not specs:
        return []                   # no virtio modules to import on the way to KVM_RUN
    from .virtio.blk import BlockBackend, BlockDevice
    from .virtio.drive import check_drives, open_drive
    check_drives(specs)
    models: list[BlockDevice] = []
    for spec in specs:
        fd, size = open_drive(spec, warn=lambda text: print(f"tinyvmm: warning: {text}",
                                                             file=sys.stderr))
        built.closers.append(functools.partial(os.close, fd))
        models.append(BlockDevice(BlockBackend(fd, size=size, read_only=spec.read_only,
                                               serial=spec.serial or f"tinyvmm-disk{len(models)}")))
    return models


def install_acpi_direct(spec: MachineSpec, board: Board) -> int:
    """A boot without firmware: the PM block enabled where firmware would put it and the ACPI
    tables in RAM (tinyvmm.acpi.install_direct); the RSDP's address."""
    from .acpi import install_direct
    from .fw_cfg.attach import acpi_machine
    pm = board.power_management
    assert pm is not None                   # a machine with ACPI has its PM function
    pm.enable_pm_io(layout.ACPI_PM_BASE)
    return install_direct(board.memory, acpi_machine(spec.fw_cfg, spec.mem, spec.smp, pm.pm_base()))


def install_mp_table_direct(spec: MachineSpec, board: Board) -> int:
    """A boot without firmware or ACPI: the PCI interrupts routed as firmware routes them (each
    function's Interrupt Line set) and the MP table describing the vCPUs and that wiring
    (tinyvmm.mptable). Returns 0: there is no RSDP."""
    from .mptable import install_direct
    from .pci.config import PCI_INTERRUPT_LINE, PCI_INTERRUPT_PIN
    board.isa_bridge.route_as_firmware()
    interrupts = []
    for (slot, _), function in sorted(board.pci.functions.items()):
        pin = function.config[PCI_INTERRUPT_PIN]
        irq = board.isa_bridge.irq_for(slot, pin) if pin else None
        if irq is not None:
            function.set_byte(PCI_INTERRUPT_LINE, irq)
            interrupts.append((slot, pin, irq))
    install_direct(board.memory, spec.smp, interrupts)
    return 0


def place_kernel(spec: MachineSpec, payload: Payload, board: Board) -> None:
    """The kernel's pages filled in (Payload.fill: loaded, or faulted in for the ROM's copy)
    before the vCPU starts, not beside it: a thread doing it while KVM set the VM up was
    slower (37 MiB: 136 ms against 84, median of 9), and one racing the ROM made its copy
    wait. A direct boot then has the vCPU at the kernel's entry, with its tables."""
    payload.fill(board.memory, spec.runs_firmware)
    if payload.boot == "direct":
        rsdp = install_acpi_direct(spec, board) if spec.acpi else install_mp_table_direct(spec, board)
        payload.enter(board.memory, board.vcpu,
                      layout.e820_map(spec.mem, len(board.config.firmware), acpi=spec.acpi), rsdp)
