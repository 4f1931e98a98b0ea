/* LOOPS bytes written to COM1's transmit register (port 0x3f8) between milestones 8 and 9,
   a newline every 64, then a reset: the run loop's cost per byte of console output. */
    .code16
    .text
start:
    mov $8, %al
    outb %al, $0xf4
    mov $0x3f8, %dx
    mov $LOOPS, %ecx
    test %ecx, %ecx
    jz 2f
1:  mov $'x', %al
    test $63, %cl
    jnz 4f
    mov $'\n', %al
4:  outb %al, %dx
    dec %ecx
    jnz 1b
2:  mov $9, %al
    outb %al, $0xf4
    mov $0xfe, %al
    outb %al, $0x64
3:  hlt
    jmp 3b

    .section .reset, "ax"
    ljmp $0xf000, $start
    .balign 16, 0xf4
