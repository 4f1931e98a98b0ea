/* Choosing the boot ROM: the first `bootorder` line that names a loaded ROM with
   a BEV (as "/rom@genroms/NAME"), else the first such ROM in fw_cfg order.
   Other bootorder lines (devices this BIOS has no driver for, HALT) are skipped. */

    .code16
    .include "bios.inc"

/* CF clear: the chosen ROM's seg:BEV is in EBDA_FAR_CALL. */
    .globl boot_choose
boot_choose:
    pushal
    push %ds
    push %es
    call bootorder_load                 /* CX = its length */
    jc 5f
    mov $BOOTORDER_SEG, %ax
    mov %ax, %es
    xor %dx, %dx                        /* start of the current line */
1:  cmp %cx, %dx
    jae 5f
    mov %dx, %di
    mov $rom_prefix, %si
    call str_prefix
    jne 2f
    push %ds
    push %es
    pop %ds
    mov %di, %si                        /* DS:SI = the file name on that line */
    call rom_with_bev_named
    pop %ds
    jnc 6f
2:  mov %dx, %di                        /* on to the next line */
    push %cx
    sub %dx, %cx
    xor %al, %al
    repne scasb
    pop %cx
    mov %di, %dx
    jmp 1b

5:  mov $EBDA_ROMS, %bx                 /* no bootorder match: first ROM with a BEV */
    mov %fs:EBDA_ROM_COUNT, %cx
    jcxz 9f
7:  cmpw $0, %fs:ROM_BEV(%bx)
    jne 6f
    add $ROM_ENTRY_SIZE, %bx
    loop 7b
9:  pop %es
    pop %ds
    popal
    stc
    ret

6:  mov %fs:ROM_BEV(%bx), %ax
    mov %ax, %fs:EBDA_FAR_CALL
    mov %fs:ROM_SEG(%bx), %ax
    mov %ax, %fs:EBDA_FAR_CALL + 2
    PRINT "boot: "
    push %bx
    mov %fs:ROM_FILE(%bx), %bx
    call fw_cfg_print_name
    pop %bx
    PRINT " through its BEV "
    mov $4, %cx
    call debugcon_hex
    PRINT ":"
    mov %fs:ROM_BEV(%bx), %ax
    call debugcon_hex
    PRINT "\n"
    pop %es
    pop %ds
    popal
    clc
    ret

/* Copy `bootorder` to BOOTORDER_SEG with every line NUL-terminated -> CX = its
   length; CF set if there is none. */
bootorder_load:
    push %eax
    push %bx
    push %di
    push %es
    mov $bootorder_name, %si
    call fw_cfg_find
    jc 9f
    cmp $BOOTORDER_MAX, %ecx
    jbe 1f
    mov $BOOTORDER_MAX, %ecx
1:  mov $BOOTORDER_SEG, %bx
    mov %bx, %es
    xor %di, %di
    call fw_cfg_read
    jc 9f
    mov %cx, %di
    movb $0, %es:(%di)
    xor %di, %di
2:  cmp %cx, %di
    jae 3f
    cmpb $0x0a, %es:(%di)          /* newline */
    jne 4f
    movb $0, %es:(%di)
4:  inc %di
    jmp 2b
3:  clc
9:  pop %es
    pop %di
    pop %bx
    pop %eax
    ret

/* DS:SI = NUL-terminated file name -> CF clear and BX = the entry (in FS) of the
   loaded ROM of that name, if it has a BEV. */
rom_with_bev_named:
    push %cx
    push %di
    push %es
    push %gs
    pop %es
    mov $EBDA_ROMS, %bx
    mov %fs:EBDA_ROM_COUNT, %cx
    jcxz 3f
1:  cmpw $0, %fs:ROM_BEV(%bx)
    je 2f
    mov %fs:ROM_FILE(%bx), %di
    shl $6, %di
    add $FW_CFG_DIR_ENTRIES + FW_CFG_FILE_NAME, %di
    call str_prefix
    jne 2f
    cmpb $0, %es:(%di)
    je 4f
2:  add $ROM_ENTRY_SIZE, %bx
    loop 1b
3:  stc
    jmp 5f
4:  clc
5:  pop %es
    pop %di
    pop %cx
    ret

    .section .rodata
bootorder_name:
    .asciz "bootorder"
rom_prefix:
    .asciz "/rom@"
