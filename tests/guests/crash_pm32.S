/* Writes port 0x80 forty times, enters 32-bit protected mode with an empty IDT
   and executes ud2 at crash_here: the exception cannot be delivered, so the CPU
   triple-faults there. */
#include "common.inc"
    RESET_VECTOR start
start:
    mov $40, %cx                    /* 40 port writes first: more than the report keeps */
1:  mov %cl, %al
    outb %al, $0x80
    loop 1b
    cs lgdtl gdt_descriptor
    cs lidtl empty_idt
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(0xf0000 + protected)

    .code32
protected:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %ss
crash_here:
    ud2
    mov $0x12345678, %eax       /* decodes as one instruction only in 32-bit mode */
    hlt

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf93000000ffff    /* 0x10: flat data */
gdt_descriptor:
    .word 23
    .long 0xf0000 + gdt
empty_idt:
    .word 0
    .long 0
