/* What fw_cfg serves, dumped through the legacy ports as firmware reads it, on the debug console:
   a line for each numeric key 0x00-0x18 ("key 0003 <first 16 bytes>"), then one for each file
   of the directory ("file etc/e820 00000028 0020 <contents>"; files above 4 KiB and option ROMs
   without their contents), then "end" and a keyboard-controller reset. Run under tinyvmm and
   under QEMU, the two dumps show where the devices differ. Plain real mode: the whole guest is
   port I/O, so it runs the same under KVM, QEMU's TCG and this host's emulating KVM. */
#include "common.inc"

#define PORT_SELECTOR   0x510
#define PORT_DATA       0x511
#define DEBUGCON        0x402
#define KEY_FILE_DIR    0x19
#define CONTENTS_MAX    4096

#define COUNT      0x500          /* number of files */
#define INDEX      0x504          /* the file being dumped */
#define DIR        0x1000         /* the directory: 64-byte entries */

    RESET_VECTOR start
start:
    cli
    xor %ax, %ax
    mov %ax, %ss
    mov $0x7000, %sp
    mov %ax, %ds
    mov %ax, %es
    cld

    xor %bx, %bx                  /* the numeric keys, 16 bytes each */
numeric:
    mov $s_key, %si
    call puts
    mov %bx, %ax
    call print_hex16
    mov %bx, %ax
    call select
    mov $16, %cx
    call dump_data
    call newline
    inc %bx
    cmp $KEY_FILE_DIR, %bx
    jb numeric

    mov $KEY_FILE_DIR, %ax        /* the directory: a big-endian count, then the entries */
    call select
    mov $PORT_DATA, %dx
    xor %eax, %eax
    mov $4, %cx
1:  shl $8, %eax
    inb %dx, %al
    loop 1b
    mov %eax, COUNT
    mov %ax, %cx
    shl $6, %cx
    mov $DIR, %di
    rep insb

    movl $0, INDEX
file:
    mov INDEX, %ax
    cmp COUNT, %ax
    jae done
    shl $6, %ax
    add $DIR, %ax
    mov %ax, %bp                  /* the entry: size (BE32), select (BE16), reserved, name */
    mov $s_file, %si
    call puts
    lea 8(%bp), %si
    call puts_ds
    mov $' ', %al
    call putc
    mov 0(%bp), %eax
    bswap %eax
    call print_hex32
    mov 4(%bp), %ax
    xchg %al, %ah
    call print_hex16
    mov 0(%bp), %eax              /* contents, unless too big or an option ROM */
    bswap %eax
    cmp $CONTENTS_MAX, %eax
    ja next
    cmpl $0x726d6567, 8(%bp)      /* "genr" */
    je next
    mov %ax, %cx
    mov 4(%bp), %ax
    xchg %al, %ah
    call select
    jcxz next
    call dump_data
next:
    call newline
    incl INDEX
    jmp file

done:
    mov $s_end, %si
    call puts
    KBC_RESET
    hlt

/* Select key AX. */
select:
    mov $PORT_SELECTOR, %dx
    outw %ax, %dx
    ret

/* CX bytes of the selected item, as hex digits without spaces. */
dump_data:
    mov $PORT_DATA, %dx
1:  inb %dx, %al
    call print_byte
    loop 1b
    ret

#include "console.inc"

/* The NUL-terminated string at DS:SI. */
puts_ds:
    PUTS_LODS
    ret

/* AX as 4 hex digits and a space. */
print_hex16:
    push %ax
    xchg %al, %ah
    call print_byte
    pop %ax
    call print_byte
    mov $' ', %al
    jmp putc

/* AL as 2 hex digits; preserves AX. */
print_byte:
    push %ax
    push %ax
    shr $4, %al
    call hex_digit
    pop %ax
    call hex_digit
    pop %ax
    ret

    TEST_GDT

s_key:  .asciz "key "
s_file: .asciz "file "
s_end:  .asciz "end\n"
