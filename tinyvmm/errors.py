"""The exceptions tinyvmm raises, under one base: TinyvmmError.

ConfigError and its subclasses are bad input found before the guest runs (the command line's
status 2); HostError is what the host could not give (no /dev/kvm, a failed KVM call, no memory
for guest RAM: status 1); the Machine errors are misuse of the API.
"""


class TinyvmmError(Exception):
    """Base of every exception tinyvmm raises on purpose."""


class ConfigError(TinyvmmError, ValueError):
    """Input that cannot make or drive a machine, found before the guest runs on it: a file
    that is unreadable, too large or malformed, an option out of range, overlapping device
    ranges. The message is the one `tinyvmm` prints with exit status 2. Each subsystem's
    input errors (a malformed kernel, drive, fw_cfg item, trace spec...) are subclasses."""


class HostError(TinyvmmError):
    """The host cannot provide what the machine needs: a usable /dev/kvm, a KVM call, memory
    for guest RAM (the command line's status 1)."""


class MachineClosedError(TinyvmmError, RuntimeError):
    """A Machine used after close() (or after its `with` block)."""


class MachineBusyError(TinyvmmError, RuntimeError):
    """run() or step() called while the Machine is running: from a device or callback of its
    own, or from another thread."""
