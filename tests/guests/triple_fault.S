/* Loads an empty IDT and raises an exception: the CPU triple-faults. */
#include "common.inc"
    RESET_VECTOR start
start:
    mov $0x1234, %ax
    mov $0x5678, %bx
    lidt %cs:empty_idt
    int3
    hlt
empty_idt: .word 0
           .long 0
