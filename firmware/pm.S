/* Enable the ACPI PM I/O block of a PIIX4 (8086:7113 at PCI 00:01.3) at ACPI_PM_BASE.

   The ACPI tables the VMM publishes name the PM block where firmware put it when they
   are first read (the PM timer, PM1a_CNT for soft-off); SeaBIOS on QEMU puts it at the
   same address. Elsewhere this does nothing. */

    .code16
    .include "bios.inc"

    .set PCI_CONFIG_ADDRESS, 0xcf8
    .set PCI_CONFIG_DATA, 0xcfc
    .set PM_FUNCTION, 0x80000b00        /* enable bit, bus 0, device 1, function 3 */
    .set PIIX4_PM_ID, 0x71138086
    .set PMBA, 0x40                     /* PM base address, bit 0 = I/O space */
    .set PMREGMISC, 0x80                /* bit 0: PM I/O space enable */

    .globl setup_pm
setup_pm:
    pushal
    mov $PM_FUNCTION, %eax
    call pci_select
    inl %dx, %eax
    cmp $PIIX4_PM_ID, %eax
    jne 1f
    mov $PM_FUNCTION | PMBA, %eax
    call pci_select
    mov $ACPI_PM_BASE | 1, %eax
    outl %eax, %dx
    mov $PM_FUNCTION | PMREGMISC, %eax
    call pci_select
    inb %dx, %al
    or $1, %al
    outb %al, %dx
1:  popal
    ret

/* Select config register EAX (dword aligned); DX = the data port. */
pci_select:
    mov $PCI_CONFIG_ADDRESS, %dx
    outl %eax, %dx
    mov $PCI_CONFIG_DATA, %dx
    ret
