/* Never ends: loops in 32-bit protected mode with interrupts off, where the software CPU
   runs it (for --timeout and signals through it). */
#include "common.inc"
    RESET_VECTOR start
start:
    cli
    PRINT 0x402, text
    ENTER_PROTECTED32 protected

    .code32
protected:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %ss
    outb %al, $0x80                 /* an exit: the software CPU takes over from here */
    .globl spin
spin:
    jmp spin

    TEST_GDT
text: .asciz "spinning\n"
