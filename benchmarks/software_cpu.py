"""Firmware and Linux through the software CPU (--software-cpu on) against KVM alone, on this host.

Debian's unmodified SeaBIOS (bios.bin, to "No bootable device"), OVMF (OVMF_CODE.fd and a
fresh copy of OVMF_VARS.fd as QEMU's two pflash units, to the UEFI Shell's prompt) and the
test kernel (its PVH entry with its initramfs, to the init's last line) run through the
Python API; the time is from the first KVM_RUN to the text on the console. The modes are
interleaved run by run. OVMF under KVM alone takes about 14 minutes on an emulating host, so it
is measured only with --ovmf-kvm-alone.

    python3 -m benchmarks.software_cpu [--runs R] [--ovmf-kvm-alone]   (from the repository root)
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

SEABIOS = Path("/usr/share/seabios/bios.bin")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


def seconds_to(firmware: str, mode: str) -> tuple[float, str]:
    """(seconds from the first KVM_RUN to the firmware's text, the software CPU's --stats line)."""
    from tinyvmm import Machine
    with tempfile.TemporaryDirectory() as scratch:
        if firmware == "ovmf":
            variables = Path(scratch) / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, variables)
            options = dict(drives=[f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                                   f"if=pflash,format=raw,unit=1,file={variables}"])
            text, image = "Shell> ", None
        elif firmware == "linux":
            from tinyvmm.boot.payload import DEFAULT_INITRD, DEFAULT_VMLINUX
            options = dict(kernel=DEFAULT_VMLINUX, initrd=DEFAULT_INITRD)
            text, image = "init: restarting the machine", None
        else:
            options, text, image = {}, "No bootable device", str(SEABIOS)
        with Machine(image, serial="none", software_cpu=mode, **options) as machine:
            result = machine.run(timeout=3600, until_console=text)
            if result.outcome.name != "EXPECTED":
                raise SystemExit(f"{firmware} {mode}: {result.outcome.name} {result.message}")
            elapsed = (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - machine.board.first_run_ns) / 1e9
            stretches = machine.runner.stretches
            stats = stretches.table().splitlines()[0] if stretches is not None else ""
            return elapsed, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ovmf-kvm-alone", action="store_true",
                        help="also time OVMF under KVM alone (about 14 minutes a run here)")
    args = parser.parse_args()
    plan = [("seabios", "off"), ("seabios", "on"), ("ovmf", "on"), ("linux", "off"), ("linux", "on")]
    if args.ovmf_kvm_alone:
        plan.append(("ovmf", "off"))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in plan}
    notes: dict[tuple[str, str], str] = {}
    for run in range(args.runs):
        for key in plan:
            elapsed, stats = seconds_to(*key)
            times[key].append(elapsed)
            notes[key] = stats
            print(f"run {run + 1}/{args.runs}: {key[0]} --software-cpu {key[1]}: {elapsed:.2f} s",
                  flush=True)
    print("\n| firmware, to | --software-cpu | median | min-max |\n|---|---|---|---|")
    for (firmware, mode), values in times.items():
        to = {"ovmf": "Shell>", "linux": "its init's end"}.get(firmware, "No bootable device")
        print(f"| {firmware}, {to} | {mode} | {statistics.median(values):.2f} s | "
              f"{min(values):.2f}-{max(values):.2f} s |")
    for key, stats in notes.items():
        if stats:
            print(f"{key[0]} {key[1]}: {stats}")


if __name__ == "__main__":
    main()
