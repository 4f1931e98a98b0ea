"""A KVM virtual machine file descriptor: memory slots, in-kernel irqchip and PIT, vCPUs."""

import ctypes
import os

from . import abi
from .ioctl import ioctl


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

    def create_vcpu(self, vcpu_id: int = 0):
        from .vcpu import Vcpu
        return Vcpu(self, ioctl(self.fd, abi.KVM_CREATE_VCPU, vcpu_id), vcpu_id)
