/* Debug- and control-register moves in 32-bit protected mode, where the software CPU serves
   reads (and writes of the value a register already holds): DR0 is written (KVM executes
   that), read back, written again with the same value and read into another register; CR0
   is read. Prints "D" when both DR0 reads gave the written value and "C" when CR0 reads
   with PE set, "-" for each that did not, on the debug console, and resets. */
#include "common.inc"
    RESET_VECTOR start
start:
    cli
    ENTER_PROTECTED32 protected

    .code32
protected:
    FLAT32_DATA
    mov $0x12345678, %eax
    mov %eax, %dr0
    mov %dr0, %ebx
    mov %ebx, %dr0
    mov %dr0, %esi
    mov %cr0, %ecx
    mov $0x402, %dx
    mov $'D', %al
    cmp $0x12345678, %ebx
    jne 1f
    cmp %ebx, %esi
    je 2f
1:  mov $'-', %al
2:  outb %al, %dx
    mov $'C', %al
    test $1, %cl
    jnz 3f
    mov $'-', %al
3:  outb %al, %dx
    mov $'\n', %al
    outb %al, %dx
    KBC_RESET
    hlt

    TEST_GDT
