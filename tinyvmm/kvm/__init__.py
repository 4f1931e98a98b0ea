"""Typed wrappers over /dev/kvm that follow its file descriptors: Kvm -> Vm -> Vcpu."""

from .ioctl import KvmError
from .system import Kvm, KvmUnavailable
from .vcpu import Vcpu
from .vm import Vm

__all__ = ["Kvm", "KvmError", "KvmUnavailable", "Vm", "Vcpu"]
