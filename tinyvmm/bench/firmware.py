"""The unmodified firmware the bench boots beside tinyvmm's own: Debian's SeaBIOS, QEMU's
linuxboot ROMs, qboot and OVMF, and the rows of `bench --firmware` that use them."""

# Firmware as Debian installs it, the same files QEMU's pc machine loads.
SEABIOS = "/usr/share/seabios/bios.bin"
LINUXBOOT_DMA = "/usr/share/qemu/linuxboot_dma.bin"
LINUXBOOT = "/usr/share/qemu/linuxboot.bin"
QBOOT = "/usr/share/qemu/qboot.rom"
# OVMF's code as a ROM image (QEMU's -bios): its variables then live in RAM, so every run
# starts from the same store. Through the software CPU where KVM emulates guest code.
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd"
OVMF = ["--bios", OVMF_CODE, "--software-cpu", "auto"]
FIRMWARE = {
    "seabios": {"tinyvmm-seabios-dma": ["--bios", SEABIOS, "--option-rom", LINUXBOOT_DMA],
                "tinyvmm-seabios-legacy": ["--bios", SEABIOS, "--option-rom", LINUXBOOT,
                                           "--no-fw-cfg-dma"]},
    "qboot": {"tinyvmm-qboot": ["--bios", QBOOT]},
    "ovmf": {"tinyvmm-ovmf-dma": OVMF, "tinyvmm-ovmf-legacy": OVMF + ["--no-fw-cfg-dma"]},
}
# The rows that need a kernel with an EFI stub (the test kernel has none: they boot the pc
# kernel beside it, which has).
EFI_SYSTEMS = frozenset(FIRMWARE["ovmf"])
# The files each firmware needs, and the Debian package that installs each.
FIRMWARE_FILES = {
    "seabios": {SEABIOS: "seabios", LINUXBOOT_DMA: "qemu-system-data", LINUXBOOT: "qemu-system-data"},
    "qboot": {QBOOT: "qemu-system-data"},
    "ovmf": {OVMF_CODE: "ovmf"},
}
