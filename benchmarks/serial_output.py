"""Console output's cost in the run loop: ns per byte a guest writes to COM1, by where it goes.

The guest (guests/serial_loop.S) writes LOOPS bytes to port 0x3f8 between
milestones 8 and 9. Each case runs tinyvmm in a child process whose stdout is the
sink under test, and times the loop between those milestones:

- pipe: `--serial stdio` into a pipe the parent drains at once (a reader that keeps up);
- file: `--serial stdio` redirected to a regular file;
- none: `--serial none` (the exit and the UART alone, nothing written).

    python3 -m benchmarks.serial_output [--loops N] [--runs R] [--tree PATH ...]
                                                      (from the repository root)

`--tree` names other checkouts of tinyvmm to measure beside this one, run by run
(before and after a change, under the same load).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.guest_build import assemble

HERE = Path(__file__).resolve().parent
CHILD = """
import sys
from tinyvmm import Machine
with Machine(open(sys.argv[1], "rb").read(), mem=16 << 20, serial=sys.argv[2]) as machine:
    machine.run(timeout=600)
    marks = {m.value: m.time_ns for m in machine.milestones}
print(marks[9] - marks[8], file=sys.stderr)
"""


def loop_ns(image: Path, case: str, work: Path, tree: Path) -> int:
    """The loop's duration in one child process running `tree`'s tinyvmm, with stdout as
    `case` says."""
    serial = "none" if case == "none" else "stdio"
    command = [sys.executable, "-c", CHILD, str(image), serial]
    env_path = str(tree)
    if case == "file":
        with open(work / "out.txt", "wb") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, check=True,
                                  cwd=env_path)
        stderr = done.stderr
    else:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 cwd=env_path)
        assert child.stdout is not None and child.stderr is not None
        while child.stdout.read(1 << 16):      # a reader that keeps up
            pass
        stderr = child.stderr.read()
        if child.wait() != 0:
            raise RuntimeError(stderr.decode(errors="replace"))
    return int(stderr.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tree", type=Path, nargs="*", default=[], metavar="PATH",
                        help="other tinyvmm checkouts to measure beside this one")
    args = parser.parse_args()
    trees = {"this tree": HERE.parent, **{str(tree): tree.resolve() for tree in args.tree}}
    work = Path(tempfile.mkdtemp(prefix="tinyvmm-serial-bench-"))
    image = assemble(HERE / "guests" / "serial_loop.S", work / "serial_loop",
                     defines={"LOOPS": args.loops}).bin_path
    cases = ("none", "file", "pipe")
    results: dict[tuple[str, str], list[float]] = {
        (name, case): [] for name in trees for case in cases}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
        for case in cases:
            for name, tree in trees.items():
                results[name, case].append(loop_ns(image, case, work, tree) / args.loops)
    print(f"\n{args.loops} bytes to COM1, median of {args.runs} runs (min-max)\n")
    width = max(len(name) for name in trees)
    print(f"| {'tree':<{width}} | {'stdout':<6} | {'ns per byte':>11} | {'min-max':>13} |")
    print(f"|{'-' * (width + 2)}|{'-' * 8}|{'-' * 13}|{'-' * 15}|")
    for (name, case), values in results.items():
        print(f"| {name:<{width}} | {case:<6} | {statistics.median(values):>11.0f} | "
              f"{min(values):>6.0f}-{max(values):<6.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
