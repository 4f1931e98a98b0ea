"""The i440FX host bridge at 00:00.0, as QEMU's `pc` machine shows it to firmware.

IDs 8086:1237 revision 2 with QEMU's subsystem 1af4:1100 (SeaBIOS recognises
QEMU by it). Registers 0x59-0x5F are PAM (tinyvmm.pci.pam); 0x57 holds RAM
in 8 MiB units (at most 255) for old coreboot; 0x72, SMRAM control, reads
0x02 (SMRAM at 0xA0000, closed) and is otherwise a plain byte, since this
machine has no SMM. Everything else from 0x40 up is plain read/write bytes,
as in QEMU, which emulates no other host-bridge register either.
"""

from .config import PciFunction
from .pam import PAM_FIRST_REGISTER, PAM_LAST_REGISTER, segment_modes

I440FX_VENDOR = 0x8086
I440FX_DEVICE = 0x1237
I440FX_REVISION = 0x02
CLASS_HOST_BRIDGE = 0x060000
I440FX_COREBOOT_RAM_SIZE = 0x57
I440FX_SMRAM = 0x72
SMRAM_C_BASE_SEG_A0000 = 0x02


class I440fxHostBridge(PciFunction):
    name = "i440fx"

    def __init__(self, ram_size: int, shadow=None):
        super().__init__(I440FX_VENDOR, I440FX_DEVICE, CLASS_HOST_BRIDGE, I440FX_REVISION)
        self.shadow = shadow            # a pam.ShadowRam, or None in tests of the registers alone
        self.set_byte(I440FX_COREBOOT_RAM_SIZE, min(ram_size >> 23, 255))
        self.set_byte(I440FX_SMRAM, SMRAM_C_BASE_SEG_A0000)

    def pam_registers(self) -> bytes:
        return bytes(self.config[PAM_FIRST_REGISTER:PAM_LAST_REGISTER + 1])

    def config_written(self, offset: int, size: int, changed: bool) -> None:
        if changed and self.shadow is not None and \
                offset <= PAM_LAST_REGISTER and offset + size > PAM_FIRST_REGISTER:
            self.shadow.set_modes(segment_modes(self.pam_registers()))
