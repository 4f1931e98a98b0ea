/* Goes from real mode through 32-bit protected mode to 64-bit long mode with
   identity-mapped 2 MiB pages, says "long" on the debug console, then loops
   writing a counter to port 0x80 (long_loop) until the VMM stops it. */
#include "common.inc"
    RESET_VECTOR start
start:
    ENTER_LONG64 long_entry

    .code64
long_entry:
    mov $0x402, %dx
    lea text(%rip), %rsi
2:  lodsb
    test %al, %al
    jz long_loop
    outb %al, %dx
    jmp 2b
long_loop:
    inc %rbx
    mov %bl, %al
    outb %al, $0x80
    jmp long_loop

text: .asciz "long\n"
    TEST_GDT
