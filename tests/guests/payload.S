/* The real-mode part of a test bzImage. The loader test appends the protected-mode
   part and sets syssize. Entered at setup_seg+0x20:0 by a linuxboot ROM, it checks
   the boot protocol's promises and reports on the debug console:
     "payload: <ok|BAD:names> kernel <sum32> initrd <sum32> cmdline <text>\n"
   then resets through the keyboard controller. */
    .code16
    .text
    .globl _start
_start:
    .org 0x1f1
setup_sects:    .byte 1
root_flags:     .word 0
syssize:        .long 0                 /* patched by the test: kernel size / 16 */
ram_size:       .word 0
vid_mode:       .word 0xffff
root_dev:       .word 0
boot_flag:      .word 0xaa55
    .org 0x200
    jmp entry
    .ascii "HdrS"
version:        .word 0x020f
realmode_swtch: .long 0
start_sys_seg:  .word 0
kernel_version: .word 0
type_of_loader: .byte 0
loadflags:      .byte 0x01              /* LOADED_HIGH */
setup_move_size: .word 0
code32_start:   .long 0x100000
ramdisk_image:  .long 0
ramdisk_size:   .long 0
bootsect_kludge: .long 0
heap_end_ptr:   .word 0
ext_loader_ver: .byte 0
ext_loader_type: .byte 0
cmd_line_ptr:   .long 0
initrd_addr_max: .long 0x7fffffff
kernel_alignment: .long 0x200000
relocatable_kernel: .byte 0
min_alignment:  .byte 0
xloadflags:     .word 0
cmdline_size:   .long 255
    .org 0x260
init_size:      .long 0x100000

/* Everything below runs with CS = setup segment + 0x20, so labels are off by 0x200. */
#define HDR(x) (x)                       /* header fields, addressed through DS = setup segment */
#define CODE(x) ((x) - 0x200)            /* code and data here, addressed through CS */

entry:
    /* Check segments and stack before anything changes them. */
    xor %bp, %bp                         /* failure bits */
    mov %cs, %ax
    sub $0x20, %ax
    mov %ds, %bx
    cmp %ax, %bx
    je 1f
    or $0x01, %bp
1:  mov %es, %bx
    cmp %ax, %bx
    je 1f
    or $0x02, %bp
1:  mov %ss, %bx
    cmp %ax, %bx
    je 1f
    or $0x04, %bp
1:  cmp $0xfff0, %sp
    je 1f
    or $0x08, %bp
1:  cmpb $0xb0, HDR(type_of_loader)
    je 1f
    or $0x10, %bp
1:  testb $0x80, HDR(loadflags)
    jnz 1f
    or $0x20, %bp
1:  cmpw $0xfe00, HDR(heap_end_ptr)
    je 1f
    or $0x40, %bp
1:  cmpl $0x20000, HDR(cmd_line_ptr)
    je 1f
    or $0x80, %bp
1:  pushf
    pop %ax
    test $0x200, %ax                     /* IF must be clear */
    jz 1f
    or $0x100, %bp
1:
    /* Unreal mode: FS gets a flat 4 GiB limit so 32-bit addresses reach the kernel. */
    cli
    mov %cs, %ax
    movzwl %ax, %eax
    shl $4, %eax
    add $CODE(gdt), %eax
    mov %eax, %cs:CODE(gdt_base)
    lgdtl %cs:CODE(gdt_desc)
    mov %cr0, %eax
    or $1, %al
    mov %eax, %cr0
    mov $8, %bx
    mov %bx, %fs
    and $0xfe, %al
    mov %eax, %cr0
    xor %bx, %bx
    mov %bx, %fs

    mov $CODE(msg_head), %si
    call puts
    test %bp, %bp
    jnz bad
    mov $CODE(msg_ok), %si
    call puts
    jmp sums
bad:
    mov $CODE(msg_bad), %si
    call puts
    mov %bp, %ax
    movzwl %ax, %eax
    call hex32
sums:
    mov $CODE(msg_kernel), %si
    call puts
    mov $0x100000, %esi
    mov HDR(syssize), %ecx
    shl $4, %ecx
    call sum32
    call hex32
    mov $CODE(msg_initrd), %si
    call puts
    mov HDR(ramdisk_image), %esi
    mov HDR(ramdisk_size), %ecx
    call sum32
    call hex32
    mov $CODE(msg_cmdline), %si
    call puts
    mov HDR(cmd_line_ptr), %esi
2:  addr32 movb %fs:(%esi), %al
    test %al, %al
    jz 3f
    outb %al, $0xe9
    inc %esi
    jmp 2b
3:  mov $'\n', %al
    outb %al, $0xe9
    mov $0xfe, %al
    outb %al, $0x64
4:  hlt
    jmp 4b

/* %eax = sum of the %ecx bytes at linear %esi (through flat %fs). */
sum32:
    xor %eax, %eax
    xor %ebx, %ebx
    jecxz 2f
1:  addr32 movb %fs:(%esi), %bl
    add %ebx, %eax
    inc %esi
    dec %ecx
    jnz 1b
2:  ret

/* Print %eax as 8 hex digits. */
hex32:
    mov $8, %cx
1:  rol $4, %eax
    mov %al, %bl
    and $0x0f, %bl
    add $'0', %bl
    cmp $'9', %bl
    jbe 2f
    add $('a' - '0' - 10), %bl
2:  xchg %al, %bl
    outb %al, $0xe9
    xchg %al, %bl
    loop 1b
    ret

/* Print the NUL-terminated string at %cs:%si. */
puts:
1:  cs lodsb
    test %al, %al
    jz 2f
    outb %al, $0xe9
    jmp 1b
2:  ret

    .balign 8
gdt:        .quad 0
            .quad 0x00cf92000000ffff     /* flat 4 GiB data */
gdt_desc:   .word 15
gdt_base:   .long 0
msg_head:   .asciz "payload: "
msg_ok:     .asciz "ok"
msg_bad:    .asciz "BAD:"
msg_kernel: .asciz " kernel "
msg_initrd: .asciz " initrd "
msg_cmdline: .asciz " cmdline "
    .org 0x400
