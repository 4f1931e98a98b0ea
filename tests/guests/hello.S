/* Prints on COM1 and on the debug console, records a milestone, then resets. */
#include "common.inc"
    RESET_VECTOR start
start:
    mov $1, %al
    outb %al, $0xf5                 /* milestone: firmware start */
    PRINT 0x3f8, serial_text
    PRINT 0x402, debug_text
    KBC_RESET
    hlt
serial_text: .asciz "Hello from COM1\n"
debug_text:  .asciz "Hello from the debug console\n"
