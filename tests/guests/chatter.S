/* Prints the same line on COM1 and on the debug console for ever: output faster than a
   stalled reader takes it. */
#include "common.inc"
    RESET_VECTOR start
start:
    mov $1, %al
    outb %al, $0xf5                 /* milestone: firmware start */
again:
    PRINT 0x3f8, line
    PRINT 0x402, line
    jmp again
line: .asciz "chatter: the guest talks and nobody listens .......................\n"
