/* linuxboot_dma: an option ROM that boots the Linux kernel the VMM put in fw_cfg,
   reading every item with one fw_cfg DMA transfer. */

    .code16
    .include "layout.inc"
    .include "fw_cfg.inc"
    .include "debugcon.inc"
    .include "optionrom.inc"

    OPTION_ROM_HEADER pnp_header
    PNP_HEADER linuxboot_bev, manufacturer, product

/* Every guest instruction costs microseconds under an emulating KVM, so a read
   is a few stores and one OUT: the control word is an immediate worked out at
   assembly time, and fw_init fills in what never changes. SI keeps the key for
   the error message. */

/* Store the control word "select `key`, read": big-endian key in bytes 0-1,
   SELECT | READ in byte 3. */
    .macro SET_SELECT_READ key, control
    movl $(((\key >> 8) & 0xff) | ((\key & 0xff) << 8) | ((FW_CFG_DMA_SELECT | FW_CFG_DMA_READ) << 24)), \control
    .endm

/* Start the transfer described at desc(%bp), whose linear address, byte-swapped,
   is at desc_be(%bp); wait only when the device did not complete it at once. */
    .macro DMA_START desc, desc_be
    mov \desc_be(%bp), %eax
    mov $FW_CFG_PORT_DMA_LOW, %dx
    outl %eax, %dx                      /* the high half is 0 */
    cmpl $0, \desc + FW_CFG_DMA_CONTROL(%bp)
    je dma_done\@
    lea \desc(%bp), %bx
    call dma_wait
dma_done\@:
    .endm

    .macro FW_READ32 key
    SET_SELECT_READ \key, NUMBER_DESC + FW_CFG_DMA_CONTROL(%bp)
    mov $\key, %si
    DMA_START NUMBER_DESC, NUMBER_DESC_LINEAR_BE
    mov NUMBER_VALUE(%bp), %eax
    .endm

    .macro FW_READ_BLOB key, addr, size
    mov \size(%bp), %ecx
    test %ecx, %ecx
    jz blob_done\@
    SET_SELECT_READ \key, BLOB_DESC + FW_CFG_DMA_CONTROL(%bp)
    mov $\key, %si
    bswap %ecx
    mov %ecx, BLOB_DESC + FW_CFG_DMA_LENGTH(%bp)
    mov \addr(%bp), %edi
    bswap %edi
    mov %edi, BLOB_DESC + FW_CFG_DMA_ADDRESS + 4(%bp)
    DMA_START BLOB_DESC, BLOB_DESC_LINEAR_BE
blob_done\@:
    .endm

    .include "linuxboot_boot.inc"

/* Two descriptors in TRANSPORT_AREA. The number descriptor's length (4) and
   destination never change; the blob descriptor gets length and destination per
   read. Their own linear addresses, byte-swapped for the OUT, are kept beside. */
    .set NUMBER_DESC, TRANSPORT_AREA                  /* 16 bytes */
    .set NUMBER_VALUE, TRANSPORT_AREA + 16            /* the 4 bytes read */
    .set NUMBER_DESC_LINEAR_BE, TRANSPORT_AREA + 20
    .set BLOB_DESC, TRANSPORT_AREA + 24               /* 16 bytes */
    .set BLOB_DESC_LINEAR_BE, TRANSPORT_AREA + 40
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

/* SS:BX = a descriptor the device has not finished: poll it until it has; stop
   on ERROR. */
dma_wait:
    testl $FW_CFG_DMA_ERROR_LE, %ss:FW_CFG_DMA_CONTROL(%bx)
    jnz dma_error
    cmpl $0, %ss:FW_CFG_DMA_CONTROL(%bx)
    jne dma_wait
    ret

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
