"""The test payloads (firmware/tests/payload.S, a bzImage; pvh_payload.S, an ELF PVH kernel) and an
initrd, built once per session; where the test kernels of `make -C kernels` are."""

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import guest_build
import pytest

from tinyvmm.boot import payload as boot_defaults

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_SOURCES = ROOT / "firmware"

# The test kernel, where `tinyvmm boot` finds it when given no --kernel (kernels/build, or
# the folder TINYVMM_KERNELS names): tests marked `kernel` need all three files.
KERNEL = Path(boot_defaults.DEFAULT_KERNEL)
VMLINUX = Path(boot_defaults.DEFAULT_VMLINUX)           # the same kernel as ELF (PVH)
KERNEL_INITRD = Path(boot_defaults.DEFAULT_INITRD)



class PcKernel(NamedTuple):
    """The pc kernel of `make -C kernels` (kernels/pc.config: PCI, ACPI, SMP, virtio-blk)."""
    bzimage: Path
    vmlinux: Path
    initrd: Path


# It lives in pc/ inside the test kernel's folder, so TINYVMM_KERNELS finds both.
PC_KERNEL = PcKernel(*(KERNEL.parent / "pc" / path.name for path in (KERNEL, VMLINUX, KERNEL_INITRD)))


def kernel_missing() -> str | None:
    """None when the test kernel is there, else why a test that boots it cannot run."""
    for path in (KERNEL, VMLINUX, KERNEL_INITRD):
        if not path.exists():
            return (f"needs the test kernel {path}: run make -C kernels, "
                    f"or set {boot_defaults.KERNELS_VARIABLE} to a folder holding it")
    return None


@pytest.fixture(scope="session")
def pc_kernel() -> PcKernel:
    """The pc kernel's files. A missing one fails the test rather than skipping it: `make -C
    kernels` (and so the set-up) builds this kernel, so its absence is a broken build."""
    for path in PC_KERNEL:
        if not path.exists():
            pytest.fail(f"the pc test kernel {path} is missing: run make -C kernels pc, or set "
                        f"{boot_defaults.KERNELS_VARIABLE} to a folder whose pc/ holds it")
    return PC_KERNEL


CLOUD_PACKAGE = "linux-image-cloud-amd64"


def cloud_kernel() -> tuple[Path, Path]:
    """Debian's cloud kernel (the newest /boot/vmlinuz-*-cloud-amd64) and its fw_cfg sysfs
    driver, which it builds as a module; skips the test, naming the package, when either
    is absent."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"),
                     key=lambda path: [int(part) if part.isdigit() else part
                                       for part in re.split(r"(\d+)", path.name)])
    if not kernels:
        pytest.skip(f"needs Debian's cloud kernel /boot/vmlinuz-*-cloud-amd64 ({CLOUD_PACKAGE}; "
                    "make setup installs it)")
    kernel = kernels[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    module = Path("/usr/lib/modules") / version / "kernel/drivers/firmware/qemu_fw_cfg.ko"
    for candidate in (module, module.with_name(module.name + ".xz")):
        if candidate.exists():
            return kernel, candidate
    pytest.skip(f"{kernel} has no {module} ({CLOUD_PACKAGE})")


def _cpio_entry(name: str, data: bytes, mode: int) -> bytes:
    """One member of a "newc" cpio archive (the initramfs format), padded to 4 bytes."""
    fields = (1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % field for field in fields) + name.encode() + b"\0"
    header += bytes(-len(header) % 4)
    return header + data + bytes(-len(data) % 4)


def initramfs_with_module(base: Path, module: Path, out: Path) -> Path:
    """The test initramfs `base` with `module` appended as /qemu_fw_cfg.ko (a second archive:
    the kernel unpacks them in turn), where the test init loads it. An .xz module is
    unpacked (finit_module takes it plain)."""
    import lzma
    data = module.read_bytes()
    if module.suffix == ".xz":
        data = lzma.decompress(data)
    extra = _cpio_entry("qemu_fw_cfg.ko", data, 0o100644) + _cpio_entry("TRAILER!!!", b"", 0)
    out.write_bytes(base.read_bytes() + extra + bytes(-len(extra) % 512))
    return out


def toolchain_missing() -> str | None:
    return guest_build.toolchain_missing(("make", "as", "ld", "objcopy"))


def make_firmware(out: Path, *targets: str) -> None:
    subprocess.run(["make", "-s", "-C", str(FIRMWARE_SOURCES), f"OUT={out}", f"BUILD={out / 'obj'}",
                    f"PYTHON={sys.executable}", *targets], check=True, capture_output=True)


def built_payload(tmp_path_factory, target: str, file_name: str) -> Path:
    """`make -C firmware TARGET` into a fresh folder; the path of what it built."""
    missing = toolchain_missing()
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp(target)
    make_firmware(out, target)
    return out / "obj" / file_name


@pytest.fixture(scope="session")
def payload(tmp_path_factory) -> Path:
    return built_payload(tmp_path_factory, "payload", "payload.bzImage")


@pytest.fixture(scope="session")
def pvh_payload(tmp_path_factory) -> Path:
    """firmware/tests/pvh_payload.S built by `make -C firmware pvh-payload`: a tiny ELF64 PVH
    kernel that reports on COM1 what its PVH entry was handed."""
    return built_payload(tmp_path_factory, "pvh-payload", "pvh_payload.elf")


@pytest.fixture(scope="session")
def initrd(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("initrd") / "initrd.bin"
    path.write_bytes(bytes((i * 7919 >> 3) & 0xFF for i in range(300_001)))
    return path


def parse_report(text: str, prefix: str, lists=()) -> dict:
    """A payload's report, '<prefix>: KEY a=1f b=2' lines -> {KEY: {a: 0x1f, b: 2}}; the keys in
    `lists` gather their lines in a list (their first word as "name"); cmdline is its text."""
    import re
    report: dict = {key: [] for key in lists}
    for line in text.splitlines():
        match = re.search(rf"{prefix}: (\w+)(.*)", line)     # firmware may have begun the line
        if not match:
            continue
        key, rest = match.groups()
        if key == "cmdline":
            report[key] = rest[1:]
            continue
        fields = {name: int(value, 16) for name, value in re.findall(r" (\w+)=([0-9a-f]+)", rest)}
        if key in report and isinstance(report[key], list):
            if rest.split() and "=" not in rest.split()[0]:
                fields["name"] = rest.split()[0]
            report[key].append(fields)
        else:
            report[key] = fields
    return report

