"""tinyvmm: a minimal virtual machine monitor over /dev/kvm, with a QEMU-compatible fw_cfg.

The public Python API (docs/api.md): Machine, the MachineSpec it is built from, the outcomes
of a run (Outcome, RunResult) and the exceptions for bad input, the host and misuse. Each is
imported when first named, so that the command line starts without the modules it does not use.
"""

__version__ = "0.1.0"          # the package version: pyproject.toml reads it from here

_PUBLIC = {
    "Machine": "machine",
    "MachineSpec": "spec",
    "KernelSpec": "spec",
    "FwCfgSpec": "spec",
    "DriveSpec": "spec",
    "PflashSpec": "spec",
    "DebugSpec": "spec",
    "TinyvmmError": "errors",
    "ConfigError": "errors",
    "HostError": "errors",
    "MachineClosedError": "errors",
    "MachineBusyError": "errors",
    "GuestMemoryError": "memory",
    "Outcome": "outcome",
    "RunResult": "outcome",
}
TYPE_CHECKING = False
if TYPE_CHECKING:       # the same names, seen by type checkers without the lazy import
    from .errors import ConfigError as ConfigError
    from .errors import HostError as HostError
    from .errors import MachineBusyError as MachineBusyError
    from .errors import MachineClosedError as MachineClosedError
    from .errors import TinyvmmError as TinyvmmError
    from .machine import Machine as Machine
    from .memory import GuestMemoryError as GuestMemoryError
    from .outcome import Outcome as Outcome
    from .outcome import RunResult as RunResult
    from .spec import DebugSpec as DebugSpec
    from .spec import DriveSpec as DriveSpec
    from .spec import FwCfgSpec as FwCfgSpec
    from .spec import KernelSpec as KernelSpec
    from .spec import MachineSpec as MachineSpec
    from .spec import PflashSpec as PflashSpec
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tinyvmm' has no attribute {name!r}")
    from importlib import import_module
    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
