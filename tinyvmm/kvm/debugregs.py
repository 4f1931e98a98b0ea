"""The four x86 hardware breakpoint slots, as KVM_SET_GUEST_DEBUG takes them (debugreg[0..3], DR7):
for gdb's breakpoints and watchpoints, and the single execution breakpoints of boot marks,
--trace steps and Machine.run(until_address=...)."""

from . import abi

# KVM_SET_GUEST_DEBUG's control word for hardware breakpoints
USE_HARDWARE_BREAKPOINTS = abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP

# gdb's Z/z packet types
BREAK_SOFTWARE, BREAK_HARDWARE, WATCH_WRITE, WATCH_READ, WATCH_ACCESS = range(5)

# DR7 (Intel SDM vol. 3, 18.2.4): enable bit 2n per slot, then R/W and LEN nibbles from bit 16.
DR7_RESERVED_ONE = 1 << 10
DR7_RW_EXECUTE, DR7_RW_WRITE, DR7_RW_READ_WRITE = 0, 1, 3
DR7_LEN = {1: 0b00, 2: 0b01, 8: 0b10, 4: 0b11}
DR6_BS = 1 << 14                 # single step
DEBUG_SLOTS = 4


class DebugRegisterError(ValueError):
    """A breakpoint the slots cannot hold; `errno` is the gdb error number it answers with."""

    def __init__(self, message: str, errno: int = 22):
        super().__init__(message)
        self.errno = errno


def execution_breakpoint(address: int) -> list[int]:
    """debugreg[0..7] for one execution breakpoint at linear `address`, in DR0."""
    registers = DebugRegisters()
    registers.add(BREAK_HARDWARE, address, 1)
    return registers.debugreg()


def execution_addresses(debugreg: list[int] | None) -> frozenset[int]:
    """The linear addresses of the enabled execution breakpoints in debugreg[0..7]."""
    if not debugreg:
        return frozenset()
    dr7 = debugreg[7]
    return frozenset(debugreg[n] for n in range(DEBUG_SLOTS)
                     if dr7 >> (2 * n) & 3 and (dr7 >> (16 + 4 * n)) & 3 == DR7_RW_EXECUTE)


class DebugRegisters:
    """The four hardware breakpoint slots, as KVM_SET_GUEST_DEBUG's debugreg[0..3] and DR7."""

    def __init__(self):
        self.slots: list[tuple[int, int, int] | None] = [None] * DEBUG_SLOTS  # (Z type, address, length)

    def __bool__(self) -> bool:
        return any(self.slots)

    @property
    def free(self) -> int:
        return self.slots.count(None)

    def add(self, kind: int, address: int, length: int) -> int:
        if kind in (BREAK_SOFTWARE, BREAK_HARDWARE):
            length = 1                  # gdb sends the breakpoint "kind", 1 on x86
        elif length not in DR7_LEN:
            raise DebugRegisterError(f"a hardware watchpoint covers 1, 2, 4 or 8 bytes, not {length}")
        elif address % length:
            raise DebugRegisterError(f"a {length}-byte watchpoint needs an address aligned to {length}")
        if (kind, address, length) in self.slots:
            return self.slots.index((kind, address, length))
        if None not in self.slots:
            raise DebugRegisterError(f"all {DEBUG_SLOTS} hardware breakpoint slots are in use", errno=28)
        slot = self.slots.index(None)
        self.slots[slot] = (kind, address, length)
        return slot

    def remove(self, kind: int, address: int, length: int) -> bool:
        if kind in (BREAK_SOFTWARE, BREAK_HARDWARE):
            length = 1
        try:
            self.slots[self.slots.index((kind, address, length))] = None
        except ValueError:
            return False
        return True

    def executes_at(self, address: int) -> bool:
        return any(s and s[0] in (BREAK_SOFTWARE, BREAK_HARDWARE) and s[1] == address for s in self.slots)

    def debugreg(self, executes: bool = True) -> list[int]:
        """debugreg[0..7]; executes=False leaves instruction breakpoints out (while stepping)."""
        values = [0] * 8
        dr7 = DR7_RESERVED_ONE
        for n, slot in enumerate(self.slots):
            if slot is None:
                continue
            kind, address, length = slot
            if kind in (BREAK_SOFTWARE, BREAK_HARDWARE):
                if not executes:
                    continue
                rw, size = DR7_RW_EXECUTE, 0
            else:
                rw = DR7_RW_WRITE if kind == WATCH_WRITE else DR7_RW_READ_WRITE
                size = DR7_LEN[length]
            values[n] = address
            dr7 |= 1 << (2 * n)
            dr7 |= (rw | size << 2) << (16 + 4 * n)
        values[7] = dr7
        return values

    def hit(self, dr6: int) -> tuple[int, int, int] | None:
        for n, slot in enumerate(self.slots):
            if slot is not None and dr6 & (1 << n):
                return slot
        return None
