/* A guest for the gdb tests: known instructions at known labels, a RAM
   variable to watch, a port write, then a keyboard-controller reset. */
#include "common.inc"
#define COUNTER 0x500               /* a RAM byte the guest writes: for watchpoints */
    RESET_VECTOR start
start:
    xor %ax, %ax
    mov %ax, %ds
    mov $0x1234, %bx
    movb $0, COUNTER
count_loop:
    incb COUNTER
    cmpb $3, COUNTER
    jne count_loop
after_count:
    mov $0x55, %al
    outb %al, $0x80                 /* POST code 0x55 */
    nop
breakpoint_here:
    mov $0xbeef, %cx
    mov $0xcafe, %dx
    KBC_RESET
    hlt
