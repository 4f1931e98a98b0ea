/* linuxboot_dma: an option ROM that boots the Linux kernel the VMM put in fw_cfg,
   reading every item with one fw_cfg DMA transfer. */

    .code16
    .include "layout.inc"
    .include "fw_cfg.inc"
    .include "debugcon.inc"
    .include "optionrom.inc"
    .include "fw_read_dma.inc"

    OPTION_ROM_HEADER pnp_header
    PNP_HEADER linuxboot_bev, manufacturer, product

    .include "linuxboot_boot.inc"

    FW_READ_DMA_ROUTINES "Linux loader DMA"

manufacturer:
    .asciz "tinyvmm"
product:
    .asciz "tinyvmm Linux loader DMA"
