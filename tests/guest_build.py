"""Builds the tiny guests (tests/guests/*.S, benchmarks/guests/*.S) into 64 KiB firmware images.

One recipe for tests and benchmarks: preprocess (so a guest may #include
common.inc and take -D defines), assemble, link with guest.ld, flatten.
"""

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GUESTS = Path(__file__).parent / "guests"
GUEST_TOOLS = ("gcc", "as", "ld", "objcopy")
_build_dir = None
_cache: dict[str, "GuestImage"] = {}


@dataclass(frozen=True)
class GuestImage:
    bin_path: Path
    elf_path: Path


def toolchain_missing(tools=GUEST_TOOLS) -> str | None:
    """None when every tool is on PATH, else what is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} not found (install binutils and gcc)"
    return None


def assemble(source: Path, out: Path, defines: dict | None = None,
             linker_script: Path = GUESTS / "guest.ld") -> GuestImage:
    """Build SOURCE into OUT.bin (the flat image) and OUT.elf (its symbols)."""
    flags = [f"-D{name}={value}" for name, value in (defines or {}).items()]
    subprocess.run(["gcc", "-E", "-P", "-x", "assembler-with-cpp", f"-I{GUESTS}", *flags,
                    str(source), "-o", f"{out}.s"], check=True)
    subprocess.run(["as", "--32", "-o", f"{out}.o", f"{out}.s"], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(linker_script), "-o", f"{out}.elf",
                    f"{out}.o"], check=True)
    subprocess.run(["objcopy", "-O", "binary", f"{out}.elf", f"{out}.bin"], check=True)
    return GuestImage(Path(f"{out}.bin"), Path(f"{out}.elf"))


def build_guest(name: str, linker_script: str = "guest.ld") -> GuestImage:
    """tests/guests/NAME.S, built once per session."""
    global _build_dir
    key = f"{name}:{linker_script}"
    if key not in _cache:
        if _build_dir is None:
            _build_dir = Path(tempfile.mkdtemp(prefix="tinyvmm-guests-"))
        _cache[key] = assemble(GUESTS / f"{name}.S", _build_dir / name,
                               linker_script=GUESTS / linker_script)
    return _cache[key]
