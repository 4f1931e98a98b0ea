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


def guest_cpuid(supported: list[abi.kvm_cpuid_entry2], hide_xsave: bool) -> list[abi.kvm_cpuid_entry2]:
    """Copy KVM's supported CPUID; with hide_xsave, take away XSAVE and what depends on it.

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
    return entries


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
