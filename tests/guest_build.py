"""Builds the tiny test guests in tests/guests/*.S into 64 KiB firmware images (and their ELF)."""

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GUESTS = Path(__file__).parent / "guests"
_build_dir = None
_cache: dict[str, "GuestImage"] = {}


@dataclass(frozen=True)
class GuestImage:
    bin_path: Path
    elf_path: Path


def toolchain_missing() -> str | None:
    """None when the assembler toolchain is present, else what is missing."""
    for tool in ("gcc", "as", "ld", "objcopy"):
        if shutil.which(tool) is None:
            return f"{tool} not found (install binutils and gcc)"
    return None


def build_guest(name: str, linker_script: str = "guest.ld") -> GuestImage:
    """Assemble tests/guests/NAME.S (preprocessed, so it may #include common.inc)."""
    global _build_dir
    key = f"{name}:{linker_script}"
    if key in _cache:
        return _cache[key]
    if _build_dir is None:
        _build_dir = Path(tempfile.mkdtemp(prefix="tinyvmm-guests-"))
    out = _build_dir / name
    source = GUESTS / f"{name}.S"
    subprocess.run(["gcc", "-E", "-P", "-x", "assembler-with-cpp", f"-I{GUESTS}", str(source),
                    "-o", f"{out}.s"], check=True)
    subprocess.run(["as", "--32", "-o", f"{out}.o", f"{out}.s"], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(GUESTS / linker_script), "-o", f"{out}.elf",
                    f"{out}.o"], check=True)
    subprocess.run(["objcopy", "-O", "binary", f"{out}.elf", f"{out}.bin"], check=True)
    image = GuestImage(Path(f"{out}.bin"), Path(f"{out}.elf"))
    _cache[key] = image
    return image
