"""The payloads `tinyvmm bench --payload` boots: the test kernel, and a distribution's own kernel
and initramfs, the size the 2015 posting measured (Debian's linux-image-amd64: about 37 MiB)."""

import glob
import os
import re

PAYLOAD_NAMES = ("test", "distro")
DISTRO_PACKAGE = "linux-image-amd64"
# Where Debian installs a kernel package's image and the initramfs generated for it
# (vmlinuz-6.1.0-57-amd64, vmlinuz-6.12.38+deb13-amd64); the generic flavour, not the cloud
# or realtime ones, whose initramfs differ.
DISTRO_KERNELS = "/boot/vmlinuz-*-amd64"
OTHER_FLAVOURS = ("-cloud", "-rt")


def parse_payloads(text: str) -> list[str]:
    """`--payload test,distro`: the names, each one known. ValueError otherwise."""
    from . import parse_names
    return parse_names(text, PAYLOAD_NAMES, "payload")


def find_distro(pattern: str = DISTRO_KERNELS) -> tuple[str, str]:
    """(kernel, initrd) of the newest generic Debian kernel in /boot with its initramfs.
    LookupError, saying what is missing and which package installs it, otherwise."""
    versions = []
    for path in glob.glob(pattern):
        version = os.path.basename(path).removeprefix("vmlinuz-").removesuffix("-amd64")
        if not version.endswith(OTHER_FLAVOURS):
            # 6.1.0-57 < 6.1.0-100 < 6.12.38+deb13: numbers compare as numbers
            key = [(0, int(part)) if part.isdigit() else (1, part)
                   for part in re.split(r"(\d+)", version) if part]
            versions.append((key, path))
    if not versions:
        raise LookupError(f"no generic Debian kernel in {os.path.dirname(pattern)} "
                          f"({pattern}, not -cloud or -rt; {DISTRO_PACKAGE} installs one, "
                          "`make setup` does)")
    kernel = max(versions)[1]
    initrd = os.path.join(os.path.dirname(kernel),
                          os.path.basename(kernel).replace("vmlinuz-", "initrd.img-", 1))
    if not os.path.isfile(initrd):
        raise LookupError(f"{kernel} has no initramfs {initrd} (`update-initramfs -c -k "
                          f"{os.path.basename(kernel).removeprefix('vmlinuz-')}` makes it)")
    return kernel, initrd


# The compressed kernel's magic (boot protocol 2.08+: payload_offset/payload_length in the
# header, relative to the protected-mode code) and how the standard library opens it.
COMPRESSIONS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"),
                (b"\x5d\x00\x00", "lzma"))
PAYLOAD_FIELDS = 0x248          # u32 payload_offset, u32 payload_length


def extract_vmlinux(bzimage: str, dest: str) -> str:
    """Write the ELF vmlinux a bzImage carries (its compressed payload, decompressed) to `dest`
    and return `dest`: a distribution ships no vmlinux, and its PVH rows need one. LookupError
    when the payload is compressed with what Python's standard library cannot read (LZ4, LZO,
    zstd) or is not an ELF file."""
    import bz2
    import lzma
    import struct
    import zlib
    with open(bzimage, "rb") as f:
        data = f.read()
    if len(data) < PAYLOAD_FIELDS + 8 or data[0x202:0x206] != b"HdrS":
        raise LookupError(f"{bzimage} is not a bzImage")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, PAYLOAD_FIELDS)
    start = (setup_sects + 1) * 512 + offset
    payload = data[start:start + length]
    kind = next((name for magic, name in COMPRESSIONS if payload.startswith(magic)), None)
    if kind is None:
        raise LookupError(f"{bzimage}: its kernel is compressed in a format Python's standard "
                          f"library does not read (magic {payload[:4].hex()})")
    if kind == "gzip":
        vmlinux = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    elif kind == "bzip2":
        vmlinux = bz2.BZ2Decompressor().decompress(payload)
    else:
        fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
        vmlinux = lzma.LZMADecompressor(format=fmt).decompress(payload)
    if not vmlinux.startswith(b"\x7fELF"):
        raise LookupError(f"{bzimage}: its decompressed kernel is not an ELF file")
    with open(dest, "wb") as out:
        out.write(vmlinux)
    return dest
