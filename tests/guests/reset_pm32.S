/* Resets through the keyboard controller in 32-bit protected mode with interrupts off, where
   the software CPU serves the write inside its run, then writes "!" on the debug console and
   polls CMOS forever: a machine that resets executes neither. */
#include "common.inc"
    RESET_VECTOR start
start:
    cli
    ENTER_PROTECTED32 protected

    .code32
protected:
    FLAT32_DATA
    mov $0xfe, %al
    outb %al, $0x64
    mov $'!', %al
    mov $0x402, %dx
    outb %al, %dx
poll:
    inb $0x71, %al
    jmp poll

    TEST_GDT
