/* 32-bit protected mode: the BIOS segment 0xF0000 shadowed as firmware does it, through the
   i440FX's PAM0 (ports 0xCF8/0xCFC, which the software CPU serves inside a run): write-only
   while its first page is copied into RAM, then read/write while a byte there is written,
   then back to the ROM, whose byte is read at once. Prints the byte read from RAM and then
   "R" when the last read saw the ROM ("!" when it saw RAM) on the debug console, and resets. */
#include "common.inc"
    RESET_VECTOR start
start:
    cli
    ENTER_PROTECTED32 protected

    .code32
    .set PROBE, 0xF0FF0             /* in the copied page, past this code */
protected:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x80000058, %eax           /* bus 0, device 0, registers 0x58-0x5B */
    mov $0xcf8, %dx
    outl %eax, %dx
    mov $0xcfd, %dx                 /* PAM0 (0x59): its high nibble is 0xF0000-0xFFFFF */
    mov $0x20, %al                  /* write-only: reads the ROM, writes reach RAM */
    outb %al, %dx
    mov $0xF0000, %esi
    mov %esi, %edi
    mov $0x1000, %ecx
    cld
    rep movsb
    mov $0x30, %al                  /* read/write RAM (the page holds this code now) */
    outb %al, %dx
    movb $'M', PROBE
    mov PROBE, %bl
    mov $0x00, %al                  /* back to the ROM */
    outb %al, %dx
    mov PROBE, %cl
    mov $0x402, %dx
    mov %bl, %al
    outb %al, %dx
    mov $'R', %al
    cmp $'M', %cl
    jne 1f
    mov $'!', %al
1:  outb %al, %dx
    mov $'\n', %al
    outb %al, %dx
    KBC_RESET
    hlt
    TEST_GDT
