"""SeaBIOS and Linux with 1, 2, 4 vCPUs: how long they take to bring up the APs, and what a vCPU
more costs.

Debian's unmodified SeaBIOS (bios-256k.bin) runs on tinyvmm with `--smp N`. The AP bring-up is
the time from "PCI: No VGA devices found" (the line SeaBIOS prints just before its INIT-SIPI)
to "Found N cpu(s)" (the BSP has counted every AP in) on its debug console; the other columns
are from the first KVM_RUN to "Found N cpu(s)" and to "No bootable device" (its boot attempt,
with no disk). Runs of the counts are interleaved.

With --linux, the pc test kernel (kernels/build/pc/vmlinux, `make -C kernels`) boots directly
(PVH) with tinyvmm's ACPI tables instead: its AP bring-up runs from "smp: Bringing up secondary
CPUs" to "smp: Brought up" on the serial console, and the boot from the first KVM_RUN to its
/init's power-off.

    python3 -m benchmarks.smp_boot [--runs R] [--smp N ...] [--linux]   (from the repository root)
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
PC_KERNEL = Path(__file__).resolve().parent.parent / "kernels" / "build" / "pc"


def boot_ns(smp: int) -> tuple[int, int, int]:
    """ns from the first KVM_RUN to the line before the INIT-SIPI, to "Found N cpu(s)" and to
    "No bootable device"."""
    from tinyvmm import Machine
    with Machine(str(SEABIOS), smp=smp, serial="none") as machine:
        times = []
        for text in ("No VGA devices found", f"Found {smp} cpu(s)", "No bootable device"):
            result = machine.run(timeout=300, until_console=text)
            if result.outcome.name != "EXPECTED":
                raise SystemExit(f"--smp {smp}: {result.outcome.name} {result.message}")
            times.append(time.clock_gettime_ns(time.CLOCK_MONOTONIC) - machine.board.first_run_ns)
        return times[0], times[1], times[2]


def linux_ns(smp: int) -> tuple[int, int, int]:
    """ns from the first KVM_RUN to "Bringing up secondary CPUs", to "smp: Brought up" and to
    the power-off, for the pc kernel booted directly."""
    from tinyvmm import Machine
    with Machine(None, kernel=PC_KERNEL / "vmlinux", initrd=PC_KERNEL / "initramfs.cpio",
                 boot="direct", smp=smp, serial=None) as machine:
        times = []
        for text in ("Bringing up secondary CPUs", "smp: Brought up", None):
            result = machine.run(timeout=900, until_console=text)
            wanted = "EXPECTED" if text else "POWEROFF"
            if result.outcome.name != wanted:
                raise SystemExit(f"--smp {smp}: {result.outcome.name} {result.message}")
            times.append(time.clock_gettime_ns(time.CLOCK_MONOTONIC) - machine.board.first_run_ns)
        return times[0], times[1], times[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smp", type=int, nargs="+", default=[1, 2, 4], metavar="N")
    parser.add_argument("--linux", action="store_true",
                        help="boot the pc test kernel directly instead of running SeaBIOS")
    args = parser.parse_args()
    if args.linux and not (PC_KERNEL / "vmlinux").exists():
        raise SystemExit(f"needs {PC_KERNEL}/vmlinux: make -C kernels")
    if not args.linux and not SEABIOS.exists():
        raise SystemExit(f"needs {SEABIOS} (Debian package seabios)")
    measure = linux_ns if args.linux else boot_ns
    columns: dict[int, list[list[float]]] = {n: [[], [], []] for n in args.smp}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
        for n in args.smp:
            before, found, booted = (ns / 1e6 for ns in measure(n))
            for column, value in zip(columns[n], (found - before, found, booted)):
                column.append(value)
    if args.linux:
        print(f"\nLinux 6.1 (pc test kernel, direct PVH boot), median (min-max) of {args.runs} "
              "interleaved runs\n")
        print("| vCPUs | AP bring-up | to \"smp: Brought up\" | to power-off |")
    else:
        print(f"\nSeaBIOS bios-256k.bin, median (min-max) of {args.runs} interleaved runs\n")
        print("| vCPUs | AP bring-up | to \"Found N cpu(s)\" | to \"No bootable device\" |")
    print("|---|---|---|---|")
    for n in args.smp:
        cells = [f"{statistics.median(c):.1f} ms ({min(c):.1f}-{max(c):.1f})" for c in columns[n]]
        print(f"| {n} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
