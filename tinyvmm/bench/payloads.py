"""The payloads `tinyvmm bench --payload` boots: the test kernel, and a distribution's own kernel
and initramfs, the size the 2015 posting measured (Debian's linux-image-amd64: about 37 MiB)."""

import glob
import os
import re

PAYLOAD_NAMES = ("test", "distro")
DISTRO_PACKAGE = "linux-image-amd64"
# Where Debian installs a kernel package's image and the initramfs generated for it; the
# generic flavour ("-amd64"), not the cloud one ("-cloud-amd64"), whose initramfs is half as big.
DISTRO_KERNELS = "/boot/vmlinuz-*-amd64"
DISTRO_FLAVOUR = re.compile(r"vmlinuz-(\d+)\.(\d+)\.(\d+)-(\d+)-amd64$")


def parse_payloads(text: str) -> list[str]:
    """`--payload test,distro`: the names, each one known. ValueError otherwise."""
    from . import parse_names
    return parse_names(text, PAYLOAD_NAMES, "payload")


def find_distro(pattern: str = DISTRO_KERNELS) -> tuple[str, str]:
    """(kernel, initrd) of the newest generic Debian kernel in /boot with its initramfs.
    LookupError, saying what is missing and which package installs it, otherwise."""
    versions = []
    for path in glob.glob(pattern):
        match = DISTRO_FLAVOUR.search(os.path.basename(path))
        if match:
            versions.append((tuple(int(part) for part in match.groups()), path))
    if not versions:
        raise LookupError(f"no Debian kernel matches {pattern} ({DISTRO_PACKAGE} installs one; "
                          "`make setup` does)")
    kernel = max(versions)[1]
    initrd = os.path.join(os.path.dirname(kernel),
                          os.path.basename(kernel).replace("vmlinuz-", "initrd.img-", 1))
    if not os.path.isfile(initrd):
        raise LookupError(f"{kernel} has no initramfs {initrd} (`update-initramfs -c -k "
                          f"{os.path.basename(kernel).removeprefix('vmlinuz-')}` makes it)")
    return kernel, initrd
