/* Make the option ROM area writable on QEMU's PC chipsets.

   On tinyvmm's i440FX, as on QEMU's i440FX and Q35 machines, 0xC0000 upward starts
   routed to PCI (nothing, or the BIOS image) until the PAM registers of the host
   bridge (PCI 00:00.0) open the RAM behind it. Without a known host bridge this
   does nothing. The BIOS's own 64 KiB stay ROM. */

    .code16
    .include "bios.inc"

    .set PCI_CONFIG_ADDRESS, 0xcf8
    .set PCI_CONFIG_DATA, 0xcfc
    .set PCI_ENABLE, 0x80000000
    .set PAM_READ_WRITE, 0x33           /* both 16 KiB halves: DRAM, read and write */
    .set PAM_OPTION_ROM_REGS, (OPTION_ROM_END - OPTION_ROM_START) / 0x8000

    .globl setup_shadow_ram
setup_shadow_ram:
    pushal
    mov $PCI_ENABLE, %eax               /* bus 0, device 0, function 0, register 0 */
    mov $PCI_CONFIG_ADDRESS, %dx
    outl %eax, %dx
    mov $PCI_CONFIG_DATA, %dx
    inl %dx, %eax                       /* device id << 16 | vendor id */
    mov $host_bridges, %si
1:  mov (%si), %ebx
    test %ebx, %ebx
    jz 3f                               /* not a chipset we know: leave it alone */
    cmp %ebx, %eax
    je 2f
    add $6, %si
    jmp 1b
2:  movzbl 4(%si), %ebx                 /* PAM0, the register for 0xF0000 */
    inc %ebx                            /* PAM1: 0xC0000 */
    mov $PAM_OPTION_ROM_REGS, %cx
    /* A word write where two registers share one (each write remaps the window). */
4:  mov %ebx, %eax
    and $~3, %al
    or $PCI_ENABLE, %eax
    mov $PCI_CONFIG_ADDRESS, %dx
    outl %eax, %dx
    mov %bl, %dl
    and $3, %dl
    add $PCI_CONFIG_DATA & 0xff, %dl
    mov $PCI_CONFIG_DATA >> 8, %dh
    mov $PAM_READ_WRITE | PAM_READ_WRITE << 8, %ax
    test $1, %bl
    jnz 5f                              /* odd register: a byte */
    cmp $2, %cx
    jb 5f                               /* the last one: a byte */
    outw %ax, %dx
    inc %ebx
    dec %cx
    jmp 6f
5:  outb %al, %dx
6:  inc %ebx
    loop 4b
3:  popal
    ret

    .section .rodata
host_bridges:                           /* PCI id, PAM0 register offset */
    .long 0x12378086                    /* i440FX */
    .byte 0x59, 0
    .long 0x29c08086                    /* Q35 (MCH) */
    .byte 0x90, 0
    .long 0
