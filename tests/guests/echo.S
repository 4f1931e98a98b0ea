/* Echoes what COM1 receives, from its receive interrupt (IRQ 4 through the 8259),
   prints "ready" first; a received 'q' resets the machine. */
#include "common.inc"
    .set COM1, 0x3f8
    .set IRQ4_VECTOR, 0x0c              /* master 8259 at vector base 8 */
    RESET_VECTOR start
start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7000, %sp
    movw $on_receive, IRQ4_VECTOR * 4
    movw %cs, IRQ4_VECTOR * 4 + 2
    mov $0x11, %al                      /* ICW1: edge, cascade, ICW4 follows */
    outb %al, $0x20
    mov $0x08, %al                      /* ICW2: vectors 8-15 */
    outb %al, $0x21
    mov $0x04, %al                      /* ICW3: slave on IRQ 2 */
    outb %al, $0x21
    mov $0x01, %al                      /* ICW4: 8086 mode */
    outb %al, $0x21
    mov $0xef, %al                      /* only IRQ 4 */
    outb %al, $0x21
    mov $0x08, %al                      /* MCR: OUT2 lets the interrupt out */
    mov $COM1 + 4, %dx
    outb %al, %dx
    mov $0x01, %al                      /* IER: received data available */
    mov $COM1 + 1, %dx
    outb %al, %dx
    PRINT COM1, ready
    sti
1:  hlt
    jmp 1b

on_receive:
    push %ax
    push %dx
2:  mov $COM1 + 5, %dx
    inb %dx, %al
    test $0x01, %al                     /* LSR data ready */
    jz 3f
    mov $COM1, %dx
    inb %dx, %al
    cmp $'q', %al
    jne 4f
    KBC_RESET
4:  outb %al, %dx
    jmp 2b
3:  mov $0x20, %al                      /* EOI */
    outb %al, $0x20
    pop %dx
    pop %ax
    iret

ready: .asciz "ready\n"
