/* A tight port-write loop (port 0x80), for measuring exits per second; then resets. */
#include "common.inc"
#ifndef LOOPS
#define LOOPS 20000
#endif
    RESET_VECTOR start
start:
    mov $LOOPS, %cx
    xor %al, %al
1:  outb %al, $0x80
    inc %al
    loop 1b
    KBC_RESET
    hlt
