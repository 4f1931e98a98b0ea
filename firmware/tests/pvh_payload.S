/* A minimal PVH kernel for trying PVH boots without Linux: an ELF64 x86-64 file
   whose Xen note (XEN_ELFNOTE_PHYS32_ENTRY) names a 32-bit entry. That code
   reports on COM1 what it was handed (machine state, struct hvm_start_info,
   command line, memory map, module 0) and checks it, then resets the machine
   through the keyboard controller. It assumes nothing of who entered it: the PVH
   option ROMs and a VMM's direct PVH boot hand over the same way.

   Every report line starts with "pvh-payload: " and is made of name=hex pairs
   (64-bit fields as 16 digits), except "cmdline=" (the text). The last two are
   "pvh-payload: checks failed=XXXXXXXX", 0 when every check passed (else the
   FAIL_* bits below), and "pvh-payload: done". */

    .include "layout.inc"

    .set XEN_ELFNOTE_PHYS32_ENTRY, 18
    .set START_INFO_MAGIC, 0x336ec578
    .set KBC_COMMAND, PORT_I8042 + 4
    .set KBC_RESET, 0xfe
    .set CMDLINE_LIMIT, 4096            /* longer than any x86 Linux command line */
    .set MEMMAP_SHOW_MAX, 128
    .set MODULE_SUM_LIMIT, 0x10000      /* sum only the first 64 KiB: under an emulating KVM a byte costs ~4 us */
    .set E820_RAM, 1
    .set DATA_SIZE, 0x3000 + 123        /* an odd size over a few pages */
    .set BSS_PROBE_SIZE, 0x2000
    .set STACK_SIZE, 0x1000

    .set CR0_PE, 0x01
    .set CR0_ET, 0x10                   /* reads 1 on every CPU since the 486 */
    .set EFLAGS_TF, 0x100
    .set EFLAGS_IF, 0x200
    .set EFLAGS_VM, 0x20000
    .set AR_WRITABLE, 0x200             /* LAR result: type bit 1 (data: writable) */
    .set AR_CODE, 0x800                 /* type bit 3 */
    .set AR_SYSTEM_CLEAR, 0x1000        /* S: code or data */
    .set AR_PRESENT, 0x8000
    .set AR_32BIT, 0x400000             /* D/B */
    .set AR_GRANULARITY, 0x800000       /* limit in pages */
    .set AR_MASK, 0x00f0ff00            /* what LAR reports of a descriptor's high dword */
    .set SELECTOR_TI, 0x4               /* in the LDT */

/* struct hvm_start_info */
    .set SI_MAGIC, 0
    .set SI_VERSION, 4
    .set SI_FLAGS, 8
    .set SI_NR_MODULES, 12
    .set SI_MODLIST_PADDR, 16
    .set SI_CMDLINE_PADDR, 24
    .set SI_RSDP_PADDR, 32
    .set SI_MEMMAP_PADDR, 40
    .set SI_MEMMAP_ENTRIES, 48
/* struct hvm_modlist_entry */
    .set MOD_PADDR, 0
    .set MOD_SIZE, 8
    .set MOD_CMDLINE_PADDR, 16
/* struct hvm_memmap_table_entry */
    .set MM_ADDR, 0
    .set MM_SIZE, 8
    .set MM_TYPE, 16
    .set MM_ENTRY_SIZE, 24

/* Bits of `failed` */
    .set FAIL_MAGIC, 1 << 0             /* start info magic is not 0x336ec578 */
    .set FAIL_VERSION, 1 << 1           /* start info version 0 (no memory map) */
    .set FAIL_CR0, 1 << 2               /* CR0 is not PE (+ET): paging or other bits on */
    .set FAIL_CR4, 1 << 3               /* CR4 is not 0 */
    .set FAIL_EFLAGS, 1 << 4            /* IF, TF or VM set */
    .set FAIL_SEGMENTS, 1 << 5          /* CS, DS, ES or SS not flat (base 0, 4 GiB, 32-bit) */
    .set FAIL_MEMMAP, 1 << 6            /* no memory map, or no RAM entry in it */
    .set FAIL_CMDLINE, 1 << 7           /* no NUL within CMDLINE_LIMIT bytes */
    .set FAIL_MODULE, 1 << 8            /* modules announced without a list, or module 0 empty */
    .set FAIL_DATA, 1 << 9              /* the loaded data differ from what was linked */
    .set FAIL_BSS, 1 << 10              /* bss not zero */
    .set FAIL_RSDP, 1 << 11             /* rsdp_paddr set, but no "RSD PTR " there */

    .macro FAIL bit
    orl $\bit, failed
    .endm

/* PRINT "text": the string on COM1; registers and flags survive. */
    .macro PRINT text:vararg
    .pushsection .rodata
.Lprint_text\@:
    .asciz \text
    .popsection
    pushfl
    push %esi
    mov $.Lprint_text\@, %esi
    call puts
    pop %esi
    popfl
    .endm

/* Print " name=value"; registers and flags survive. */
    .macro SHOW name, value, digits=8, load=mov
    pushal
    pushfl
    \load \value, %eax
    PRINT " \name="
    mov $\digits, %ecx
    call hex
    popfl
    popal
    .endm

    .macro SHOW8 name, value
    SHOW \name, \value, 2, movzbl
    .endm

/* Print " name=" and the 64-bit field at offset(base) as 16 digits. */
    .macro SHOW64 name, offset, base
    pushal
    pushfl
    PRINT " \name="
    mov \offset + 4(\base), %eax
    mov $8, %ecx
    call hex
    mov \offset(\base), %eax
    call hex
    popfl
    popal
    .endm


    .section .note.Xen, "a", @note
    .balign 4
    .long 4                             /* name size: "Xen" and its NUL */
    .long 4                             /* descriptor size */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long pvh_entry

    .section .note.GNU-stack, "", @progbits


    .text
    .code32
    .globl pvh_entry
pvh_entry:
    mov %ebx, entry_ebx
    mov %esp, entry_esp
    mov $stack_top, %esp                /* the ABI gives no stack */
    pushfl
    popl entry_eflags
    mov %cr0, %eax
    mov %eax, entry_cr0
    mov %cr4, %eax
    mov %eax, entry_cr4
    mov %cs, entry_segments
    mov %ds, entry_segments + 2
    mov %es, entry_segments + 4
    mov %ss, entry_segments + 6
    cld
    call report_entry
    call report_segments
    mov entry_ebx, %ebx                 /* EBX = the start info from here on */
    call report_start_info
    call report_cmdline
    call report_memmap
    call report_module
    call report_rsdp
    call report_image
    PRINT "pvh-payload: checks"
    SHOW failed, failed
    PRINT "\n"
    PRINT "pvh-payload: done\n"
    mov $KBC_RESET, %al
    outb %al, $KBC_COMMAND
1:  hlt
    jmp 1b

report_entry:
    PRINT "pvh-payload: entry"
    SHOW ebx, entry_ebx
    SHOW esp, entry_esp
    SHOW eflags, entry_eflags
    SHOW cr0, entry_cr0
    SHOW cr4, entry_cr4
    PRINT "\n"
    mov entry_cr0, %eax
    and $~CR0_ET, %eax
    cmp $CR0_PE, %eax
    je 1f
    FAIL FAIL_CR0
1:  cmpl $0, entry_cr4
    je 2f
    FAIL FAIL_CR4
2:  testl $EFLAGS_IF | EFLAGS_TF | EFLAGS_VM, entry_eflags
    jz 3f
    FAIL FAIL_EFLAGS
3:  ret

report_segments:
    PRINT "pvh-payload: segment cs"
    movzwl entry_segments, %eax
    mov $AR_CODE | AR_32BIT, %edi       /* 32-bit code */
    call segment_report
    PRINT "pvh-payload: segment ds"
    movzwl entry_segments + 2, %eax
    mov $AR_WRITABLE, %edi              /* writable data */
    call segment_report
    PRINT "pvh-payload: segment es"
    movzwl entry_segments + 4, %eax
    call segment_report
    PRINT "pvh-payload: segment ss"
    movzwl entry_segments + 6, %eax
    call segment_report
    ret

/* EAX = selector, EDI = the type bits it must have besides present, code or data,
   of its kind: print " sel= base= limit= ar=\n" from its GDT descriptor (ar as LAR
   gives it; LAR and LSL themselves are missing from some KVM instruction emulators)
   and check that it is flat. Changes ESI. */
segment_report:
    SHOW sel, %eax, 4
    xor %ebx, %ebx
    xor %ecx, %ecx
    xor %edx, %edx
    test $SELECTOR_TI, %al
    jnz 8f
    and $~7, %eax
    jz 8f                               /* the null selector */
    sub $8, %esp
    sgdt 2(%esp)
    mov 4(%esp), %esi                   /* the GDT's base */
    add $8, %esp
    add %eax, %esi                      /* the descriptor */
    mov (%esi), %ecx
    mov 4(%esi), %edx
    mov %ecx, %ebx
    shr $16, %ebx                       /* base bits 0-15 */
    movzbl %dl, %eax
    shl $16, %eax
    or %eax, %ebx                       /* 16-23 */
    mov %edx, %eax
    and $0xff000000, %eax
    or %eax, %ebx                       /* 24-31 */
    and $0xffff, %ecx                   /* limit bits 0-15 */
    mov %edx, %eax
    and $0x000f0000, %eax
    or %eax, %ecx                       /* 16-19 */
    test $AR_GRANULARITY, %edx
    jz 1f
    shl $12, %ecx                       /* in pages */
    or $0xfff, %ecx
1:  and $AR_MASK, %edx
8:  SHOW base, %ebx
    SHOW limit, %ecx
    SHOW ar, %edx
    PRINT "\n"
    test %ebx, %ebx
    jnz 9f
    cmp $0xffffffff, %ecx
    jne 9f
    mov %edx, %eax
    and $AR_PRESENT | AR_SYSTEM_CLEAR, %eax
    cmp $AR_PRESENT | AR_SYSTEM_CLEAR, %eax
    jne 9f
    mov %edx, %eax
    and $AR_CODE, %eax                  /* code or data as asked */
    mov %edi, %ecx
    and $AR_CODE, %ecx
    cmp %ecx, %eax
    jne 9f
    and %edi, %edx
    cmp %edi, %edx
    je 2f
9:  FAIL FAIL_SEGMENTS
2:  ret

report_start_info:
    PRINT "pvh-payload: start_info"
    SHOW magic, SI_MAGIC(%ebx)
    SHOW version, SI_VERSION(%ebx)
    SHOW flags, SI_FLAGS(%ebx)
    SHOW nr_modules, SI_NR_MODULES(%ebx)
    SHOW64 modlist_paddr, SI_MODLIST_PADDR, %ebx
    SHOW64 cmdline_paddr, SI_CMDLINE_PADDR, %ebx
    SHOW64 rsdp_paddr, SI_RSDP_PADDR, %ebx
    SHOW64 memmap_paddr, SI_MEMMAP_PADDR, %ebx
    SHOW memmap_entries, SI_MEMMAP_ENTRIES(%ebx)
    PRINT "\n"
    cmpl $START_INFO_MAGIC, SI_MAGIC(%ebx)
    je 1f
    FAIL FAIL_MAGIC
1:  cmpl $0, SI_VERSION(%ebx)
    jne 2f
    FAIL FAIL_VERSION
2:  ret

report_cmdline:
    PRINT "pvh-payload: cmdline="
    mov SI_CMDLINE_PADDR(%ebx), %esi
    test %esi, %esi
    jz 1f                               /* none given */
    mov $CMDLINE_LIMIT, %ecx
    call putsn
    jnc 1f
    FAIL FAIL_CMDLINE
1:  PRINT "\n"
    ret

report_memmap:
    cmpl $0, SI_VERSION(%ebx)
    je 8f                               /* version 0 has no memory map */
    mov SI_MEMMAP_PADDR(%ebx), %esi
    mov SI_MEMMAP_ENTRIES(%ebx), %ecx
    test %esi, %esi
    jz 8f
    test %ecx, %ecx
    jz 8f
    push %esi                           /* some entry must be RAM (the map need not be sorted) */
    push %ecx
3:  cmpl $E820_RAM, MM_TYPE(%esi)
    je 4f
    add $MM_ENTRY_SIZE, %esi
    dec %ecx
    jnz 3b
    FAIL FAIL_MEMMAP
4:  pop %ecx
    pop %esi
    cmp $MEMMAP_SHOW_MAX, %ecx
    jbe 2f
    mov $MEMMAP_SHOW_MAX, %ecx
2:  PRINT "pvh-payload: memmap"
    SHOW64 addr, MM_ADDR, %esi
    SHOW64 size, MM_SIZE, %esi
    SHOW type, MM_TYPE(%esi)
    PRINT "\n"
    add $MM_ENTRY_SIZE, %esi
    dec %ecx
    jnz 2b
    ret
8:  FAIL FAIL_MEMMAP
    ret

/* Module 0 (Linux's initrd): where, how large, its first and last bytes and the
   byte sum of its first MODULE_SUM_LIMIT bytes. */
report_module:
    cmpl $0, SI_NR_MODULES(%ebx)
    je 9f
    mov SI_MODLIST_PADDR(%ebx), %esi
    test %esi, %esi
    jz 8f
    PRINT "pvh-payload: module0"
    SHOW64 paddr, MOD_PADDR, %esi
    SHOW64 size, MOD_SIZE, %esi
    SHOW64 cmdline_paddr, MOD_CMDLINE_PADDR, %esi
    mov MOD_SIZE(%esi), %ecx
    mov MOD_PADDR(%esi), %esi
    test %ecx, %ecx
    jz 7f
    SHOW8 first, (%esi)
    lea -1(%esi, %ecx), %edx
    SHOW8 last, (%edx)
    cmp $MODULE_SUM_LIMIT, %ecx
    jbe 1f
    mov $MODULE_SUM_LIMIT, %ecx
1:  call sum_bytes
    SHOW sum, %eax
    PRINT "\n"
    ret
7:  PRINT "\n"
8:  FAIL FAIL_MODULE
9:  ret

report_rsdp:
    mov SI_RSDP_PADDR(%ebx), %esi
    test %esi, %esi
    jz 9f
    PRINT "pvh-payload: rsdp"
    SHOW signature_low, (%esi)
    SHOW signature_high, 4(%esi)
    PRINT "\n"
    cmpl $0x20445352, (%esi)            /* "RSD " */
    jne 8f
    cmpl $0x20525450, 4(%esi)           /* "PTR " */
    je 9f
8:  FAIL FAIL_RSDP
9:  ret

/* The linked data pattern must have arrived, and bss must be zero. */
report_image:
    mov $data_pattern, %esi
    mov $DATA_SIZE, %ecx
    call sum_bytes
    PRINT "pvh-payload: image"
    SHOW data_sum, %eax
    SHOW expected, $data_pattern_sum
    cmp $data_pattern_sum, %eax
    je 1f
    FAIL FAIL_DATA
1:  mov $bss_probe, %edi
    mov $BSS_PROBE_SIZE / 4, %ecx
    xor %eax, %eax
    repe scasl
    setne %al
    SHOW bss_dirty, %eax, 1
    PRINT "\n"
    test %eax, %eax
    jz 2f
    FAIL FAIL_BSS
2:  ret

/* ESI, ECX bytes -> EAX = their sum */
sum_bytes:
    push %ecx
    push %edx
    push %esi
    xor %eax, %eax
    test %ecx, %ecx
    jz 2f
1:  movzbl (%esi), %edx
    add %edx, %eax
    inc %esi
    dec %ecx
    jnz 1b
2:  pop %esi
    pop %edx
    pop %ecx
    ret

/* ESI = NUL-terminated string, out on COM1 in one `rep outsb`. */
puts:
    pushal
    mov %esi, %edi
    xor %eax, %eax
    mov $-1, %ecx
    repne scasb
    not %ecx
    dec %ecx                            /* its length */
    mov $PORT_COM1, %edx
    rep outsb
    popal
    ret

/* ESI = string, ECX = at most that many bytes: print up to its NUL; CF set when
   there is none within the limit. */
putsn:
    pushal
    mov %esi, %edi
    mov %ecx, %ebx
    xor %eax, %eax
    repne scasb
    setne %al                           /* no NUL within the limit */
    jne 1f
    inc %ecx                            /* do not count the NUL */
1:  sub %ecx, %ebx
    mov %ebx, %ecx
    mov $PORT_COM1, %edx
    rep outsb
    bt $0, %eax                         /* CF = AL */
    popal
    ret

/* EAX = value, ECX = number of hex digits (1..8), on COM1. */
hex:
    pushal
    sub $8, %esp
    lea (%esp, %ecx), %edi
    mov %ecx, %ebx
1:  dec %edi
    mov %al, %dl
    and $0x0f, %dl
    add $'0', %dl
    cmp $'9', %dl
    jbe 2f
    add $('a' - '9' - 1), %dl
2:  mov %dl, (%edi)
    shr $4, %eax
    loop 1b
    mov %esp, %esi
    mov %ebx, %ecx
    mov $PORT_COM1, %edx
    rep outsb
    add $8, %esp
    popal
    ret


    .data
    .balign 4
failed:
    .long 0
entry_ebx:
    .long 0
entry_esp:
    .long 0
entry_eflags:
    .long 0
entry_cr0:
    .long 0
entry_cr4:
    .long 0
entry_segments:
    .fill 4, 2, 0                       /* cs, ds, es, ss */

/* A byte pattern whose sum is known when assembling */
data_pattern:
    .set pattern, 0
    .set pattern_sum, 0
    .rept DATA_SIZE
    .byte (pattern * 37 + 11) & 0xff
    .set pattern_sum, pattern_sum + ((pattern * 37 + 11) & 0xff)
    .set pattern, pattern + 1
    .endr
    .set data_pattern_sum, pattern_sum

    .bss
    .balign 16
bss_probe:                              /* never written: must read as zero */
    .skip BSS_PROBE_SIZE
stack:
    .skip STACK_SIZE
stack_top:
