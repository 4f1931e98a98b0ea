"""A KVM virtual machine file descriptor: memory slots, in-kernel irqchip and PIT, vCPUs."""

import ctypes
import os

from . import abi
from .ioctl import ioctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .vcpu import Vcpu


class Vm:
    """A VM created by Kvm.create_vm()."""

    def __init__(self, kvm, fd: int):
        self.kvm = kvm
        self.fd = fd
        self._irq = abi.kvm_irq_level()
        self._next_slot = 0
        self._free_slots: list[int] = []

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_extension(self, cap: int) -> int:
        return ioctl(self.fd, abi.KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, size: int, host_addr: int,
                               readonly: bool = False) -> None:
        """KVM_SET_USER_MEMORY_REGION: size 0 deletes the slot."""
        region = abi.kvm_userspace_memory_region(
            slot=slot, flags=abi.KVM_MEM_READONLY if readonly else 0,
            guest_phys_addr=guest_phys_addr, memory_size=size, userspace_addr=host_addr)
        ioctl(self.fd, abi.KVM_SET_USER_MEMORY_REGION, region)

    def map_memory(self, guest_phys_addr: int, size: int, host_addr: int,
                   readonly: bool = False) -> int:
        """Map size bytes of host memory at guest_phys_addr in a free slot; returns the slot."""
        slot = self._free_slots.pop() if self._free_slots else self._next_slot
        try:
            self.set_user_memory_region(slot, guest_phys_addr, size, host_addr, readonly)
        except BaseException:
            self._free_slots.append(slot)
            raise
        if slot == self._next_slot:
            self._next_slot += 1
        return slot

    def unmap_memory(self, slot: int) -> None:
        self.set_user_memory_region(slot, 0, 0, 0)
        self._free_slots.append(slot)

    def set_tss_addr(self, address: int) -> None:
        ioctl(self.fd, abi.KVM_SET_TSS_ADDR, address)

    def set_identity_map_addr(self, address: int) -> None:
        ioctl(self.fd, abi.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(address))

    def create_irqchip(self) -> None:
        ioctl(self.fd, abi.KVM_CREATE_IRQCHIP)

    def create_pit2(self) -> None:
        ioctl(self.fd, abi.KVM_CREATE_PIT2, abi.kvm_pit_config(flags=abi.KVM_PIT_SPEAKER_DUMMY))

    def irq_line(self, gsi: int, level: bool) -> None:
        self._irq.irq = gsi
        self._irq.level = 1 if level else 0
        ioctl(self.fd, abi.KVM_IRQ_LINE, self._irq)

    def ioeventfd(self, fd: int, address: int, length: int, datamatch: int | None = None,
                  pio: bool = False, deassign: bool = False) -> None:
        """KVM_IOEVENTFD: a guest write of `length` bytes (1, 2, 4 or 8; 0 for any) at MMIO
        `address` (a port with `pio`) signals eventfd `fd` inside KVM instead of exiting;
        with `datamatch`, only writes of that value. `deassign` removes the same registration
        (all arguments as given to assign). KvmError when there is none to remove (ENOENT) or
        one already exists (EEXIST)."""
        flags = 0
        if pio:
            flags |= abi.KVM_IOEVENTFD_FLAG_PIO
        if deassign:
            flags |= abi.KVM_IOEVENTFD_FLAG_DEASSIGN
        if datamatch is not None:
            flags |= abi.KVM_IOEVENTFD_FLAG_DATAMATCH
        ioctl(self.fd, abi.KVM_IOEVENTFD, abi.kvm_ioeventfd(
            datamatch=datamatch or 0, addr=address, len=length, fd=fd, flags=flags))

    def irqfd(self, fd: int, gsi: int, resample_fd: int | None = None, deassign: bool = False) -> None:
        """KVM_IRQFD: a write to eventfd `fd` raises interrupt `gsi` inside KVM. Without
        `resample_fd` the interrupt is an edge (raised and lowered at once); with it, a level
        held until the guest acknowledges it (EOI), when KVM lowers it and signals
        `resample_fd`. `deassign` detaches `fd` from `gsi` (lowering a held level)."""
        request = abi.kvm_irqfd(fd=fd, gsi=gsi)
        if deassign:
            request.flags = abi.KVM_IRQFD_FLAG_DEASSIGN
        elif resample_fd is not None:
            request.flags = abi.KVM_IRQFD_FLAG_RESAMPLE
            request.resamplefd = resample_fd
        ioctl(self.fd, abi.KVM_IRQFD, request)

    def create_vcpu(self, vcpu_id: int = 0) -> "Vcpu":
        from .vcpu import Vcpu
        return Vcpu(self, ioctl(self.fd, abi.KVM_CREATE_VCPU, vcpu_id), vcpu_id)
