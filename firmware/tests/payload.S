/* A minimal bzImage (boot protocol 2.06) for trying the firmware without a Linux
   kernel: its real-mode code reports on the debug console what it was handed
   (registers, header fields the loader patched, command line, sums of the
   protected-mode part and of the initrd) and what the BIOS services answer, then
   resets the machine through the keyboard controller.

   Every report line starts with "payload: " and is made of name=hex pairs. */

    .code16
    .include "layout.inc"
    .include "debugcon.inc"
    .include "unreal.inc"

    .set SETUP_SECTS, 7                 /* setup = (7 + 1) * 512 bytes */
    .set SETUP_SIZE, (SETUP_SECTS + 1) * 512
    .set KERNEL_SIZE, 0x10000 + 123     /* protected-mode part: a byte pattern */
    .set ENTRY_OFFSET, 0x200            /* where CS:0 starts at entry */
    .set SMAP, 0x534d4150
    .set KBC_COMMAND, PORT_I8042 + 4
    .set KBC_RESET, 0xfe

    .text
    .globl _start
_start:
    .org 0x1f1
    .byte SETUP_SECTS
    .word 0                             /* root_flags */
    .long (KERNEL_SIZE + 15) / 16       /* syssize */
    .word 0                             /* ram_size */
    .word 0xffff                        /* vid_mode: normal */
    .word 0                             /* root_dev */
    .word 0xaa55                        /* boot_flag */
    .byte 0xeb, real_mode_entry - 0x202 /* 0x200: jump over the header */
    .ascii "HdrS"
    .word 0x0206                        /* protocol version */
    .long 0                             /* realmode_swtch */
    .word 0                             /* start_sys_seg */
    .word 0                             /* kernel_version */
hdr_type_of_loader:
    .byte 0
hdr_loadflags:
    .byte 0x01                          /* LOADED_HIGH */
    .word 0                             /* setup_move_size */
    .long HIGH_MEMORY_START             /* code32_start */
hdr_ramdisk_image:
    .long 0
hdr_ramdisk_size:
    .long 0
    .long 0                             /* bootsect_kludge */
hdr_heap_end_ptr:
    .word 0
    .byte 0, 0                          /* ext_loader_ver, ext_loader_type */
hdr_cmd_line_ptr:
    .long 0
    .long 0x7fffffff                    /* initrd_addr_max */
    .long 0x1000                        /* kernel_alignment */
    .byte 0, 0                          /* relocatable_kernel, min_alignment */
    .word 0                             /* xloadflags */
    .long 255                           /* cmdline_size */

/* Entered at setup segment + 20h : 0, so offsets are 0x200 off until CS is moved. */
real_mode_entry:
    mov %eax, %cs:entry_regs - ENTRY_OFFSET
    mov %ebx, %cs:entry_regs + 4 - ENTRY_OFFSET
    mov %ecx, %cs:entry_regs + 8 - ENTRY_OFFSET
    mov %edx, %cs:entry_regs + 12 - ENTRY_OFFSET
    mov %esi, %cs:entry_regs + 16 - ENTRY_OFFSET
    mov %edi, %cs:entry_regs + 20 - ENTRY_OFFSET
    mov %ebp, %cs:entry_regs + 24 - ENTRY_OFFSET
    mov %esp, %cs:entry_regs + 28 - ENTRY_OFFSET
    pushfl
    popl %cs:entry_regs + 32 - ENTRY_OFFSET
    mov %cs, %cs:entry_segs - ENTRY_OFFSET
    mov %ds, %cs:entry_segs + 2 - ENTRY_OFFSET
    mov %es, %cs:entry_segs + 4 - ENTRY_OFFSET
    mov %fs, %cs:entry_segs + 6 - ENTRY_OFFSET
    mov %gs, %cs:entry_segs + 8 - ENTRY_OFFSET
    mov %ss, %cs:entry_segs + 10 - ENTRY_OFFSET
    mov %cs, %ax
    sub $ENTRY_OFFSET / 16, %ax
    push %ax
    push $1f
    lret
1:  mov %ax, %ds
    mov %ax, %es
    cld
    call report_entry
    call report_header
    call report_services
    call report_sums
    PRINT "payload: done\n"
    mov $KBC_RESET, %al
    outb %al, $KBC_COMMAND
2:  hlt
    jmp 2b

/* Print " name=value"; registers and flags survive. */
    .macro SHOW name, value, digits=8, load=mov
    pushal
    pushf
    \load \value, %eax
    PRINT " \name="
    mov $\digits, %cx
    call debugcon_hex
    popf
    popal
    .endm

    .macro SHOW16 name, value
    SHOW \name, \value, 4, movzwl
    .endm

    .macro SHOW8 name, value
    SHOW \name, \value, 2, movzbl
    .endm

    .macro SHOW_CF name
    pushal
    pushf
    setc %al
    movzbl %al, %eax
    PRINT " \name="
    mov $1, %cx
    call debugcon_hex
    popf
    popal
    .endm

report_entry:
    PRINT "payload: entry"
    SHOW cs, entry_segs, 4
    SHOW ds, entry_segs + 2, 4
    SHOW es, entry_segs + 4, 4
    SHOW fs, entry_segs + 6, 4
    SHOW gs, entry_segs + 8, 4
    SHOW ss, entry_segs + 10, 4
    SHOW esp, entry_regs + 28
    SHOW eflags, entry_regs + 32
    PRINT "\n"
    PRINT "payload: regs"
    SHOW eax, entry_regs
    SHOW ebx, entry_regs + 4
    SHOW ecx, entry_regs + 8
    SHOW edx, entry_regs + 12
    SHOW esi, entry_regs + 16
    SHOW edi, entry_regs + 20
    SHOW ebp, entry_regs + 24
    PRINT "\n"
    ret

report_header:
    PRINT "payload: header"
    SHOW8 loader, hdr_type_of_loader
    SHOW8 loadflags, hdr_loadflags
    SHOW16 heap_end, hdr_heap_end_ptr
    SHOW cmdline, hdr_cmd_line_ptr
    SHOW initrd, hdr_ramdisk_image
    SHOW initrd_size, hdr_ramdisk_size
    PRINT "\n"
    PRINT "payload: cmdline="
    push %ds
    mov hdr_cmd_line_ptr, %eax
    mov %ax, %si
    and $0x0f, %si
    shr $4, %eax
    mov %ax, %ds
    mov $255, %cx
    call debugcon_putsn
    pop %ds
    PRINT "\n"
    ret

report_services:
    xor %ebx, %ebx                      /* E820, as Linux walks it */
    mov $e820_buffer, %di
1:  mov $0xe820, %eax
    mov $SMAP, %edx
    mov $20, %ecx
    stc
    int $0x15
    jc 2f
    cmp $SMAP, %eax
    jne 2f
    PRINT "payload: e820"
    SHOW base_hi, e820_buffer + 4
    SHOW base, e820_buffer
    SHOW length_hi, e820_buffer + 12
    SHOW length, e820_buffer + 8
    SHOW type, e820_buffer + 16
    SHOW next, %ebx
    PRINT "\n"
    test %ebx, %ebx
    jnz 1b
2:  mov $0xe801, %ax
    xor %bx, %bx
    xor %cx, %cx
    xor %dx, %dx
    stc
    int $0x15
    PRINT "payload: e801"
    SHOW16 ax, %ax
    SHOW16 bx, %bx
    SHOW16 cx, %cx
    SHOW16 dx, %dx
    SHOW_CF cf
    PRINT "\n"
    mov $0x88, %ah
    stc
    int $0x15
    PRINT "payload: int15_88"
    SHOW16 ax, %ax
    SHOW_CF cf
    PRINT "\n"
    mov $0x2402, %ax
    stc
    int $0x15
    PRINT "payload: a20"
    SHOW8 al, %al
    SHOW_CF cf
    PRINT "\n"
    int $0x12
    PRINT "payload: int12"
    SHOW16 ax, %ax
    PRINT "\n"
    PRINT "payload: unsupported"
    mov $0x00, %ah                      /* disk reset */
    clc
    int $0x13
    SHOW_CF int13
    mov $0x01, %ah                      /* keystroke status */
    clc
    int $0x16
    SHOW_CF int16
    mov $0x00, %ah                      /* clock ticks */
    clc
    int $0x1a
    SHOW_CF int1a
    mov $0x0f, %ah                      /* video mode */
    clc
    int $0x10
    SHOW_CF int10_0f
    mov $0xe980, %ax                    /* Intel SpeedStep, as Linux probes it */
    clc
    int $0x15
    SHOW_CF int15_e980
    PRINT "\n"
    mov $int10_text, %si                /* teletype through INT 10h AH=0Eh */
3:  lodsb
    test %al, %al
    jz 4f
    mov $0x0e, %ah
    mov $7, %bx
    int $0x10
    jmp 3b
4:  ret

/* Byte sums of the protected-mode part (at 1 MiB) and of the initrd, read
   through a flat ES (unreal mode: printing reloads ES, so print afterwards). */
report_sums:
    call flat_es
    mov $HIGH_MEMORY_START, %esi
    mov $KERNEL_SIZE, %ecx
    call sum_bytes
    mov %eax, %ebx
    mov hdr_ramdisk_image, %esi
    mov hdr_ramdisk_size, %ecx
    call sum_bytes
    mov %ds, %dx
    mov %dx, %es
    PRINT "payload: sums"
    SHOW kernel, %ebx
    SHOW initrd, %eax
    PRINT "\n"
    ret

sum_bytes:                              /* ES:ESI, ECX bytes -> EAX */
    xor %eax, %eax
    test %ecx, %ecx
    jz 2f
1:  movzbl %es:(%esi), %edx
    add %edx, %eax
    inc %esi
    dec %ecx
    jnz 1b
2:  ret

    FLAT_ES_ROUTINE

    DEBUGCON_ROUTINES

int10_text:
    .asciz "payload: int10 teletype\n"
entry_regs:
    .fill 9, 4, 0
entry_segs:
    .fill 6, 2, 0
e820_buffer:
    .fill 20, 1, 0

    .globl payload_setup_size           /* the linker script starts the kernel there */
    .set payload_setup_size, SETUP_SIZE

/* The protected-mode part: never run, only summed. */
    .section .kernel, "a"
    .set pattern, 0
    .rept KERNEL_SIZE
    .byte (pattern * 37 + 11) & 0xff
    .set pattern, pattern + 1
    .endr
