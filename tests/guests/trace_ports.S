/* Known port writes at known labels, in real mode and then in 32-bit protected
   mode, for the trace tests; each `out` is followed by a nop so that the IP
   after it still lies inside its label. Ends with a keyboard-controller reset. */
#include "common.inc"
    RESET_VECTOR start
start:
milestone_write:
    mov $1, %al
    outb %al, $0xf5                 /* milestone: firmware start */
    nop
first_write:
    mov $0x11, %al
    outb %al, $0x80
    nop
second_write:
    mov $0x22, %al
    outb %al, $0x80
    nop
    ENTER_PROTECTED32 protected

    .code32
protected:
    mov $SEL_DATA, %ax
    mov %ax, %ds
protected_write:
    mov $0x33, %al
    outb %al, $0x80
    nop
    KBC_RESET
    hlt

    TEST_GDT
