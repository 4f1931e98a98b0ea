"""A stopped guest's state changed from the host, checked as the API documents: guest memory
written by guest-physical address, general registers set by name, real-mode segments loaded."""

from __future__ import annotations

from .errors import ConfigError
from .spec import check_type

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .kvm.vcpu import Vcpu
    from .memory import GuestMemory

SEGMENT_REGISTERS = ("cs", "ds", "es", "fs", "gs", "ss")


def write_memory(memory: GuestMemory, address: int, data: bytes | bytearray | memoryview) -> None:
    """`data` written to guest RAM at guest-physical `address`: TypeError for anything but
    bytes-like data, GuestMemoryError if any byte falls outside RAM (ROM included)."""
    check_type("address", address, int)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_memory: expected bytes, not {type(data).__name__}")
    source = memoryview(data).cast("B")
    done = 0
    for view in memory.views(address, len(source), True):
        view[:] = source[done:done + len(view)]
        done += len(view)


def set_regs(vcpu: Vcpu, values: dict[str, int]) -> None:
    """Set general registers by name (kvm_regs' fields: rax ... r15, rip, rflags), each 64 bits
    unsigned: TypeError for an unknown name or a non-int, ConfigError for a value too wide."""
    regs = vcpu.get_regs()
    names = {field[0] for field in type(regs)._fields_}
    for name, value in values.items():
        if name not in names:
            raise TypeError(f"set_regs: no register {name!r} (one of {', '.join(sorted(names))})")
        check_type(name, value, int)
        if not 0 <= value < 1 << 64:
            raise ConfigError(f"set_regs: {name}={value:#x} does not fit 64 bits unsigned")
        setattr(regs, name, value)
    vcpu.set_regs(regs)


def set_segment(vcpu: Vcpu, name: str, selector: int) -> None:
    """Load segment register `name` as real mode does: the selector, base = selector * 16."""
    if name not in SEGMENT_REGISTERS:
        raise TypeError(f"set_segment: {name!r} is not a segment register")
    check_type("selector", selector, int)
    if not 0 <= selector <= 0xFFFF:
        raise ConfigError(f"set_segment: selector {selector:#x} is not 16 bits")
    sregs = vcpu.get_sregs()
    segment = getattr(sregs, name)
    segment.selector = selector
    segment.base = selector << 4
    vcpu.set_sregs(sregs)
