/* pvh_dma: an option ROM that boots the ELF kernel (vmlinux) the VMM put in
   fw_cfg through its PVH entry, reading every item with one fw_cfg DMA transfer. */

    .code16
    .include "layout.inc"
    .include "fw_cfg.inc"
    .include "debugcon.inc"
    .include "optionrom.inc"
    .include "unreal.inc"
    .include "fw_read_dma.inc"

    OPTION_ROM_HEADER pnp_header
    PNP_HEADER pvh_bev, manufacturer, product

    .include "pvh_boot.inc"

    FW_READ_DMA_ROUTINES "PVH loader DMA"

    FLAT_GDT                            /* for the kernel's entry */

manufacturer:
    .asciz "tinyvmm"
product:
    .asciz "tinyvmm PVH loader DMA"
