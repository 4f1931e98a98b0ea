"""What a completion costs: each fast path and the software CPU, in the VMM alone (hand-made
vCPU states, no KVM), and on a real boot of the test kernel to its init (with --boot).

    python3 -m benchmarks.completions [--repeat N] [--boot]      (from the repository root)

The first table is tinyvmm's own work per completion (decode, page walks, the software
CPU), median of N. With --boot, the test kernel (PVH) boots to its init with --stats on
this host, and the completion table it prints is shown: those figures include KVM's
register ioctls, which the first table leaves out.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests import test_completion as states  # the unit tests' hand-made long-mode vCPU state
from tinyvmm.boot.payload import DEFAULT_INITRD, DEFAULT_VMLINUX
from tinyvmm.completion import fastpaths
from tinyvmm.completion.cpu import GuestCpu
from tinyvmm.completion.softcpu import SoftCpu

ROOT = Path(__file__).resolve().parent.parent

CASES = {   # name: (instruction bytes, how: None for the fast paths, "soft", "syscall")
    "clac (fast path)": (fastpaths.CLAC, None),
    "int3 (fast path)": (b"\xcc", None),
    "syscall (fast path)": (None, "syscall"),
    "cmpxchg16b (fast path)": (bytes.fromhex("480fc70e"), None),
    "clac (software CPU)": (fastpaths.CLAC, "soft"),
    "cmpxchg16b (software CPU)": (bytes.fromhex("480fc70e"), "soft"),
    "popcnt (software CPU)": (bytes.fromhex("f3480fb8c3"), "soft"),
    "paddd xmm0, xmm6 (software CPU, two XMM registers)": (bytes.fromhex("660ffec6"), "soft"),
    "fninit (software CPU, x87 state)": (bytes.fromhex("dbe3"), "soft"),
}


def measure(code, how, repeat: int) -> float:
    state = states.long_mode_state()
    vcpu, memory, ram = state
    softcpu = SoftCpu(states.Slots(ram))
    if how == "syscall":
        code = states._half_done_syscall(state)
    else:
        states._code(ram, code)
        vcpu.regs.rsi = states.KERNEL_BASE + 0x30010     # cmpxchg16b's operand
    saved = bytes(vcpu.regs), bytes(vcpu.events)
    times = []
    for _ in range(repeat + 20):                  # the first ones warm the software CPU up
        vcpu.regs = type(vcpu.regs).from_buffer_copy(saved[0])
        vcpu.events = type(vcpu.events).from_buffer_copy(saved[1])
        began = time.perf_counter_ns()
        cpu = GuestCpu(vcpu, memory)
        if how == "soft":
            softcpu.execute(cpu, code)
        else:
            fastpaths.complete(cpu, code)
        times.append(time.perf_counter_ns() - began)
    return statistics.median(times[20:]) / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=500)
    parser.add_argument("--boot", action="store_true", help="also boot the test kernel to init")
    args = parser.parse_args()
    print(f"| completion | VMM work, median of {args.repeat} |")
    print("|---|---|")
    for name, (code, how) in CASES.items():
        print(f"| {name} | {measure(code, how, args.repeat):.1f} us |")
    if args.boot:
        result = subprocess.run(
            [sys.executable, "-m", "tinyvmm", "boot", "--kernel", DEFAULT_VMLINUX,
             "--initrd", DEFAULT_INITRD, "--serial", "none", "--stats",
             "--timeout", "600"], capture_output=True, text=True, cwd=ROOT)
        table = result.stderr.split("completed", 1)
        print("\nthe test kernel (PVH) to init, --stats:\n")
        print("completed" + table[1] if len(table) == 2 else result.stderr[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
