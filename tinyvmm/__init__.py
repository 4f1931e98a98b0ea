"""tinyvmm: a minimal virtual machine monitor over /dev/kvm, with a QEMU-compatible fw_cfg.

The public Python API (docs/api.md): Machine, the outcomes of a run (Outcome, RunResult) and
the exceptions for bad input and misuse. Each is imported when first named, so that the
command line starts without the modules it does not use.
"""

__version__ = "0.1.0"          # the package version: pyproject.toml reads it from here

_PUBLIC = {
    "Machine": "machine",
    "ConfigError": "errors",
    "MachineClosedError": "errors",
    "MachineBusyError": "errors",
    "GuestMemoryError": "memory",
    "Outcome": "outcome",
    "RunResult": "outcome",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tinyvmm' has no attribute {name!r}")
    from importlib import import_module
    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
