/* Never ends: loops with interrupts off, for --timeout and Ctrl-C. */
#include "common.inc"
    RESET_VECTOR start
start:
    cli
    PRINT 0x402, text
1:  jmp 1b
text: .asciz "spinning\n"
