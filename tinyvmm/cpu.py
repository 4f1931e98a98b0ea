"""The CPUID the guest sees: what KVM supports, minus what this host cannot run."""

from . import layout
from .kvm import abi

CPUID_1_ECX_XSAVE = 1 << 26
CPUID_1_ECX_OSXSAVE = 1 << 27
CPUID_1_ECX_AVX = 1 << 28
CPUID_7_EBX_AVX2 = 1 << 5
CPUID_7_EBX_AVX512 = 0xD0030000 | (1 << 21) | (1 << 26) | (1 << 27) | (1 << 28)
CPUID_XSAVE_LEAF = 0xD
CPUID_HYPERVISOR = 1 << 31
CPUID_1_EDX_HTT = 1 << 28           # EBX[23:16] (logical processors per package) is valid
CPUID_TOPOLOGY_LEAVES = (0xB, 0x1F)  # extended topology enumeration (x2APIC IDs)
CPUID_DETERMINISTIC_CACHE = 4
CPUID_AMD_SIZES = 0x80000008
TOPOLOGY_LEVEL_SMT, TOPOLOGY_LEVEL_CORE = 1, 2


def guest_cpuid(supported: list[abi.kvm_cpuid_entry2], hide_xsave: bool, apic_id: int = 0,
                cpus: int = 1) -> list[abi.kvm_cpuid_entry2]:
    """Copy KVM's supported CPUID; with hide_xsave, take away XSAVE and what depends on it;
    with the topology of vCPU `apic_id` of `cpus`: one package of `cpus` cores, one thread each.

    An emulating KVM (kvm_pvm) cannot execute xsave/xrstor for the guest, and
    Linux stops for good in xrstor during FPU setup unless XSAVE is absent.
    """
    entries = []
    for entry in supported:
        entry = abi.kvm_cpuid_entry2.from_buffer_copy(entry)
        if hide_xsave:
            if entry.function == CPUID_XSAVE_LEAF:
                continue
            if entry.function == 1:
                entry.ecx &= ~(CPUID_1_ECX_XSAVE | CPUID_1_ECX_OSXSAVE | CPUID_1_ECX_AVX)
            if entry.function == 7 and entry.index == 0:
                entry.ebx &= ~(CPUID_7_EBX_AVX2 | CPUID_7_EBX_AVX512)
        if entry.function == 1:
            entry.ecx |= CPUID_HYPERVISOR
        entries.append(entry)
    for function in CPUID_TOPOLOGY_LEAVES:       # KVM may list the first level alone
        levels = [e for e in entries if e.function == function]
        if levels and len(levels) < 3:
            for index in range(len(levels), 3):
                extra = abi.kvm_cpuid_entry2.from_buffer_copy(levels[0])
                extra.index = index
                entries.append(extra)
    for entry in entries:
        set_topology(entry, apic_id, cpus)
    return entries


def set_topology(entry: abi.kvm_cpuid_entry2, apic_id: int, cpus: int) -> None:
    """KVM leaves the topology fields as its own defaults for every vCPU: each vCPU must report
    the APIC ID its in-kernel LAPIC has (the vCPU id) and the package it is in."""
    core_bits = (cpus - 1).bit_length()     # APIC ID bits that number the cores
    if entry.function == 1:
        entry.ebx = (entry.ebx & 0xFFFF) | (min(cpus, 255) << 16) | ((apic_id & 0xFF) << 24)
        if cpus > 1:
            entry.edx |= CPUID_1_EDX_HTT
    elif entry.function in CPUID_TOPOLOGY_LEAVES:
        if entry.index == 0:                # the SMT level: one thread per core
            entry.eax, entry.ebx, entry.ecx = 0, 1, TOPOLOGY_LEVEL_SMT << 8
        elif entry.index == 1:              # the core level: every vCPU in one package
            entry.eax, entry.ebx, entry.ecx = core_bits, cpus, (TOPOLOGY_LEVEL_CORE << 8) | 1
        else:                               # no further level
            entry.eax, entry.ebx, entry.ecx = 0, 0, entry.index
        entry.edx = apic_id
    elif entry.function == CPUID_DETERMINISTIC_CACHE and entry.eax & 0x1F:
        # EAX[31:26]: addressable core IDs in the package, less one
        entry.eax = (entry.eax & 0x03FFFFFF) | (((1 << core_bits) - 1) << 26)
    elif entry.function == CPUID_AMD_SIZES:
        # ECX[15:12]: APIC ID bits for the core; ECX[7:0]: cores in the package, less one
        entry.ecx = (entry.ecx & ~0xF0FF) | (core_bits << 12) | (cpus - 1)


def guest_has_amd_ht_hole() -> bool:
    """Whether QEMU would reserve the HyperTransport range for this machine's vCPU: an AMD one
    (KVM gives the guest the host's vendor) that addresses at least 40 bits. Read from
    /proc/cpuinfo, so that the fw_cfg items are made without opening /dev/kvm."""
    vendor, physical_bits = _host_cpu()
    return vendor == "AuthenticAMD" and physical_bits >= layout.AMD_HT_PHYS_BITS


def _host_cpu() -> tuple[str, int]:
    """(vendor_id, physical address bits) of the host's first CPU; ("", 0) when unknown."""
    vendor, bits = "", 0
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id":
                    vendor = value.strip()
                elif key == "address sizes":       # "48 bits physical, 48 bits virtual"
                    bits = int(value.split()[0])
                elif not key and vendor:
                    break                           # the end of the first CPU's block
    except (OSError, ValueError, IndexError):
        pass
    return vendor, bits
