/* Long mode, then one virtual 2 MiB page (8 MiB) pointed at two physical pages in turn,
   each change followed by a TLB flush as Linux does it (`mov cr3` with the same value),
   four times: prints the byte read through the page after each on the debug console
   ("ABABABAB\n" when every flush took), then resets. */
#include "common.inc"
    RESET_VECTOR start
start:
    ENTER_LONG64 long_entry

    .code64
    .set WINDOW, 0x800000
    .set WINDOW_PDE, LONG_PD + 4 * 8
long_entry:
    mov $0x90000, %rsp
    movb $'A', 0x400000
    movb $'B', 0x600000
    mov $4, %ecx                    /* four times: the later ones run translated code */
1:  mov $0x400083, %rax             /* the window onto the 'A' page */
    call map_and_print
    mov $0x600083, %rax             /* then onto the 'B' page */
    call map_and_print
    loop 1b
    mov $'\n', %al
    mov $0x402, %dx
    outb %al, %dx
    KBC_RESET
    hlt

map_and_print:
    mov %rax, WINDOW_PDE
    mov %cr3, %rax
    mov %rax, %cr3
    mov WINDOW, %al
    mov $0x402, %dx
    outb %al, %dx
    ret
    TEST_GDT
