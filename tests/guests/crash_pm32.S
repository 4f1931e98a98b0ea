/* Writes port 0x80 forty times, enters 32-bit protected mode with an empty IDT
   and executes ud2 at crash_here: the exception cannot be delivered, so the CPU
   triple-faults there. */
#include "common.inc"
    RESET_VECTOR start
start:
    mov $40, %cx                    /* 40 port writes first: more than the report keeps */
1:  mov %cl, %al
    outb %al, $0x80
    loop 1b
    cs lidtl empty_idt
    ENTER_PROTECTED32 protected

    .code32
protected:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %ss
crash_here:
    ud2
    mov $0x12345678, %eax       /* decodes as one instruction only in 32-bit mode */
    hlt

    TEST_GDT
empty_idt:
    .word 0
    .long 0
