"""SeaBIOS with 1, 2, 4 vCPUs: how long it takes to bring up the APs, and what a vCPU more costs.

Debian's unmodified SeaBIOS (bios-256k.bin) runs on tinyvmm with `--smp N`; times are from the
first KVM_RUN to "Found N cpu(s)" on its debug console (the BSP has counted every AP in), and
to "No bootable device" (its boot attempt, with no disk). Runs of the counts are interleaved.

    python3 -m benchmarks.smp_boot [--runs R] [--smp N ...]     (from the repository root)
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")


def boot_ns(smp: int) -> tuple[int, int]:
    """(ns to "Found N cpu(s)", ns to "No bootable device") from the first KVM_RUN."""
    from tinyvmm import Machine
    with Machine(str(SEABIOS), smp=smp, serial="none") as machine:
        times = []
        for text in (f"Found {smp} cpu(s)", "No bootable device"):
            result = machine.run(timeout=300, until_console=text)
            if result.outcome.name != "EXPECTED":
                raise SystemExit(f"--smp {smp}: {result.outcome.name} {result.message}")
            times.append(time.clock_gettime_ns(time.CLOCK_MONOTONIC) - machine.board.first_run_ns)
        return times[0], times[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smp", type=int, nargs="+", default=[1, 2, 4], metavar="N")
    args = parser.parse_args()
    if not SEABIOS.exists():
        raise SystemExit(f"needs {SEABIOS} (Debian package seabios)")
    found: dict[int, list[int]] = {n: [] for n in args.smp}
    booted: dict[int, list[int]] = {n: [] for n in args.smp}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
        for n in args.smp:
            cpus_ns, boot_attempt_ns = boot_ns(n)
            found[n].append(cpus_ns)
            booted[n].append(boot_attempt_ns)
    base = statistics.median(found[args.smp[0]])
    print(f"\nSeaBIOS bios-256k.bin, median (min-max) of {args.runs} interleaved runs\n")
    print("| vCPUs | to \"Found N cpu(s)\" | over the first row | to \"No bootable device\" |")
    print("|---|---|---|---|")
    for n in args.smp:
        ms = [v / 1e6 for v in found[n]]
        boot = [v / 1e6 for v in booted[n]]
        print(f"| {n} | {statistics.median(ms):.1f} ms ({min(ms):.1f}-{max(ms):.1f}) | "
              f"{(statistics.median(found[n]) - base) / 1e6:+.1f} ms | "
              f"{statistics.median(boot):.1f} ms ({min(boot):.1f}-{max(boot):.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
