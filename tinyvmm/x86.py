"""Architectural bits of the x86 registers the VMM reads and sets (Intel SDM vol. 3A, 2.3-2.5)."""

CR0_PE = 1 << 0             # protected mode
CR0_ET = 1 << 4
CR0_PG = 1 << 31            # paging

CR4_PSE = 1 << 4            # 4 MiB pages in 32-bit paging
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12          # 5-level paging

EFER_LME = 1 << 8
EFER_LMA = 1 << 10          # long mode active

RFLAGS_FIXED = 1 << 1       # always 1
RFLAGS_ZF = 1 << 6
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18

MAX_INSTRUCTION = 15        # the longest instruction, in bytes
