#!/usr/bin/env bash
# Installs what tinyvmm needs on a fresh Debian machine, then builds the test kernel.
# Safe to run again: it installs only what is missing and rebuilds only what changed.
# The package goes into this checkout's own virtual environment (.venv): a stock Debian
# Python refuses global pip installs (PEP 668), and two checkouts must not share one tinyvmm.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    binutils gcc make libc6-dev             # firmware and test guests (GNU as, ld, objcopy)
    python3-venv                            # the project's virtual environment
    gdb                                     # gdb stub tests
    qemu-system-x86                         # side-by-side benchmarks
    seabios qemu-system-data                # real firmware: SeaBIOS, qboot, QEMU's option ROMs
    acpica-tools                            # iasl: the ACPI tables are checked by disassembly
    linux-image-amd64                       # bench --payload distro: Debian's kernel and initramfs
    linux-image-cloud-amd64                 # a distribution kernel booted to the test init
    ovmf                                    # UEFI firmware (OVMF_CODE.fd, OVMF_VARS.fd)
    mtools gdisk                            # an EFI system partition (FAT in GPT) made in a test
    linux-source-6.1 bc flex bison libelf-dev lz4 cpio xz-utils   # the test kernel
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating the virtual environment $VENV"
    python3 -m venv "$VENV"
fi
echo "setup: installing the tinyvmm package into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,lint]'
"$VENV/bin/python" -m compileall -q tinyvmm

echo "setup: building the test kernels (kernels/build, kernels/build/pc)"
make -C kernels
