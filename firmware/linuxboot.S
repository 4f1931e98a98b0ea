/* linuxboot: an option ROM that boots the Linux kernel the VMM put in fw_cfg,
   reading through the selector and data ports (`addr32 rep insb`), for a fw_cfg
   device without DMA. Destinations above 1 MiB are reached in unreal mode. */

    .code16
    .include "layout.inc"
    .include "fw_cfg.inc"
    .include "debugcon.inc"
    .include "optionrom.inc"
    .include "unreal.inc"

    OPTION_ROM_HEADER pnp_header
    PNP_HEADER linuxboot_bev, manufacturer, product

    .macro FW_READ32 key
    mov $\key, %ax
    call fw_read32
    .endm

    .macro FW_READ_BLOB key, addr, size
    mov $\key, %ax
    mov \size(%bp), %ecx
    mov \addr(%bp), %edi
    call fw_read_blob
    .endm

    .include "linuxboot_boot.inc"


/* The data port needs no preparation. */
fw_init:
    ret

    FW_CFG_PORT_READ32 fw_read32

/* AX = key, ECX = length, EDI = linear destination: one `rep insb` with 32-bit
   addressing through a flat ES (a VMM sees it as a few exits of up to a page). */
fw_read_blob:
    pushal
    push %es
    mov $FW_CFG_PORT_SELECT, %dx
    outw %ax, %dx
    call flat_es
    mov $FW_CFG_PORT_DATA, %dx
    addr32 rep insb
    pop %es                             /* a real-mode ES again */
    popal
    ret

    FLAT_ES_ROUTINE

manufacturer:
    .asciz "tinyvmm"
product:
    .asciz "tinyvmm Linux loader"
