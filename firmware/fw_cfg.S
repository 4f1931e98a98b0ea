/* fw_cfg client of the BIOS: presence and DMA detection, reads through DMA or the
   data port, and the file directory (copied to DIR_SEG, looked up by name).

   Register use: DS = CS, FS = EBDA, GS = DIR_SEG, as set up by bios_entry. */

    .code16
    .include "bios.inc"

/* CF set when there is no fw_cfg device. Remembers whether to use DMA. */
    .globl fw_cfg_detect
fw_cfg_detect:
    pushal
    mov $FW_CFG_SIGNATURE, %ax
    call fw_cfg_read32
    cmp $FW_CFG_SIGNATURE_QEMU, %eax
    jne 1f
    mov $FW_CFG_ID, %ax
    call fw_cfg_read32
    test $FW_CFG_ID_DMA, %al
    jz 2f
    movb $1, %fs:EBDA_FW_CFG_DMA
    PRINT "fw_cfg: DMA interface\n"
    popal
    clc
    ret
2:  PRINT "fw_cfg: traditional interface\n"
    popal
    clc
    ret
1:  popal
    stc
    ret

    .globl fw_cfg_read32
    FW_CFG_PORT_READ32 fw_cfg_read32

/* AX = key, ECX = length, ES:DI = destination. CF set if a DMA transfer failed. */
    .globl fw_cfg_read
fw_cfg_read:
    testb $1, %fs:EBDA_FW_CFG_DMA
    jnz fw_cfg_read_dma

/* Through the data port, in chunks a 16-bit `rep insb` can address. */
fw_cfg_read_port:
    pushal
    push %es
    mov $FW_CFG_PORT_SELECT, %dx
    outw %ax, %dx
    mov $FW_CFG_PORT_DATA, %dx
    mov %ecx, %ebx                      /* bytes left */
1:  test %ebx, %ebx
    jz 2f
    mov %di, %ax                        /* move DI's paragraphs into ES */
    shr $4, %ax
    mov %es, %cx
    add %ax, %cx
    mov %cx, %es
    and $PARAGRAPH - 1, %di
    mov $0x8000, %ecx
    cmp %ebx, %ecx
    jbe 3f
    mov %ebx, %ecx
3:  sub %ecx, %ebx
    rep insb
    jmp 1b
2:  pop %es
    popal
    clc
    ret

/* ES:DI as a linear address for one SELECT | READ transfer. */
fw_cfg_read_dma:
    pushal
    movzwl %ax, %eax
    shl $16, %eax
    or $FW_CFG_DMA_SELECT | FW_CFG_DMA_READ, %eax
    xor %edx, %edx
    mov %es, %dx
    shl $4, %edx
    movzwl %di, %edi
    add %edi, %edx
    call fw_cfg_dma
    popal
    ret

/* AX = key, ECX = length, EDI = linear address, for memory above 1 MiB. The port
   path needs ES flat (base 0, 4 GiB limit: unreal mode). CF set if DMA failed. */
    .globl fw_cfg_read_linear
fw_cfg_read_linear:
    pushal
    testb $1, %fs:EBDA_FW_CFG_DMA
    jz 1f
    movzwl %ax, %eax
    shl $16, %eax
    or $FW_CFG_DMA_SELECT | FW_CFG_DMA_READ, %eax
    mov %edi, %edx
    call fw_cfg_dma
    popal
    ret
1:  mov $FW_CFG_PORT_SELECT, %dx
    outw %ax, %dx
    mov $FW_CFG_PORT_DATA, %dx
    addr32 rep insb
    popal
    clc
    ret

/* One DMA transfer, its descriptor on the stack (its address from SS, so no
   assumption on SS): EAX = control (key << 16 | bits), ECX = length, EDX = linear
   address. CF set on the ERROR bit. Changes EAX, EBX, ECX, EDX. */
    .globl fw_cfg_dma
fw_cfg_dma:
    push %bp
    sub $FW_CFG_DMA_SIZE, %sp
    mov %sp, %bp
    bswap %eax
    mov %eax, FW_CFG_DMA_CONTROL(%bp)
    bswap %ecx
    mov %ecx, FW_CFG_DMA_LENGTH(%bp)
    movl $0, FW_CFG_DMA_ADDRESS(%bp)
    bswap %edx
    mov %edx, FW_CFG_DMA_ADDRESS + 4(%bp)
    xor %ebx, %ebx
    mov %ss, %bx
    shl $4, %ebx
    movzwl %bp, %edx
    add %edx, %ebx
    bswap %ebx
    xor %eax, %eax
    mov $FW_CFG_PORT_DMA_HIGH, %dx
    outl %eax, %dx
    mov %ebx, %eax
    mov $FW_CFG_PORT_DMA_LOW, %dx
    outl %eax, %dx                      /* starts the transfer */
1:  mov FW_CFG_DMA_CONTROL(%bp), %eax
    test $FW_CFG_DMA_DONE_MASK_LE, %eax
    jnz 1b
    add $FW_CFG_DMA_SIZE, %sp
    pop %bp
    test $FW_CFG_DMA_ERROR_LE, %eax     /* clears CF */
    jz 2f
    stc
2:  ret

/* Copy the file directory to DIR_SEG and list it on the debug console. */
    .globl fw_cfg_load_dir
fw_cfg_load_dir:
    pushal
    push %es
    push %gs
    pop %es
    xor %di, %di
    mov $FW_CFG_FILE_DIR, %ax
    mov $FW_CFG_DIR_ENTRIES, %ecx
    call fw_cfg_read
    jc 9f
    mov %gs:FW_CFG_DIR_COUNT, %eax
    bswap %eax
    cmp $DIR_MAX, %eax
    jbe 1f
    mov $DIR_MAX, %eax
1:  mov %ax, %fs:EBDA_DIR_COUNT
    shl $6, %eax                        /* 64-byte entries */
    add $FW_CFG_DIR_ENTRIES, %eax
    mov %eax, %ecx
    mov $FW_CFG_FILE_DIR, %ax
    call fw_cfg_read
    jc 9f

    /* No listing here: each byte on the debug console is an exit; `tinyvmm fw-cfg list` shows it. */
3:  pop %es
    popal
    ret
9:  movw $0, %fs:EBDA_DIR_COUNT
    PRINT "fw_cfg: cannot read the file directory\n"
    jmp 3b

/* BX = file index -> DI = its directory entry (in GS), AX = key, ECX = size. */
    .globl fw_cfg_dir_entry
fw_cfg_dir_entry:
    mov %bx, %di
    shl $6, %di
    add $FW_CFG_DIR_ENTRIES, %di
    mov %gs:FW_CFG_FILE_SIZE(%di), %ecx
    bswap %ecx
    mov %gs:FW_CFG_FILE_SELECT(%di), %ax
    xchg %al, %ah
    ret

/* BX = file index: print its name. */
    .globl fw_cfg_print_name
fw_cfg_print_name:
    pushal
    push %ds
    call fw_cfg_dir_entry
    lea FW_CFG_FILE_NAME(%di), %si
    push %gs
    pop %ds
    mov $FW_CFG_FILE_NAME_MAX, %cx
    call debugcon_putsn
    pop %ds
    popal
    ret

/* DS:SI = NUL-terminated name -> CF clear and BX = index, AX = key, ECX = size;
   CF set if there is no such file. */
    .globl fw_cfg_find
fw_cfg_find:
    push %di
    push %es
    push %gs
    pop %es
    xor %bx, %bx
1:  cmp %fs:EBDA_DIR_COUNT, %bx
    jae 3f
    call fw_cfg_dir_entry
    add $FW_CFG_FILE_NAME, %di
    call str_prefix
    jne 2f
    cmpb $0, %es:(%di)
    je 4f
2:  inc %bx
    jmp 1b
3:  stc
    jmp 5f
4:  clc
5:  pop %es
    pop %di
    ret

/* DS:SI = NUL-terminated pattern, ES:DI = string -> ZF set if the string starts
   with the pattern; then DI points just past it. Keeps SI. */
    .globl str_prefix
str_prefix:
    push %si
    push %ax
1:  lodsb
    test %al, %al
    jz 2f
    scasb
    je 1b
2:  pop %ax
    pop %si
    ret
