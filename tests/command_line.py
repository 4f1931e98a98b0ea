"""The tinyvmm command line as its users run it: `python -m tinyvmm` in a process of its own."""

import subprocess
import sys

TINYVMM = [sys.executable, "-m", "tinyvmm"]


def tinyvmm(*args, timeout: float = 120, text: bool = False,
            **options) -> subprocess.CompletedProcess:
    """Run `tinyvmm ARGS` to its end and return how it ended.

    stdout and stderr are captured (bytes, or str with text=True) unless `stdout=` or `stderr=`
    send them elsewhere; the other options (cwd, env, input, errors, ...) go to subprocess.run.
    A run still going after `timeout` seconds raises subprocess.TimeoutExpired, so a guest
    that hangs fails its test instead of stalling the suite.
    """
    options.setdefault("stdout", subprocess.PIPE)
    options.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([*TINYVMM, *args], timeout=timeout, text=text, **options)


def start_tinyvmm(*args, **options) -> subprocess.Popen:
    """`tinyvmm ARGS` started and left running, for a test that reads its output as it comes,
    types into it or signals it; `options` go to subprocess.Popen."""
    return subprocess.Popen([*TINYVMM, *args], **options)
