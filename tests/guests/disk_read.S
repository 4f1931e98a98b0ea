/* A boot sector that reads its disk through INT 13h extended reads (AH = 42h) and reports.

   Sectors 1.. of the disk hold the test pattern: the first 4 bytes of each
   sector are its LBA. The sector reads DISK_READS chunks of CHUNK_SECTORS
   sectors from LBA 1 on (wrapping within DISK_SECTORS), into 0x1000:0, checks
   each chunk's first and last sector number, and prints on COM1:
     "disk-read: start"                 before the first read
     "disk-read: ok"                    after every chunk read and checked
     "disk-read: error"                 a failed INT 13h or a wrong sector
   Milestones 0xf4 = 16 and 17 (values above 7 are free) mark the first read's
   start and the last one's end, for timing. Then it resets (status 0). */
#include "common.inc"
#ifndef CHUNK_SECTORS
#define CHUNK_SECTORS 8
#endif
#ifndef DISK_READS
#define DISK_READS 16
#endif
#ifndef DISK_SECTORS
#define DISK_SECTORS 2048
#endif
    .set BUFFER_SEG, 0x1000

    .globl start
start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    ljmp $0, $1f
1:  mov %dl, drive
    PRINT 0x3f8, started
    mov $16, %al
    outb %al, $0xf4
    movl $1, lba
    mov $DISK_READS, %cx
next:
    push %cx
    mov lba, %eax
    mov %eax, dap_lba
    movw $CHUNK_SECTORS, dap_count
    mov $dap, %si
    mov drive, %dl
    mov $0x42, %ah
    int $0x13
    jc failed
    push %ds
    mov $BUFFER_SEG, %ax
    mov %ax, %ds
    mov 0, %eax                         /* the first sector's number */
    mov (CHUNK_SECTORS - 1) * 512, %edx /* the last one's */
    pop %ds
    cmp lba, %eax
    jne failed
    sub $(CHUNK_SECTORS - 1), %edx
    cmp lba, %edx
    jne failed
    mov lba, %eax                       /* the next chunk, wrapping before the end */
    add $CHUNK_SECTORS, %eax
    cmp $(DISK_SECTORS - CHUNK_SECTORS), %eax
    jbe 2f
    mov $1, %eax
2:  mov %eax, lba
    pop %cx
    loop next
    mov $17, %al
    outb %al, $0xf4
    PRINT 0x3f8, ok
    KBC_RESET
    hlt
failed:
    PRINT 0x3f8, error
    KBC_RESET
    hlt

started: .asciz "disk-read: start\n"
ok:      .asciz "disk-read: ok\n"
error:   .asciz "disk-read: error\n"
drive:   .byte 0
    .balign 4
lba:     .long 0
dap:     .byte 16, 0                    /* the disk address packet */
dap_count: .word 0
         .word 0, BUFFER_SEG            /* offset, segment */
dap_lba: .long 0, 0
