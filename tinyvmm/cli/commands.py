"""The commands: each one's parser (run, boot, bench, fw-cfg list) and what it does."""

import argparse
import os
import sys

from ..errors import ConfigError
from .arguments import (
    add_boot_options,
    add_drive_options,
    add_fw_cfg_options,
    add_hardware_options,
    add_machine_options,
    add_mem_option,
    machine_spec,
    parse_load,
    parse_runs,
    parse_timeout,
)
from .launch import RunOptions, launch
from .status import EXIT_OK, STATUS_HELP, OutputError


def _command(commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help, description=description, epilog=STATUS_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_run(commands) -> None:
    run = _command(commands, "run",
                   "run a raw firmware image from the reset vector (like QEMU's -bios)",
                   "Run a raw firmware image from the reset vector, as QEMU's -bios does: the image "
                   "(a multiple of 64 KiB, up to 16 MiB) is mapped read-only ending at 4 GiB, and "
                   "its last 64 or 128 KiB also ending at 1 MiB, behind the i440FX's PAM shadow "
                   "RAM (SeaBIOS, qboot and tinyvmm's own BIOS run unmodified). Or from flash, "
                   "as QEMU's -drive if=pflash: --drive if=pflash,format=raw,unit=0,file=CODE.fd "
                   "in place of --bios, unit=1 for a variable store.")
    run.add_argument("--bios", metavar="FILE",
                     help="the firmware image; a bare name that is no file here names a shipped "
                          "one (bios.bin, as QEMU's -bios looks in its data folder); required "
                          "unless a --drive if=pflash unit 0 holds the firmware")
    add_machine_options(run)
    add_fw_cfg_options(run)
    run.set_defaults(func=cmd_run)


def _add_boot(commands) -> None:
    boot = _command(commands, "boot",
                    "boot a Linux bzImage or vmlinux, through firmware or directly",
                    "Boot a Linux bzImage as QEMU's -kernel does: tinyvmm's BIOS finds the "
                    "linuxboot option ROM in fw_cfg, and the ROM loads setup, kernel, initrd and "
                    "command line through fw_cfg (DMA by default, `rep insb` with "
                    "--no-fw-cfg-dma) and jumps to the kernel's real-mode entry. An ELF vmlinux "
                    "built with CONFIG_PVH boots directly through its PVH entry (as Firecracker "
                    "does), or with --boot firmware through the PVH option ROM. Without "
                    "--kernel, boots the test kernel and initramfs built by `make -C kernels`.")
    add_boot_options(boot)
    boot.add_argument("--bios", metavar="FILE",
                      help="firmware to run instead of the built-in BIOS (it must find the "
                           "boot ROM in fw_cfg genroms/, as SeaBIOS does, or load the kernel "
                           "from fw_cfg itself, as qboot does)")
    boot.add_argument("--timing-json", metavar="PATH",
                      help="write the boot timeline (milestones, banner; exits and bytes moved "
                           "at each) as JSON, for tinyvmm bench")
    stop_at = boot.add_mutually_exclusive_group()
    stop_at.add_argument("--stop-at", choices=("kernel", "banner", "init"),
                         help="end the run (status 0) when the firmware starts the kernel (the boot "
                              "ROM jumps to its entry; under UEFI firmware, its EFI stub prints "
                              "its first line), when "
                              "the kernel prints its \"Linux version\" banner on COM1, or at the "
                              "test init's first line (TINYVMM-INIT-OK); a machine that resets or "
                              "powers off before it ends with status 6, as with --expect; unlike "
                              "--expect, it adds no debug console the firmware would write to")
    stop_at.add_argument("--stop-at-kernel", dest="stop_at", action="store_const", const="kernel",
                         help="the same as --stop-at kernel")
    add_machine_options(boot)
    add_fw_cfg_options(boot)
    boot.set_defaults(func=cmd_boot)


def _add_bench(commands) -> None:
    def firmware(text):
        from ..bench import parse_firmware
        try:
            return parse_firmware(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def payload(text):
        from ..bench.payloads import parse_payloads
        try:
            return parse_payloads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    bench = _command(commands, "bench", "the boot-time table: legacy against DMA fw_cfg (and QEMU)",
                     "Boot the kernel N times with the DMA ROM and N times with the legacy ROM, "
                     "interleaved, each in a fresh process, and print the phases of the 2015 "
                     "fw_cfg DMA posting: VMM startup (process start to first KVM_RUN), BIOS "
                     "startup (to the hand-over to the boot ROM), kernel setup (to the jump into "
                     "the kernel), total; plus the time to the \"Linux version\" banner.")
    add_boot_options(bench, choose_boot=False)
    bench.add_argument("--runs", type=parse_runs, default=5, metavar="N",
                       help="boots per system (default 5; medians are reported)")
    add_mem_option(bench)
    def systems(text):
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"{text!r}: name at least one system")
        return names

    bench.add_argument("--systems", type=systems, action="extend", default=[], metavar="NAME,NAME",
                       help="boot only these systems (the table's column names, e.g. "
                            "tinyvmm-pvh,qemu-qboot-pvh); repeatable or comma-separated")
    bench.add_argument("--load", type=parse_load, default=0, metavar="N",
                       help="run N busy processes beside the boots, a synthetic load on the host "
                            "(default 0: measure on a quiet host)")
    bench.add_argument("--timeout", type=parse_timeout, default=300, metavar="S",
                       help="give up on a boot after S seconds (default 300)")
    bench.add_argument("--no-banner", action="store_true",
                       help="stop each boot when the ROM jumps into the kernel instead of waiting "
                            "for the banner (for large kernels, slow to reach it under emulation)")
    bench.add_argument("--to-init", action="store_true",
                       help="run each tinyvmm boot on to the test init's first line "
                            "(TINYVMM-INIT-OK, so the initrd must be kernels/build/initramfs.cpio "
                            "with its /init) instead of the banner (--no-banner is then ignored), "
                            "and add the \"to init\" row with the completions an emulating host "
                            "needed; 30-50 s a boot on such a host (6 rows x --runs)")
    bench.add_argument("--vs-qemu", action="store_true",
                       help="also boot the same kernel under QEMU: SeaBIOS with linuxboot_dma, "
                            "SeaBIOS with the legacy linuxboot, and qboot (SeaBIOS is "
                            "/usr/share/seabios/bios.bin)")
    bench.add_argument("--firmware", type=firmware, action="extend", default=[],
                       metavar="seabios,qboot,ovmf",
                       help="also boot tinyvmm with unmodified firmware: seabios (SeaBIOS with "
                            "QEMU's linuxboot_dma.bin, and with linuxboot.bin and no fw_cfg DMA), "
                            "qboot, and/or ovmf (Debian's OVMF_CODE.fd as --bios, with fw_cfg DMA "
                            "and without; through the software CPU where KVM emulates guest code, "
                            "about 20 s a boot there; the test payload's OVMF rows boot the pc "
                            "kernel, which has an EFI stub); repeatable or comma-separated")
    bench.add_argument("--payload", type=payload, action="extend", default=[], metavar="test,distro",
                       help="what the rows boot: test (the test kernel and initramfs, "
                            "kernels/build) and/or distro (Debian's own kernel and initramfs from "
                            "/boot, linux-image-amd64: the size the posting measured; its boots end "
                            "at the kernel's entry); repeatable or comma-separated (default: test, "
                            "and distro when installed; not with --kernel)")
    bench.add_argument("--vmlinux", metavar="FILE",
                       help="the ELF kernel of the PVH rows: direct PVH, and PVH through the BIOS "
                            "and the PVH ROM, DMA and legacy (default, without --kernel: "
                            "kernels/build/vmlinux when it exists; none, no PVH rows); the test "
                            "payload's, as the distro payload's PVH rows boot the vmlinux "
                            "extracted from Debian's bzImage")
    bench.add_argument("--json", metavar="PATH", help="write every run and the summary as JSON")
    bench.add_argument("--plot", metavar="PATH",
                       help="draw the phases as stacked bars, one per system (.svg or .png)")
    bench.set_defaults(func=cmd_bench)


def _add_fw_cfg(commands) -> None:
    fw_cfg = commands.add_parser("fw-cfg", help="inspect what the fw_cfg device will serve")
    fw_cfg_commands = fw_cfg.add_subparsers(dest="fw_cfg_command", metavar="COMMAND")
    fw_cfg_commands.required = True
    listing = fw_cfg_commands.add_parser(
        "list", help="print the items the guest will see (key, name, size, writable)",
        description="Print the fw_cfg items a guest started with the same options would see. "
                    "Accepts the machine options of run and boot (firmware, RAM, kernel, fw_cfg, "
                    "drives); with --kernel the boot items appear too.")
    listing.add_argument("--bios", metavar="FILE",
                         help="the firmware image (read and checked as a run would)")
    add_boot_options(listing)
    add_hardware_options(listing)
    add_drive_options(listing)
    add_fw_cfg_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--acpi-tables", metavar="DIR",
                         help="also write the ACPI tables (those the RSDT reaches, and the FACS), "
                              "linked as a direct boot places them, one SIGNATURE.dat a table in "
                              "DIR (made if missing), for iasl -d")
    listing.set_defaults(func=cmd_fw_cfg_list)


# The commands, in the order `tinyvmm --help` lists them, and what adds each one's parser.
COMMANDS = {"run": _add_run, "boot": _add_boot, "bench": _add_bench, "fw-cfg": _add_fw_cfg}


def run_options(args: argparse.Namespace) -> RunOptions:
    """The RunOptions of `run` or `boot`, their output paths checked before the guest starts."""
    from ..files import check_output_path
    for option, path in (("--timing-json", getattr(args, "timing_json", None)),
                         ("--report", args.report)):
        if path is not None:
            try:
                check_output_path(option, path)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    return RunOptions(args.timeout, getattr(args, "timing_json", None),
                      getattr(args, "stop_at", None), args.report)


def cmd_run(args: argparse.Namespace) -> int:
    spec = machine_spec(args, boot_linux=False)
    if spec.firmware is None and not spec.pflash:
        raise ConfigError("run needs the firmware: --bios FILE or --drive if=pflash,unit=0,...")
    if spec.drives and args.bios is not None:
        from .. import firmware as shipped
        if os.path.realpath(shipped.resolve(args.bios)) == os.path.realpath(shipped.image_path(shipped.BIOS)):
            print("tinyvmm: warning: tinyvmm's BIOS boots only from fw_cfg, not from disks; give "
                  "--bios /usr/share/seabios/bios-256k.bin to boot one", file=sys.stderr)
    return launch(spec, run_options(args))


def cmd_boot(args: argparse.Namespace) -> int:
    options = run_options(args)
    return launch(machine_spec(args, boot_linux=True), options)


def cmd_fw_cfg_list(args: argparse.Namespace) -> int:
    """`tinyvmm fw-cfg list`: what a guest started with these options would see, as a table or
    JSON, every file read and checked as a run would."""
    if args.kernel is None:
        given = [option for option, value in (("--initrd", args.initrd), ("--append", args.append),
                                              ("--append-as-is", args.append_as_is),
                                              ("--boot", args.boot)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)} without --kernel: fw-cfg list shows the boot "
                             "items of the --kernel given")
    from ..build import BuiltMachine, firmware_image, fw_cfg_items, load_kernel, open_disks
    from ..fw_cfg.attach import describe_fw_cfg, format_table
    spec = machine_spec(args, boot_linux=args.kernel is not None)
    items = fw_cfg_items(spec, firmware_image(spec), load_kernel(spec))
    checked = BuiltMachine(spec)
    try:
        open_disks(spec.drives, checked)            # the same checks as a run's
    finally:
        checked.close()
    description = describe_fw_cfg(spec.fw_cfg, items)
    if args.acpi_tables is not None:
        write_acpi_tables(spec, args.acpi_tables)
    try:
        if args.json:
            import json
            json.dump(description, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_table(description))
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write the listing: {exc.strerror}") from None
    return EXIT_OK


def write_acpi_tables(spec, directory: str) -> None:
    """--acpi-tables DIR: each table of the machine `spec` describes as DIR/SIGNATURE.dat."""
    if not spec.acpi:
        raise ConfigError("--acpi-tables with --no-acpi: this machine has no ACPI tables")
    from ..acpi import linked_tables
    from ..files import KERNEL_FILE_SYSTEMS
    from ..fw_cfg.attach import acpi_machine
    if not directory or os.path.realpath(directory).startswith(KERNEL_FILE_SYSTEMS):
        raise ConfigError(f"--acpi-tables {directory!r}: not a place for results")
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"--acpi-tables {directory}: not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
        for signature, data in linked_tables(acpi_machine(spec.fw_cfg, spec.mem, spec.smp)).items():
            with open(os.path.join(directory, f"{signature.lower()}.dat"), "wb") as out:
                out.write(data)
    except OSError as exc:
        raise OutputError(f"cannot write the ACPI tables to {directory}: {exc.strerror}") from None


def bench_options(args: argparse.Namespace):
    """The bench.BenchOptions of a parsed `bench` command line (vmlinux as given)."""
    from ..bench import BenchOptions
    return BenchOptions(kernel=args.kernel, initrd=args.initrd, append=args.append,
                        append_as_is=args.append_as_is, runs=args.runs, mem=args.mem,
                        timeout=args.timeout, no_banner=args.no_banner, to_init=args.to_init,
                        vs_qemu=args.vs_qemu, firmware=tuple(args.firmware), vmlinux=args.vmlinux,
                        json=args.json, plot=args.plot, load=args.load,
                        systems=tuple(dict.fromkeys(args.systems)))


def bench_payloads(args: argparse.Namespace, options, scratch: str) -> tuple:
    """The bench.BenchPayload of each payload asked for (or of the default ones), each checked
    as `tinyvmm boot` would before the first boot; the distribution's vmlinux, for its PVH
    rows, is extracted from its bzImage into the folder `scratch`. ConfigError for a payload
    that cannot boot."""
    from ..bench import BenchPayload
    from ..bench.payloads import extract_vmlinux, find_distro
    names = list(dict.fromkeys(args.payload))
    if names and (options.kernel is not None or options.initrd is not None):
        raise ConfigError("bench: --payload chooses the kernel and initrd itself; give either "
                          "--payload or --kernel/--initrd")
    if options.initrd is not None and options.kernel is None:
        raise ConfigError("bench: --initrd goes with --kernel; without it the rows boot the test "
                          "and distro payloads, which bring their own")
    if options.kernel is not None:
        return (check_bench_payload(BenchPayload(os.path.basename(options.kernel), options.kernel,
                                                 options.initrd, options.vmlinux), options),)
    chosen = names or ["test", "distro"]
    if options.vmlinux is not None and "test" not in chosen:
        raise ConfigError("bench: --vmlinux gives the test payload's PVH rows; the distro rows "
                          "boot the vmlinux inside Debian's bzImage")
    payloads = []
    for name in chosen:
        if name == "test":
            payloads.append(check_bench_payload(BenchPayload("test", vmlinux=options.vmlinux), options))
            continue
        try:
            kernel, initrd = find_distro()
        except LookupError as exc:
            if names:
                raise ConfigError(f"--payload distro: {exc}") from None
            print(f"tinyvmm: no distro rows: {exc}", file=sys.stderr)
            continue
        if options.to_init:
            print("tinyvmm: the distro rows end at the kernel's entry (its initramfs has no "
                  "test init)", file=sys.stderr)
        try:
            vmlinux: str | None = extract_vmlinux(kernel, os.path.join(scratch, "vmlinux"))
        except (LookupError, OSError) as exc:
            print(f"tinyvmm: no distro PVH rows: {exc}", file=sys.stderr)
            vmlinux = None
        payloads.append(check_bench_payload(BenchPayload(
            "distro", kernel, initrd, vmlinux, to_entry=True,
            vmlinux_source=kernel if vmlinux else None), options))
    return tuple(payloads)


def cmd_bench(args: argparse.Namespace) -> int:
    """Check everything `bench` will boot before the first run; then run it."""
    from .. import bench
    from ..spec import replace
    options = bench_options(args)
    missing = bench.firmware_missing(options.firmware)
    if missing:
        raise ConfigError(missing)
    try:    # outputs first: a bad --json or --plot must not wait for the last run
        bench.check_outputs(options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    import shutil
    import tempfile
    scratch = tempfile.mkdtemp(prefix="tinyvmm-bench-payloads-")
    try:
        return bench.cmd_bench(replace(options, payloads=bench_payloads(args, options, scratch)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def is_elf_file(path: str) -> bool:
    """Whether `path` is a regular file that starts as an ELF file does (False if unreadable:
    the loader then says why)."""
    import stat

    from ..boot.elf import is_elf
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return True             # a FIFO, a directory: the loader's own message
        with open(path, "rb") as f:
            return is_elf(f.read(4))
    except OSError:
        return True


def check_bench_payload(payload, options):
    """`payload` checked as `tinyvmm boot` would (ConfigError with the loader's own message),
    with its vmlinux (a PVH row's; the default one for the test payload) and whether its
    kernel has the direct 64-bit row."""
    from .. import bench
    from ..boot.direct import DirectBootError, check_64bit_entry
    from ..boot.payload import load_payload
    from ..spec import replace
    options = replace(options, kernel=payload.kernel, initrd=payload.initrd, vmlinux=payload.vmlinux)
    label = f"--payload {payload.name}: " if payload.to_entry else ""
    try:
        loaded = load_payload(options.kernel, options.initrd, options.append, True, options.mem,
                              options.append_as_is, boot="firmware")
    except ConfigError as exc:
        raise ConfigError(f"{label}{exc}") from None
    if loaded.is_elf:
        raise ConfigError(f"bench --kernel {options.kernel} is an ELF vmlinux: give the bzImage "
                          "with --kernel and the vmlinux with --vmlinux")
    direct64 = True
    try:    # a kernel without a 64-bit entry only loses its direct row
        check_64bit_entry(loaded.plan.image, loaded.kernel_path)
    except DirectBootError as exc:
        print(f"tinyvmm: no direct 64-bit row: {exc}", file=sys.stderr)
        direct64 = False
    vmlinux = bench.default_vmlinux(options)
    if vmlinux is None and not payload.to_entry:     # the distribution's: said when extracted
        why = ("--kernel is given without --vmlinux" if options.kernel is not None else
               "no kernels/build/vmlinux (build it with `make -C kernels`, or give --vmlinux)")
        print(f"tinyvmm: no PVH rows: {why}", file=sys.stderr)
    elif vmlinux is not None:
        if not is_elf_file(vmlinux):
            raise ConfigError(f"{label or '--vmlinux '}{vmlinux} is not an ELF vmlinux")
        try:
            loaded = load_payload(vmlinux, bench.bench_initrd(options), options.append, True,
                                  options.mem, options.append_as_is)
        except ConfigError as exc:
            raise ConfigError(f"{label or '--vmlinux: '}{exc}") from exc
        if not loaded.is_elf:
            raise ConfigError(f"--vmlinux {vmlinux} is a bzImage, not an ELF vmlinux")
    return replace(payload, vmlinux=vmlinux, direct64=direct64)

