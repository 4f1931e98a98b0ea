"""What a machine is made of: one typed, immutable description (MachineSpec) that the command line
and the Python API both build, through the same checks, and that tinyvmm.build turns into a
machine ready to run.

The parts are spelt as QEMU's options are: -bios, -m, -kernel/-initrd/-append, -fw_cfg,
-option-rom, -drive, -serial, -debugcon, -gdb. Each check raises ConfigError with the rule it
enforces; the command line's argparse types call the same functions, so a rule has one message.
"""

from __future__ import annotations

import os

from . import layout
from .errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from dataclasses import dataclass, replace

    from .debug.gdb.server import ListenAddress
    from .debug.symbols import SymbolFile
    from .debug.trace import TraceSpec
    from .fw_cfg.items import UserItemSpec
    # Where a console's bytes go: None (kept in memory), "stdio", "none", "file:PATH", or a
    # callable taking bytes.
    ConsoleSink = str | Callable[[bytes], object] | None
    Path = str | os.PathLike[str]
else:
    from .record import dataclass, replace

__all__ = ["MachineSpec", "KernelSpec", "FwCfgSpec", "DriveSpec", "PflashSpec", "DebugSpec",
           "replace"]

BOOT_METHODS = ("firmware", "direct")
SOFTWARE_CPU_MODES = ("auto", "on", "off")
SOFTWARE_CPU_ALONE = "--software-cpu on runs one vCPU whose debug registers nothing else holds"
SERIAL_MAX = 20                         # virtio-blk GET_ID: 20 bytes
BOOTINDEX_MAX = 0x7FFFFFFF              # QEMU's bootindex is an int32
TIMEOUT_MAX = 30 * 24 * 3600            # seconds: 30 days
CONSOLE_TEXT_MAX = 2048                 # bytes: half the tail a console keeps to match in


def split_options(text: str) -> list[str]:
    """QEMU's option-list syntax (-drive, -fw_cfg): parts split at commas, a doubled comma
    standing for one comma inside a value."""
    parts, current, i = [], [], 0
    while i < len(text):
        if text[i] == "," and text[i + 1:i + 2] == ",":
            current.append(",")
            i += 2
            continue
        if text[i] == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


# --- the rules, shared with the command line's argparse types -------------------------------------
def check_type(name: str, value: object, kind: type, none: bool = False) -> None:
    """TypeError unless `value` is a `kind` (or None, when `none`); bool is no int here."""
    if value is None and none:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name}: expected {kind.__name__}{' or None' if none else ''}, "
                        f"not {type(value).__name__}")


def check_sequence(name: str, values: object) -> list:
    """A list or tuple of values; a lone str or bytes would be taken as its characters."""
    if isinstance(values, (str, bytes, os.PathLike)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a list, not {type(values).__name__}")
    return list(values)


def check_boot(boot: object) -> None:
    """A boot method: "firmware", "direct", or None (chosen from the kernel and firmware)."""
    if boot is not None and not isinstance(boot, str):
        raise TypeError(f"boot: expected 'firmware', 'direct' or None, not {type(boot).__name__}")
    if boot not in (None, *BOOT_METHODS):
        raise ConfigError(f"boot={boot!r}: expected 'firmware' or 'direct'")


def check_tuple(name: str, values: object, kind: type) -> None:
    """TypeError unless `values` is a tuple of `kind` (a spec holds tuples: lists can change)."""
    if not isinstance(values, tuple):
        raise TypeError(f"{name}: expected a tuple, not {type(values).__name__}")
    for value in values:
        if not isinstance(value, kind):
            raise TypeError(f"{name}: expected {kind.__name__} items, not {type(value).__name__}")


def check_file_path(name: str, value: object) -> str | None:
    """A spec's path: a str naming a file, or None."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name}: expected a path as str, not {type(value).__name__}")
    return check_path(name, value)


def check_path(name: str, value: object) -> str | None:
    """A path given as str or os.PathLike (None stays None), checked for what no file name holds."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path (str or os.PathLike), not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{name}: expected a str path, not {type(path).__name__}")
    if not path or "\0" in path:
        raise ConfigError(f"{name}: {path!r} is not a file name")
    return path


def check_mem(size: int, label: str) -> int:
    """Guest RAM in bytes: from layout.RAM_MIN_SIZE (2 MiB) to RAM_MAX_SIZE (64 GiB), whole
    pages. `label` names the value in the message ("mem=1024", the command line's "1K")."""
    if not layout.RAM_MIN_SIZE <= size <= layout.RAM_MAX_SIZE:
        raise ConfigError(f"{label}: RAM must be between {layout.RAM_MIN_SIZE // layout.MiB} MiB "
                          f"and {layout.RAM_MAX_SIZE // layout.GiB} GiB")
    if size % layout.PAGE_SIZE:
        raise ConfigError(f"{label}: RAM must be a multiple of 4 KiB")
    return size


def check_software_cpu(mode: object) -> str:
    """--software-cpu: one of SOFTWARE_CPU_MODES."""
    if mode not in SOFTWARE_CPU_MODES:
        raise ConfigError(f"software CPU {mode!r}: expected one of {', '.join(SOFTWARE_CPU_MODES)}")
    return str(mode)


def check_smp(count: int, label: str) -> int:
    """The number of vCPUs: 1 to layout.SMP_MAX (xAPIC IDs, the MADT's and the MP table's
    8-bit fields, CMOS 0x5F). The host's own limit (KVM_CAP_MAX_VCPUS) is checked when the
    VM is made. `label` names the value in the message."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= layout.SMP_MAX:
        raise ConfigError(f"{label}: the number of vCPUs must be 1 to {layout.SMP_MAX}")
    return count


def check_firmware_size(size: int) -> None:
    try:
        layout.check_firmware_size(size)
    except ValueError as exc:
        raise ConfigError(f"firmware: {exc}") from None


def check_timeout(seconds: float, label: str) -> float:
    """A run's time limit in seconds: above 0, at most 30 days (`label` as check_mem's)."""
    if not 0 < seconds <= TIMEOUT_MAX:
        raise ConfigError(f"{label}: the timeout must be above 0 and at most 30 days")
    return seconds


def check_console_text(text: bytes) -> bytes:
    """Text to wait for on a console: 1 to CONSOLE_TEXT_MAX bytes (what a console's tail can match)."""
    if not 0 < len(text) <= CONSOLE_TEXT_MAX:
        raise ConfigError(f"the text to wait for must be 1 to {CONSOLE_TEXT_MAX} bytes")
    return text


def check_sink(text: str) -> str:
    """A console's destination as the command line spells it: stdio, none or file:PATH."""
    if text in ("stdio", "none") or (text.startswith("file:") and len(text) > 5):
        return text
    from .console import SinkSpecError
    raise SinkSpecError(f"{text!r}: expected stdio, none or file:PATH")


def check_mmio_base(base: int | None) -> int | None:
    """fw_cfg's MMIO window base: where it can lie in the hole below 4 GiB whatever the RAM
    (the RAM's own end is checked when the machine is built)."""
    if base is None:
        return None
    check_type("fw_cfg_mmio", base, int)
    from .fw_cfg.attach import check_mmio_window
    check_mmio_window(base, ram_size=None)
    return base


# --- the parts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelSpec:
    """A Linux kernel to boot (QEMU's -kernel, -initrd, -append).

    path          a bzImage, or an ELF vmlinux with a PVH entry; None: the test kernel built by
                  `make -C kernels` (with its initramfs when `initrd` is None too)
    initrd        an initrd or initramfs, or None
    append        the command line; None: the default (serial console, reboot=k, panic=-1)
    append_as_is  pass `append` exactly; else tinyvmm adds what the machine needs after it
    boot          "firmware" (a boot ROM loads it through fw_cfg), "direct" (the vCPU starts at
                  its entry) or None: direct for a vmlinux when no firmware is named, else
                  firmware
    """
    path: str | None = None
    initrd: str | None = None
    append: str | None = None
    append_as_is: bool = False
    boot: str | None = None

    def __post_init__(self) -> None:
        check_file_path("kernel", self.path)
        check_file_path("initrd", self.initrd)
        check_type("append", self.append, str, none=True)
        check_type("append_as_is", self.append_as_is, bool)
        check_boot(self.boot)


@dataclass(frozen=True)
class FwCfgSpec:
    """The fw_cfg device: its user files (QEMU's -fw_cfg), option ROMs served as genroms/NAME
    (-option-rom, paths), and the interfaces offered: DMA, the I/O ports 0x510/0x514, and an
    MMIO window at guest-physical `mmio` (None: none)."""
    files: tuple[UserItemSpec, ...] = ()
    option_roms: tuple[str, ...] = ()
    dma: bool = True
    ports: bool = True
    mmio: int | None = None

    def __post_init__(self) -> None:
        check_tuple("fw_cfg files", self.files, object)
        if self.files:                  # (fw_cfg's modules only when there are files)
            from .fw_cfg.items import UserItemSpec
            check_tuple("fw_cfg files", self.files, UserItemSpec)
        check_tuple("option_roms", self.option_roms, str)
        for rom in self.option_roms:
            check_file_path("option_roms[]", rom)
        check_type("fw_cfg dma", self.dma, bool)
        check_type("fw_cfg ports", self.ports, bool)
        check_mmio_base(self.mmio)


class DriveError(ConfigError):
    """A drive that cannot be attached; the message says why."""


@dataclass(frozen=True)
class DriveSpec:
    """One virtio-blk disk (QEMU's -drive file=PATH,if=virtio,format=raw[,readonly=on]
    [,serial=S][,bootindex=N]): the raw image's path, read-only or not, the serial its GET_ID
    answers (None: tinyvmm-diskN), its place in the boot order (None: not booted)."""
    path: str
    read_only: bool = False
    serial: str | None = None
    bootindex: int | None = None

    def __post_init__(self) -> None:
        if self.path is None or check_file_path("drive file", self.path) is None:
            raise TypeError("drive file: expected a path, not None")
        check_type("readonly", self.read_only, bool)
        serial = self.serial
        check_type("serial", serial, str, none=True)
        if serial is not None and (len(serial) > SERIAL_MAX or not serial.isascii()
                                   or not serial.isprintable()):
            raise DriveError(f"serial={serial!r}: at most {SERIAL_MAX} printable ASCII characters")
        check_type("bootindex", self.bootindex, int, none=True)
        if self.bootindex is not None and not 0 <= self.bootindex <= BOOTINDEX_MAX:
            raise DriveError(f"bootindex={self.bootindex}: expected a number from 0 to {BOOTINDEX_MAX}")


PFLASH_UNITS = 2                        # QEMU's pc machine: unit 0 (code) and unit 1 (variables)


@dataclass(frozen=True)
class PflashSpec:
    """One CFI flash unit (QEMU's -drive if=pflash,format=raw,unit=N,file=PATH[,readonly=on]):
    the raw image's path, its unit (0: ends at 4 GiB and holds the reset vector; 1: ends where
    unit 0 begins), read-only or not (the guest's program and erase commands then fail). Its
    own type, not a DriveSpec: a flash unit has no PCI slot, serial or boot index, and the
    consumers of MachineSpec.drives number the virtio disks by their place in it."""
    path: str
    unit: int = 0
    read_only: bool = False

    def __post_init__(self) -> None:
        if self.path is None or check_file_path("pflash file", self.path) is None:
            raise TypeError("pflash file: expected a path, not None")
        check_type("unit", self.unit, int)
        if not -1 <= self.unit < PFLASH_UNITS:       # -1: not given (split_drives numbers it)
            raise DriveError(f"unit={self.unit}: pflash has units 0 and 1 (QEMU's pc machine)")
        check_type("readonly", self.read_only, bool)


def check_pflash(units: tuple[PflashSpec, ...]) -> None:
    """ConfigError for flash units that cannot go together: a unit given twice, unit 1
    without unit 0 (QEMU refuses both)."""
    numbers = [spec.unit for spec in units]
    for number in set(numbers):
        if numbers.count(number) > 1:
            raise DriveError(f"pflash unit={number} is given twice")
    if numbers and 0 not in numbers:
        raise DriveError("pflash unit=1 needs unit=0 (the unit holding the reset vector)")


def split_drives(drives: Iterable[DriveSpec | PflashSpec]) -> tuple[tuple[DriveSpec, ...],
                                                                     tuple[PflashSpec, ...]]:
    """--drive's results as (virtio disks, flash units), in order; a flash unit parsed without
    unit= (unit -1) takes the lowest free unit, as QEMU numbers if=pflash drives."""
    drives = list(drives)
    disks = tuple(spec for spec in drives if isinstance(spec, DriveSpec))
    flash = [spec for spec in drives if isinstance(spec, PflashSpec)]
    taken = {spec.unit for spec in flash if spec.unit >= 0}
    units = []
    for spec in flash:
        if spec.unit < 0:
            free = min(set(range(PFLASH_UNITS + 1)) - taken)
            if free >= PFLASH_UNITS:
                raise DriveError(f"more than {PFLASH_UNITS} pflash drives: pflash has units 0 and 1")
            taken.add(free)
            spec = PflashSpec(spec.path, free, spec.read_only)
        units.append(spec)
    return disks, tuple(units)


@dataclass(frozen=True)
class DebugSpec:
    """The debugging aids of a run: a gdb server (QEMU's -gdb; `gdb_wait` as -S), --stats,
    extra symbol files, --trace (its categories and steps) written to stderr or `trace_file`."""
    gdb: ListenAddress | None = None
    gdb_wait: bool = False
    stats: bool = False
    symbols: tuple[SymbolFile, ...] = ()
    trace: TraceSpec | None = None
    trace_file: str | None = None

    def __post_init__(self) -> None:
        if self.gdb is not None:
            from .debug.gdb.server import ListenAddress
            check_type("gdb", self.gdb, ListenAddress)
        check_type("gdb_wait", self.gdb_wait, bool)
        check_type("stats", self.stats, bool)
        if self.symbols:
            from .debug.symbols import SymbolFile
            check_tuple("symbols", self.symbols, SymbolFile)
        if self.trace is not None:
            from .debug.trace import TraceSpec
            check_type("trace", self.trace, TraceSpec)
        check_file_path("trace_file", self.trace_file)
        if self.gdb_wait and self.gdb is None:
            raise ConfigError("--gdb-wait needs --gdb")
        if self.trace_file is not None and not self.trace:
            raise ConfigError("--trace-file needs --trace")
        if self.trace is not None and self.trace.steps is not None and self.gdb is not None:
            raise ConfigError("--trace steps cannot be used with --gdb: both need the vCPU's "
                              "debug registers")


@dataclass(frozen=True)
class MachineSpec:
    """One x86 guest: i440FX/PIIX chipset, vCPUs, RAM, ACPI, fw_cfg, COM1, the debug console.

    firmware   a path or a shipped image's bare name ("bios.bin"), the image's bytes, or None:
               tinyvmm's own BIOS (or no firmware at all for a direct kernel boot)
    mem        guest RAM in bytes (check_mem's rule)
    smp        the number of vCPUs (QEMU's -smp; check_smp's rule)
    acpi       publish ACPI tables (QEMU's -machine acpi=on|off)
    kernel     a KernelSpec, or None: no Linux, the firmware runs from the reset vector
    fw_cfg     a FwCfgSpec
    drives     DriveSpecs, on PCI slots from layout.VIRTIO_FIRST_SLOT up, in order
    pflash     PflashSpecs: the flash units below 4 GiB, replacing the firmware image (unit 0
               holds the reset vector; check_pflash's rules); not with `firmware`
    serial, debugcon   where COM1 and the debug console (ports 0x402, 0xe9) write: None keeps
               it in memory, "stdio", "none", "file:PATH", or a callable taking bytes
    expect     bytes whose appearance on either console ends a run (Outcome.EXPECTED)
    debug      a DebugSpec
    software_cpu   "on": privileged guest code runs in the software CPU between the instructions
               only KVM executes (tinyvmm.completion.stretches), for a run with one vCPU that
               no debugger or step trace observes; "off" (the default): KVM
               runs all of it; "auto": "on" where KVM emulates guest code (kvm_pvm) and the run
               allows it
    """
    firmware: str | bytes | None = None
    mem: int = 256 * layout.MiB
    smp: int = 1
    acpi: bool = True
    kernel: KernelSpec | None = None
    fw_cfg: FwCfgSpec = FwCfgSpec()
    drives: tuple[DriveSpec, ...] = ()
    pflash: tuple[PflashSpec, ...] = ()
    serial: ConsoleSink = None
    debugcon: ConsoleSink = None
    expect: bytes | None = None
    debug: DebugSpec = DebugSpec()
    software_cpu: str = "off"

    def __post_init__(self) -> None:
        if isinstance(self.firmware, bytes):
            check_firmware_size(len(self.firmware))
        elif self.firmware is not None:
            if not isinstance(self.firmware, str):
                raise TypeError(f"firmware: expected a path (str), the image's bytes or None, "
                                f"not {type(self.firmware).__name__}")
            check_file_path("firmware", self.firmware)
        check_type("mem", self.mem, int)
        check_mem(self.mem, f"mem={self.mem!r}")
        check_type("smp", self.smp, int)
        check_smp(self.smp, f"smp={self.smp!r}")
        check_type("acpi", self.acpi, bool)
        check_type("kernel", self.kernel, KernelSpec, none=True)
        check_type("fw_cfg", self.fw_cfg, FwCfgSpec)
        check_tuple("drives", self.drives, DriveSpec)
        check_tuple("pflash", self.pflash, PflashSpec)
        if any(spec.unit < 0 for spec in self.pflash):
            raise DriveError("pflash: every unit needs its number (split_drives gives them)")
        check_pflash(self.pflash)
        if self.pflash and self.firmware is not None:
            raise ConfigError("pflash replaces the firmware image: give --bios or "
                              "--drive if=pflash, not both (QEMU refuses both too)")
        for name, sink in (("serial", self.serial), ("debugcon", self.debugcon)):
            if isinstance(sink, str):
                check_sink(sink)
            elif not (sink is None or callable(sink)):
                raise TypeError(f"{name}: expected None, 'stdio', 'none', 'file:PATH' or a "
                                f"callable taking bytes, not {type(sink).__name__}")
        check_type("expect", self.expect, bytes, none=True)
        if self.expect is not None:
            check_console_text(self.expect)
        check_type("debug", self.debug, DebugSpec)
        check_software_cpu(self.software_cpu)
        if self.software_cpu == "on":
            held = ("--smp above 1" if self.smp > 1 else "--gdb" if self.debug.gdb is not None else
                    "--trace steps" if self.debug.trace is not None and self.debug.trace.steps else
                    None)
            if held:
                raise ConfigError(f"{SOFTWARE_CPU_ALONE}: not with {held}")
        if self.kernel is not None and self.kernel.boot == "direct" and self.runs_firmware:
            given = ("--option-rom" if self.fw_cfg.option_roms else
                     "--bios" if self.firmware is not None else "--drive if=pflash")
            raise ConfigError(f"--boot direct runs no firmware: drop {given}")

    @property
    def runs_firmware(self) -> bool:
        """A firmware image, a flash unit or an option ROM is named: a kernel is booted
        through it."""
        return self.firmware is not None or bool(self.fw_cfg.option_roms) or bool(self.pflash)

    @classmethod
    def from_api(cls, firmware: bytes | bytearray | memoryview | Path | None = None, *,
                 mem: int = 256 * layout.MiB, smp: int = 1, acpi: bool = True,
                 kernel: Path | None = None, initrd: Path | None = None,
                 append: str | None = None, append_as_is: bool = False, boot: str | None = None,
                 fw_cfg: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
                 option_roms: Iterable[Path] = (), fw_cfg_dma: bool = True,
                 fw_cfg_ports: bool = True, fw_cfg_mmio: int | None = None,
                 drives: Iterable[str] = (), serial: ConsoleSink = None,
                 debugcon: ConsoleSink = None, trace: str | None = None,
                 trace_file: Path | None = None, software_cpu: str = "off") -> MachineSpec:
        """The spec of tinyvmm.Machine's keyword arguments (see there), type-checked (TypeError)
        and checked by the rules the command line applies (ConfigError)."""
        if isinstance(firmware, (bytearray, memoryview)):
            firmware = bytes(firmware)
        elif isinstance(firmware, os.PathLike):
            firmware = check_path("firmware", firmware)
        check_boot(boot)
        if kernel is None and (initrd is not None or boot is not None or append is not None
                               or append_as_is):
            raise ConfigError("initrd, append, append_as_is and boot need a kernel")
        linux = None
        if kernel is not None:
            linux = KernelSpec(check_path("kernel", kernel), check_path("initrd", initrd), append,
                               append_as_is, boot)
        check_type("trace", trace, str, none=True)
        trace_spec = None
        if trace is not None:
            from .debug.trace import parse_spec
            trace_spec = parse_spec(trace)
        disks, flash = split_drives(_drives(drives))
        return cls(
            firmware=firmware, mem=mem, smp=smp, acpi=acpi, kernel=linux,
            fw_cfg=FwCfgSpec(files=_fw_cfg_files(fw_cfg), option_roms=tuple(_rom_paths(option_roms)),
                             dma=fw_cfg_dma, ports=fw_cfg_ports, mmio=fw_cfg_mmio),
            drives=disks, pflash=flash, serial=serial, debugcon=debugcon,
            debug=DebugSpec(trace=trace_spec, trace_file=check_path("trace_file", trace_file)),
            software_cpu=software_cpu)


def _fw_cfg_files(files: object) -> tuple[UserItemSpec, ...]:
    """{name: bytes | str | PathLike} as --fw-cfg items: bytes as they are, str as string=,
    a path as file=."""
    from collections.abc import Mapping

    from .fw_cfg.items import UserItemSpec, check_file_name
    if files is not None and not isinstance(files, Mapping):
        raise TypeError(f"fw_cfg: expected a mapping of name: contents, not {type(files).__name__}")
    specs = []
    for name, value in (files or {}).items():
        check_type("fw_cfg name", name, str)
        check_file_name(name)
        if isinstance(value, (bytes, bytearray, memoryview)):
            specs.append(UserItemSpec(name, data=bytes(value)))
        elif isinstance(value, str):
            if not value:        # as --fw-cfg's string=: a file with no bytes is given as b""
                raise ConfigError(f"fw_cfg[{name!r}]: an empty string; give b'' for an empty file")
            specs.append(UserItemSpec(name, string=value))
        elif isinstance(value, os.PathLike):
            specs.append(UserItemSpec(name, file=check_path(f"fw_cfg[{name!r}]", value)))
        else:
            raise TypeError(f"fw_cfg[{name!r}]: expected bytes, a str or a path, "
                            f"not {type(value).__name__}")
    return tuple(specs)


def _rom_paths(option_roms: object) -> list[str]:
    paths = []
    for rom in check_sequence("option_roms", option_roms):
        path = check_path("option_roms[]", rom)
        if path is None:
            raise TypeError("option_roms[]: expected a path, not None")
        paths.append(path)
    return paths


def _drives(drives: object) -> tuple[DriveSpec | PflashSpec, ...]:
    texts = check_sequence("drives", drives)
    if not texts:
        return ()                   # no virtio modules to import on the way to KVM_RUN
    from .virtio.drive import parse_drive
    specs: list[DriveSpec | PflashSpec] = []
    for text in texts:
        check_type("drives[]", text, str)
        specs.append(parse_drive(text))
    return tuple(specs)
