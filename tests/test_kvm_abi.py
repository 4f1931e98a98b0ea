"""The ctypes structures and ioctl numbers against the Linux 6.1 uapi headers' values."""

import ctypes

import pytest

from tinyvmm.kvm import abi

SIZES = {
    "kvm_regs": 144, "kvm_sregs": 312, "kvm_segment": 24, "kvm_dtable": 16, "kvm_run": 2352,
    "kvm_userspace_memory_region": 32, "kvm_cpuid_entry2": 40, "kvm_msr_entry": 16,
    "kvm_pit_config": 64, "kvm_irq_level": 8, "kvm_fpu": 416, "kvm_guest_debug": 72,
    "kvm_translation": 24, "kvm_irqfd": 32, "kvm_ioeventfd": 64,
}

OFFSETS = [
    (abi.kvm_regs, "rip", 128), (abi.kvm_regs, "rflags", 136), (abi.kvm_regs, "r8", 64),
    (abi.kvm_segment, "selector", 12), (abi.kvm_segment, "type", 14), (abi.kvm_segment, "unusable", 22),
    (abi.kvm_sregs, "tr", 144), (abi.kvm_sregs, "gdt", 192), (abi.kvm_sregs, "idt", 208),
    (abi.kvm_sregs, "cr0", 224), (abi.kvm_sregs, "efer", 264), (abi.kvm_sregs, "interrupt_bitmap", 280),
    (abi.kvm_run, "immediate_exit", 1), (abi.kvm_run, "exit_reason", 8), (abi.kvm_run, "exit", 32),
    (abi.kvm_run, "kvm_valid_regs", 288), (abi.kvm_run, "s", 304),
    (abi.kvm_run_io, "data_offset", 8), (abi.kvm_run_mmio, "len", 16), (abi.kvm_run_mmio, "is_write", 20),
    (abi.kvm_run_internal, "data", 8), (abi.kvm_cpuid_entry2, "eax", 12), (abi.kvm_fpu, "mxcsr", 408),
    (abi.kvm_fpu, "xmm", 152), (abi.kvm_guest_debug, "arch", 8),
    (abi.kvm_irqfd, "resamplefd", 12), (abi.kvm_irqfd, "pad", 16),
    (abi.kvm_ioeventfd, "addr", 8), (abi.kvm_ioeventfd, "len", 16), (abi.kvm_ioeventfd, "fd", 20),
    (abi.kvm_ioeventfd, "flags", 24), (abi.kvm_ioeventfd, "pad", 28),
]

IOCTLS = {
    "KVM_GET_API_VERSION": 0xAE00, "KVM_CREATE_VM": 0xAE01, "KVM_CHECK_EXTENSION": 0xAE03,
    "KVM_GET_VCPU_MMAP_SIZE": 0xAE04, "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
    "KVM_GET_MP_STATE": 0x8004AE98,
    "KVM_GET_MSR_INDEX_LIST": 0xC004AE02, "KVM_CREATE_VCPU": 0xAE41,
    "KVM_SET_USER_MEMORY_REGION": 0x4020AE46, "KVM_SET_TSS_ADDR": 0xAE47,
    "KVM_SET_IDENTITY_MAP_ADDR": 0x4008AE48, "KVM_CREATE_IRQCHIP": 0xAE60, "KVM_IRQ_LINE": 0x4008AE61,
    "KVM_IRQFD": 0x4020AE76, "KVM_CREATE_PIT2": 0x4040AE77, "KVM_IOEVENTFD": 0x4040AE79,
    "KVM_RUN": 0xAE80, "KVM_GET_REGS": 0x8090AE81,
    "KVM_SET_REGS": 0x4090AE82, "KVM_GET_SREGS": 0x8138AE83, "KVM_SET_SREGS": 0x4138AE84,
    "KVM_TRANSLATE": 0xC018AE85, "KVM_GET_MSRS": 0xC008AE88, "KVM_SET_MSRS": 0x4008AE89,
    "KVM_GET_FPU": 0x81A0AE8C, "KVM_SET_FPU": 0x41A0AE8D, "KVM_SET_CPUID2": 0x4008AE90,
    "KVM_GET_CPUID2": 0xC008AE91, "KVM_SET_GUEST_DEBUG": 0x4048AE9B,
}


@pytest.mark.parametrize("name,size", sorted(SIZES.items()))
def test_struct_size(name, size):
    assert ctypes.sizeof(getattr(abi, name)) == size


@pytest.mark.parametrize("struct,field,offset", OFFSETS,
                         ids=[f"{s.__name__}.{f}" for s, f, _ in OFFSETS])
def test_field_offset(struct, field, offset):
    assert getattr(struct, field).offset == offset


@pytest.mark.parametrize("name,value", sorted(IOCTLS.items()))
def test_ioctl_number(name, value):
    assert getattr(abi, name) == value


def test_flexible_arrays_have_kernel_layout():
    assert ctypes.sizeof(abi.cpuid2_type(3)) == 8 + 3 * 40
    assert ctypes.sizeof(abi.msrs_type(2)) == 8 + 2 * 16


def test_ioctl_names_are_reverse_mapped():
    assert abi.IOCTL_NAMES[abi.KVM_RUN] == "KVM_RUN"
    assert abi.EXIT_REASON_NAMES[abi.KVM_EXIT_SHUTDOWN] == "SHUTDOWN"
