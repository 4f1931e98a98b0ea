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

/* Two descriptors in TRANSPORT_AREA, their linear addresses worked out once:
   number reads patch only the key into theirs (length 4 and destination, the
   dword after it, never change); blob reads fill key, length and destination.
   Every field is big-endian. */
    .set NUMBER_DESC, TRANSPORT_AREA                  /* 16 bytes */
    .set NUMBER_VALUE, TRANSPORT_AREA + 16            /* the 4 bytes read */
    .set NUMBER_DESC_LINEAR_BE, TRANSPORT_AREA + 20   /* the descriptor's address, swapped */
    .set BLOB_DESC, TRANSPORT_AREA + 24               /* 16 bytes */
    .set BLOB_DESC_LINEAR_BE, TRANSPORT_AREA + 40
    .set SELECT_READ_BE16, (FW_CFG_DMA_SELECT | FW_CFG_DMA_READ) << 8   /* control bits 15..0, big-endian */
    .set LENGTH_4_BE, 0x04000000

fw_init:
    xor %eax, %eax
    mov %ss, %ax
    shl $4, %eax
    movzwl %bp, %edx
    add %edx, %eax                      /* EAX = linear address of BP */
    lea NUMBER_VALUE(%eax), %edx
    bswap %edx
    movl $LENGTH_4_BE, NUMBER_DESC + FW_CFG_DMA_LENGTH(%bp)
    movl $0, NUMBER_DESC + FW_CFG_DMA_ADDRESS(%bp)
    mov %edx, NUMBER_DESC + FW_CFG_DMA_ADDRESS + 4(%bp)
    movl $0, BLOB_DESC + FW_CFG_DMA_ADDRESS(%bp)
    lea BLOB_DESC(%eax), %edx
    bswap %edx
    mov %edx, BLOB_DESC_LINEAR_BE(%bp)
    add $NUMBER_DESC, %eax
    bswap %eax
    mov %eax, NUMBER_DESC_LINEAR_BE(%bp)
    ret

/* AX = key -> EAX: one 4-byte DMA read. */
fw_read32:
    push %dx
    push %si
    mov %ax, %si                        /* the key, for an error message */
    xchg %al, %ah                       /* the key, big-endian, in control bits 31..16 */
    mov %ax, NUMBER_DESC + FW_CFG_DMA_CONTROL(%bp)
    movw $SELECT_READ_BE16, NUMBER_DESC + FW_CFG_DMA_CONTROL + 2(%bp)
    mov NUMBER_DESC_LINEAR_BE(%bp), %eax
    mov $FW_CFG_PORT_DMA_LOW, %dx
    outl %eax, %dx                      /* starts the transfer; the high half is 0 */
1:  mov NUMBER_DESC + FW_CFG_DMA_CONTROL(%bp), %eax
    test $FW_CFG_DMA_DONE_MASK_LE, %eax
    jnz 1b
    test %eax, %eax
    jnz dma_error
    mov NUMBER_VALUE(%bp), %eax
    pop %si
    pop %dx
    ret

/* AX = key, ECX = length, EDI = linear destination: one DMA read. */
fw_read_blob:
    test %ecx, %ecx
    jz 2f
    push %eax
    push %ecx
    push %edi
    push %dx
    push %si
    mov %ax, %si                        /* the key, for an error message */
    xchg %al, %ah
    mov %ax, BLOB_DESC + FW_CFG_DMA_CONTROL(%bp)
    movw $SELECT_READ_BE16, BLOB_DESC + FW_CFG_DMA_CONTROL + 2(%bp)
    bswap %ecx
    mov %ecx, BLOB_DESC + FW_CFG_DMA_LENGTH(%bp)
    bswap %edi
    mov %edi, BLOB_DESC + FW_CFG_DMA_ADDRESS + 4(%bp)
    mov BLOB_DESC_LINEAR_BE(%bp), %eax
    mov $FW_CFG_PORT_DMA_LOW, %dx
    outl %eax, %dx                      /* starts the transfer; the high half is 0 */
1:  mov BLOB_DESC + FW_CFG_DMA_CONTROL(%bp), %eax
    test $FW_CFG_DMA_DONE_MASK_LE, %eax
    jnz 1b
    test %eax, %eax
    jnz dma_error
    pop %si
    pop %dx
    pop %edi
    pop %ecx
    pop %eax
2:  ret

dma_error:                              /* SI = the key */
    PRINT "Linux loader DMA: fw_cfg DMA error reading key "
    mov %si, %ax
    mov $4, %cx
    call debugcon_hex
    PRINT "; stopping\n"
    jmp stop

manufacturer:
    .asciz "tinyvmm"
product:
    .asciz "tinyvmm Linux loader DMA"
