/* fw_cfg from the guest's side: signature, ID, DMA signature, file directory, data-register
   reads, DMA read/skip/select/write and the error bit, first through the x86 ports, then
   through the MMIO window at FWCFG_MMIO. Each observation is one line on the debug console
   ("pio sig 554d4551", "mmio write 00000000 ...") for the host test to check; an interface
   that does not answer "QEMU" prints "<mode> absent". Ends with a keyboard-controller reset.

   Runs in unreal mode: DS, ES, FS and GS have base 0 and a 4 GiB limit, so 32-bit addresses
   reach the whole RAM and the MMIO window while the code stays 16-bit real-mode code. */
#include "common.inc"

#define FWCFG_MMIO      0xfef00000
#define PORT_SELECTOR   0x510
#define PORT_DATA       0x511
#define PORT_DMA_HIGH   0x514
#define PORT_DMA_LOW    0x518
#define DEBUGCON        0x402

#define CTL_ERROR  0x01
#define CTL_READ   0x02
#define CTL_SKIP   0x04
#define CTL_SELECT 0x08
#define CTL_WRITE  0x10

/* Variables and buffers in RAM (linear addresses; DS base is 0). */
#define MODE       0x500          /* 0: ports, 1: MMIO */
#define ID_VALUE   0x504
#define COUNT      0x508
#define BLOB_KEY   0x50c
#define BLOB_SIZE  0x510
#define RW_KEY     0x514
#define RW_SIZE    0x518
#define RAM_END    0x51c
#define DESC       0x1000
#define DESC2      0x1100
#define DIRENT     0x2000
#define SCRATCH    0x3000
#define READBACK   0x3100
#define BUF_A      0x10000
#define BUF_B      0x20000

/* Start a line: "<mode> <label> ". */
    .macro LINE label
    mov $\label, %si
    call line_start
    .endm

    RESET_VECTOR start
start:
    cli
    xor %ax, %ax
    mov %ax, %ss
    mov $0x7000, %sp
    ENTER_UNREAL ds, es, fs, gs
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs

    movb $0, MODE
    call run_checks
    movb $1, MODE
    call run_checks
    mov $s_end, %si
    call puts
    KBC_RESET
    hlt

/* ---- one pass over every check, through the interface MODE names ---------------------- */
run_checks:
    xor %ax, %ax
    call fw_select
    mov $4, %ecx
    mov $SCRATCH, %edi
    call fw_read
    cmpl $0x554d4551, SCRATCH           /* "QEMU" */
    je 1f
    LINE s_absent
    call newline
    ret
1:  LINE s_sig
    mov SCRATCH, %eax
    call print_hex32
    call newline

    LINE s_id
    mov $1, %ax
    call fw_select
    mov $4, %ecx
    mov $ID_VALUE, %edi
    call fw_read
    mov ID_VALUE, %eax
    call print_hex32
    call newline

    LINE s_dmasig
    call read_dma_signature
    call newline

    LINE s_ram
    mov $3, %ax
    call fw_select
    mov $8, %ecx
    mov $SCRATCH, %edi
    call fw_read
    mov SCRATCH + 4, %eax
    call print_hex32
    mov SCRATCH, %eax
    call print_hex32
    call newline
    mov SCRATCH, %eax                   /* low RAM ends at min(RAM, 3 GiB): fine for < 3 GiB */
    mov %eax, RAM_END

    LINE s_files
    mov $0x19, %ax
    call fw_select
    mov $4, %ecx
    mov $SCRATCH, %edi
    call fw_read
    mov SCRATCH, %eax
    bswap %eax
    call print_hex32
    call newline

    mov $n_blob, %si
    call find_file
    jc no_files
    mov %ax, BLOB_KEY
    mov %ecx, BLOB_SIZE
    mov $n_rw, %si
    call find_file
    jc no_files
    mov %ax, RW_KEY
    mov %ecx, RW_SIZE
    LINE s_blob
    movzwl BLOB_KEY, %eax
    call print_hex32
    mov BLOB_SIZE, %eax
    call print_hex32
    call newline
    LINE s_rw
    movzwl RW_KEY, %eax
    call print_hex32
    mov RW_SIZE, %eax
    call print_hex32
    call newline

    /* The blob through the data register (rep insb on ports, 4-byte loads on MMIO). */
    mov BLOB_KEY, %ax
    call fw_select
    mov BLOB_SIZE, %ecx
    mov $BUF_A, %edi
    call fw_read
    LINE s_sum_data
    mov $BUF_A, %esi
    mov BLOB_SIZE, %ecx
    call checksum
    call print_hex32
    call newline

    testb $2, ID_VALUE                  /* no DMA: nothing more to check */
    jnz 2f
    LINE s_nodma
    call newline
    ret

2:  /* DMA read with select. */
    LINE s_sum_dma
    movzwl BLOB_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_READ), %eax
    mov BLOB_SIZE, %ecx
    mov $BUF_B, %edx
    call fw_dma
    call print_hex32
    mov $BUF_B, %esi
    mov BLOB_SIZE, %ecx
    call checksum
    call print_hex32
    call newline

    /* Select + skip 100, then read 16 where the skip left off. */
    LINE s_skip
    movzwl BLOB_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_SKIP), %eax
    mov $100, %ecx
    xor %edx, %edx
    call fw_dma
    call print_hex32
    mov $CTL_READ, %eax
    mov $16, %ecx
    mov $SCRATCH, %edx
    call fw_dma
    call print_hex32
    mov $SCRATCH, %esi
    mov $16, %cx
    call print_bytes
    call newline

    /* Read 8 bytes from 4 before the end: 4 item bytes, then zeros. */
    LINE s_tail
    movl $0xaaaaaaaa, SCRATCH
    movl $0xaaaaaaaa, SCRATCH + 4
    movzwl BLOB_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_SKIP), %eax
    mov BLOB_SIZE, %ecx
    sub $4, %ecx
    xor %edx, %edx
    call fw_dma
    mov $CTL_READ, %eax
    mov $8, %ecx
    mov $SCRATCH, %edx
    call fw_dma
    call print_hex32
    mov $SCRATCH, %esi
    mov $8, %cx
    call print_bytes
    call newline

    /* The data register and DMA share one offset. */
    LINE s_shared
    mov BLOB_KEY, %ax
    call fw_select
    mov $2, %ecx
    mov $SCRATCH, %edi
    call fw_read
    mov $CTL_READ, %eax
    mov $2, %ecx
    mov $SCRATCH + 2, %edx
    call fw_dma
    call print_hex32
    mov $SCRATCH, %esi
    mov $4, %cx
    call print_bytes
    call newline

    /* DMA write into the writable file, read back through the data register. */
    LINE s_write
    movl $0x54495257, SCRATCH           /* "WRIT" */
    movl $0x214e4554, SCRATCH + 4       /* "TEN!" */
    movzwl RW_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_WRITE), %eax
    mov $8, %ecx
    mov $SCRATCH, %edx
    call fw_dma
    call print_hex32
    mov RW_KEY, %ax
    call fw_select
    mov RW_SIZE, %ecx
    mov $READBACK, %edi
    call fw_read
    mov $READBACK, %esi
    mov RW_SIZE, %cx
    call print_bytes
    call newline

    /* Errors: writing a read-only item, a write that does not fit. */
    LINE s_write_ro
    movzwl BLOB_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_WRITE), %eax
    mov $4, %ecx
    mov $SCRATCH, %edx
    call fw_dma
    call print_hex32
    call newline
    LINE s_write_long
    movzwl RW_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_WRITE), %eax
    mov RW_SIZE, %ecx
    inc %ecx
    mov $SCRATCH, %edx
    call fw_dma
    call print_hex32
    call newline

    /* Errors: reading into ROM, into the hole below 4 GiB, across the end of RAM. */
    LINE s_read_rom
    movzwl BLOB_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_READ), %eax
    mov $4, %ecx
    mov $(0xf0000 + rom_target), %edx
    call fw_dma
    call print_hex32
    mov $(0xf0000 + rom_target), %esi
    mov $4, %cx
    call print_bytes
    call newline
    LINE s_read_hole
    movzwl BLOB_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_READ), %eax
    mov $16, %ecx
    mov $0xe0000000, %edx
    call fw_dma
    call print_hex32
    call newline
    LINE s_read_edge
    mov RAM_END, %edi
    sub $8, %edi
    movl $0x55555555, (%edi)
    movl $0x55555555, 4(%edi)
    movzwl BLOB_KEY, %eax
    shl $16, %eax
    or $(CTL_SELECT | CTL_READ), %eax
    mov $16, %ecx
    mov %edi, %edx
    call fw_dma
    call print_hex32
    mov RAM_END, %esi
    sub $8, %esi
    mov $8, %cx
    call print_bytes
    call newline

    /* The high half of the address register counts once, then is cleared. */
    LINE s_high
    call high_half_check
    call newline
    ret

no_files:
    LINE s_nofile
    call newline
    ret

/* ---- transport: the same operations over ports or MMIO ---------------------------------- */

/* Select key AX. Clobbers EBX, DX. */
fw_select:
    cmpb $0, MODE
    jne 1f
    mov $PORT_SELECTOR, %dx
    outw %ax, %dx
    ret
1:  mov $FWCFG_MMIO, %ebx
    xchg %al, %ah                       /* big-endian */
    movw %ax, 8(%ebx)
    xchg %al, %ah
    ret

/* Read ECX bytes of the selected item to linear EDI. Clobbers EAX, EBX, ECX, DX, EDI. */
fw_read:
    cmpb $0, MODE
    jne 1f
    mov $PORT_DATA, %dx
    addr32 rep insb
    ret
1:  mov $FWCFG_MMIO, %ebx
2:  cmp $4, %ecx
    jb 3f
    movl (%ebx), %eax                   /* 4 bytes at once, in item order */
    movl %eax, (%edi)
    add $4, %edi
    sub $4, %ecx
    jmp 2b
3:  test %ecx, %ecx
    jz 4f
    movb (%ebx), %al
    movb %al, (%edi)
    inc %edi
    dec %ecx
    jmp 3b
4:  ret

/* Run one DMA transfer: EAX control, ECX length, EDX address; returns the final control in EAX.
   Clobbers EBX, ECX, EDX. */
fw_dma:
    bswap %eax
    mov %eax, DESC
    bswap %ecx
    mov %ecx, DESC + 4
    movl $0, DESC + 8
    bswap %edx
    mov %edx, DESC + 12
    mov $DESC, %eax
    call dma_start
1:  mov DESC, %eax
    bswap %eax
    test $~CTL_ERROR, %eax              /* poll until the device is done */
    jnz 1b
    ret

/* Start the descriptor at EAX (low half only). Clobbers EAX, EBX, DX. */
dma_start:
    bswap %eax
    cmpb $0, MODE
    jne 1f
    mov $PORT_DMA_LOW, %dx
    outl %eax, %dx
    ret
1:  mov $FWCFG_MMIO, %ebx
    movl %eax, 20(%ebx)
    ret

/* Write the high half of the DMA address register (EAX). Clobbers EAX, EBX, DX. */
dma_high:
    bswap %eax
    cmpb $0, MODE
    jne 1f
    mov $PORT_DMA_HIGH, %dx
    outl %eax, %dx
    ret
1:  mov $FWCFG_MMIO, %ebx
    movl %eax, 16(%ebx)
    ret

/* Print the two halves of the DMA register as read. */
read_dma_signature:
    cmpb $0, MODE
    jne 1f
    mov $PORT_DMA_HIGH, %dx
    inl %dx, %eax
    call print_hex32
    mov $PORT_DMA_LOW, %dx
    inl %dx, %eax
    jmp print_hex32
1:  mov $FWCFG_MMIO, %ebx
    movl 16(%ebx), %eax
    call print_hex32
    movl 20(%ebx), %eax
    jmp print_hex32

/* DESC2 selects the signature and reads 4 bytes to SCRATCH+0x40. Started with high half 1
   it lies beyond RAM and nothing happens; started again with the low half only, it runs. */
high_half_check:
    mov $(CTL_SELECT | CTL_READ), %eax
    bswap %eax
    mov %eax, DESC2
    mov $4, %eax
    bswap %eax
    mov %eax, DESC2 + 4
    movl $0, DESC2 + 8
    mov $(SCRATCH + 0x40), %eax
    bswap %eax
    mov %eax, DESC2 + 12
    movl $0, SCRATCH + 0x40
    mov $1, %eax
    call dma_high
    mov $DESC2, %eax
    call dma_start
    mov DESC2, %eax
    bswap %eax
    call print_hex32
    mov SCRATCH + 0x40, %eax
    call print_hex32
    mov $DESC2, %eax
    call dma_start
    mov DESC2, %eax
    bswap %eax
    call print_hex32
    mov SCRATCH + 0x40, %eax
    jmp print_hex32

/* Look up the file named at CS:SI in the directory: CF clear, AX = key, ECX = size if found. */
find_file:
    push %si
    mov $0x19, %ax
    call fw_select
    mov $4, %ecx
    mov $COUNT, %edi
    call fw_read
    mov COUNT, %eax
    bswap %eax
    mov %eax, COUNT
1:  cmpl $0, COUNT
    je 4f
    decl COUNT
    mov $64, %ecx
    mov $DIRENT, %edi
    call fw_read
    pop %si
    push %si
    mov $DIRENT + 8, %di
2:  cs lodsb
    cmp %al, (%di)
    jne 1b
    inc %di
    test %al, %al
    jnz 2b
    pop %si
    mov DIRENT, %ecx
    bswap %ecx
    mov DIRENT + 4, %ax
    xchg %al, %ah
    clc
    ret
4:  pop %si
    stc
    ret

/* ---- helpers ------------------------------------------------------------------------------ */

/* EAX = h over ECX bytes at linear ESI, h = h * 31 + byte. Clobbers ECX, EDX, ESI. */
checksum:
    xor %eax, %eax
1:  test %ecx, %ecx
    jz 2f
    imul $31, %eax, %eax
    movzbl (%esi), %edx
    add %edx, %eax
    inc %esi
    dec %ecx
    jmp 1b
2:  ret

/* "<mode> <label> " with the label at CS:SI. */
line_start:
    push %si
    mov $s_pio, %si
    cmpb $0, MODE
    je 1f
    mov $s_mmio, %si
1:  call puts
    pop %si
    call puts
    mov $' ', %al
    jmp putc

#include "console.inc"

/* CX bytes at linear ESI as hex, no spaces, then a space. Clobbers AL, CX, ESI. */
print_bytes:
1:  movb (%esi), %al
    shr $4, %al
    call hex_digit
    movb (%esi), %al
    call hex_digit
    inc %esi
    loop 1b
    mov $' ', %al
    jmp putc

    TEST_GDT

rom_target: .ascii "ROM!"
n_blob:      .asciz "opt/test/blob"
n_rw:        .asciz "opt/test/rw"
s_pio:       .asciz "pio "
s_mmio:      .asciz "mmio "
s_absent:    .asciz "absent"
s_sig:       .asciz "sig"
s_id:        .asciz "id"
s_dmasig:    .asciz "dmasig"
s_ram:       .asciz "ram"
s_files:     .asciz "files"
s_nofile:    .asciz "nofile"
s_blob:      .asciz "blob"
s_rw:        .asciz "rw"
s_sum_data:  .asciz "sum-data"
s_nodma:     .asciz "nodma"
s_sum_dma:   .asciz "sum-dma"
s_skip:      .asciz "skip"
s_tail:      .asciz "tail"
s_shared:    .asciz "shared"
s_write:     .asciz "write"
s_write_ro:  .asciz "write-ro"
s_write_long: .asciz "write-long"
s_read_rom:  .asciz "read-rom"
s_read_hole: .asciz "read-hole"
s_read_edge: .asciz "read-edge"
s_high:      .asciz "high"
s_end:       .asciz "end\n"
