/* The memory map: etc/e820 from fw_cfg, with the BIOS's own areas reserved (and the ACPI
   tables' pages, for acpi.S), kept in the EBDA for INT 15h E820h, and the older E801h/88h
   answers derived from it. */

    .code16
    .include "bios.inc"

    .set E820_BASE, 0                   /* qword */
    .set E820_LENGTH, 8                 /* qword */
    .set E820_TYPE, 16                  /* dword */
    .set E820_RESERVED, 2
    .set BIOS_AREAS, 4                  /* entries e820_reserve_bios_areas appends */
    .set KB_1M, 1024
    .set KB_16M, 16 * 1024
    .set KB_4G, 4 * 1024 * 1024
    .set E801_LOW_MAX_KB, 15 * 1024
    .set EXT_88_MAX_KB, 63 * 1024

    .globl e820_load
e820_load:
    pushal
    push %es
    mov $e820_name, %si
    call fw_cfg_find
    jc 8f
    mov %ax, %bx                        /* key */
    mov %ecx, %eax
    xor %edx, %edx
    mov $E820_ENTRY_SIZE, %ecx
    div %ecx                            /* whole entries in the file */
    cmp $E820_MAX, %eax
    jbe 1f
    PRINT "e820: table truncated\n"
    mov $E820_MAX, %eax
1:  imul $E820_ENTRY_SIZE, %eax, %ecx
    push %fs
    pop %es
    mov $EBDA_E820_TABLE, %di
    push %ax
    mov %bx, %ax
    call fw_cfg_read
    pop %ax
    jc 9f
    mov %ax, %fs:EBDA_E820_COUNT
    call e820_reserve_bios_areas
    call e820_sort
    call e820_derive_legacy_sizes
2:  pop %es
    popal
    ret
8:  PRINT "e820: no etc/e820 in fw_cfg; INT 15h will report no memory map\n"
    jmp 2b
9:  PRINT "e820: cannot read etc/e820\n"
    jmp 2b

/* etc/e820 gives the RAM below 4 GiB as one entry from 0, as QEMU writes it: the BIOS takes
   its own areas out of it, as SeaBIOS does. That entry ends at the EBDA; the EBDA, the window
   of option ROMs and BIOS (0xC0000 to 1 MiB) and the BIOS image below 4 GiB are appended as
   reserved, and the RAM from 1 MiB on (e820_sort then puts them in order). */
e820_reserve_bios_areas:
    pushal
    mov $EBDA_E820_TABLE, %si
    mov %fs:EBDA_E820_COUNT, %cx
    jcxz 9f
1:  cmpl $E820_RAM, %fs:E820_TYPE(%si)
    jne 2f
    cmpl $0, %fs:E820_BASE(%si)
    jne 2f
    cmpl $0, %fs:E820_BASE + 4(%si)
    jne 2f
    cmpl $0, %fs:E820_LENGTH + 4(%si)
    jne 2f
    mov %fs:E820_LENGTH(%si), %ebp      /* EBP = end of low RAM */
    cmp $HIGH_MEMORY_START, %ebp
    ja 3f
2:  add $E820_ENTRY_SIZE, %si
    loop 1b
    PRINT "e820: no RAM entry from 0 in etc/e820\n"
9:  popal
    ret

3:  mov %fs:EBDA_E820_COUNT, %ax
    cmp $E820_MAX - BIOS_AREAS, %ax
    ja 8f
    imul $E820_ENTRY_SIZE, %ax, %di
    add $EBDA_E820_TABLE, %di
    add $BIOS_AREAS, %ax
    mov %ax, %fs:EBDA_E820_COUNT
    movl $EBDA_START, %fs:E820_LENGTH(%si)
    mov $E820_RESERVED, %ebx
    mov $EBDA_START, %edx
    mov $EBDA_SIZE, %ecx
    call e820_put
    mov $OPTION_ROM_START, %edx
    mov $HIGH_MEMORY_START - OPTION_ROM_START, %ecx
    call e820_put
    mov $-BIOS_IMAGE_SIZE, %edx         /* 4 GiB - the image's size */
    mov $BIOS_IMAGE_SIZE, %ecx
    call e820_put
    mov $E820_RAM, %ebx
    mov $HIGH_MEMORY_START, %edx
    mov %ebp, %ecx
    sub %edx, %ecx
    call e820_put
    jmp 9b
8:  PRINT "e820: no room to reserve the BIOS areas\n"
    jmp 9b

/* -> SI = the RAM entry holding 1 MiB, EDX:EAX = its end; CF set if there is none. */
e820_find_high_ram:
    push %cx
    mov $EBDA_E820_TABLE, %si
    mov %fs:EBDA_E820_COUNT, %cx
    jcxz 8f
1:  cmpl $E820_RAM, %fs:E820_TYPE(%si)
    jne 2f
    cmpl $0, %fs:E820_BASE + 4(%si)
    jne 2f
    mov %fs:E820_BASE(%si), %eax
    cmp $HIGH_MEMORY_START, %eax
    ja 2f
    xor %edx, %edx                      /* EDX:EAX = base + length */
    add %fs:E820_LENGTH(%si), %eax
    adc %fs:E820_LENGTH + 4(%si), %edx
    jnz 3f
    cmp $HIGH_MEMORY_START, %eax
    ja 3f
2:  add $E820_ENTRY_SIZE, %si
    loop 1b
8:  pop %cx
    stc
    ret
3:  pop %cx
    clc
    ret

/* The same entry, only if it ends below 4 GiB: SI, EAX = its end; CF set otherwise. */
e820_high_ram:
    push %edx
    call e820_find_high_ram
    jc 1f
    cmp $1, %edx                        /* CF set for EDX = 0 ... */
    cmc                                 /* ... and so clear */
1:  pop %edx
    ret

/* EAX = the end of RAM from 1 MiB (CF set if there is none). */
    .globl e820_high_ram_end
e820_high_ram_end:
    push %si
    call e820_high_ram
    pop %si
    ret

/* EAX = a page boundary inside the RAM from 1 MiB: that RAM ends there and the rest of it
   becomes reserved (the ACPI tables' zone, as SeaBIOS reserves its own); the table is
   sorted again and E801h/88h follow. */
    .globl e820_reserve_top
e820_reserve_top:
    pushal
    mov %eax, %edx                      /* EDX = the reserved range's base */
    call e820_high_ram
    jc 9f
    mov %eax, %ecx
    sub %edx, %ecx                      /* ECX = its length */
    mov %edx, %ebx
    sub %fs:E820_BASE(%si), %ebx
    mov %ebx, %fs:E820_LENGTH(%si)
    mov %fs:EBDA_E820_COUNT, %ax
    cmp $E820_MAX, %ax
    jae 8f
    imul $E820_ENTRY_SIZE, %ax, %di
    add $EBDA_E820_TABLE, %di
    incw %fs:EBDA_E820_COUNT
    mov $E820_RESERVED, %ebx
    call e820_put
    call e820_sort
7:  call e820_derive_legacy_sizes
9:  popal
    ret
8:  PRINT "e820: no room to reserve the ACPI tables; left out of the RAM\n"
    jmp 7b

/* The entry at FS:DI: base EDX, length ECX (both below 4 GiB), type EBX; DI moves past it. */
e820_put:
    mov %edx, %fs:E820_BASE(%di)
    movl $0, %fs:E820_BASE + 4(%di)
    mov %ecx, %fs:E820_LENGTH(%di)
    movl $0, %fs:E820_LENGTH + 4(%di)
    mov %ebx, %fs:E820_TYPE(%di)
    add $E820_ENTRY_SIZE, %di
    ret

/* The table in address order, as SeaBIOS answers and as older readers of E820h expect
   (etc/e820 comes unsorted): an exchange sort on the 64-bit base, at most E820_MAX entries. */
e820_sort:
    pushal
    mov %fs:EBDA_E820_COUNT, %cx
    cmp $2, %cx
    jb 9f
    dec %cx                             /* at most count - 1 passes */
1:  mov $EBDA_E820_TABLE, %si
    mov %fs:EBDA_E820_COUNT, %dx
    dec %dx                             /* neighbours compared in a pass */
    xor %bp, %bp                        /* set when the pass swapped a pair */
2:  mov %fs:E820_BASE + 4(%si), %eax
    cmp %fs:E820_ENTRY_SIZE + E820_BASE + 4(%si), %eax
    ja 3f
    jb 5f
    mov %fs:E820_BASE(%si), %eax
    cmp %fs:E820_ENTRY_SIZE + E820_BASE(%si), %eax
    jbe 5f
3:  push %cx                            /* swap the two entries, a dword at a time */
    mov $E820_ENTRY_SIZE / 4, %cx
    mov %si, %di
4:  mov %fs:(%di), %eax
    xchg %fs:E820_ENTRY_SIZE(%di), %eax
    mov %eax, %fs:(%di)
    add $4, %di
    loop 4b
    pop %cx
    mov $1, %bp
5:  add $E820_ENTRY_SIZE, %si
    dec %dx
    jnz 2b
    test %bp, %bp
    jz 9f
    loop 1b
9:  popal
    ret

/* E801h and 88h describe the RAM that starts at 1 MiB, so find the RAM entry
   holding 1 MiB and take its end (capped at 4 GiB). */
e820_derive_legacy_sizes:
    pushal
    call e820_find_high_ram
    jc 9f
    mov $KB_4G, %ebx
    test %edx, %edx
    jnz 3f
    mov %eax, %ebx
    shr $10, %ebx                       /* end in KiB */
    cmp $KB_1M, %ebx
    ja 3f
9:  popal
    ret

3:  sub $KB_1M, %ebx                    /* EBX = KiB above 1 MiB */
    mov $E801_LOW_MAX_KB, %eax
    cmp %eax, %ebx
    jae 4f
    mov %ebx, %eax
4:  mov %ax, %fs:EBDA_E801_LOW_KB
    xor %eax, %eax
    cmp $KB_16M - KB_1M, %ebx
    jbe 5f
    lea -(KB_16M - KB_1M)(%ebx), %eax
    shr $6, %eax                        /* 64 KiB blocks above 16 MiB */
5:  mov %ax, %fs:EBDA_E801_HIGH_64K
    mov $EXT_88_MAX_KB, %eax
    cmp %eax, %ebx
    jae 6f
    mov %ebx, %eax
6:  mov %ax, %fs:EBDA_EXT_KB
    popal
    ret

    .section .rodata
e820_name:
    .asciz "etc/e820"
