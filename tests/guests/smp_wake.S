/* Wakes every AP with INIT and one SIPI (all-excluding-self, through the LAPIC), as SeaBIOS
   does. Each AP prints "AP <its CPUID APIC ID> up" on the debug console under a spin lock,
   counts itself in and halts. The BSP waits until CMOS 0x5F (vCPUs - 1) APs have come, prints
   "BSP saw <n> APs" and resets (halts with interrupts off with -DEND_HALT). With -DAP_CRASH,
   each AP triple-faults instead. */
#include "common.inc"
    RESET_VECTOR start

    .set AP_LOCK, 0x600             /* RAM: the APs' print lock */
    .set AP_COUNT, 0x602            /* RAM: APs counted in */
    .set LAPIC_SVR, 0xfee000f0
    .set LAPIC_ICR_LOW, 0xfee00300
    .set LAPIC_ICR_HIGH, 0xfee00310
    .set ICR_INIT_OTHERS, 0x000c4500  /* INIT, assert, all excluding self */
    .set ICR_SIPI_OTHERS, 0x000c4600  /* SIPI, all excluding self; | vector */
    .set SIPI_VECTOR, 0xf0          /* starts an AP at F000:0000: the first byte below */

ap_entry:
#ifdef AP_CRASH
    cs lidtl empty_idt
    ENTER_PROTECTED32 ap_crash
#endif
    xor %ax, %ax
    mov %ax, %ds
1:  mov $1, %al
    xchg %al, AP_LOCK
    test %al, %al
    jnz 1b
    PRINT 0x402, ap_text
    mov $1, %eax
    cpuid
    shr $24, %ebx
    mov %bl, %al
    add $'0', %al
    mov $0x402, %dx                 /* cpuid took %edx */
    outb %al, %dx
    PRINT 0x402, up_text
    lock incw AP_COUNT
    movb $0, AP_LOCK
    cli
ap_idle:
    hlt
    jmp ap_idle

start:
    xor %ax, %ax
    mov %ax, %ds
    movw $0, AP_LOCK
    movw $0, AP_COUNT
    ENTER_UNREAL ds
    mov $LAPIC_SVR, %edi
    movl $0x1ff, (%edi)             /* software-enable the LAPIC, spurious vector 0xff */
    mov $LAPIC_ICR_HIGH, %edi
    movl $0, (%edi)
    mov $LAPIC_ICR_LOW, %edi
    movl $ICR_INIT_OTHERS, (%edi)
    movl $(ICR_SIPI_OTHERS | SIPI_VECTOR), (%edi)
    mov $0x5f, %al
    outb %al, $0x70
    inb $0x71, %al
    xor %ah, %ah
    mov %ax, %cx
3:  cmp AP_COUNT, %cx
    jne 3b
all_in:                             /* a place for gdb to stop: every AP has counted itself */
    PRINT 0x402, bsp_text
    mov %cl, %al
    add $'0', %al
    outb %al, %dx
    PRINT 0x402, aps_text
#ifdef END_HALT
    cli
    hlt
#endif
    KBC_RESET
    hlt

#ifdef AP_CRASH
    .code32
ap_crash:
    int3
    hlt
    .code16
#endif

    TEST_GDT
empty_idt: .word 0
           .long 0
ap_text:   .asciz "AP "
up_text:   .asciz " up\n"
bsp_text:  .asciz "BSP saw "
aps_text:  .asciz " APs\n"
