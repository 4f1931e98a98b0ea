"""The vCPU as a completion sees it: registers read on demand and written back once, guest
memory by linear address, MSRs, and events injected as the CPU would deliver them."""

from ..kvm import abi
from ..x86 import EFER_LMA
from . import paging

MSR_LSTAR = 0xC000_0082
MSR_FMASK = 0xC000_0084      # SFMASK: RFLAGS bits a syscall clears


class Refused(Exception):
    """The instruction cannot be completed; the message says why (the run ends as a crash)."""


class GuestCpu:
    """One vCPU stopped at an emulation failure.

    `vcpu` is a tinyvmm.kvm.Vcpu (or anything with its get/set methods for regs, sregs,
    fpu, MSRs and vcpu events); `memory` a GuestMemory. Registers are read at most once;
    `commit()` writes back only what a completion changed.
    """

    def __init__(self, vcpu, memory):
        self.vcpu = vcpu
        self.memory = memory
        self._regs = None
        self._sregs = None
        self.regs_dirty = False
        self.sregs_dirty = False
        self.delivered: str | None = None      # the event injected, for traces

    @property
    def regs(self) -> abi.kvm_regs:
        if self._regs is None:
            self._regs = self.vcpu.get_regs()
        return self._regs

    @property
    def sregs(self) -> abi.kvm_sregs:
        if self._sregs is None:
            self._sregs = self.vcpu.get_sregs()
        return self._sregs

    @property
    def long_mode(self) -> bool:
        return bool(self.sregs.efer & EFER_LMA)

    @property
    def cpl(self) -> int:
        """The current privilege level: SS.DPL, as KVM's own emulator takes it."""
        return self.sregs.ss.dpl

    @property
    def pc(self) -> int:
        """The linear address of the instruction."""
        mask = (1 << 64) - 1 if self.long_mode else 0xFFFF_FFFF
        return (self.sregs.cs.base + self.regs.rip) & mask

    def read_linear(self, linear: int, size: int) -> bytes | None:
        return paging.read_linear(self.memory, self.sregs, linear, size)

    def write_linear(self, linear: int, data: bytes) -> bool:
        return paging.write_linear(self.memory, self.sregs, linear, data)

    def msr(self, index: int) -> int:
        values = self.vcpu.get_msrs([index])
        if index not in values:
            raise Refused(f"MSR {index:#x} cannot be read")
        return values[index]

    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        """Deliver exception `vector` (0-31) at the next entry, with the return address the
        registers hold now (after the instruction for a trap, at it for a fault)."""
        events = self.vcpu.get_vcpu_events()
        events.exception.injected = 1
        events.exception.pending = 0
        events.exception.nr = vector
        events.exception.has_error_code = int(error_code is not None)
        events.exception.error_code = error_code or 0
        events.exception_has_payload = 0
        events.flags = 0            # leave NMI, SIPI, interrupt shadow and SMM state alone
        self.delivered = f"exception {vector}" + (f" ({error_code:#x})" if error_code is not None else "")
        self.commit()
        self.vcpu.set_vcpu_events(events)

    def inject_soft_interrupt(self, vector: int) -> None:
        """Deliver `int n` (n >= 32) through the guest's IDT at the next entry."""
        events = self.vcpu.get_vcpu_events()
        events.interrupt.injected = 1
        events.interrupt.nr = vector
        events.interrupt.soft = 1
        events.flags = 0
        self.delivered = f"interrupt {vector:#x}"
        self.commit()
        self.vcpu.set_vcpu_events(events)

    def commit(self) -> None:
        if self.sregs_dirty:
            self.vcpu.set_sregs(self._sregs)
            self.sregs_dirty = False
        if self.regs_dirty:
            self.vcpu.set_regs(self._regs)
            self.regs_dirty = False
