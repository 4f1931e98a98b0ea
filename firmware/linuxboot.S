/* linuxboot: an option ROM that boots the Linux kernel the VMM put in fw_cfg,
   reading through the selector and data ports (`addr32 rep insb`), for a fw_cfg
   device without DMA. Destinations above 1 MiB are reached in unreal mode. */

    .code16
    .include "layout.inc"
    .include "fw_cfg.inc"
    .include "debugcon.inc"
    .include "optionrom.inc"

    OPTION_ROM_HEADER pnp_header
    PNP_HEADER linuxboot_bev, manufacturer, product

    .include "linuxboot_boot.inc"

    .set FLAT_DATA, 0x08                /* GDT selector: data, base 0, limit 4 GiB */

/* The data port needs no preparation. */
fw_init:
    ret

/* AX = key -> EAX: four bytes from the data port. */
fw_read32:
    push %cx
    push %dx
    mov $FW_CFG_PORT_SELECT, %dx
    outw %ax, %dx
    mov $FW_CFG_PORT_DATA, %dx
    mov $4, %cx
1:  inb %dx, %al
    ror $8, %eax
    loop 1b
    pop %dx
    pop %cx
    ret

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

/* Unreal mode for ES: load the flat selector in protected mode and go straight
   back; real mode keeps the 4 GiB limit and base 0 until ES is reloaded. */
flat_es:
    pushal
    xor %eax, %eax
    mov %cs, %ax
    shl $4, %eax
    add $gdt, %eax                      /* the GDT's linear address */
    push %eax
    pushw $gdt_end - gdt - 1
    mov %sp, %bx
    lgdtl %ss:(%bx)
    add $6, %sp
    mov %cr0, %eax
    or $1, %al                          /* PE */
    mov %eax, %cr0
    jmp 1f
1:  mov $FLAT_DATA, %bx
    mov %bx, %es
    and $0xfe, %al
    mov %eax, %cr0
    jmp 2f
2:  popal
    ret

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf92000000ffff            /* FLAT_DATA: base 0, limit 4 GiB, writable data */
gdt_end:

manufacturer:
    .asciz "tinyvmm"
product:
    .asciz "tinyvmm Linux loader"
