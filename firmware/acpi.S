/* etc/table-loader: install the ACPI tables the VMM publishes in fw_cfg, as SeaBIOS
   installs QEMU's.

   The script is a list of 128-byte commands. ALLOCATE reads a whole fw_cfg file into
   guest memory, in one of two zones: HIGH, the top of the RAM from 1 MiB (reserved in
   the e820 table afterwards), or FSEG, the top of the E-segment below this BIOS, where
   an RSDP scan looks (the F-segment is the BIOS image itself, read-only). ADD_POINTER
   and ADD_CHECKSUM patch allocated files; WRITE_POINTER tells the VMM where a file
   landed, by a fw_cfg DMA write. A bad command is reported on the debug console and
   skipped, so nothing is ever written outside an allocated file.

   Register use while the script runs: DS = LOADER_SEG (script and state), ES flat
   (base 0, 4 GiB limit: unreal mode, for files above 1 MiB), FS = EBDA, GS = DIR_SEG. */

    .code16
    .include "bios.inc"
    .include "unreal.inc"

    .set CMD_SIZE, 128
    .set CMD_ALLOCATE, 1
    .set CMD_ADD_POINTER, 2
    .set CMD_ADD_CHECKSUM, 3
    .set CMD_WRITE_POINTER, 4
    .set CMD_FILE, 4                    /* every command's first file name, 56 bytes */
    .set CMD_SOURCE, 60                 /* ADD_POINTER, WRITE_POINTER: the source file */
    .set ALLOCATE_ALIGN, 60             /* dword */
    .set ALLOCATE_ZONE, 64              /* byte */
    .set POINTER_OFFSET, 116            /* dword */
    .set POINTER_SIZE, 120              /* byte */
    .set CHECKSUM_OFFSET, 60            /* dword */
    .set CHECKSUM_START, 64             /* dword */
    .set CHECKSUM_LENGTH, 68            /* dword */
    .set WRITE_DEST_OFFSET, 116         /* dword */
    .set WRITE_SOURCE_OFFSET, 120       /* dword */
    .set WRITE_SIZE, 124                /* byte */
    .set ZONE_HIGH, 1
    .set ZONE_FSEG, 2
    .set MIN_ALIGN, PARAGRAPH           /* RSDP scans step 16 bytes; ROMs start on a paragraph */
    .set HIGH_ZONE_MAX, 0x40000         /* the most of the top of RAM the tables may take */
    .set FSEG_BOTTOM, 0xe0000
    .set PAGE_MASK, 0xfffff000

/* LOADER_SEG, scratch the kernel overwrites later */
    .set ZONE_FLOOR, 0                  /* dword: the zone's lowest allocation so far */
    .set ZONE_BOTTOM, 4                 /* dword: the zone's lowest address */
    .set STATE_HIGH, 0                  /* the HIGH zone */
    .set STATE_FSEG, 8                  /* the FSEG zone */
    .set STATE_HIGH_TOP, 16             /* dword: where the HIGH zone starts, the end of RAM */
    .set STATE_COMMAND, 20              /* word: index of the command being run */
    .set STATE_KEY, 22                  /* word: WRITE_POINTER's fw_cfg key */
    .set STATE_VALUE, 24                /* qword: a pointer's value */
    .set STATE_ADDRESSES, 0x100         /* dword per fw_cfg file index: where it lies, 0 if nowhere */
    .set SCRIPT, STATE_ADDRESSES + ((DIR_MAX * 4 + 0xff) & ~0xff)
    .set SCRIPT_MAX, 0x10000 - SCRIPT

    .globl acpi_load
acpi_load:
    pushal
    push %ds
    push %es
    mov $loader_name, %si
    call fw_cfg_find                    /* DS = CS still */
    jc 9f                               /* no script: the VMM publishes no tables */
    cmp $SCRIPT_MAX, %ecx
    ja 8f
    push %ax
    push %ecx
    mov $LOADER_SEG, %dx
    mov %dx, %ds
    mov %dx, %es
    xor %di, %di
    xor %ax, %ax
    mov $SCRIPT / 2, %cx
    rep stosw                           /* no file allocated yet (a reset leaves old state) */
    call flat_es
    mov %ax, %es                        /* selector 0, base 0: a push/pop keeps ES flat */
    pop %ecx
    pop %ax
    mov $LOADER_SEG * PARAGRAPH + SCRIPT, %edi
    call fw_cfg_read_linear
    jc 7f
    call zones_init
    shr $7, %ecx                        /* whole commands; QEMU pads the tail with zeros */
    mov $SCRIPT, %si
1:  jcxz 2f
    push %cx
    push %si
    call run_command
    pop %si
    pop %cx
    add $CMD_SIZE, %si
    incw STATE_COMMAND
    dec %cx
    jmp 1b
2:  call zones_close
9:  pop %es
    pop %ds
    popal
    ret
8:  PRINT "acpi: etc/table-loader is too large; no tables\n"
    jmp 9b
7:  PRINT "acpi: cannot read etc/table-loader; no tables\n"
    jmp 9b

/* HIGH: down from the end of the RAM entry holding 1 MiB, at most HIGH_ZONE_MAX.
   FSEG: down from the end of the option ROM area, if the PAM registers opened it. */
zones_init:
    pushal
    call e820_high_ram_end
    jnc 1f
    PRINT "acpi: no RAM from 1 MiB in the e820 table: no HIGH zone\n"
    xor %eax, %eax
1:  mov %eax, STATE_HIGH + ZONE_FLOOR
    mov %eax, STATE_HIGH_TOP
    sub $HIGH_ZONE_MAX, %eax
    jb 2f
    cmp $HIGH_MEMORY_START, %eax
    jae 3f
2:  mov $HIGH_MEMORY_START, %eax
3:  mov %eax, STATE_HIGH + ZONE_BOTTOM
    mov $OPTION_ROM_END - 1, %edi       /* does a write stick? */
    mov %es:(%edi), %al
    mov %al, %ah
    not %al
    mov %al, %es:(%edi)
    cmp %es:(%edi), %al
    mov %ah, %es:(%edi)
    mov $OPTION_ROM_END, %eax
    je 4f
    PRINT "acpi: 0xE0000-0xEFFFF is not writable: no FSEG zone\n"
    xor %eax, %eax                      /* floor 0: nothing fits */
4:  mov %eax, STATE_FSEG + ZONE_FLOOR
    movl $FSEG_BOTTOM, STATE_FSEG + ZONE_BOTTOM
    popal
    ret

/* What was allocated stays the tables': the HIGH zone's pages leave the RAM in e820,
   the FSEG zone leaves the option ROM area. */
zones_close:
    pushal
    mov STATE_HIGH + ZONE_FLOOR, %eax
    cmp STATE_HIGH_TOP, %eax
    je 1f
    and $PAGE_MASK, %eax
    call e820_reserve_top
1:  mov STATE_FSEG + ZONE_FLOOR, %eax
    shr $4, %eax
    jz 2f                               /* no FSEG zone */
    mov %ax, %fs:EBDA_ROM_AREA_END
2:  popal
    ret

/* DS:SI = a command. Each handler may change every general register. */
run_command:
    mov (%si), %eax
    cmp $CMD_ALLOCATE, %eax
    je cmd_allocate
    cmp $CMD_ADD_POINTER, %eax
    je cmd_add_pointer
    cmp $CMD_ADD_CHECKSUM, %eax
    je cmd_add_checksum
    cmp $CMD_WRITE_POINTER, %eax
    je cmd_write_pointer
    test %eax, %eax
    jz 1f                               /* padding */
    call report
    PRINT "unknown command"
    jmp skipped
1:  ret

cmd_allocate:
    mov $CMD_FILE, %di
    call find_file
    jc skipped
    test %edx, %edx
    jnz 5f
    test %ecx, %ecx
    jz 6f
    mov ALLOCATE_ALIGN(%si), %eax
    call check_power_of_two
    jc 7f
    cmp $MIN_ALIGN, %eax
    jae 1f
    mov $MIN_ALIGN, %eax
1:  mov $STATE_HIGH, %di
    cmpb $ZONE_HIGH, ALLOCATE_ZONE(%si)
    je 2f
    mov $STATE_FSEG, %di
    cmpb $ZONE_FSEG, ALLOCATE_ZONE(%si)
    jne 8f
2:  mov ZONE_FLOOR(%di), %edx           /* the highest place below the floor */
    sub %ecx, %edx
    jb 9f
    neg %eax
    and %eax, %edx
    cmp ZONE_BOTTOM(%di), %edx
    jb 9f
    mov %edx, ZONE_FLOOR(%di)           /* written from here on, whatever the read gives */
    mov %edx, %edi
    mov %bp, %ax                        /* the key */
    call fw_cfg_read_linear
    jc 4f
    shl $2, %bx
    mov %edx, STATE_ADDRESSES(%bx)
    shr $2, %bx
    PRINT "acpi: "
    call fw_cfg_print_name
    PRINT " at "
    mov %edx, %eax
    mov $8, %cx
    call debugcon_hex
    PRINT "\n"
    ret
4:  call allocate_report
    PRINT "cannot read it"
    jmp skipped
5:  call allocate_report
    PRINT "allocated twice"
    jmp skipped
6:  call allocate_report
    PRINT "empty"
    jmp skipped
7:  call allocate_report
    PRINT "alignment not a power of two"
    jmp skipped
8:  call allocate_report
    PRINT "unknown zone"
    jmp skipped
9:  call allocate_report
    PRINT "does not fit in its zone"
    jmp skipped

allocate_report:
    mov $CMD_FILE, %di
    jmp report_file

/* The source file's address is added to a pointer in the destination file. */
cmd_add_pointer:
    mov $CMD_SOURCE, %di
    call find_allocated
    jc skipped
    mov %edx, STATE_VALUE
    mov $CMD_FILE, %di
    call find_allocated
    jc skipped
    movzbl POINTER_SIZE(%si), %eax
    mov POINTER_OFFSET(%si), %ebx
    call check_pointer
    jc skipped
    lea (%edx, %ebx), %edi
    mov STATE_VALUE, %edx
    cmp $2, %al
    jb 1f
    je 2f
    cmp $4, %al
    je 4f
    add %edx, %es:(%edi)
    adcl $0, %es:4(%edi)                /* the high dword of a 64-bit pointer */
    ret
1:  add %dl, %es:(%edi)
    ret
2:  add %dx, %es:(%edi)
    ret
4:  add %edx, %es:(%edi)
    ret

/* The byte at offset takes what makes [start, start + length) sum to 0. */
cmd_add_checksum:
    mov $CMD_FILE, %di
    call find_allocated
    jc skipped
    mov CHECKSUM_OFFSET(%si), %ebx
    mov $1, %eax
    call check_range
    jc skipped
    mov CHECKSUM_START(%si), %ebx
    mov CHECKSUM_LENGTH(%si), %eax
    call check_range
    jc skipped
    lea (%edx, %ebx), %edi
    mov %eax, %ecx
    xor %al, %al
    sub $4, %ecx
    jb 2f
1:  mov %es:(%edi), %ebx                /* a dword a round: under an emulating KVM */
    add %bl, %al                        /* every instruction costs microseconds */
    add %bh, %al
    shr $16, %ebx
    add %bl, %al
    add %bh, %al
    add $4, %edi
    sub $4, %ecx
    jae 1b
2:  add $4, %ecx                        /* the last 0-3 bytes */
3:  jecxz 4f
    add %es:(%edi), %al
    inc %edi
    dec %ecx
    jmp 3b
4:  add CHECKSUM_OFFSET(%si), %edx
    sub %al, %es:(%edx)
    ret

/* The source file's address + offset, written into the destination fw_cfg file (the
   VMM's copy, not guest memory) at its offset: select and skip, then write. */
cmd_write_pointer:
    mov $CMD_FILE, %di
    testb $1, %fs:EBDA_FW_CFG_DMA
    jz 8f
    mov $CMD_SOURCE, %di
    call find_allocated
    jc skipped
    mov WRITE_SOURCE_OFFSET(%si), %ebx
    mov $1, %eax
    call check_range
    jc skipped
    add %ebx, %edx
    mov %edx, STATE_VALUE
    movl $0, STATE_VALUE + 4
    mov $CMD_FILE, %di
    call find_file
    jc skipped
    mov %bp, STATE_KEY
    movzbl WRITE_SIZE(%si), %eax
    mov WRITE_DEST_OFFSET(%si), %ebx
    call check_pointer
    jc skipped
    movzwl STATE_KEY, %eax
    shl $16, %eax
    or $FW_CFG_DMA_SELECT | FW_CFG_DMA_SKIP, %eax
    mov %ebx, %ecx
    xor %edx, %edx
    call fw_cfg_dma
    jc 9f
    mov $FW_CFG_DMA_WRITE, %eax
    movzbl WRITE_SIZE(%si), %ecx
    mov $LOADER_SEG * PARAGRAPH + STATE_VALUE, %edx
    call fw_cfg_dma
    jc 9f
    ret
8:  call report_file
    PRINT "WRITE_POINTER needs fw_cfg DMA"
    jmp skipped
9:  call report_file
    PRINT "fw_cfg DMA write failed\n"
    ret

/* Every skip ends its report here (the handlers' stack is back to the return address). */
skipped:
    PRINT "; skipped\n"
    ret

/* DS:SI = command, DI = offset of a file name in it -> BX = fw_cfg file index, BP = its
   key, ECX = its size, EDX = where it was allocated (0: not yet). CF set, and the reason
   reported, for a name without its NUL or one no file has. Keeps SI and DI. */
find_file:
    push %si
    add %di, %si
    cmpb $0, FW_CFG_FILE_NAME_MAX - 1(%si)
    jne 1f
    call fw_cfg_find
    jc 2f
    pop %si
    mov %ax, %bp
    shl $2, %bx
    mov STATE_ADDRESSES(%bx), %edx
    shr $2, %bx
    clc
    ret
1:  pop %si
    call report_file
    PRINT "name without its NUL"
    stc
    ret
2:  pop %si
    call report_file
    PRINT "no such fw_cfg file"
    stc
    ret

/* find_file, and CF set (reported) unless the file was allocated. */
find_allocated:
    call find_file
    jc 1f
    test %edx, %edx
    jnz 1f
    call report_file
    PRINT "not allocated"
    stc
1:  ret

/* EAX = length, EBX = offset into the file of ECX bytes (named at DI): CF set (reported)
   unless the range lies inside it. */
check_range:
    cmp %ecx, %ebx
    ja 1f
    push %ecx
    sub %ebx, %ecx
    cmp %ecx, %eax
    pop %ecx
    ja 1f
    clc
    ret
1:  call report_file
    PRINT "offset or length outside the file"
    stc
    ret

/* EAX: CF set unless a power of two. */
check_power_of_two:
    push %edx
    lea -1(%eax), %edx
    test %eax, %edx                     /* x & (x - 1) */
    jnz 1f
    cmp $1, %eax                        /* CF set only for 0 */
    pop %edx
    ret
1:  pop %edx
    stc
    ret

/* EAX = pointer size, EBX = its offset in the file of ECX bytes (named at DI): CF set
   (reported) unless the size is 1, 2, 4 or 8 and the pointer lies inside the file. */
check_pointer:
    cmp $8, %eax
    ja 1f
    call check_power_of_two
    jnc check_range
1:  call report_file
    PRINT "pointer size not 1, 2, 4 or 8"
    stc
    ret

/* "acpi: command NNNN: " on the debug console. */
report:
    PRINT "acpi: command "
    push %eax
    push %cx
    movzwl STATE_COMMAND, %eax
    mov $4, %cx
    call debugcon_hex
    pop %cx
    pop %eax
    PRINT ": "
    ret

/* report, then the file name at DS:SI + DI (SI = the command). */
report_file:
    call report
    push %si
    add %di, %si
    push %cx
    mov $FW_CFG_FILE_NAME_MAX, %cx
    call debugcon_putsn
    pop %cx
    pop %si
    PRINT ": "
    ret

    FLAT_ES_ROUTINE

    .section .rodata
loader_name:
    .asciz "etc/table-loader"
