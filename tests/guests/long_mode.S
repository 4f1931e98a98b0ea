/* Goes from real mode through 32-bit protected mode to 64-bit long mode with
   identity-mapped 2 MiB pages, says "long" on the debug console, then loops
   writing a counter to port 0x80 (long_loop) until the VMM stops it. */
#include "common.inc"
#define PML4 0x1000
#define PDPT 0x2000
#define PD   0x3000
    RESET_VECTOR start
start:
    ENTER_PROTECTED32 protected

    .code32
protected:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    /* zero the three tables, then link them; the PD maps 0-1 GiB in 2 MiB pages */
    mov $PML4, %edi
    mov $(3 * 4096 / 4), %ecx
    xor %eax, %eax
    rep stosl
    movl $(PDPT | 3), PML4
    movl $(PD | 3), PDPT
    mov $PD, %edi
    mov $0x83, %eax                 /* present, writable, 2 MiB page */
    mov $512, %ecx
1:  mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b
    /* the firmware at 4 GiB - 64 KiB stays reachable through the low alias */
    mov %cr4, %eax
    or $0x20, %eax                  /* PAE */
    mov %eax, %cr4
    mov $PML4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           /* EFER */
    rdmsr
    or $0x100, %eax                 /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax            /* PG */
    mov %eax, %cr0
    ljmpl $SEL_CODE64, $(0xf0000 + long_entry)

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
