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
    FLAT32_DATA
    .globl spin
spin:
    jmp spin

    TEST_GDT
text: .asciz "spinning\n"
