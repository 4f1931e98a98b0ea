/* Exercises the buses from a real guest and reports on the debug console:
   string I/O, unclaimed port and MMIO reads, CMOS. */
#include "common.inc"
    RESET_VECTOR start

/* Print %al as two hex digits on the debug console. */
hex8:
    push %ax
    shr $4, %al
    call nibble
    pop %ax
    push %ax
    and $0x0f, %al
    call nibble
    mov $' ', %al
    outb %al, $0xe9
    pop %ax
    ret
nibble:
    add $'0', %al
    cmp $'9', %al
    jbe 1f
    add $('a' - '0' - 10), %al
1:  outb %al, $0xe9
    ret

start:
    mov $0x6000, %sp
    xor %ax, %ax
    mov %ax, %ss
    push %cs
    pop %ds
    /* one rep outsb of the whole line to port 0x402 */
    mov $banner, %si
    mov $(banner_end - banner), %cx
    mov $0x402, %dx
    cld
    rep outsb
    /* an unclaimed port reads as all-ones */
    inb $0x99, %al
    call hex8
    /* the VGA window is not memory: an MMIO read, all-ones */
    mov $0xa000, %ax
    mov %ax, %es
    mov %es:0, %al
    call hex8
    /* CMOS register 0x15: base memory low byte (639 KiB = 0x27f) */
    mov $0x15, %al
    outb %al, $0x70
    inb $0x71, %al
    call hex8
    /* rep insb of 3000 bytes from an unclaimed port: all-ones, in few exits */
    xor %ax, %ax
    mov %ax, %es
    mov $0x1000, %di
    mov $3000, %cx
    mov $0x99, %dx
    rep insb
    mov %es:0x1000+2999, %al
    call hex8
    mov $'\n', %al
    outb %al, $0xe9
    KBC_RESET
    hlt
banner: .ascii "io-checks: "
banner_end:
