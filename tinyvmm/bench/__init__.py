"""`tinyvmm bench`: the boot-time table of the 2015 fw_cfg DMA posting, legacy against DMA.

Each run starts a fresh `tinyvmm boot` process and reads back its timeline.
Phases, as the posting defines them:
  VMM startup    bench starts the process -> first KVM_RUN
  BIOS startup   first KVM_RUN -> milestone 5 (the BIOS hands over to the boot ROM)
  kernel setup   milestone 5 -> milestone 3 (the ROM jumps into the kernel), or 4 for
                 the PVH ROM
  total          the sum of the three
and, beside them, the time from process start to the "Linux version" banner (and with
--to-init, to the test init's first line, with the completions it took): the
headline of a direct boot (the 64-bit entry of the bzImage, or the PVH entry of the
vmlinux beside it), whose vCPU starts in the kernel, so that its BIOS startup and
kernel setup are empty and its total is its VMM startup.

With `--firmware`, tinyvmm also boots the posting's own firmware, unmodified: SeaBIOS
with QEMU's linuxboot_dma.bin or linuxboot.bin, and qboot; and OVMF. They write no
milestones; tinyvmm marks the same two moments for them (milestone 5 at the first select
of a kernel item, milestone 3 when the guest reaches the kernel entry; under OVMF, when
the kernel's EFI stub prints its first line).
"""

import compileall
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import layout
from .firmware import (
    EFI_SYSTEMS,
    FIRMWARE,
    FIRMWARE_FILES,
    LINUXBOOT,
    LINUXBOOT_DMA,
    OVMF_CODE,
    QBOOT,
    SEABIOS,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import dataclass
else:
    from ..record import dataclass

PHASES = ("vmm_startup_s", "bios_startup_s", "kernel_setup_s", "total_s", "banner_s", "init_s")
PHASE_LABELS = {"vmm_startup_s": "VMM startup", "bios_startup_s": "BIOS startup",
                "kernel_setup_s": "kernel setup", "total_s": "total", "banner_s": "banner",
                "init_s": "to init"}
DO_BOOT = f"milestone {layout.PORTS['milestone_linux'][0]:#x}:{layout.MILESTONE_DO_BOOT}"
KERNEL_JUMP = f"milestone {layout.PORTS['milestone_linux'][0]:#x}:{layout.MILESTONE_LINUX_START_BOOT}"
PVH_JUMP = f"milestone {layout.PORTS['milestone_linux'][0]:#x}:{layout.MILESTONE_PVH_BOOT}"
# Each system's `tinyvmm boot` arguments.
SYSTEMS = {"tinyvmm-dma": [], "tinyvmm-legacy": ["--no-fw-cfg-dma"], "tinyvmm-direct64": ["--boot", "direct"]}
# The systems that boot the vmlinux (PVH), with `--kernel VMLINUX` in front.
PVH_SYSTEMS = {"tinyvmm-pvh": ["--boot", "direct"], "tinyvmm-pvh-dma": ["--boot", "firmware"],
               "tinyvmm-pvh-legacy": ["--boot", "firmware", "--no-fw-cfg-dma"]}
# The host goes on tearing a VM down (freeing its RAM, destroying KVM's VM) after its
# process has exited; without a pause that work lands in the next run's VMM startup.
SETTLE_S = 0.5
# How a run starts tinyvmm: the console script's own lines, without `site`. -S skips the
# environment's .pth hooks (often tens of milliseconds of VMM startup) and -c the runpy
# machinery -m brings; a boot needs only the standard library, and child_env()'s
# PYTHONPATH finds this tinyvmm.
TINYVMM = [sys.executable, "-S", "-c", "import sys; from tinyvmm.cli import main; sys.exit(main())"]


@dataclass(frozen=True)
class BenchPayload:
    """One payload's rows: `name` ("test", "distro", or the given kernel's file name), its
    bzImage `kernel` (None: the test kernel) and `initrd` (None: the test initramfs with the
    test kernel), the `vmlinux` of its PVH rows (None: no PVH rows), whether it has the direct
    64-bit row, and `to_entry`: its boots end at the kernel's entry whatever the options say
    (a distribution kernel decompresses for minutes under an emulating KVM); `vmlinux_source`:
    the bzImage its vmlinux was extracted from (None: a file of its own)."""
    name: str
    kernel: str | None = None
    initrd: str | None = None
    vmlinux: str | None = None
    direct64: bool = True
    to_entry: bool = False
    vmlinux_source: str | None = None       # the bzImage the vmlinux was extracted from


@dataclass(frozen=True)
class BenchOptions:
    """What `tinyvmm bench` measures: the bzImage rows boot `kernel` (None: the test kernel) with
    `initrd`, `append` (`append_as_is`), `mem` bytes of RAM, `runs` times each, interleaved,
    each boot given `timeout` seconds; the PVH rows boot `vmlinux` (None: no PVH rows); the
    direct 64-bit row only with `direct64`. Each run stops at the kernel's entry (`no_banner`),
    the test init's first line (`to_init`) or else the banner. `vs_qemu` adds QEMU's rows,
    `firmware` ("seabios", "qboot") tinyvmm's with unmodified firmware; `json` and `plot` are
    output paths or None. `load` busy processes run beside every boot; `systems`, when given,
    keeps only those rows (ConfigError naming the others if one is not in the table). `payloads`, when given,
    replace kernel, initrd, vmlinux and direct64: each has its own rows and table, all boots
    interleaved."""
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    append_as_is: bool = False
    runs: int = 5
    mem: int = 256 * layout.MiB
    timeout: float = 300
    no_banner: bool = False
    to_init: bool = False
    vs_qemu: bool = False
    firmware: tuple[str, ...] = ()
    vmlinux: str | None = None
    direct64: bool = True
    json: str | None = None
    plot: str | None = None
    payloads: tuple[BenchPayload, ...] = ()
    load: int = 0
    systems: tuple[str, ...] = ()


class BenchError(RuntimeError):
    """A run that did not produce a complete timeline."""


def parse_names(text: str, known, what: str) -> list[str]:
    """A comma-separated list of names, each one of `known`; ValueError naming `what` otherwise."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if not names or unknown:
        raise ValueError(f"{text!r}: the {what} must be {' or '.join(known)} "
                         "(comma-separated or repeated)")
    return names


def parse_firmware(text: str) -> list[str]:
    """`--firmware seabios,qboot`: the names, each one known."""
    return parse_names(text, FIRMWARE, "firmware")


def firmware_systems(names, efi_kernel: "tuple[str, str] | None" = None) -> dict:
    """The systems `--firmware` adds, in table order: name -> `tinyvmm boot` arguments; those
    that start the kernel through its EFI stub boot `efi_kernel` (kernel, initrd) if given."""
    efi = ["--kernel", efi_kernel[0], "--initrd", efi_kernel[1]] if efi_kernel else []
    return {system: (efi if system in EFI_SYSTEMS else []) + argv
            for name in FIRMWARE if name in names for system, argv in FIRMWARE[name].items()}


def efi_kernel(options: BenchOptions) -> tuple[str, str] | None:
    """(kernel, initrd) of the rows through UEFI firmware when they are not the payload's own:
    for the test payload, the pc kernel and its initramfs (kernels/pc.config has the EFI stub
    the test kernel lacks); None when a kernel was given."""
    if options.kernel is not None:
        return None
    from ..boot.payload import DEFAULT_KERNEL_DIR
    pc = os.path.join(DEFAULT_KERNEL_DIR, "pc")
    return os.path.join(pc, "bzImage"), os.path.join(pc, "initramfs.cpio")


def firmware_missing(names) -> str | None:
    """Why these firmware cannot run (files not installed), or None."""
    missing = [f"--firmware {name}: {path} not found (Debian package {package})"
               for name in FIRMWARE if name in names
               for path, package in FIRMWARE_FILES[name].items() if not os.path.isfile(path)]
    return "; ".join(missing) or None


def pvh_systems(vmlinux: str | None, initrd: str | None) -> dict:
    """The PVH systems booting `vmlinux` (none without one) with the bzImage rows' initrd:
    name -> `tinyvmm boot` arguments."""
    if vmlinux is None:
        return {}
    files = ["--kernel", vmlinux] + (["--initrd", initrd] if initrd else [])
    return {name: files + argv for name, argv in PVH_SYSTEMS.items()}


def bench_initrd(options: BenchOptions) -> str | None:
    """The initrd every row boots: options.initrd, else the default one with the default kernel."""
    from ..boot.payload import DEFAULT_INITRD
    if options.initrd or options.kernel is not None:
        return options.initrd
    return DEFAULT_INITRD if os.path.exists(DEFAULT_INITRD) else None


def default_vmlinux(options: BenchOptions) -> str | None:
    """options.vmlinux, else the vmlinux beside the default kernel when no kernel is given."""
    from ..boot.payload import DEFAULT_VMLINUX
    if options.vmlinux is not None:
        return options.vmlinux
    return DEFAULT_VMLINUX if options.kernel is None and os.path.isfile(DEFAULT_VMLINUX) else None


def boot_command(options: BenchOptions, boot_args: list[str], timing: Path, serial: Path) -> list[str]:
    """The `tinyvmm boot` command line of one run; a system's own --kernel wins over the options'."""
    command = TINYVMM + ["boot", "--serial", f"file:{serial}", "--timing-json", str(timing),
                         "--mem", str(options.mem // layout.MiB), "--timeout", str(options.timeout)]
    # --stop-at, not --expect: the firmware then sees no debug console, in every row alike
    command += ["--stop-at", "init" if options.to_init else "kernel" if options.no_banner else "banner"]
    command += boot_args
    if options.append_as_is:
        command.append("--append-as-is")
    for option in ("kernel", "initrd", "append"):
        value = getattr(options, option)
        if value is not None and f"--{option}" not in boot_args:
            command += [f"--{option}", value]
    return command


def tinyvmm_run(options: BenchOptions, system: str, boot_args: list[str], workdir: Path,
                index: int) -> dict:
    """One `tinyvmm boot` of `system` in a fresh process, with its extra `boot_args`;
    its phases in seconds and counters per phase."""
    timing = workdir / f"timing-{index}-{system}.json"
    serial = workdir / f"serial-{index}-{system}.txt"
    command = boot_command(options, boot_args, timing, serial)
    start_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    proc = subprocess.run(command, capture_output=True, text=True, env=child_env())
    if proc.returncode != 0 or not timing.exists():
        raise BenchError(f"tinyvmm boot ({system}) ended with status "
                         f"{proc.returncode}:\n{proc.stderr.strip()}")
    return phases_from_timeline(json.loads(timing.read_text()), start_ns, direct=is_direct(boot_args))


def is_direct(boot_args: list[str]) -> bool:
    return "--boot" in boot_args and boot_args[boot_args.index("--boot") + 1] == "direct"


def child_env(environ=None) -> dict:
    """The environment of a `tinyvmm boot` child started with -S: PYTHONPATH leads to this package."""
    env = dict(os.environ if environ is None else environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [package_parent] + report_libraries() + [env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    return env


def report_libraries() -> list[str]:
    """Where capstone, pyelftools and unicorn are installed: without site-packages (-S) a
    crash report inside the bench would lose its disassembly and symbols, and an OVMF row
    its software CPU. Only those folders, not site's start-up hooks, so the fast start stays."""
    import importlib.util
    folders = []
    for name in ("capstone", "elftools", "unicorn"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.append(os.path.dirname(list(spec.submodule_search_locations)[0]))
    return folders


def phases_from_timeline(timeline: dict, start_ns: int, direct: bool = False) -> dict:
    """The phases of one run from its timeline; a `direct` boot has only VMM startup."""
    marks: dict[str, dict] = {}
    for mark in timeline["marks"]:
        marks.setdefault(mark["event"], mark)
    first = {"time_ns": timeline["start_ns"], "exits": 0, "pio_bytes": 0, "dma_bytes": 0}
    banner = (marks["banner"]["time_ns"] - start_ns) / 1e9 if "banner" in marks else None
    vmm_startup = (first["time_ns"] - start_ns) / 1e9
    to_init = {}
    if "init" in marks:
        init = marks["init"]
        to_init = {"init_s": (init["time_ns"] - start_ns) / 1e9,
                   "init": {"completions": init.get("completions", 0),
                            "completion_s": init.get("completion_ns", 0) / 1e9}}
    if direct:
        return {"vmm_startup_s": vmm_startup, "total_s": vmm_startup, "banner_s": banner, **to_init}
    jump = marks.get(KERNEL_JUMP) or marks.get(PVH_JUMP)
    for needed, mark in ((DO_BOOT, marks.get(DO_BOOT)), (f"{KERNEL_JUMP} or {PVH_JUMP}", jump)):
        if mark is None:
            raise BenchError(f"the boot never reached {needed}; outcome {timeline['outcome']}")
    do_boot = marks[DO_BOOT]
    assert jump is not None

    def seconds(a, b):
        return (b["time_ns"] - a["time_ns"]) / 1e9

    def counters(a, b):
        return {key: b[key] - a[key] for key in ("exits", "pio_bytes", "dma_bytes")}

    check_payload_moved(timeline, do_boot, jump)
    result = {
        "vmm_startup_s": vmm_startup,
        "bios_startup_s": seconds(first, do_boot),
        "kernel_setup_s": seconds(do_boot, jump),
        "banner_s": banner,
        "bios": counters(first, do_boot),
        "setup": counters(do_boot, jump),
        **to_init,
    }
    result["total_s"] = result["vmm_startup_s"] + result["bios_startup_s"] + result["kernel_setup_s"]
    return result


def check_payload_moved(timeline: dict, do_boot: dict, jump: dict) -> None:
    """A boot through firmware is timed only when it loaded the whole payload: every byte of
    the kernel, initrd and command line moved between do_boot and the kernel's entry
    (by ports or DMA), and no fw_cfg DMA transfer failed. BenchError otherwise."""
    payload = timeline.get("payload_bytes", 0)
    moved = jump["pio_bytes"] - do_boot["pio_bytes"] + jump["dma_bytes"] - do_boot["dma_bytes"]
    if moved < payload:
        raise BenchError(f"not a valid boot: the firmware moved {moved} bytes of the payload's "
                         f"{payload} before entering the kernel")
    if jump.get("dma_errors", 0):
        raise BenchError(f"not a valid boot: {jump['dma_errors']} fw_cfg DMA transfers failed "
                         "before the kernel's entry")


def range_key(phase: str, bound: str) -> str:
    """"bios_startup_s", "min" -> "bios_startup_min_s"."""
    return f"{phase.removesuffix('_s')}_{bound}_s"


def summarize(runs: list[dict]) -> dict:
    """Per system, the medians and ranges of the valid runs' phases and counters, and how many
    runs were invalid ("invalid": a count; those runs are in no median and no ratio)."""
    summary = {}
    for system in dict.fromkeys(run["system"] for run in runs):
        invalid = sum(1 for run in runs if run["system"] == system and "invalid" in run)
        mine = [run for run in runs if run["system"] == system and "invalid" not in run]
        entry: dict = {"invalid": invalid} if invalid else {}
        for phase in PHASES:
            values = [run[phase] for run in mine if run.get(phase) is not None]
            if values:
                entry[phase] = statistics.median(values)
                entry[range_key(phase, "min")] = min(values)
                entry[range_key(phase, "max")] = max(values)
        for part in ("bios", "setup", "init"):
            if mine and all(part in run for run in mine):
                # Counters stay whole numbers: the lower median, not a mean of two.
                entry[part] = {key: statistics.median_low(run[part][key] for run in mine)
                               for key in mine[0][part]}
        summary[system] = entry
    return summary


def _cell(entry: dict, phase: str) -> str:
    """Median (min-max), in milliseconds where the figures are below 0.1 s, so that the
    ratios printed beneath can be checked from the table."""
    if phase not in entry:
        return "-"
    median, low, high = entry[phase], entry[range_key(phase, "min")], entry[range_key(phase, "max")]
    if high < 0.1:
        return f"{median * 1e3:.1f} ms ({low * 1e3:.1f}-{high * 1e3:.1f})"
    return f"{median:.3f} s ({low:.3f}-{high:.3f})"


def _duration(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_table(summary: dict, runs: int, memcpy: dict | None = None, load: int = 0) -> str:
    """The table of one payload's systems and its notes; `memcpy` maps a DMA system to the
    seconds one memmove of the bytes its kernel setup moved takes on this host, the floor it
    is set against; `load` the busy processes that ran beside the boots."""
    systems = list(summary)
    header = ["phase (median, min-max)"] + systems
    shown = [p for p in PHASES if p not in ("banner_s", "init_s") or any(p in summary[s] for s in systems)]
    rows = [[PHASE_LABELS[p]] + [_cell(summary[s], p) for s in systems] for p in shown]
    for part, label in (("bios", "BIOS startup"), ("setup", "kernel setup")):
        for key, what in (("exits", "exits"), ("pio_bytes", "port I/O bytes"), ("dma_bytes", "DMA bytes")):
            row = [f"{label}: {what}"]
            for s in systems:
                value = summary[s].get(part, {}).get(key)
                row.append("-" if value is None else (f"{value:.0f}" if key == "exits" else _size(value)))
            rows.append(row)
    if any(summary[s].get("invalid") for s in systems):
        rows.append(["invalid runs (not timed)"] + [str(summary[s].get("invalid", 0)) for s in systems])
    if "init_s" in shown:
        rows.append(["to init: completions"] + [
            f"{summary[s]['init']['completions']:.0f}" if "init" in summary[s] else "-" for s in systems])
        rows.append(["to init: completion time"] + [
            f"{summary[s]['init']['completion_s']:.3f} s "
            f"({100 * summary[s]['init']['completion_s'] / summary[s]['init_s']:.1f} %)"
            if "init" in summary[s] else "-" for s in systems])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    busy = f"{load} busy process{'es' if load > 1 else ''}"
    notes = [f"{runs} run(s) per system, interleaved" + (f", {busy} beside them." if load else ".")]
    dma, legacy = summary.get("tinyvmm-dma", {}), summary.get("tinyvmm-legacy", {})
    if dma.get("kernel_setup_s") and legacy.get("kernel_setup_s"):
        notes.append(f"kernel setup: DMA is {legacy['kernel_setup_s'] / dma['kernel_setup_s']:.0f}x "
                     f"faster than legacy; total: {legacy['total_s'] / dma['total_s']:.1f}x.")
    for system, seconds in (memcpy or {}).items():
        entry = summary[system]
        spread = entry[range_key("kernel_setup_s", "max")] / entry[range_key("kernel_setup_s", "min")]
        notes.append(f"{system}: kernel setup {_duration(entry['kernel_setup_s'])} (max / min over "
                     f"the runs {spread:.2f}) against {_duration(seconds)} for one memcpy here of "
                     f"the {_size(entry['setup']['dma_bytes'])} it moved: "
                     f"{entry['kernel_setup_s'] / seconds:.1f}x.")
    notes += comparisons(summary) + firmware_notes(summary)
    return "\n".join(lines + [""] + notes) + "\n"


def comparisons(summary: dict) -> list[str]:
    """The issue's ratios, where both sides were measured."""
    def ratio(a, b, phase):
        x, y = summary.get(a, {}).get(phase), summary.get(b, {}).get(phase)
        return None if not x or not y else x / y
    lines = []
    for text, a, b, phase in (
            ("tinyvmm DMA total / QEMU+SeaBIOS DMA total", "tinyvmm-dma", "qemu-seabios-dma", "total_s"),
            ("tinyvmm DMA total / QEMU+qboot total", "tinyvmm-dma", "qemu-qboot", "total_s"),
            ("tinyvmm BIOS startup / qboot's", "tinyvmm-dma", "qemu-qboot", "bios_startup_s"),
            ("tinyvmm VMM startup / QEMU's", "tinyvmm-dma", "qemu-seabios-dma", "vmm_startup_s"),
            ("QEMU+SeaBIOS kernel setup, legacy / DMA", "qemu-seabios-legacy", "qemu-seabios-dma",
             "kernel_setup_s"),
            ("tinyvmm+SeaBIOS BIOS startup / QEMU+SeaBIOS", "tinyvmm-seabios-dma", "qemu-seabios-dma",
             "bios_startup_s"),
            ("tinyvmm+SeaBIOS DMA total / QEMU+SeaBIOS DMA total", "tinyvmm-seabios-dma",
             "qemu-seabios-dma", "total_s"),
            ("tinyvmm+qboot total / QEMU+qboot total", "tinyvmm-qboot", "qemu-qboot", "total_s"),
            ("tinyvmm+SeaBIOS kernel setup, legacy / DMA", "tinyvmm-seabios-legacy",
             "tinyvmm-seabios-dma", "kernel_setup_s"),
            ("tinyvmm DMA ROM kernel setup / QEMU's linuxboot_dma.bin on tinyvmm+SeaBIOS",
             "tinyvmm-dma", "tinyvmm-seabios-dma", "kernel_setup_s"),
            ("tinyvmm direct PVH banner / QEMU+qboot+vmlinux banner", "tinyvmm-pvh",
             "qemu-qboot-pvh", "banner_s"),
            ("tinyvmm direct PVH banner / tinyvmm bzImage (DMA) banner", "tinyvmm-pvh",
             "tinyvmm-dma", "banner_s"),
            ("tinyvmm direct 64-bit banner / tinyvmm bzImage (DMA) banner", "tinyvmm-direct64",
             "tinyvmm-dma", "banner_s"),
            ("tinyvmm PVH ROM kernel setup, legacy / DMA", "tinyvmm-pvh-legacy", "tinyvmm-pvh-dma",
             "kernel_setup_s"),
            ("tinyvmm+OVMF kernel setup, legacy / DMA", "tinyvmm-ovmf-legacy", "tinyvmm-ovmf-dma",
             "kernel_setup_s"),
            ("QEMU+OVMF kernel setup, legacy / DMA", "qemu-ovmf-legacy", "qemu-ovmf-dma",
             "kernel_setup_s"),
            ("tinyvmm+OVMF DMA total / QEMU+OVMF DMA total", "tinyvmm-ovmf-dma", "qemu-ovmf-dma",
             "total_s"),
            ("tinyvmm direct PVH VMM startup / bzImage through firmware (DMA) VMM startup", "tinyvmm-pvh",
             "tinyvmm-dma", "vmm_startup_s")):
        value = ratio(a, b, phase)
        if value is not None:
            lines.append(f"{text}: {value:.2f}")
    return lines


def firmware_notes(summary: dict) -> list[str]:
    """Which firmware files the SeaBIOS and qboot columns ran."""
    notes = []
    if any("seabios" in system for system in summary):
        notes.append(f"SeaBIOS columns: {SEABIOS}, which boots the kernel through "
                     f"{LINUXBOOT_DMA} (DMA) or {LINUXBOOT} (legacy).")
    if any("qboot" in system for system in summary):
        notes.append(f"qboot columns: {QBOOT}.")
    if any(system in EFI_SYSTEMS for system in summary):
        notes.append(f"OVMF columns: {OVMF_CODE} as a ROM image; BIOS startup ends at its first "
                     "select of a kernel item, kernel setup at the EFI stub's first line (the "
                     "kernel's entry, at an address OVMF chose); the test payload's OVMF columns "
                     "boot the pc kernel (kernels/build/pc), whose EFI stub the test kernel lacks.")
        from ..kvm.system import is_emulating_host
        if is_emulating_host() and any(system.startswith("qemu-") for system in summary):
            notes.append("QEMU + OVMF: not run: under this host's KVM QEMU stops at OVMF's first "
                         "x87 instruction, which tinyvmm completes.")
    return notes


def qemu_runs_ovmf(options: BenchOptions) -> bool:
    """Whether the QEMU + OVMF rows run: with --firmware ovmf, where KVM executes OVMF
    (not where it emulates guest code: firmware_notes says so instead)."""
    from ..kvm.system import is_emulating_host
    return "ovmf" in options.firmware and not is_emulating_host()


def qemu_runner(options: BenchOptions, vmlinux: str | None = None):
    """A function running one QEMU boot of `system`, or None with the reason on stderr.
    Its PVH systems boot `vmlinux`, the others the bzImage."""
    from ..boot.payload import DEFAULT_KERNEL, kernel_cmdline
    from . import qemu as bench_qemu
    missing = bench_qemu.qemu_missing()
    if missing:
        print(f"tinyvmm: no QEMU columns: {missing}", file=sys.stderr)
        return None
    kernel = options.kernel or DEFAULT_KERNEL
    initrd = bench_initrd(options)
    efi_files = efi_kernel(options) or (kernel, initrd)

    def run(system, workdir, index):
        dma = system not in bench_qemu.LEGACY_SYSTEMS
        cmdline = kernel_cmdline(options.append, dma, options.append_as_is)
        image = vmlinux if system in bench_qemu.PVH_SYSTEMS else kernel
        assert image is not None        # PVH systems are asked for only with a vmlinux
        files = efi_files if system in bench_qemu.OVMF_SYSTEMS else (image, initrd)
        try:
            return bench_qemu.qemu_run(system, options, cmdline, *files, workdir, index)
        except RuntimeError as exc:
            raise BenchError(f"{system}: {exc}") from None
    return run


class busy_load:
    """`count` processes spinning on the CPU while the block runs: the synthetic host load of
    `bench --load` (each one a Python loop, stopped and reaped at the end)."""

    def __init__(self, count: int):
        self.count = count
        self.processes: list[subprocess.Popen] = []

    SPIN = "import os; os.write(1, b'.'); os.close(1)\nwhile True: pass"

    def __enter__(self):
        try:
            for _ in range(self.count):
                self.processes.append(subprocess.Popen([sys.executable, "-S", "-c", self.SPIN],
                                                       stdout=subprocess.PIPE))
            for process in self.processes:       # each one spinning before the first boot
                assert process.stdout is not None
                process.stdout.read(1)
                process.stdout.close()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_):
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()


class Interrupted(Exception):
    """SIGTERM during the bench: unwinds like Ctrl-C, so the running child is killed."""


def check_outputs(options: BenchOptions) -> None:
    """Raise ValueError now, before any boot, for a --json or --plot the end could not write."""
    from ..files import check_output_path
    for option, path in (("--json", options.json), ("--plot", options.plot)):
        if path is not None:
            check_output_path(option, path)
    if options.plot is not None:
        from .plot import check_plot_path
        check_plot_path(options.plot)


def described(path: str | None) -> dict | None:
    """{"path": absolute path, "bytes": size, or None if it cannot be read now}, None for None."""
    if path is None:
        return None
    try:
        size: int | None = os.path.getsize(path)
    except OSError:
        size = None
    return {"path": os.path.abspath(path), "bytes": size}


def metadata(options: BenchOptions) -> dict:
    """What a reader of the JSON needs to know where the figures come from (each payload's
    files are beside its own runs)."""
    import datetime
    import platform
    from importlib import metadata as package_metadata

    from ..boot.payload import kernel_cmdline
    from ..kvm.system import is_emulating_host
    try:
        version = package_metadata.version("tinyvmm")
    except package_metadata.PackageNotFoundError:
        version = None
    qemu = None
    if options.vs_qemu:
        try:
            qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                                  text=True, timeout=30).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            qemu = None
    return {"tinyvmm": version, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "runs": options.runs,
            "cmdline_dma": kernel_cmdline(options.append, True, options.append_as_is),
            "cmdline_legacy": kernel_cmdline(options.append, False, options.append_as_is),
            "mem_bytes": options.mem, "no_banner": options.no_banner, "load": options.load,
            "host_kernel": platform.release(),
            "kvm": "kvm_pvm (emulates guest code)" if is_emulating_host() else "kvm",
            "qemu": qemu, "firmware": list(options.firmware)}


def payload_files(options: BenchOptions, payload: BenchPayload | None = None) -> dict:
    """The files one payload's rows boot (options as payload_options made them)."""
    from ..boot.payload import DEFAULT_KERNEL
    files = {"kernel": described(options.kernel or DEFAULT_KERNEL),
             "initrd": described(bench_initrd(options)), "vmlinux": described(options.vmlinux)}
    if payload is not None and payload.vmlinux_source and files["vmlinux"]:
        files["vmlinux"]["extracted_from"] = payload.vmlinux_source
    return files


def goal(options: BenchOptions) -> str:
    """Where one payload's boots end, as its options say."""
    return ("the test init's first line" if options.to_init else
            "the kernel's entry" if options.no_banner else "the \"Linux version\" banner")


def payload_heading(name: str, files: dict, ends_at: str) -> str:
    """"payload distro: vmlinuz-... (7.9 MiB) + initrd.img-... (29.2 MiB) in /boot; PVH rows:
    ...; each boot to the kernel's entry", from payload_files() and goal()."""

    def named(key):
        return f"{os.path.basename(files[key]['path'])} ({_size(files[key]['bytes'] or 0)})"
    parts = [named(key) for key in ("kernel", "initrd") if files[key]]
    where = os.path.dirname(files["kernel"]["path"]) if files["kernel"] else ""
    pvh = ""
    if files["vmlinux"]:
        source = files["vmlinux"].get("extracted_from")
        pvh = (f"; PVH rows: its vmlinux ({_size(files['vmlinux']['bytes'] or 0)}, extracted from "
               f"{os.path.basename(source)})" if source else f"; PVH rows: {named('vmlinux')}")
    return f"payload {name}: {' + '.join(parts)} in {where}{pvh}; each boot to {ends_at}"


def payload_options(options: BenchOptions, payload: BenchPayload) -> BenchOptions:
    """The options of one payload's rows."""
    from ..spec import replace
    return replace(options, kernel=payload.kernel, initrd=payload.initrd, vmlinux=payload.vmlinux,
                   direct64=payload.direct64, payloads=(),
                   no_banner=options.no_banner or payload.to_entry,
                   to_init=options.to_init and not payload.to_entry)


def memcpy_reference(size: int, repeat: int = 7) -> float:
    """Seconds one memmove of `size` bytes takes on this host, source and destination resident
    (median of `repeat`): the floor of a DMA kernel setup moving that payload."""
    import ctypes
    import mmap

    from ..memory import buffer_address
    source, dest = mmap.mmap(-1, size), mmap.mmap(-1, size)
    try:
        source[:] = os.urandom(4096) * (size // 4096) + bytes(size % 4096)
        dest[:] = bytes(size)           # both resident before the first copy
        src, dst = buffer_address(memoryview(source)), buffer_address(memoryview(dest))
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            ctypes.memmove(dst, src, size)
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        source.close()
        dest.close()


def cmd_bench(options: BenchOptions) -> int:
    """Boot every system options.runs times, interleaved, each in a fresh process; print the
    table (and write --json, --plot). The exit status: 0, 1 when a boot failed or a result
    could not be written, 130 when interrupted."""
    # Byte-compile the package first, so VMM startup measures a warm install rather than
    # Python compiling tinyvmm's sources (PYTHONDONTWRITEBYTECODE would otherwise force that).
    compileall.compile_dir(str(Path(__file__).parent.parent), quiet=1)
    workdir = Path(tempfile.mkdtemp(prefix="tinyvmm-bench-"))

    def on_signal(*_):
        raise Interrupted()
    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        plan = bench_plan(options)
        with busy_load(options.load):
            return _bench(options, plan, workdir)
    except (KeyboardInterrupt, Interrupted):
        print("\ntinyvmm: bench interrupted", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        shutil.rmtree(workdir, ignore_errors=True)


def _tinyvmm_system(options: BenchOptions, system: str, boot_args: list[str], workdir: Path,
                    index: int) -> dict:
    return tinyvmm_run(options, system, boot_args, workdir, index)     # looked up at each call


def payload_systems(options: BenchOptions) -> dict:
    """One payload's systems in table order: name -> run(workdir, index), the phases of one boot."""
    boots = {name: argv for name, argv in SYSTEMS.items()
             if name != "tinyvmm-direct64" or options.direct64}
    boots.update(pvh_systems(options.vmlinux, bench_initrd(options)))
    boots.update(firmware_systems(options.firmware, efi_kernel(options)))
    systems: dict[str, Callable[[Path, int], dict]] = {
        name: functools.partial(_tinyvmm_system, options, name, argv) for name, argv in boots.items()}
    if options.vs_qemu:
        from .qemu import OVMF_SYSTEMS as QEMU_OVMF_SYSTEMS
        from .qemu import PVH_SYSTEMS as QEMU_PVH_SYSTEMS
        from .qemu import SYSTEMS as QEMU_SYSTEMS
        run_qemu = qemu_runner(options, options.vmlinux)
        if run_qemu:
            systems.update({name: functools.partial(run_qemu, name) for name in QEMU_SYSTEMS
                            if (options.vmlinux or name not in QEMU_PVH_SYSTEMS)
                            and (name not in QEMU_OVMF_SYSTEMS or qemu_runs_ovmf(options))})
    return systems


def bench_plan(options: BenchOptions) -> tuple[dict, dict, dict]:
    """What the bench boots: ({payload name: BenchPayload}, {payload name: its options},
    {(payload name, system): run(workdir, index)}) in table order. ConfigError for a --systems
    name that is in no table, before anything runs."""
    payloads = {payload.name: payload for payload in options.payloads or (BenchPayload(
        "test" if options.kernel is None else os.path.basename(options.kernel), options.kernel,
        options.initrd, options.vmlinux, options.direct64),)}
    per_payload = {name: payload_options(options, payload) for name, payload in payloads.items()}
    # (payload, system) -> run(workdir, index); every boot of every payload interleaved
    systems = {(name, system): run for name, payload in per_payload.items()
               for system, run in payload_systems(payload).items()}
    if options.systems:
        known = list(dict.fromkeys(system for _, system in systems))
        unknown = [system for system in options.systems if system not in known]
        if unknown:
            from ..errors import ConfigError
            raise ConfigError(f"--systems {','.join(unknown)}: not in this table, whose systems "
                              f"are {', '.join(known)}")
        systems = {key: run for key, run in systems.items() if key[1] in options.systems}
    return payloads, per_payload, systems


def _bench(options: BenchOptions, plan: tuple[dict, dict, dict], workdir: Path) -> int:
    payloads, per_payload, systems = plan
    several = len(per_payload) > 1
    runs: list[dict] = []
    total = options.runs * len(systems)
    goals = {name: goal(opts) for name, opts in per_payload.items()}
    until = (f"each run until {next(iter(goals.values()))}" if len(set(goals.values())) == 1 else
             "; ".join(f"the {name} rows run until {where}" for name, where in goals.items()))
    print(f"tinyvmm: {total} boots, {until}; a boot that ends otherwise, did not load its whole "
          "payload or had a fw_cfg DMA error is invalid and not timed", file=sys.stderr)
    done = 0
    for index in range(options.runs):
        for (name, system), run_one in systems.items():
            done += 1
            label = f"{system} ({name})" if several else system
            print(f"[{done}/{total}] {label} run {index + 1} ...", file=sys.stderr, end="", flush=True)
            if done > 1:
                time.sleep(SETTLE_S)
            started = time.monotonic()
            try:
                run = run_one(workdir, index)
            except BenchError as exc:
                why = str(exc).splitlines()[0]      # the whole of it (a crash report) in the JSON
                print(f" invalid, not timed: {why}", file=sys.stderr, flush=True)
                runs.append({"payload": name, "system": system, "run": index, "invalid": str(exc)})
                continue
            run.update(payload=name, system=system, run=index)
            runs.append(run)
            reached = f", to init {run['init_s']:.1f} s" if run.get("init_s") is not None else ""
            print(f" total {run['total_s']:.3f} s{reached} (the boot took "
                  f"{time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
    results: dict[str, dict] = {}
    summaries: dict[str, dict] = {}
    reference = functools.cache(memcpy_reference)       # one figure per size, for every row
    for name, payload_opts in per_payload.items():
        mine = [run for run in runs if run["payload"] == name]
        summaries[name] = summary = summarize(mine)
        files = payload_files(payload_opts, payloads[name])
        # (not under OVMF, whose kernel setup holds the rest of its boot, not only the copy)
        memcpy = {system: reference(entry["setup"]["dma_bytes"]) for system, entry in summary.items()
                  if entry.get("setup", {}).get("dma_bytes") and entry.get("kernel_setup_s")
                  and system not in EFI_SYSTEMS}
        results[name] = {"files": files, "ends_at": goals[name], "memcpy_s": memcpy,
                         "summary": summary}
        sys.stdout.write(("\n" if name != next(iter(per_payload)) else "")
                         + payload_heading(name, files, goals[name]) + "\n\n")
        sys.stdout.write(format_table(summary, options.runs, memcpy, options.load))
    try:
        if options.json:
            with open(options.json, "w") as f:
                json.dump({"metadata": metadata(options), "payloads": results, "runs": runs}, f,
                          indent=1)
        if options.plot:
            from .plot import plot_phases
            plot_phases({(f"{system} ({name})" if several else system): entry
                         for name, summary in summaries.items()
                         for system, entry in summary.items()}, options.plot,
                        f"Boot phases, payload {' and '.join(summaries)} (median of the runs)")
            print(f"plot written to {options.plot}", file=sys.stderr)
    except OSError as exc:
        print(f"tinyvmm: cannot write {exc.filename or 'the results'}: {exc.strerror}",
              file=sys.stderr)
        return 1
    invalid = [run for run in runs if "invalid" in run]
    if invalid:
        print(f"tinyvmm: {len(invalid)} of {len(runs)} boots were invalid and are in no figure: "
              f"{invalid[0]['system']} run {invalid[0]['run'] + 1}: "
              f"{invalid[0]['invalid'].splitlines()[0]}",
              file=sys.stderr)
        return 1
    return 0
