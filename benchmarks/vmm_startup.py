"""VMM startup of two tinyvmm source trees, side by side: process start to the first KVM_RUN of
`tinyvmm boot --stop-at-kernel`, as the bench's first phase, in interleaved runs; the medians
and their ratio. For a change that must not slow the start down:

    git worktree add /tmp/before HEAD~1
    python3 -m benchmarks.vmm_startup /tmp/before . --runs 21

Both trees need the test kernel (kernels/build; a symlink to one tree's build will do) and run
on this checkout's Python with its site-packages (capstone, pyelftools) on the path.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def startup_ms(tree: Path, timing: Path) -> float:
    """One boot of `tree`'s tinyvmm to the kernel's entry; process start to first KVM_RUN, ms."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), *site]))
    command = [sys.executable, "-S", "-c", "import sys; from tinyvmm.cli import main; sys.exit(main())",
               "boot", "--serial", "none", "--stop-at-kernel", "--timing-json", str(timing)]
    start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    result = subprocess.run(command, env=env, capture_output=True, cwd=tree, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: tinyvmm boot ended with status {result.returncode}:\n"
                         f"{result.stderr.decode(errors='replace')[-2000:]}")
    return (json.loads(timing.read_text())["start_ns"] - start) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the tree to compare against")
    parser.add_argument("after", type=Path, help="the tree of the change")
    parser.add_argument("--runs", type=int, default=15, help="boots of each tree (default 15)")
    args = parser.parse_args(argv)
    trees = [args.before.resolve(), args.after.resolve()]
    for tree in trees:          # compiled first: a start must not measure Python's compiler
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "tinyvmm")], check=True,
                       stdout=subprocess.DEVNULL)
    times: dict[Path, list[float]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory() as workdir:
        for run in range(args.runs):
            for tree in trees:
                times[tree].append(startup_ms(tree, Path(workdir) / "timing.json"))
            print(f"[{run + 1}/{args.runs}]", file=sys.stderr, end="\r", flush=True)
    print("| tree | median | min | max |\n|---|---|---|---|")
    for tree in trees:
        print(f"| {tree} | {statistics.median(times[tree]):.1f} ms | {min(times[tree]):.1f} ms | "
              f"{max(times[tree]):.1f} ms |")
    ratio = statistics.median(times[trees[1]]) / statistics.median(times[trees[0]])
    print(f"\nafter / before (medians): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
