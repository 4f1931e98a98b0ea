"""Runs every fuzz target (or those named) for a while, one after the other, and says what each
did: `python fuzz/run.py --seconds 2 --fresh` is the CI's smoke run, `--seconds 600` the long one.

Each target starts from its seeds (fuzz/corpus/<target>) plus what earlier runs found
(fuzz/work/<target>, unless --fresh). A target that fails leaves its input in fuzz/artifacts/
and makes the exit status 1.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("fw_cfg", "pci", "virtio", "legacy", "chipset", "elf", "bzimage", "optionrom", "gdb_rsp",
           "options")
DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) .*exec/s: (\d+)")


def run(target: str, seconds: int, fresh: bool, timeout: int) -> tuple[bool, str]:
    """One target for `seconds`; (passed, a summary line)."""
    with tempfile.TemporaryDirectory() as scratch:
        work = scratch if fresh else os.path.join(HERE, "work", target)
        os.makedirs(work, exist_ok=True)
        os.makedirs(os.path.join(HERE, "artifacts"), exist_ok=True)
        command = [sys.executable, os.path.join(HERE, f"{target}.py"), f"-max_total_time={seconds}",
                   f"-timeout={timeout}", "-rss_limit_mb=2048", "-print_final_stats=1",
                   f"-artifact_prefix={os.path.join(HERE, 'artifacts', target)}-",
                   work, os.path.join(HERE, "corpus", target)]
        if fresh:
            command.insert(2, "-seed=1")     # CI: the same inputs at each run, a failure replays
        started = time.monotonic()
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        elapsed = time.monotonic() - started
    found = DONE.search(result.stdout)
    if result.returncode == 0 and found:
        runs, cov, ft, rate = found.groups()
        return True, (f"{target:10} ok    {runs:>8} runs  {rate:>6} exec/s  cov {cov:>5}  ft {ft:>6}  "
                      f"{elapsed:.0f} s")
    lines = result.stdout.splitlines()
    # libFuzzer's seed and where it saved the input, then the end of its report
    kept = [line for line in lines if line.startswith("INFO: Seed:") or "Test unit written to" in line]
    tail = "\n".join(kept + lines[-40:])
    return False, f"{target:10} FAILED (status {result.returncode}) after {elapsed:.0f} s\n{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", choices=(*TARGETS, []), help="default: all")
    parser.add_argument("--seconds", type=int, default=2, help="per target (default 2)")
    parser.add_argument("--fresh", action="store_true",
                        help="from the seeds alone, keeping nothing found (what the CI does)")
    parser.add_argument("--timeout", type=int, default=10,
                        help="seconds one input may take before it counts as a hang (default 10)")
    args = parser.parse_args()
    import importlib.util
    if importlib.util.find_spec("atheris") is None:
        print(f"fuzz: atheris is not installed for Python {sys.version.split()[0]} (it has wheels "
              "from 3.11; `make setup` installs it there): no target ran", file=sys.stderr)
        return 0 if sys.version_info < (3, 11) else 1
    failed = 0
    for target in args.targets or TARGETS:
        passed, line = run(target, args.seconds, args.fresh, args.timeout)
        print(line, flush=True)
        failed += not passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
