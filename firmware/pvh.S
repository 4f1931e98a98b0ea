/* pvh: an option ROM that boots the ELF kernel (vmlinux) the VMM put in fw_cfg
   through its PVH entry, reading through the selector and data ports
   (`addr32 rep insb`), for a fw_cfg device without DMA. Destinations above
   1 MiB are reached in unreal mode. */

    .code16
    .include "layout.inc"
    .include "fw_cfg.inc"
    .include "debugcon.inc"
    .include "optionrom.inc"
    .include "unreal.inc"
    .include "fw_read_port.inc"

    OPTION_ROM_HEADER pnp_header
    PNP_HEADER pvh_bev, manufacturer, product

    .include "pvh_boot.inc"

    FW_READ_PORT_ROUTINES               /* with the GDT */

manufacturer:
    .asciz "tinyvmm"
product:
    .asciz "tinyvmm PVH loader"
