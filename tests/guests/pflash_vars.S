/* Boots from pflash unit 0 and uses unit 1 as OVMF uses its variable store: the CFI
   detection (0x50, 0x70, read, 0xFF), byte programming in pairs, read array, then reads
   the bytes back many times (array mode: no exits) and prints them on COM1, then resets.
   VARS: unit 1's first byte (the test gives 64 KiB unit 0 and 8 KiB unit 1). */
#include "common.inc"
    .set VARS, 0xFFFF0000 - 0x2000
    .set PROBE, VARS + 0x10
    .set DATA, VARS + 0x100
    .set READS, 2000
    RESET_VECTOR start
start:
    ENTER_UNREAL ds
    /* Detection: 0x50 then read back (0x50 would be RAM), 0x70 then read: 0x00 is flash. */
    movl $PROBE, %ebx
    movb $0x50, (%ebx)
    movb (%ebx), %al
    cmp $0x50, %al
    je not_flash
    movb $0x70, (%ebx)
    movb (%ebx), %al
    movb $0xff, (%ebx)
    test %al, %al
    jnz not_flash
    /* Program the message, one command and one data write per byte. */
    mov $message, %si
    movl $DATA, %ebx
1:  cs lodsb
    movb $0x10, (%ebx)
    movb %al, (%ebx)
    inc %ebx
    test %al, %al
    jnz 1b
    movb $0xff, -1(%ebx)           /* read array, at the last byte as OVMF does */
    /* Read the programmed bytes back READS times: a memory slot serves them. */
    mov $READS, %cx
2:  movl $DATA, %ebx
3:  movb (%ebx), %al
    inc %ebx
    test %al, %al
    jnz 3b
    loop 2b
    /* Print them. */
    movl $DATA, %ebx
    mov $0x3f8, %dx
4:  movb (%ebx), %al
    test %al, %al
    jz 5f
    outb %al, %dx
    inc %ebx
    jmp 4b
5:  KBC_RESET
    hlt
not_flash:
    PRINT 0x3f8, no_flash_text
    KBC_RESET
    hlt
message: .asciz "flash ok\n"
no_flash_text: .asciz "not flash\n"
    TEST_GDT
