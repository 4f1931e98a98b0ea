/* Never ends: polls a port a device serves (CMOS data, 0x71) in 32-bit protected mode with
   interrupts off, where the software CPU runs it and serves each read inside its run (for
   --timeout through it). */
#include "common.inc"
    RESET_VECTOR start
start:
    cli
    PRINT 0x402, text
    ENTER_PROTECTED32 protected

    .code32
protected:
    FLAT32_DATA
poll:
    inb $0x71, %al
    jmp poll

    TEST_GDT
text: .asciz "polling\n"
