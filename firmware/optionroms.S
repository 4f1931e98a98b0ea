/* Option ROMs from fw_cfg genroms/: load each into the option ROM area, check it,
   run its init entry, and remember its bootstrap entry vector (BEV). */

    .code16
    .include "bios.inc"

    .set ROM_SIGNATURE, 0xaa55
    .set ROM_HEADER_SIZE, 2             /* byte: size in 512-byte blocks */
    .set ROM_INIT, 3
    .set ROM_PNP, 0x1a                  /* word: offset of the $PnP header */
    .set ROM_BLOCK, 512
    .set PNP_SIGNATURE, 0x506e5024      /* "$PnP" */
    .set PNP_BEV, 0x1a
    .set PNP_HEADER_SIZE, 0x20

/* Walk the directory in order; BP holds the next free segment of the ROM area. */
    .globl optionroms_load
optionroms_load:
    pushal
    push %es
    mov $OPTION_ROM_START / PARAGRAPH, %bp
    xor %bx, %bx
1:  cmp %fs:EBDA_DIR_COUNT, %bx
    jae 9f
    call fw_cfg_dir_entry               /* DI = entry, AX = key, ECX = size */
    push %es
    push %gs
    pop %es
    add $FW_CFG_FILE_NAME, %di
    mov $genroms_prefix, %si
    call str_prefix
    pop %es
    jne 8f
    call rom_load
8:  inc %bx
    jmp 1b
9:  pop %es
    popal
    ret

/* BX = file index, AX = key, ECX = size, BP = free segment; advances BP. */
rom_load:
    PRINT "rom "
    call fw_cfg_print_name
    mov %fs:EBDA_ROM_AREA_END, %dx      /* the ACPI tables may take the top */
    sub %bp, %dx
    movzwl %dx, %edx
    shl $4, %edx                        /* room left, bytes */
    test %ecx, %ecx
    jz 7f
    cmp %edx, %ecx
    ja 7f
    mov %bp, %es
    xor %di, %di
    call fw_cfg_read
    jc 6f
    call rom_check
    jc 5f
    push %bx
    call rom_init
    pop %bx
    movzbl %es:ROM_HEADER_SIZE, %ecx    /* the size the ROM kept after init */
    shl $9, %ecx
    jz 4f
    call rom_bev                        /* AX = BEV or 0 */
    PRINT " at "
    push %ax
    mov %es, %ax
    push %cx
    mov $4, %cx
    call debugcon_hex
    pop %cx
    pop %ax
    PRINT ":0000, BEV "
    push %cx
    mov $4, %cx
    call debugcon_hex
    pop %cx
    PRINT "\n"
    call rom_remember
    add $OPTION_ROM_ALIGN - 1, %ecx     /* next free slot */
    and $~(OPTION_ROM_ALIGN - 1), %ecx
    shr $4, %ecx
    add %cx, %bp
    ret
4:  PRINT ": released itself\n"
    ret
5:  PRINT ": bad signature, size or checksum; skipped\n"
    ret
6:  PRINT ": fw_cfg read failed; skipped\n"
    ret
7:  PRINT ": empty or no room left; skipped\n"
    ret

/* ES = ROM, ECX = bytes loaded -> CF set unless 55 AA, a size that fits in
   what was loaded, and a byte sum of 0 over that size. */
rom_check:
    pushal
    push %es
    cmpw $ROM_SIGNATURE, %es:0
    jne 9f
    movzbl %es:ROM_HEADER_SIZE, %edx
    test %dx, %dx
    jz 9f
    shl $9, %edx
    cmp %ecx, %edx
    ja 9f
    shr $9, %edx                        /* blocks */
    xor %al, %al
1:  xor %si, %si
    mov $ROM_BLOCK / 8, %cx
2:  add %es:(%si), %al                  /* eight bytes a round: fewer instructions */
    add %es:1(%si), %al
    add %es:2(%si), %al
    add %es:3(%si), %al
    add %es:4(%si), %al
    add %es:5(%si), %al
    add %es:6(%si), %al
    add %es:7(%si), %al
    add $8, %si
    loop 2b
    mov %es, %cx
    add $ROM_BLOCK / PARAGRAPH, %cx
    mov %cx, %es
    dec %dx
    jnz 1b
    test %al, %al
    jnz 9f
    pop %es
    popal
    clc
    ret
9:  pop %es
    popal
    stc
    ret

/* ES = ROM: far call its init entry (AX = 0: no PCI device, BX = DX = FFFFh). */
rom_init:
    pushal
    push %ds
    push %es
    push %fs
    push %gs
    movw $ROM_INIT, %fs:EBDA_FAR_CALL
    mov %es, %fs:EBDA_FAR_CALL + 2
    xor %ax, %ax
    mov $0xffff, %bx
    mov %bx, %dx
    lcall *%fs:EBDA_FAR_CALL
    pop %gs
    pop %fs
    pop %es
    pop %ds
    popal
    cli
    cld
    ret

/* ES = ROM, ECX = its size -> AX = BEV from a valid $PnP header, else 0. */
rom_bev:
    push %si
    push %edx
    xor %ax, %ax
    movzwl %es:ROM_PNP, %esi
    test %si, %si
    jz 9f
    lea PNP_HEADER_SIZE(%esi), %edx
    cmp %ecx, %edx
    ja 9f
    cmpl $PNP_SIGNATURE, %es:(%si)
    jne 9f
    movzwl %es:PNP_BEV(%si), %edx
    cmp %ecx, %edx
    jae 9f
    mov %dx, %ax
9:  pop %edx
    pop %si
    ret

/* Add ES (segment), AX (BEV), BX (file index) to the ROM table. */
rom_remember:
    push %di
    mov %fs:EBDA_ROM_COUNT, %di
    cmp $ROM_MAX, %di
    jae 9f
    incw %fs:EBDA_ROM_COUNT
    shl $3, %di
    add $EBDA_ROMS, %di
    mov %es, %fs:ROM_SEG(%di)
    mov %ax, %fs:ROM_BEV(%di)
    mov %bx, %fs:ROM_FILE(%di)
9:  pop %di
    ret

    .section .rodata
    .globl genroms_prefix
genroms_prefix:
    .asciz "genroms/"
