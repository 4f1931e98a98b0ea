"""Debugging aids: the gdb remote stub (gdb/), the event and instruction traces (trace, steps),
crash reports (report), symbols from ELF files (symbols) and the disassembler (disasm)."""
