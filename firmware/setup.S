/* Machine setup at reset: interrupt vectors, BIOS data areas, interrupt controllers. */

    .code16
    .include "bios.inc"

    .macro SET_VECTOR vector, handler
    movw $\handler, %es:(\vector * 4)
    .endm

/* Every vector fails cleanly; hardware IRQs acknowledge the PIC; a few services work. */
    .globl setup_ivt
setup_ivt:
    pushal
    push %es
    xor %ax, %ax
    mov %ax, %es
    xor %di, %di
    mov $256, %cx
1:  movw $int_unsupported, %es:(%di)
    movw $BIOS_SEG, %es:2(%di)
    add $4, %di
    loop 1b

    mov $PIC_MASTER_VECTOR * 4, %di
    mov $PIC_SLAVE_VECTOR * 4, %si
    mov $8, %cx
2:  movw $irq_master, %es:(%di)
    movw $irq_slave, %es:(%si)
    add $4, %di
    add $4, %si
    loop 2b

    SET_VECTOR 0x10, int10_video
    SET_VECTOR 0x12, int12_memory_size
    SET_VECTOR 0x13, int13_disk
    SET_VECTOR 0x15, int15_system
    SET_VECTOR 0x16, int16_keyboard
    SET_VECTOR 0x1a, int1a_time
    pop %es
    popal
    ret

/* BDA: COM1, base memory, EBDA pointer. EBDA: zeroed, size in its first byte. */
    .globl setup_data_areas
setup_data_areas:
    pushal
    push %es
    xor %ax, %ax
    mov $BDA_SEG, %bx
    mov %bx, %es
    xor %di, %di
    mov $BDA_SIZE / 2, %cx
    rep stosw
    movw $PORT_COM1, %es:BDA_COM1
    movw $EBDA_SEG, %es:BDA_EBDA_SEG
    movw $EBDA_START / 1024, %es:BDA_BASE_MEMORY_KB

    mov $EBDA_SEG, %bx
    mov %bx, %es
    xor %di, %di
    mov $EBDA_SIZE / 2, %cx
    rep stosw
    movb $EBDA_SIZE / 1024, %es:EBDA_SIZE_KB
    movw $OPTION_ROM_END / PARAGRAPH, %es:EBDA_ROM_AREA_END
    pop %es
    popal
    ret

/* Both 8259s: edge triggered, cascaded on IRQ 2, vectors 08h and 70h, everything
   masked but the cascade (nothing here needs an interrupt; Linux reprograms them). */
    .globl setup_pic
setup_pic:
    push %ax
    mov $0x11, %al                      /* ICW1: initialise, ICW4 follows */
    outb %al, $PIC_MASTER_CMD
    outb %al, $PIC_SLAVE_CMD
    mov $PIC_MASTER_VECTOR, %al         /* ICW2: vector base */
    outb %al, $PIC_MASTER_DATA
    mov $PIC_SLAVE_VECTOR, %al
    outb %al, $PIC_SLAVE_DATA
    mov $1 << PIC_CASCADE_IRQ, %al      /* ICW3: master has the slave on IRQ 2 */
    outb %al, $PIC_MASTER_DATA
    mov $PIC_CASCADE_IRQ, %al           /* ICW3: slave's cascade identity */
    outb %al, $PIC_SLAVE_DATA
    mov $0x01, %al                      /* ICW4: 8086 mode */
    outb %al, $PIC_MASTER_DATA
    outb %al, $PIC_SLAVE_DATA
    mov $~(1 << PIC_CASCADE_IRQ) & 0xff, %al
    outb %al, $PIC_MASTER_DATA
    mov $0xff, %al
    outb %al, $PIC_SLAVE_DATA
    pop %ax
    ret
