"""tinyvmm: a minimal virtual machine monitor over /dev/kvm, with a QEMU-compatible fw_cfg."""

__version__ = "0.1.0"
