"""The KVM userspace ABI: ctypes structures, constants and ioctl numbers.

Layouts follow the x86-64 uapi headers of Linux 6.1 (linux/kvm.h, asm/kvm.h).
Every ioctl number is computed from the size of its argument structure, as the
kernel's _IOW/_IOR/_IOWR macros do, so a wrong structure shows up as a wrong
number in tests/test_kvm_abi.py.
"""

import ctypes
from ctypes import c_uint8, c_uint16, c_uint32, c_uint64

KVM_API_VERSION = 12

# asm-generic/ioctl.h
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def IO(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def IOW(nr: int, struct) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def IOR(nr: int, struct) -> int:
    return _ioc(_IOC_READ, nr, ctypes.sizeof(struct))


def IOWR(nr: int, struct) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(struct))


class _Struct(ctypes.Structure):
    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name, *_ in self._fields_)
        return f"{type(self).__name__}({fields})"


# --- memory ---------------------------------------------------------------

class kvm_userspace_memory_region(_Struct):
    _fields_ = [
        ("slot", c_uint32),
        ("flags", c_uint32),
        ("guest_phys_addr", c_uint64),
        ("memory_size", c_uint64),
        ("userspace_addr", c_uint64),
    ]


KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1

# --- registers ------------------------------------------------------------

class kvm_regs(_Struct):
    _fields_ = [(name, c_uint64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        "rip", "rflags")]


class kvm_segment(_Struct):
    _fields_ = [
        ("base", c_uint64),
        ("limit", c_uint32),
        ("selector", c_uint16),
        ("type", c_uint8),
        ("present", c_uint8),
        ("dpl", c_uint8),
        ("db", c_uint8),
        ("s", c_uint8),
        ("l", c_uint8),
        ("g", c_uint8),
        ("avl", c_uint8),
        ("unusable", c_uint8),
        ("padding", c_uint8),
    ]


class kvm_dtable(_Struct):
    _fields_ = [("base", c_uint64), ("limit", c_uint16), ("padding", c_uint16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(_Struct):
    _fields_ = [
        ("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment),
        ("fs", kvm_segment), ("gs", kvm_segment), ("ss", kvm_segment),
        ("tr", kvm_segment), ("ldt", kvm_segment),
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", c_uint64), ("cr2", c_uint64), ("cr3", c_uint64), ("cr4", c_uint64),
        ("cr8", c_uint64), ("efer", c_uint64), ("apic_base", c_uint64),
        ("interrupt_bitmap", c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_fpu(_Struct):
    _fields_ = [
        ("fpr", (c_uint8 * 16) * 8),
        ("fcw", c_uint16), ("fsw", c_uint16), ("ftwx", c_uint8), ("pad1", c_uint8),
        ("last_opcode", c_uint16), ("last_ip", c_uint64), ("last_dp", c_uint64),
        ("xmm", (c_uint8 * 16) * 16),
        ("mxcsr", c_uint32), ("pad2", c_uint32),
    ]

# --- CPUID and MSRs (flexible-array structures) ---------------------------

class kvm_cpuid_entry2(_Struct):
    _fields_ = [
        ("function", c_uint32), ("index", c_uint32), ("flags", c_uint32),
        ("eax", c_uint32), ("ebx", c_uint32), ("ecx", c_uint32), ("edx", c_uint32),
        ("padding", c_uint32 * 3),
    ]


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1


class kvm_cpuid2(_Struct):
    """Header only; use cpuid2_type(n) for a buffer with n entries."""
    _fields_ = [("nent", c_uint32), ("padding", c_uint32)]


def cpuid2_type(nent: int):
    return type(f"kvm_cpuid2_{nent}", (_Struct,), {
        "_fields_": [("nent", c_uint32), ("padding", c_uint32),
                     ("entries", kvm_cpuid_entry2 * nent)]})


class kvm_msr_entry(_Struct):
    _fields_ = [("index", c_uint32), ("reserved", c_uint32), ("data", c_uint64)]


class kvm_msrs(_Struct):
    """Header only; use msrs_type(n) for a buffer with n entries."""
    _fields_ = [("nmsrs", c_uint32), ("pad", c_uint32)]


def msrs_type(n: int):
    return type(f"kvm_msrs_{n}", (_Struct,), {
        "_fields_": [("nmsrs", c_uint32), ("pad", c_uint32), ("entries", kvm_msr_entry * n)]})


class kvm_msr_list(_Struct):
    _fields_ = [("nmsrs", c_uint32)]

# --- interrupts, PIT, debug -----------------------------------------------

class kvm_pit_config(_Struct):
    _fields_ = [("flags", c_uint32), ("pad", c_uint32 * 15)]


class kvm_lapic_state(_Struct):
    """The local APIC's register page (KVM_GET_LAPIC): register R at byte offset R."""
    _fields_ = [("regs", c_uint8 * 1024)]


KVM_PIT_SPEAKER_DUMMY = 1


class kvm_irq_level(_Struct):
    _fields_ = [("irq", c_uint32), ("level", c_uint32)]


class kvm_irqfd(_Struct):
    _fields_ = [("fd", c_uint32), ("gsi", c_uint32), ("flags", c_uint32),
                ("resamplefd", c_uint32), ("pad", c_uint8 * 16)]


KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IRQFD_FLAG_RESAMPLE = 1 << 1


class kvm_ioeventfd(_Struct):
    _fields_ = [("datamatch", c_uint64), ("addr", c_uint64), ("len", c_uint32),
                ("fd", ctypes.c_int32), ("flags", c_uint32), ("pad", c_uint8 * 36)]


KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2


class kvm_mp_state(_Struct):
    _fields_ = [("mp_state", c_uint32)]


KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1     # an AP before its first INIT (with an in-kernel irqchip)
KVM_MP_STATE_INIT_RECEIVED = 2     # an AP waiting for its SIPI
KVM_MP_STATE_HALTED = 3


class kvm_guest_debug_arch(_Struct):
    _fields_ = [("debugreg", c_uint64 * 8)]


class kvm_guest_debug(_Struct):
    _fields_ = [("control", c_uint32), ("pad", c_uint32), ("arch", kvm_guest_debug_arch)]


KVM_GUESTDBG_ENABLE = 0x1
KVM_GUESTDBG_SINGLESTEP = 0x2
KVM_GUESTDBG_USE_SW_BP = 0x10000
KVM_GUESTDBG_USE_HW_BP = 0x20000
KVM_GUESTDBG_INJECT_DB = 0x40000
KVM_GUESTDBG_INJECT_BP = 0x80000
KVM_GUESTDBG_BLOCKIRQ = 0x100000


class kvm_vcpu_events_exception(_Struct):
    _fields_ = [("injected", c_uint8), ("nr", c_uint8), ("has_error_code", c_uint8),
                ("pending", c_uint8), ("error_code", c_uint32)]


class kvm_vcpu_events_interrupt(_Struct):
    _fields_ = [("injected", c_uint8), ("nr", c_uint8), ("soft", c_uint8), ("shadow", c_uint8)]


class kvm_vcpu_events(_Struct):
    """Pending and in-delivery events (64 bytes): an exception or a (soft) interrupt set
    here is delivered through the guest's IDT at the next entry."""
    _fields_ = [
        ("exception", kvm_vcpu_events_exception),
        ("interrupt", kvm_vcpu_events_interrupt),
        ("nmi", c_uint8 * 4),
        ("sipi_vector", c_uint32),
        ("flags", c_uint32),
        ("smi", c_uint8 * 4),
        ("triple_fault", c_uint8),
        ("reserved", c_uint8 * 26),
        ("exception_has_payload", c_uint8),
        ("exception_payload", c_uint64),
    ]


class kvm_debugregs(_Struct):
    """The guest's own debug registers (128 bytes): DR0-DR3, DR6, DR7."""
    _fields_ = [("db", c_uint64 * 4), ("dr6", c_uint64), ("dr7", c_uint64), ("flags", c_uint64),
                ("reserved", c_uint64 * 9)]


KVM_VCPUEVENT_VALID_SHADOW = 0x4     # kvm_vcpu_events.flags: interrupt.shadow is meant
KVM_X86_SHADOW_INT_MOV_SS = 0x1      # interrupt.shadow: after MOV SS or POP SS
KVM_X86_SHADOW_INT_STI = 0x2         # after STI


class kvm_translation(_Struct):
    _fields_ = [("linear_address", c_uint64), ("physical_address", c_uint64),
                ("valid", c_uint8), ("writeable", c_uint8), ("usermode", c_uint8),
                ("pad", c_uint8 * 5)]

class kvm_signal_mask(_Struct):
    """The header whose size the ioctl number encodes; the sigset follows it."""
    _fields_ = [("len", c_uint32)]


class kvm_signal_mask_sigset(_Struct):
    """kvm_signal_mask with the x86-64 kernel's 8-byte sigset (bit n - 1: signal n)."""
    _fields_ = [("len", c_uint32), ("sigset", c_uint64)]


# --- the shared run page --------------------------------------------------

class kvm_run_io(_Struct):
    _fields_ = [("direction", c_uint8), ("size", c_uint8), ("port", c_uint16),
                ("count", c_uint32), ("data_offset", c_uint64)]


class kvm_run_mmio(_Struct):
    _fields_ = [("phys_addr", c_uint64), ("data", c_uint8 * 8), ("len", c_uint32),
                ("is_write", c_uint8)]


class kvm_run_debug(_Struct):
    _fields_ = [("exception", c_uint32), ("pad", c_uint32), ("pc", c_uint64),
                ("dr6", c_uint64), ("dr7", c_uint64)]


class kvm_run_fail_entry(_Struct):
    _fields_ = [("hardware_entry_failure_reason", c_uint64), ("cpu", c_uint32)]


class kvm_run_internal(_Struct):
    _fields_ = [("suberror", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class kvm_run_system_event(_Struct):
    _fields_ = [("type", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class kvm_run_ex(_Struct):
    _fields_ = [("exception", c_uint32), ("error_code", c_uint32)]


class kvm_run_exit(ctypes.Union):
    _fields_ = [
        ("hw_exit_reason", c_uint64),
        ("fail_entry", kvm_run_fail_entry),
        ("ex", kvm_run_ex),
        ("io", kvm_run_io),
        ("debug", kvm_run_debug),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("system_event", kvm_run_system_event),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run(_Struct):
    _fields_ = [
        ("request_interrupt_window", c_uint8),
        ("immediate_exit", c_uint8),
        ("padding1", c_uint8 * 6),
        ("exit_reason", c_uint32),
        ("ready_for_interrupt_injection", c_uint8),
        ("if_flag", c_uint8),
        ("flags", c_uint16),
        ("cr8", c_uint64),
        ("apic_base", c_uint64),
        ("exit", kvm_run_exit),
        ("kvm_valid_regs", c_uint64),
        ("kvm_dirty_regs", c_uint64),
        ("s", ctypes.c_char * 2048),
    ]


# Exit reasons (linux/kvm.h KVM_EXIT_*)
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30

EXIT_REASON_NAMES = {
    value: name[len("KVM_EXIT_"):]
    for name, value in dict(globals()).items() if name.startswith("KVM_EXIT_")
}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_NAMES = {1: "EMULATION", 2: "SIMUL_EX", 3: "DELIVERY_EV",
                            4: "UNEXPECTED_EXIT_REASON"}
KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3
KVM_SYSTEM_EVENT_NAMES = {1: "SHUTDOWN", 2: "RESET", 3: "CRASH", 4: "WAKEUP",
                          5: "SUSPEND", 6: "SEV_TERM"}

# Capabilities (linux/kvm.h KVM_CAP_*)
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9             # vCPUs the host recommends
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_IRQFD = 32
KVM_CAP_PIT2 = 33
KVM_CAP_IOEVENTFD = 36
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_MAX_VCPUS = 66           # vCPUs a VM may have
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IRQFD_RESAMPLE = 82
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_SET_GUEST_DEBUG2 = 195

# --- ioctl numbers, in the kernel's order ---------------------------------

# /dev/kvm
KVM_GET_API_VERSION = IO(0x00)
KVM_CREATE_VM = IO(0x01)
KVM_GET_MSR_INDEX_LIST = IOWR(0x02, kvm_msr_list)
KVM_CHECK_EXTENSION = IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = IO(0x04)
KVM_GET_SUPPORTED_CPUID = IOWR(0x05, kvm_cpuid2)
# VM fd
KVM_CREATE_VCPU = IO(0x41)
KVM_SET_USER_MEMORY_REGION = IOW(0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = IO(0x47)                                  # KVM_CAP_SET_TSS_ADDR
KVM_SET_IDENTITY_MAP_ADDR = IOW(0x48, c_uint64)              # KVM_CAP_SET_IDENTITY_MAP_ADDR
KVM_CREATE_IRQCHIP = IO(0x60)                                # KVM_CAP_IRQCHIP
KVM_IRQ_LINE = IOW(0x61, kvm_irq_level)
KVM_IRQFD = IOW(0x76, kvm_irqfd)                             # KVM_CAP_IRQFD
KVM_CREATE_PIT2 = IOW(0x77, kvm_pit_config)                  # KVM_CAP_PIT2
KVM_GET_LAPIC = IOR(0x8E, kvm_lapic_state)
KVM_IOEVENTFD = IOW(0x79, kvm_ioeventfd)                     # KVM_CAP_IOEVENTFD
# vCPU fd
KVM_RUN = IO(0x80)
KVM_GET_MP_STATE = IOR(0x98, kvm_mp_state)
KVM_GET_REGS = IOR(0x81, kvm_regs)
KVM_SET_REGS = IOW(0x82, kvm_regs)
KVM_GET_SREGS = IOR(0x83, kvm_sregs)
KVM_SET_SREGS = IOW(0x84, kvm_sregs)
KVM_TRANSLATE = IOWR(0x85, kvm_translation)
KVM_GET_MSRS = IOWR(0x88, kvm_msrs)
KVM_SET_MSRS = IOW(0x89, kvm_msrs)
KVM_GET_FPU = IOR(0x8C, kvm_fpu)
KVM_SET_FPU = IOW(0x8D, kvm_fpu)
KVM_SET_SIGNAL_MASK = IOW(0x8B, kvm_signal_mask)
KVM_SET_CPUID2 = IOW(0x90, kvm_cpuid2)
KVM_GET_CPUID2 = IOWR(0x91, kvm_cpuid2)
KVM_SET_GUEST_DEBUG = IOW(0x9B, kvm_guest_debug)             # KVM_CAP_SET_GUEST_DEBUG
KVM_GET_VCPU_EVENTS = IOR(0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = IOW(0xA0, kvm_vcpu_events)
KVM_GET_DEBUGREGS = IOR(0xA1, kvm_debugregs)

IOCTL_NAMES = {
    value: name for name, value in dict(globals()).items()
    if name.startswith("KVM_") and name.isupper() and isinstance(value, int)
    and (value >> 8) & 0xFF == KVMIO and not name.startswith(("KVM_EXIT", "KVM_CAP"))
}
