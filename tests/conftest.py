"""Markers that need something from the machine skip, with the reason, where it is absent."""

import shutil

import pytest
from guest_build import toolchain_missing
from payloads import initrd, kernel_missing, payload, pc_kernel, pvh_payload  # noqa: F401 (fixtures for every test module)

from tinyvmm.kvm.system import kvm_status

_kvm_reason = kvm_status()
_kernel_reason = kernel_missing()


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
    if item.get_closest_marker("kernel") and _kernel_reason:
        pytest.skip(_kernel_reason)
