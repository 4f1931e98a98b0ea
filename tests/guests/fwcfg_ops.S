/* A seeded sequence of fw_cfg operations, one line of results each on the debug console, for
   tests/test_fw_cfg_diff.py to compare between two machines. The operations are a table the
   test writes (OPS_FILE, included below):

     header   u32 operations, u32 names, u32 end of RAM, u32 0
     names    56 bytes each, NUL-padded: files the operations select by name, whatever their
              selector on this machine (found in the directory first)
     records  32 bytes each:
              +0 kind (below)    +1 width, or how a DMA is started    +2 file (1-based, 0: none)
              +3 where a DMA descriptor lies    +4 u16 key    +6 u16 DMA address high half
              +8 16 bytes: a DMA descriptor as it lies in memory (big-endian),
                 or u32 port and u32 value (or count) for port operations
              +24 u32 start and +28 u32 length of the RAM an operation may write: filled with
                  a pattern before it, and hashed (FNV-1a) after it, every byte or (DMA and
                  rep ins, whose +4 is free) one in u16 +4

   The output: "name NNNN SIZE" for each name, then "IIII RESULTS" for each operation (hex),
   then "end", then a keyboard-controller reset. Long mode, the first GiB identity-mapped: the
   addresses are the guest's physical ones. The guest does little besides its port I/O (a
   line goes out in one `rep outsb`; long ranges are filled and hashed one byte in many): on a
   host whose KVM emulates guest code, every instruction counts. */
#include "common.inc"

#define PORT_SELECTOR   0x510
#define PORT_DATA       0x511
#define PORT_DMA_HIGH   0x514
#define PORT_DMA_LOW    0x518
#define DEBUGCON        0x402
#define KEY_FILE_DIR    0x19

#define COUNT      0x500          /* operations */
#define INDEX      0x504          /* the operation being run */
#define RECORD     0x508          /* its record's linear address */
#define DESC_AT    0x50c          /* where its DMA descriptor lies */
#define DIR_COUNT  0x510          /* entries in the directory */
#define NAMES      0x514
#define LINE_END   0x518          /* the end of the line being written */
#define LINE       0x9000         /* the line */
#define KEYS       0x600          /* u16 per name */
#define DESC       0x8000         /* DMA descriptors in RAM */
#define DIR        0x10000        /* the directory: 64-byte entries */
#define DIR_MAX    256

#define LINEAR(x)  (0xf0000 + (x))  /* where the image's labels are, in the low alias */
#define TABLE      LINEAR(ops_table)
#define NAME_SIZE  56
#define RECORD_SIZE 32

/* Record kinds */
#define OP_SELECT  0              /* 16-bit write of the key to the selector */
#define OP_IN      1              /* in of `width` bytes from the port; prints the value */
#define OP_OUT     2              /* out of `width` bytes of the value to the port */
#define OP_INS     3              /* rep ins of `count` elements of `width` bytes to the RAM */
#define OP_DMA     4              /* a DMA transfer; prints the control word left and the hash */
#define OP_KINDS   5

/* Where the descriptor lies (+3) */
#define AT_RAM     0
#define AT_RAM_ODD 1              /* 3 bytes past an aligned address */
#define AT_RAM_END 2              /* 8 bytes before the end of RAM: the address is past it */
#define AT_PAST    3              /* at the end of RAM: nothing of it is RAM */
#define AT_ROM     4              /* the record's own bytes, in ROM */

/* How the DMA starts (+1) */
#define START_BOTH 0              /* high half 0, then the low half */
#define START_LOW  1              /* the low half only */
#define START_HIGH 2              /* high half +6, then the low half */

    RESET_VECTOR start
start:
    cli
    ENTER_LONG64 long_mode

    .code64
long_mode:
    mov $0x7000, %esp
    cld
    movl $LINE, LINE_END
    mov $TABLE, %ebx
    mov 0(%ebx), %eax
    mov %eax, COUNT
    mov 4(%ebx), %eax
    mov %eax, NAMES
    call resolve_names

    mov NAMES, %eax
    imul $NAME_SIZE, %eax, %eax
    add $(TABLE + 16), %eax
    mov %eax, RECORD
    movl $0, INDEX
operation:
    mov INDEX, %eax
    cmp COUNT, %eax
    jae done
    call print_hex16
    mov RECORD, %ebx
    movzbl 0(%ebx), %esi
    cmp $OP_KINDS, %esi
    jae bad_kind
    lea kinds(%rip), %rax
    mov (%rax,%rsi,4), %eax
    call *%rax
    call newline
    addl $RECORD_SIZE, RECORD
    incl INDEX
    jmp operation

bad_kind:
    mov $LINEAR(s_bad), %esi
    call puts
done:
    mov $LINEAR(s_end), %esi
    call puts
    KBC_RESET
    hlt

kinds:
    .long LINEAR(op_select), LINEAR(op_in), LINEAR(op_out), LINEAR(op_ins), LINEAR(op_dma)

/* Each name's key, from the directory read through the ports; 0xffff for a name not there.
   Prints "name NN SIZE" (SIZE ffffffff when absent). */
resolve_names:
    mov $KEY_FILE_DIR, %ax
    mov $PORT_SELECTOR, %dx
    outw %ax, %dx
    mov $PORT_DATA, %dx
    mov $DIR_COUNT, %edi            /* the count, big-endian */
    mov $4, %ecx
    rep insb
    mov DIR_COUNT, %eax
    bswap %eax
    cmp $DIR_MAX, %eax
    jbe 2f
    mov $DIR_MAX, %eax
2:  mov %eax, DIR_COUNT
    shl $6, %eax
    mov %eax, %ecx
    mov $DIR, %edi
    rep insb

    xor %ebp, %ebp                  /* the name */
name:
    cmp NAMES, %ebp
    jae 9f
    mov $LINEAR(s_name), %esi
    call puts
    mov %ebp, %eax
    call print_hex16
    movw $0xffff, KEYS(,%ebp,2)
    mov $0xffffffff, %eax           /* the size, until found */
    xor %ebx, %ebx                  /* the directory entry */
entry:
    cmp DIR_COUNT, %ebx
    jae 8f
    imul $NAME_SIZE, %ebp, %esi
    add $(TABLE + 16), %esi
    mov %ebx, %edi
    shl $6, %edi
    add $(DIR + 8), %edi
    mov $NAME_SIZE, %ecx
    repe cmpsb
    je 7f
    inc %ebx
    jmp entry
7:  shl $6, %ebx
    mov DIR + 4(%ebx), %ax
    xchg %al, %ah
    mov %ax, KEYS(,%ebp,2)
    mov DIR(%ebx), %eax
    bswap %eax
8:  call print_hex32
    call newline
    inc %ebp
    jmp name
9:  ret

/* AX: the key the record names (its file's, if it names one). Needs EBX = the record. */
key_of:
    movzbl 2(%ebx), %esi
    test %esi, %esi
    jz 1f
    mov KEYS - 2(,%esi,2), %ax
    ret
1:  mov 4(%ebx), %ax
    ret

op_select:
    call key_of
    mov $PORT_SELECTOR, %dx
    outw %ax, %dx
    ret

op_in:
    mov 8(%ebx), %dx
    xor %eax, %eax
    cmpb $1, 1(%ebx)
    jne 1f
    inb %dx, %al
    jmp 3f
1:  cmpb $2, 1(%ebx)
    jne 2f
    inw %dx, %ax
    jmp 3f
2:  inl %dx, %eax
3:  jmp print_hex32

op_out:
    mov 8(%ebx), %dx
    mov 12(%ebx), %eax
    cmpb $1, 1(%ebx)
    jne 1f
    outb %al, %dx
    ret
1:  cmpb $2, 1(%ebx)
    jne 2f
    outw %ax, %dx
    ret
2:  outl %eax, %dx
    ret

op_ins:
    call fill
    mov 8(%ebx), %dx
    mov 12(%ebx), %ecx
    mov 24(%ebx), %edi
    cmpb $1, 1(%ebx)
    jne 1f
    rep insb
    jmp 3f
1:  cmpb $2, 1(%ebx)
    jne 2f
    rep insw
    jmp 3f
2:  rep insl
3:  jmp print_hash

op_dma:
    call fill
    movzbl 3(%ebx), %eax
    lea 8(%ebx), %edi
    cmp $AT_ROM, %al
    je 5f
    mov $TABLE, %esi
    mov 8(%esi), %edi               /* the end of RAM */
    mov $16, %ecx                   /* the bytes of the descriptor in RAM */
    cmp $AT_PAST, %al
    jne 1f
    xor %ecx, %ecx
    jmp 4f
1:  cmp $AT_RAM_END, %al
    jne 2f
    sub $8, %edi
    mov $8, %ecx
    jmp 4f
2:  mov $DESC, %edi
    cmp $AT_RAM_ODD, %al
    jne 4f
    add $3, %edi
4:  mov %edi, DESC_AT
    lea 8(%ebx), %esi
    rep movsb
    mov DESC_AT, %edi
    cmpb $0, 2(%ebx)                /* a file: its key in the control word's top half */
    je 5f
    cmpb $AT_PAST, 3(%ebx)
    je 5f
    call key_of
    xchg %al, %ah
    mov %ax, (%edi)
5:  mov %edi, DESC_AT
    mov $PORT_DMA_HIGH, %dx
    cmpb $START_LOW, 1(%ebx)
    je 7f
    xor %eax, %eax
    cmpb $START_HIGH, 1(%ebx)
    jne 6f
    movzwl 6(%ebx), %eax
    bswap %eax
6:  outl %eax, %dx
7:  mov $PORT_DMA_LOW, %dx
    mov %edi, %eax
    bswap %eax
    outl %eax, %dx

    mov RECORD, %ebx                /* the control word, where the guest can read it */
    cmpb $AT_RAM_END, 3(%ebx)
    ja 8f
    mov DESC_AT, %edi
    mov (%edi), %eax
    bswap %eax
    call print_hex32
    jmp print_hash
8:  mov $LINEAR(s_none), %esi
    call puts
    jmp print_hash

/* The bytes of the record's RAM range that print_hash reads, each set to a byte that
   depends on the operation. */
fill:
    call hashed_range
    mov INDEX, %al
    xor $0xa5, %al
1:  cmp %ecx, %esi
    jae 2f
    mov %al, (%esi)
    add %edx, %esi
    jmp 1b
2:  ret

/* The record's RAM range: ESI its start, ECX its end, EDX the stride (+4, at least 1). */
hashed_range:
    mov RECORD, %ebx
    mov 24(%ebx), %esi
    mov 28(%ebx), %ecx
    movzwl 4(%ebx), %edx
    add %esi, %ecx
    test %edx, %edx
    jnz 1f
    inc %edx
1:  ret

/* The FNV-1a hash of the record's RAM range, one byte in every +4 (at least 1). */
print_hash:
    call hashed_range
    mov $0x811c9dc5, %eax
2:  cmp %ecx, %esi
    jae 3f
    xorb (%esi), %al
    imul $0x01000193, %eax, %eax
    add %edx, %esi
    jmp 2b
3:  jmp print_hex32

/* The console: AL; the NUL-terminated string at ESI; hex numbers followed by a space.
   Each preserves every register but EAX and ESI. A line goes out whole at its newline, in
   one `rep outsb`: the fewer exits, the faster the run. */
putc:
    push %rdi
    mov LINE_END, %edi
    mov %al, (%edi)
    inc %edi
    mov %edi, LINE_END
    pop %rdi
    cmp $'\n', %al
    je flush
    ret

flush:
    push %rcx
    push %rdx
    push %rsi
    mov $LINE, %esi
    mov LINE_END, %ecx
    sub %esi, %ecx
    mov %esi, LINE_END
    mov $DEBUGCON, %dx
    rep outsb
    pop %rsi
    pop %rdx
    pop %rcx
    ret

puts:
    PUTS_LODS
    ret

newline:
    mov $'\n', %al
    jmp putc

/* EAX as 8 hex digits; preserves EAX. */
print_hex32:
    push %rcx
    mov $8, %ecx
    jmp print_digits

/* AX as 4 hex digits. */
print_hex16:
    push %rcx
    mov $4, %ecx
    shl $16, %eax
print_digits:
    push %rdx
    mov %eax, %edx
3:  rol $4, %edx
    mov %dl, %al
    HEX_DIGIT
    call putc
    loop 3b
    mov $' ', %al
    call putc
    mov %edx, %eax
    pop %rdx
    pop %rcx
    ret

    TEST_GDT

s_name: .asciz "name "
s_none: .asciz "-------- "
s_bad:  .asciz "bad kind\n"
s_end:  .asciz "end\n"

    .balign 16
ops_table:
    .incbin OPS_FILE
