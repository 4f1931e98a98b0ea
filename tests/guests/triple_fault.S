/* Loads an empty IDT, enters 32-bit protected mode and raises an exception: it cannot
   be delivered (#GP, then #DF), so the CPU triple-faults. Protected mode because some
   hosts' KVM emulates real mode and does not check the IDT limit there. */
#include "common.inc"
    RESET_VECTOR start
start:
    cs lidtl empty_idt
    ENTER_PROTECTED32 protected

    .code32
protected:
    mov $0x1234, %eax
    mov $0x5678, %ebx
    int3
    hlt

    TEST_GDT
empty_idt: .word 0
           .long 0
