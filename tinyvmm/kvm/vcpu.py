"""A KVM vCPU file descriptor: the shared kvm_run page, registers, CPUID, MSRs, guest debug."""

import mmap
import os

from . import abi
from .ioctl import ioctl


class Vcpu:
    """A vCPU created by Vm.create_vcpu().

    `run_page` is the kernel's kvm_run structure for this vCPU, viewed in place
    (no copies); `run_mmap` is the same page as an mmap, for the I/O data area.
    """

    def __init__(self, vm, fd: int, vcpu_id: int):
        self.vm = vm
        self.fd = fd
        self.id = vcpu_id
        size = vm.kvm.vcpu_mmap_size()
        self.run_mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_page = abi.kvm_run.from_buffer(self.run_mmap)

    def close(self) -> None:
        """Release the vCPU; never raises, so it cannot hide the error that ended a run."""
        if self.fd >= 0:
            del self.run_page       # the mapping cannot close while this view of it lives
            try:
                self.run_mmap.close()
            except BufferError:
                pass            # a view of kvm_run is still alive: the mapping goes with it
            os.close(self.fd)
            self.fd = -1

    def set_signal_mask(self, blocked: set[int] | None) -> None:
        """The signals blocked while this vCPU runs the guest (KVM_SET_SIGNAL_MASK), in place
        of the thread's own mask; None: the thread's own again."""
        if blocked is None:
            ioctl(self.fd, abi.KVM_SET_SIGNAL_MASK, 0)      # a NULL mask: no swap
            return
        mask = abi.kvm_signal_mask_sigset(8, sum(1 << (int(n) - 1) for n in blocked))
        ioctl(self.fd, abi.KVM_SET_SIGNAL_MASK, mask)

    def lapic_requests(self) -> bool:
        """Whether the local APIC holds an interrupt request (any IRR bit; KVM_GET_LAPIC)."""
        state = abi.kvm_lapic_state()
        ioctl(self.fd, abi.KVM_GET_LAPIC, state)
        irr = bytes(state.regs)[0x200:0x280]           # eight 32-bit words, 16 bytes apart
        return any(irr[16 * i:16 * i + 4] != bytes(4) for i in range(8))

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE: KVM_MP_STATE_RUNNABLE, _HALTED, ... (in-kernel irqchip only)."""
        state = abi.kvm_mp_state()
        ioctl(self.fd, abi.KVM_GET_MP_STATE, state)
        return state.mp_state

    def get_regs(self) -> abi.kvm_regs:
        regs = abi.kvm_regs()
        ioctl(self.fd, abi.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: abi.kvm_regs) -> None:
        ioctl(self.fd, abi.KVM_SET_REGS, regs)

    def get_sregs(self) -> abi.kvm_sregs:
        sregs = abi.kvm_sregs()
        ioctl(self.fd, abi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: abi.kvm_sregs) -> None:
        ioctl(self.fd, abi.KVM_SET_SREGS, sregs)

    def get_fpu(self) -> abi.kvm_fpu:
        fpu = abi.kvm_fpu()
        ioctl(self.fd, abi.KVM_GET_FPU, fpu)
        return fpu

    def set_fpu(self, fpu: abi.kvm_fpu) -> None:
        ioctl(self.fd, abi.KVM_SET_FPU, fpu)

    def get_vcpu_events(self) -> abi.kvm_vcpu_events:
        events = abi.kvm_vcpu_events()
        ioctl(self.fd, abi.KVM_GET_VCPU_EVENTS, events)
        return events

    def get_debugregs(self) -> abi.kvm_debugregs:
        """KVM_GET_DEBUGREGS: the guest's own DR0-DR3, DR6 and DR7 (not a debugger's)."""
        debugregs = abi.kvm_debugregs()
        ioctl(self.fd, abi.KVM_GET_DEBUGREGS, debugregs)
        return debugregs

    def set_vcpu_events(self, events: abi.kvm_vcpu_events) -> None:
        """KVM_SET_VCPU_EVENTS: what is injected here is delivered at the next KVM_RUN."""
        ioctl(self.fd, abi.KVM_SET_VCPU_EVENTS, events)

    def set_cpuid(self, entries: list[abi.kvm_cpuid_entry2]) -> None:
        buf = abi.cpuid2_type(len(entries))(nent=len(entries))
        for i, entry in enumerate(entries):
            buf.entries[i] = entry
        ioctl(self.fd, abi.KVM_SET_CPUID2, buf)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        buf = abi.msrs_type(len(indices))(nmsrs=len(indices))
        for i, index in enumerate(indices):
            buf.entries[i].index = index
        done = ioctl(self.fd, abi.KVM_GET_MSRS, buf)
        return {buf.entries[i].index: buf.entries[i].data for i in range(done)}

    def set_guest_debug(self, control: int, debugreg: list[int] | None = None) -> None:
        dbg = abi.kvm_guest_debug(control=control)
        for i, value in enumerate(debugreg or []):
            dbg.arch.debugreg[i] = value
        ioctl(self.fd, abi.KVM_SET_GUEST_DEBUG, dbg)

    def translate(self, linear_address: int) -> int | None:
        """Guest linear to physical address through the guest's page tables, or None."""
        tr = abi.kvm_translation(linear_address=linear_address)
        ioctl(self.fd, abi.KVM_TRANSLATE, tr)
        return tr.physical_address if tr.valid else None
