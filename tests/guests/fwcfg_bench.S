/* fw_cfg throughput guest, for tinyvmm (`run --bios`) and QEMU (`-bios`) alike.

   Finds the file "opt/bench/blob" in the fw_cfg directory, then loads it to 1 MiB twice:
   first with one `addr32 rep insb` from the data port 0x511 (the legacy interface), then,
   if FW_CFG_ID has the DMA bit, with one DMA read. Each phase is bracketed by a milestone
   (port 0xf4, values 8/9 legacy, 10/11 DMA) and by a debug-console line ("A" ... "B",
   "C" ... "D") so either VMM can time it. It prints the first and last dword loaded after
   each phase for a correctness check, and ends with a keyboard-controller reset. */
#include "common.inc"

#define PORT_SELECTOR   0x510
#define PORT_DATA       0x511
#define PORT_DMA_LOW    0x518
#define DEBUGCON        0x402
#define MILESTONE       0xf4
#define LOAD_ADDRESS    0x100000
#define DESC            0x1000
#define DIRENT          0x2000
#define VARS            0x500          /* count, key, size */

    RESET_VECTOR start
start:
    cli
    xor %ax, %ax
    mov %ax, %ss
    mov $0x7000, %sp
    ENTER_UNREAL ds, es
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es

    call find_blob
    jc not_found

    /* Legacy: one rep insb of the whole file. */
    mov $'A', %al
    call marker
    mov $8, %al
    outb %al, $MILESTONE
    mov VARS + 4, %ax
    mov $PORT_SELECTOR, %dx
    outw %ax, %dx
    mov VARS + 8, %ecx
    mov $LOAD_ADDRESS, %edi
    mov $PORT_DATA, %dx
    cld
    addr32 rep insb
    mov $9, %al
    outb %al, $MILESTONE
    mov $'B', %al
    call marker
    call report_ends

    /* DMA, when the device offers it. */
    mov $1, %ax
    mov $PORT_SELECTOR, %dx
    outw %ax, %dx
    mov $PORT_DATA, %dx
    inb %dx, %al
    test $2, %al
    jz done
    mov $LOAD_ADDRESS, %edi             /* zero both ends: a transfer that did nothing shows */
    movl $0, (%edi)
    mov VARS + 8, %edi
    movl $0, LOAD_ADDRESS - 4(%edi)
    mov $'C', %al
    call marker
    mov $10, %al
    outb %al, $MILESTONE
    movzwl VARS + 4, %eax
    shl $16, %eax
    or $0x0a, %eax                      /* SELECT | READ */
    bswap %eax
    mov %eax, DESC
    mov VARS + 8, %eax
    bswap %eax
    mov %eax, DESC + 4
    movl $0, DESC + 8
    mov $LOAD_ADDRESS, %eax
    bswap %eax
    mov %eax, DESC + 12
    mov $DESC, %eax
    bswap %eax
    mov $PORT_DMA_LOW, %dx
    outl %eax, %dx
3:  mov DESC, %eax
    bswap %eax
    test $~1, %eax
    jnz 3b
    mov $11, %al
    outb %al, $MILESTONE
    mov $'D', %al
    call marker
    call report_ends
done:
    mov $'Z', %al
    call marker
    KBC_RESET
    hlt

not_found:
    mov $'N', %al
    call marker
    KBC_RESET
    hlt

/* Look up opt/bench/blob: CF clear, key at VARS+4, size at VARS+8. */
find_blob:
    mov $0x19, %ax
    mov $PORT_SELECTOR, %dx
    outw %ax, %dx
    mov $PORT_DATA, %dx
    mov $4, %ecx
    mov $VARS, %edi
    addr32 rep insb
    mov VARS, %eax
    bswap %eax
    mov %eax, VARS
1:  cmpl $0, VARS
    je 4f
    decl VARS
    mov $64, %ecx
    mov $DIRENT, %edi
    addr32 rep insb
    mov $name, %si
    mov $DIRENT + 8, %di
2:  cs lodsb
    cmp %al, (%di)
    jne 1b
    inc %di
    test %al, %al
    jnz 2b
    mov DIRENT, %eax
    bswap %eax
    mov %eax, VARS + 8
    mov DIRENT + 4, %ax
    xchg %al, %ah
    mov %ax, VARS + 4
    clc
    ret
4:  stc
    ret

/* A one-letter line on the debug console. */
marker:
    mov $DEBUGCON, %dx
    outb %al, %dx
    mov $'\n', %al
    outb %al, %dx
    ret

/* "first last" dwords of the loaded file, in hex. */
report_ends:
    mov $LOAD_ADDRESS, %edi
    mov (%edi), %eax
    call print_hex32
    mov VARS + 8, %edi
    mov LOAD_ADDRESS - 4(%edi), %eax
    call print_hex32
    mov $'\n', %al
    jmp putc

print_hex32:
    mov %eax, %ebx
    mov $8, %cx
1:  rol $4, %ebx
    mov %bl, %al
    and $0x0f, %al
    add $'0', %al
    cmp $'9', %al
    jbe 2f
    add $('a' - '0' - 10), %al
2:  call putc
    loop 1b
    mov $' ', %al
    jmp putc

putc:
    mov $DEBUGCON, %dx
    outb %al, %dx
    ret

    TEST_GDT
name: .asciz "opt/bench/blob"
