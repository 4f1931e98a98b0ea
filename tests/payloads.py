"""The test bzImage payload (firmware/tests/payload.S) and an initrd, built once per session."""

import subprocess
import sys
from pathlib import Path

import pytest

import guest_build

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_SOURCES = ROOT / "firmware"


def toolchain_missing() -> str | None:
    return guest_build.toolchain_missing(("make", "as", "ld", "objcopy"))


def make_firmware(out: Path, *targets: str) -> None:
    subprocess.run(["make", "-s", "-C", str(FIRMWARE_SOURCES), f"OUT={out}", f"BUILD={out / 'obj'}",
                    f"PYTHON={sys.executable}", *targets], check=True, capture_output=True)


@pytest.fixture(scope="session")
def payload(tmp_path_factory) -> Path:
    missing = toolchain_missing()
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("payload")
    make_firmware(out, "payload")
    return out / "obj" / "payload.bzImage"


@pytest.fixture(scope="session")
def initrd(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("initrd") / "initrd.bin"
    path.write_bytes(bytes((i * 7919 >> 3) & 0xFF for i in range(300_001)))
    return path
