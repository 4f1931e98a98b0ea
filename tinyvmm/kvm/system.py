"""The /dev/kvm system file descriptor: API version, capabilities, CPUID, VM creation."""

import errno
import os

from ..errors import HostError
from . import abi
from .ioctl import KvmError, ioctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .vm import Vm

KVM_DEVICE = "/dev/kvm"


class KvmUnavailable(HostError, RuntimeError):
    """/dev/kvm is missing, not accessible, or speaks another API version."""


class Kvm:
    """An open /dev/kvm."""

    def __init__(self, path: str = KVM_DEVICE):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KvmUnavailable(f"cannot open {path}: {exc.strerror}") from None
        version = ioctl(self.fd, abi.KVM_GET_API_VERSION)
        if version != abi.KVM_API_VERSION:
            os.close(self.fd)
            raise KvmUnavailable(f"{path} speaks KVM API {version}, not {abi.KVM_API_VERSION}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_extension(self, cap: int) -> int:
        return ioctl(self.fd, abi.KVM_CHECK_EXTENSION, cap)

    def vcpu_mmap_size(self) -> int:
        return ioctl(self.fd, abi.KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self) -> list[abi.kvm_cpuid_entry2]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer until it fits."""
        nent = 64
        while True:
            buf = abi.cpuid2_type(nent)(nent=nent)
            try:
                ioctl(self.fd, abi.KVM_GET_SUPPORTED_CPUID, buf)
            except KvmError as exc:
                if exc.errno == errno.E2BIG and nent < 4096:
                    nent *= 2
                    continue
                raise
            return [abi.kvm_cpuid_entry2.from_buffer_copy(e) for e in buf.entries[:buf.nent]]

    def create_vm(self) -> "Vm":
        from .vm import Vm
        return Vm(self, ioctl(self.fd, abi.KVM_CREATE_VM, 0))


def is_emulating_host() -> bool:
    """True on hosts whose KVM emulates guest code (the kvm_pvm module).

    Such a KVM cannot execute XSAVE-state instructions for the guest, and a
    Linux guest can only get as far as its early boot messages.
    """
    return os.path.isdir("/sys/module/kvm_pvm")


def kvm_status() -> str | None:
    """None when /dev/kvm is usable, else the reason it is not."""
    try:
        Kvm().close()
    except (KvmUnavailable, KvmError) as exc:
        return str(exc)
    return None


