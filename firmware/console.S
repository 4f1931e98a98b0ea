/* The BIOS's copy of the debug console routines (see debugcon.inc). */

    .code16
    .include "bios.inc"

    .globl debugcon_puts, debugcon_putsn, debugcon_hex
    DEBUGCON_ROUTINES
