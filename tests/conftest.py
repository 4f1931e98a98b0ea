"""Markers that need something from the machine skip, with the reason, where it is absent."""

import shutil
from pathlib import Path

import pytest

from tinyvmm.kvm.system import kvm_status
from guest_build import toolchain_missing
from payloads import initrd, payload, pvh_payload  # noqa: F401 (fixtures for every test module)

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "kernels" / "build" / "bzImage"
VMLINUX = ROOT / "kernels" / "build" / "vmlinux"       # the same kernel as ELF (PVH)

_kvm_reason = kvm_status()


def pytest_runtest_setup(item):
    if item.get_closest_marker("kvm"):
        if _kvm_reason:
            pytest.skip(f"needs /dev/kvm: {_kvm_reason}")
        missing = toolchain_missing()
        if missing:
            pytest.skip(f"needs the guest toolchain: {missing}")
    if item.get_closest_marker("gdb") and shutil.which("gdb") is None:
        pytest.skip("needs gdb on PATH (Debian package gdb)")
    if item.get_closest_marker("qemu") and shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
    if item.get_closest_marker("kernel"):
        for path in (KERNEL, VMLINUX):
            if not path.exists():
                pytest.skip(f"needs the test kernel {path}: run make -C kernels")
