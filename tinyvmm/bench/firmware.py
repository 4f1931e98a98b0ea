"""The unmodified firmware the bench boots beside tinyvmm's own: Debian's SeaBIOS, QEMU's
linuxboot ROMs and qboot, and the rows of `bench --firmware` that use them."""

# Firmware as Debian installs it, the same files QEMU's pc machine loads.
SEABIOS = "/usr/share/seabios/bios.bin"
LINUXBOOT_DMA = "/usr/share/qemu/linuxboot_dma.bin"
LINUXBOOT = "/usr/share/qemu/linuxboot.bin"
QBOOT = "/usr/share/qemu/qboot.rom"
FIRMWARE = {
    "seabios": {"tinyvmm-seabios-dma": ["--bios", SEABIOS, "--option-rom", LINUXBOOT_DMA],
                "tinyvmm-seabios-legacy": ["--bios", SEABIOS, "--option-rom", LINUXBOOT,
                                           "--no-fw-cfg-dma"]},
    "qboot": {"tinyvmm-qboot": ["--bios", QBOOT]},
}
# The files each firmware needs, and the Debian package that installs each.
FIRMWARE_FILES = {
    "seabios": {SEABIOS: "seabios", LINUXBOOT_DMA: "qemu-system-data", LINUXBOOT: "qemu-system-data"},
    "qboot": {QBOOT: "qemu-system-data"},
}
