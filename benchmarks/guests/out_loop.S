/* LOOPS port-I/O exits (outb to port 0x80) between milestones 8 and 9, then a reset.
   Runs unchanged as a -bios image under QEMU and tinyvmm. */
    .code16
    .text
start:
    mov $8, %al
    outb %al, $0xf4
    mov $LOOPS, %ecx
    test %ecx, %ecx
    jz 2f
1:  outb %al, $0x80
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
