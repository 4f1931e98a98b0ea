/* Known port writes at known labels, in real mode and then in 32-bit protected
   mode, for the trace tests; each `out` is followed by a nop so that the IP
   after it still lies inside its label. Ends with a keyboard-controller reset. */
#include "common.inc"
    RESET_VECTOR start
start:
milestone_write:
    mov $1, %al
    outb %al, $0xf5                 /* milestone: firmware start */
    nop
first_write:
    mov $0x11, %al
    outb %al, $0x80
    nop
second_write:
    mov $0x22, %al
    outb %al, $0x80
    nop
    cs lgdtl gdt_descriptor
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(0xf0000 + protected)

    .code32
protected:
    mov $0x10, %ax
    mov %ax, %ds
protected_write:
    mov $0x33, %al
    outb %al, $0x80
    nop
    KBC_RESET
    hlt

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff        /* 0x08: flat 32-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: flat data */
gdt_descriptor:
    .word 23
    .long 0xf0000 + gdt
