"""Port-I/O exits per second: tinyvmm beside a minimal C VMM (the host's own cost) and QEMU.

The same 64 KiB guest runs under all three: LOOPS `outb` to port 0x80 between
writes of 8 and 9 to the milestone port 0xf4. tinyvmm and the C VMM time the
loop between those milestones; QEMU timestamps nothing, so its figure is the
difference of whole-process wall times with LOOPS and with 0 loops. `--smp 1 2` adds a row
for tinyvmm with 2 vCPUs: the APs wait for a SIPI that never comes, and the BSP's exits go
through the device lock that several vCPUs need (one vCPU takes none).

    python3 -m benchmarks.pio_exits [--loops N] [--runs R] [--smp N ...]   (from the repository root)
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.guest_build import assemble

HERE = Path(__file__).resolve().parent


def build_guest(workdir: Path, loops: int) -> Path:
    return assemble(HERE / "guests" / "out_loop.S", workdir / f"out_loop_{loops}",
                    defines={"LOOPS": loops}).bin_path


def tinyvmm_loop_ns(image: Path, smp: int = 1) -> int:
    """Through the public API, the command line's own path to the run loop."""
    from tinyvmm import Machine
    with Machine(image.read_bytes(), mem=16 << 20, smp=smp) as machine:
        machine.run(timeout=600)
        marks = {m.value: m.time_ns for m in machine.milestones}
    return marks[9] - marks[8]


def c_loop_ns(binary: Path, image: Path) -> int:
    out = subprocess.run([str(binary), str(image)], capture_output=True, check=True, text=True)
    return int(out.stdout.split()[1])


def qemu_wall_ns(image: Path) -> int:
    start = time.monotonic_ns()
    subprocess.run(["qemu-system-x86_64", "-accel", "kvm", "-bios", str(image), "-m", "16",
                    "-display", "none", "-nodefaults", "-no-reboot"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return time.monotonic_ns() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smp", type=int, nargs="+", default=[1], metavar="N",
                        help="tinyvmm's vCPU counts, one row each (default 1)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tinyvmm-pio-bench-"))
    image, empty = build_guest(work, args.loops), build_guest(work, 0)
    c_vmm = work / "kvm_exit_loop"
    subprocess.run(["gcc", "-O2", "-o", str(c_vmm), str(HERE / "kvm_exit_loop.c")], check=True)
    have_qemu = shutil.which("qemu-system-x86_64") is not None

    names = {n: "tinyvmm" if n == 1 else f"tinyvmm --smp {n}" for n in args.smp}
    results: dict[str, list[float]] = {"C VMM (host cost)": [], **{name: [] for name in names.values()}}
    if have_qemu:
        results["QEMU"] = []
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
        results["C VMM (host cost)"].append(c_loop_ns(c_vmm, image) / args.loops)
        for smp, name in names.items():
            results[name].append(tinyvmm_loop_ns(image, smp) / args.loops)
        if have_qemu:
            results["QEMU"].append((qemu_wall_ns(image) - qemu_wall_ns(empty)) / args.loops)

    host = statistics.median(results["C VMM (host cost)"])
    print(f"\n{args.loops} port-I/O exits, median of {args.runs} runs\n")
    print(f"| {'system':<18} | {'ns per exit':>11} | {'exits per s':>11} | {'over host':>9} |")
    print(f"|{'-' * 20}|{'-' * 13}|{'-' * 13}|{'-' * 11}|")
    for name, values in results.items():
        ns = statistics.median(values)
        print(f"| {name:<18} | {ns:>11.0f} | {1e9 / ns:>11.0f} | {ns - host:>8.0f}n |")
    if not have_qemu:
        print("\n(QEMU not installed: apt-get install qemu-system-x86)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
