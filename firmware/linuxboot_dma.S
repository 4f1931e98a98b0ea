/* linuxboot_dma: an option ROM that boots the Linux kernel the VMM put in fw_cfg,
   reading every item with one fw_cfg DMA transfer. */

    .code16
    .include "layout.inc"
    .include "fw_cfg.inc"
    .include "debugcon.inc"
    .include "optionrom.inc"

    OPTION_ROM_HEADER pnp_header
    PNP_HEADER linuxboot_bev, manufacturer, product

    .include "linuxboot_boot.inc"

/* AX = key -> EAX: a 4-byte DMA read into the stack. */
fw_read32:
    push %ecx
    push %edi
    push %bx
    sub $4, %sp
    mov %sp, %bx
    xor %edi, %edi
    mov %ss, %di
    shl $4, %edi
    movzwl %bx, %ecx
    add %ecx, %edi
    mov $4, %ecx
    call fw_read_blob
    pop %eax
    pop %bx
    pop %edi
    pop %ecx
    ret

/* AX = key, ECX = length, EDI = linear destination. The descriptor lives on the
   stack; its linear address comes from SS, big-endian like every field. */
fw_read_blob:
    test %ecx, %ecx
    jz 3f
    pushal
    mov %ax, %si                        /* the key, for an error message */
    push %bp
    sub $FW_CFG_DMA_SIZE, %sp
    mov %sp, %bp
    movzwl %ax, %eax
    shl $16, %eax
    or $FW_CFG_DMA_SELECT | FW_CFG_DMA_READ, %eax
    bswap %eax
    mov %eax, FW_CFG_DMA_CONTROL(%bp)
    bswap %ecx
    mov %ecx, FW_CFG_DMA_LENGTH(%bp)
    movl $0, FW_CFG_DMA_ADDRESS(%bp)
    bswap %edi
    mov %edi, FW_CFG_DMA_ADDRESS + 4(%bp)
    xor %ebx, %ebx
    mov %ss, %bx
    shl $4, %ebx
    movzwl %bp, %edx
    add %edx, %ebx
    bswap %ebx
    mov %ebx, %eax                      /* the high half stays 0: the device clears it per transfer */
    mov $FW_CFG_PORT_DMA_LOW, %dx
    outl %eax, %dx                      /* starts the transfer */
1:  mov FW_CFG_DMA_CONTROL(%bp), %eax
    test $FW_CFG_DMA_DONE_MASK_LE, %eax
    jnz 1b
    test $FW_CFG_DMA_ERROR_LE, %eax
    jnz 2f
    add $FW_CFG_DMA_SIZE, %sp
    pop %bp
    popal
3:  ret
2:  PRINT "Linux loader DMA: fw_cfg DMA error reading key "
    mov %si, %ax
    mov $4, %cx
    call debugcon_hex
    PRINT "; stopping\n"
    jmp stop

manufacturer:
    .asciz "tinyvmm"
product:
    .asciz "tinyvmm Linux loader DMA"
