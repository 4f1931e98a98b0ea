"""The exceptions the public API raises for bad input and misuse (the CLI's status 2 and 1)."""


class ConfigError(ValueError):
    """Input that cannot make or drive a machine, found before the guest runs on it: a file
    that is unreadable, too large or malformed, an option out of range, overlapping device
    ranges. The message is the one `tinyvmm` prints with exit status 2."""


class MachineClosedError(RuntimeError):
    """A Machine used after close() (or after its `with` block)."""


class MachineBusyError(RuntimeError):
    """run() or step() called while the Machine is running: from a device or callback of its
    own, or from another thread."""
