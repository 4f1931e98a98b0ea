/* Adds 1 to a counter in RAM 2^22 x 8 times with read-modify-write instructions, in 32-bit
   protected mode with interrupts enabled (the PICs masked, so none come): the software CPU
   slices such a run every few milliseconds. Prints "OK" on the debug console when the
   counter holds exactly the sum (an instruction that ran twice shows as "BAD"), and resets. */
#include "common.inc"
    .set ROUNDS, 1 << 22
    .set COUNTER, 0x8000
    RESET_VECTOR start
start:
    cli
    mov $0xff, %al                  /* every PIC input masked: IF=1 delivers nothing */
    outb %al, $0x21
    outb %al, $0xa1
    ENTER_PROTECTED32 protected

    .code32
protected:
    FLAT32_DATA
    movl $0, COUNTER
    mov $ROUNDS, %ecx
    sti
1:  addl $1, COUNTER
    addl $1, COUNTER
    incl COUNTER
    incl COUNTER
    addl $1, COUNTER
    addl $1, COUNTER
    incl COUNTER
    incl COUNTER
    dec %ecx
    jnz 1b
    cli
    mov $0x402, %dx
    cmpl $(ROUNDS * 8), COUNTER
    jne 2f
    mov $'O', %al
    outb %al, %dx
    mov $'K', %al
    outb %al, %dx
    jmp 3f
2:  mov $'B', %al
    outb %al, %dx
    mov $'A', %al
    outb %al, %dx
    mov $'D', %al
    outb %al, %dx
3:  mov $'\n', %al
    outb %al, %dx
    KBC_RESET
    hlt

    TEST_GDT
