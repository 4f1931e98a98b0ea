/* Interrupt handlers: the BIOS services Linux's setup code and the boot ROMs call,
   and the defaults behind every other vector.

   Handlers run on the caller's stack with the caller's segments; they keep every
   register they do not return a value in, and report through CF in the FLAGS
   image IRET restores (Linux presets CF=1, so "unsupported" must leave it set). */

    .code16
    .include "bios.inc"

/* Tails: set or clear CF in the caller's FLAGS, then return from the interrupt. */
iret_cf_set:
    push %bp
    mov %sp, %bp
    orb $1, 6(%bp)                      /* BP, IP, CS, then FLAGS */
    pop %bp
    iret

iret_cf_clear:
    push %bp
    mov %sp, %bp
    andb $0xfe, 6(%bp)
    pop %bp
    iret

    .globl int_unsupported
int_unsupported:
    jmp iret_cf_set

/* Hardware interrupts: acknowledge and return (every IRQ is masked, but Linux
   runs its setup code with interrupts enabled). */
    .globl irq_master
irq_master:
    push %ax
    mov $PIC_EOI, %al
    outb %al, $PIC_MASTER_CMD
    pop %ax
    iret

    .globl irq_slave
irq_slave:
    push %ax
    mov $PIC_EOI, %al
    outb %al, $PIC_SLAVE_CMD
    outb %al, $PIC_MASTER_CMD
    pop %ax
    iret

/* INT 10h: AH=0Eh teletype output goes to the debug console; nothing else. */
    .globl int10_video
int10_video:
    cmp $0x0e, %ah
    jne iret_cf_set
    push %dx
    mov $PORT_DEBUGCON, %dx
    outb %al, %dx
    pop %dx
    jmp iret_cf_clear

/* INT 12h: conventional memory in KiB, from the BDA. */
    .globl int12_memory_size
int12_memory_size:
    push %ds
    push $BDA_SEG
    pop %ds
    mov BDA_BASE_MEMORY_KB, %ax
    pop %ds
    jmp iret_cf_clear

/* INT 13h: no disks. AH = 01h "invalid function". */
    .globl int13_disk
int13_disk:
    mov $0x01, %ah
    jmp iret_cf_set

/* INT 16h, INT 1Ah: no keyboard, no clock. */
    .globl int16_keyboard
int16_keyboard:
    jmp iret_cf_set

    .globl int1a_time
int1a_time:
    jmp iret_cf_set

/* INT 15h: memory map (E820h, E801h, 88h), A20 (24xxh), EC00h. */
    .globl int15_system
int15_system:
    cmp $0xe820, %ax
    je int15_e820
    cmp $0xe801, %ax
    je int15_e801
    cmp $0x88, %ah
    je int15_88
    cmp $0x24, %ah
    je int15_a20
    cmp $0xec00, %ax
    je int15_success
    mov $INT15_UNSUPPORTED, %ah
    jmp iret_cf_set

int15_success:
    xor %ah, %ah
    jmp iret_cf_clear

/* E820h: EDX = "SMAP", EBX = continuation (entry index), ECX = buffer size,
   ES:DI = buffer. Returns one 20-byte entry, EAX = "SMAP", ECX = 20, EBX = next
   index or 0 after the last entry; CF set when there is no such entry. */
int15_e820:
    cmp $SMAP, %edx
    jne iret_cf_set
    cmp $E820_ENTRY_SIZE, %ecx
    jb iret_cf_set
    push %ds
    push %si
    push %di
    push %ecx
    push $EBDA_SEG
    pop %ds
    movzwl EBDA_E820_COUNT, %ecx
    cmp %ecx, %ebx
    jae 1f
    imul $E820_ENTRY_SIZE, %bx, %si
    add $EBDA_E820_TABLE, %si
    mov %ecx, %eax                      /* count */
    mov $E820_ENTRY_SIZE, %cx
    cld
    rep movsb
    inc %ebx
    cmp %eax, %ebx
    jb 2f
    xor %ebx, %ebx                      /* that was the last one */
2:  pop %ecx
    pop %di
    pop %si
    pop %ds
    mov $SMAP, %eax
    mov $E820_ENTRY_SIZE, %ecx
    jmp iret_cf_clear
1:  pop %ecx
    pop %di
    pop %si
    pop %ds
    jmp iret_cf_set

/* E801h: AX = CX = KiB between 1 MiB and 16 MiB, BX = DX = 64 KiB blocks above. */
int15_e801:
    push %ds
    push $EBDA_SEG
    pop %ds
    mov EBDA_E801_LOW_KB, %ax
    mov EBDA_E801_HIGH_64K, %bx
    mov %ax, %cx
    mov %bx, %dx
    pop %ds
    jmp iret_cf_clear

/* 88h: AX = KiB of extended memory (capped at 63 MiB). */
int15_88:
    push %ds
    push $EBDA_SEG
    pop %ds
    mov EBDA_EXT_KB, %ax
    pop %ds
    jmp iret_cf_clear

/* A20 through port 0x92 (always open on a VM; the port remembers the bit).
   2400h disable, 2401h enable, 2402h AL = state, 2403h BX = 2 (port 0x92). */
int15_a20:
    cmp $0x03, %al
    ja 4f
    je 3f
    cmp $0x02, %al
    je 2f
    push %ax
    mov %al, %ah                        /* 0: disable, 1: enable */
    inb $PORT_PORT92, %al
    and $~(PORT92_A20 | PORT92_RESET) & 0xff, %al
    test %ah, %ah
    jz 1f
    or $PORT92_A20, %al
1:  outb %al, $PORT_PORT92
    pop %ax
    jmp int15_success
2:  inb $PORT_PORT92, %al
    and $PORT92_A20, %al
    shr $1, %al
    jmp int15_success
3:  mov $PORT92_A20, %bx
    jmp int15_success
4:  mov $INT15_UNSUPPORTED, %ah
    jmp iret_cf_set
