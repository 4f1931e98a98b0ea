/* tinyvmm BIOS: reset vector and the boot story.

   The image is 64 KiB, linked at offset 0 of segment BIOS_SEG: the machine maps
   it at 4 GiB - 64 KiB (where the CPU starts) and at 0xF0000 (where it runs
   after the first far jump), read-only in both places. */

    .code16
    .include "bios.inc"

    .section .reset, "ax"
    .globl reset_vector
reset_vector:
    ljmp $BIOS_SEG, $bios_entry         /* leave the high alias for the low one */
    .balign 16, 0xf4

    .text
    .globl bios_entry
bios_entry:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ss
    mov $BIOS_STACK_TOP, %sp
    mov %cs, %ax
    mov %ax, %ds                        /* DS = CS: the image's constants */
    mov $EBDA_SEG, %ax
    mov %ax, %fs                        /* FS = EBDA: the BIOS's state */
    mov $DIR_SEG, %ax
    mov %ax, %gs                        /* GS = the fw_cfg directory copy */
    mov $MILESTONE_FW_START, %al
    outb %al, $PORT_MILESTONE_FW
    PRINT "tinyvmm BIOS\n"

    call setup_ivt                      /* every vector valid: Linux runs setup with STI */
    call setup_data_areas               /* BDA and EBDA */
    call setup_pic                      /* 8259s remapped, all IRQs masked */
    call setup_shadow_ram               /* option ROM area writable (QEMU chipsets) */
    call setup_pm                       /* the PIIX4 PM block the ACPI tables name */

    call fw_cfg_detect                  /* "QEMU" signature, DMA or data port */
    jc .Lno_fw_cfg
    call fw_cfg_load_dir                /* the file directory, listed on the console */
    call e820_load                      /* etc/e820 for INT 15h */
    call acpi_load                      /* etc/table-loader: the VMM's ACPI tables */
    call optionroms_load                /* genroms/*: load, check, init */
    call boot_choose                    /* bootorder, else the first ROM with a BEV */
    jc .Lnothing_to_boot
    call boot_rom                       /* normally never returns */
    PRINT "boot: the ROM returned; stopping\n"
    jmp halt_forever

.Lno_fw_cfg:
    PRINT "no fw_cfg device: nothing to boot; stopping\n"
    jmp halt_forever
.Lnothing_to_boot:
    PRINT "no bootable option ROM in fw_cfg genroms/; stopping\n"

    .globl halt_forever
halt_forever:
    cli
    hlt
    jmp halt_forever

/* Hand over to the chosen ROM's bootstrap entry vector (a far call, as a BIOS
   boots any BEV device), with AX = 0xAA55 and DL = 0 as SeaBIOS passes them. */
    .globl boot_rom
boot_rom:
    pushal
    push %ds
    push %es
    push %fs
    push %gs
    xor %dx, %dx
    mov $MILESTONE_DO_BOOT, %al
    outb %al, $PORT_MILESTONE_LINUX
    mov $0xaa55, %ax
    lcall *%fs:EBDA_FAR_CALL
    pop %gs
    pop %fs
    pop %es
    pop %ds
    popal
    ret
