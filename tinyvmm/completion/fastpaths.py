"""What is frequent or special, completed without a software CPU (Intel SDM vol. 2 and 3A 6.12):

- clac/stac: RFLAGS.AC cleared or set (#UD above CPL 0);
- int3 and int n in protected or long mode: the gate checked as the CPU checks it
  (limit, present, DPL against CPL for software interrupts), then delivered through KVM;
- a user-mode `syscall` the host only half performs: it enters the guest's #PF handler
  instead of the system-call entry; the completion finishes the system call there;
- a user-mode `int n` (a 32-bit program's `int $0x80`) the host turns into #UD: at the #UD
  handler, it becomes the interrupt the gate allows;
- cmpxchg8b/cmpxchg16b in long mode (SLUB's per-CPU fast path runs it tens of thousands of
  times a boot of a distribution kernel).
"""

from ..x86 import RFLAGS_AC, RFLAGS_FIXED, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_TF, RFLAGS_VM, RFLAGS_ZF
from .cpu import MSR_FMASK, MSR_LSTAR, GuestCpu, Refused

CLAC = b"\x0f\x01\xca"
STAC = b"\x0f\x01\xcb"
INT3 = 0xCC
INT_N = 0xCD
CMPXCHG_OPCODE = b"\x0f\xc7"                     # /1: cmpxchg8b, with REX.W cmpxchg16b
UD, NP, GP, PF = 6, 11, 13, 14
INTERRUPT_GATE_TYPES = {0x6, 0x7, 0xE, 0xF}     # 16- and 32/64-bit interrupt and trap gates
TASK_GATE = 0x5
USER_SPACE_END = 1 << 47                          # canonical lower half, 4-level paging
PF_USER_FETCH = 0x14                              # #PF error code: user mode, instruction fetch


class Gate:
    """An IDT gate: handler offset, DPL, present bit and type."""
    __slots__ = ("offset", "selector", "dpl", "present", "type", "ist")

    def __init__(self, raw: bytes, long_mode: bool):
        low = int.from_bytes(raw[:8], "little")
        self.selector = (low >> 16) & 0xFFFF
        attributes = (low >> 40) & 0xFF
        self.type = attributes & 0xF
        self.ist = (low >> 32) & 7 if long_mode else 0
        self.dpl = (attributes >> 5) & 3
        self.present = bool(attributes & 0x80)
        self.offset = (low & 0xFFFF) | ((low >> 32) & 0xFFFF_0000)
        if long_mode:
            self.offset |= int.from_bytes(raw[8:12], "little") << 32


def idt_gate(cpu: GuestCpu, vector: int) -> Gate | None:
    """Gate `vector` of the guest's IDT, or None when it lies past the IDT's limit or
    outside guest memory."""
    size = 16 if cpu.long_mode else 8
    idt = cpu.sregs.idt
    if vector * size + size - 1 > idt.limit:
        return None
    raw = cpu.read_linear(idt.base + vector * size, size)
    return None if raw is None else Gate(raw, cpu.long_mode)


def complete(cpu: GuestCpu, code: bytes) -> str | None:
    """Complete the instruction whose bytes start `code`, if it is one of the fast paths:
    returns its name; None when it is not (the caller tries the software CPU)."""
    if code[:3] == CLAC:
        # The first instruction of every kernel entry: where the host's half-done user
        # system calls and int n arrive.
        if finish_syscall(cpu):
            return "syscall"
        return finish_user_interrupt(cpu) or _clac_stac(cpu, set_ac=False)
    if code[:3] == STAC:
        return _clac_stac(cpu, set_ac=True)
    if code[:1] == bytes([INT3]):
        return software_interrupt(cpu, 3, 1)
    if code[:1] == bytes([INT_N]) and len(code) >= 2:
        return software_interrupt(cpu, code[1], 2)
    if CMPXCHG_OPCODE in code[:6] and cpu.long_mode:
        return compare_exchange(cpu, code)
    return None


def _clac_stac(cpu: GuestCpu, set_ac: bool) -> str:
    name = "stac" if set_ac else "clac"
    if cpu.cpl != 0:
        cpu.inject_exception(UD)
        return name
    regs = cpu.regs
    regs.rflags = (regs.rflags | RFLAGS_AC) if set_ac else (regs.rflags & ~RFLAGS_AC)
    regs.rip += 3
    cpu.regs_dirty = True
    cpu.commit()
    return name


def software_interrupt(cpu: GuestCpu, vector: int, length: int) -> str:
    """int3 (length 1) or int n (length 2), outside real mode, which KVM does itself."""
    name = "int3" if length == 1 else f"int {vector:#x}"
    if not cpu.sregs.cr0 & 1:
        raise Refused(f"{name} in real mode")
    gate = idt_gate(cpu, vector)
    selector_error = vector * 8 + 2           # IDT bit set, as the CPU reports it
    if gate is None or (gate.type not in INTERRUPT_GATE_TYPES and
                        (gate.type != TASK_GATE or cpu.long_mode)):
        cpu.inject_exception(GP, selector_error)
        return name
    if gate.dpl < cpu.cpl:
        cpu.inject_exception(GP, selector_error)
        return name
    if not gate.present:
        cpu.inject_exception(NP, selector_error)
        return name
    # A software interrupt is a trap: the handler returns after the instruction.
    cpu.regs.rip += length
    cpu.regs_dirty = True
    if vector < 32:
        cpu.inject_exception(vector)
    else:
        cpu.inject_soft_interrupt(vector)
    return name


def finish_syscall(cpu: GuestCpu) -> bool:
    """At the first instruction of the guest's #PF handler, finish a user `syscall` the host
    left half done, when every guard holds: the #PF gate's handler is where the vCPU is,
    the fault was a user fetch whose frame returns to LSTAR from CPL 3, and RCX (the
    return address the host saved) is a user address. Returns whether it did."""
    if not cpu.long_mode:
        return False
    gate = idt_gate(cpu, PF)
    regs = cpu.regs
    if gate is None or not gate.present or gate.offset != regs.rip:
        return False
    # The #PF frame, from the stack pointer up: error code, RIP, CS, RFLAGS, RSP, SS.
    frame = cpu.read_linear(regs.rsp, 48)
    if frame is None:
        return False
    error, rip, cs, rflags, rsp, _ = (int.from_bytes(frame[i:i + 8], "little") for i in range(0, 48, 8))
    lstar = cpu.msr(MSR_LSTAR)
    if not (error & PF_USER_FETCH == PF_USER_FETCH and rip == lstar and cs & 3 == 3
            and regs.rcx < USER_SPACE_END and cpu.sregs.cr2 == lstar):
        return False
    regs.rip = lstar
    regs.rsp = rsp
    regs.rflags = (rflags & ~cpu.msr(MSR_FMASK) & ~RFLAGS_RF) | RFLAGS_FIXED
    cpu.regs_dirty = True
    cpu.commit()
    return True



def finish_user_interrupt(cpu: GuestCpu) -> str | None:
    """At the first instruction of the guest's #UD handler, turn the #UD the host raised for
    a user-mode `int n` into that interrupt, when the guards hold: the #UD gate's handler is
    where the vCPU is, the frame returns to CPL 3 at `cd nn` (read through the guest's page
    tables), and gate n is a present interrupt or trap gate of DPL 3 on the same code
    segment and stack as #UD's. The #UD frame is the frame int n pushes (neither has an
    error code) once its return address is moved past the instruction. Returns the
    interrupt's name, or None."""
    if not cpu.long_mode:
        return None
    regs = cpu.regs
    invalid = idt_gate(cpu, UD)
    if invalid is None or not invalid.present or invalid.offset != regs.rip:
        return None
    frame = cpu.read_linear(regs.rsp, 40)         # RIP, CS, RFLAGS, RSP, SS
    if frame is None:
        return None
    rip, cs, rflags = (int.from_bytes(frame[i:i + 8], "little") for i in (0, 8, 16))
    code = cpu.read_linear(rip, 2)
    if cs & 3 != 3 or code is None or code[0] != INT_N:
        return None
    vector = code[1]
    gate = idt_gate(cpu, vector)
    if (gate is None or not gate.present or gate.dpl != 3 or gate.type not in (0xE, 0xF)
            or gate.selector != cpu.sregs.cs.selector or gate.ist != invalid.ist):
        return None
    if not cpu.write_linear(regs.rsp, (rip + 2).to_bytes(8, "little")):
        return None
    cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM | (RFLAGS_IF if gate.type == 0xE else 0)
    regs.rip = gate.offset
    regs.rflags = (rflags & ~cleared) | RFLAGS_FIXED
    cpu.regs_dirty = True
    cpu.commit()
    return f"int {vector:#x} (user)"


def _effective_address(cpu: GuestCpu, insn, operand) -> int | None:
    """The linear address of a memory operand in long mode, from 64-bit base and index
    registers (or RIP); None for anything else (the software CPU takes it)."""
    memory = operand.mem
    address = memory.disp
    for register, scale in ((memory.base, 1), (memory.index, memory.scale)):
        if register == 0:
            continue
        name = insn.reg_name(register)
        if name == "rip":
            address += insn.address + insn.size
        elif hasattr(cpu.regs, name):
            address += getattr(cpu.regs, name) * scale
        else:
            return None
    segment = insn.reg_name(memory.segment) if memory.segment else None
    if segment in ("fs", "gs"):
        address += getattr(cpu.sregs, segment).base
    return address & ((1 << 64) - 1)


def compare_exchange(cpu: GuestCpu, code: bytes) -> str | None:
    """cmpxchg8b/cmpxchg16b m: compare EDX:EAX (RDX:RAX) with the memory operand; if equal,
    store ECX:EBX (RCX:RBX) there and set ZF, else load the operand into EDX:EAX (RDX:RAX)
    and clear ZF. A misaligned cmpxchg16b operand is #GP(0). None when the instruction is
    not one of them or its operand is not plain guest RAM (the software CPU takes it)."""
    from ..debug.disasm import DisassemblerUnavailable, decode
    try:
        insn = decode(code, cpu.pc, 64)
    except DisassemblerUnavailable:
        return None                     # the software CPU says why it cannot either
    if insn is None or insn.mnemonic.split()[-1] not in ("cmpxchg8b", "cmpxchg16b") \
            or len(insn.operands) != 1:
        return None
    wide = insn.mnemonic.endswith("16b")
    size, half = (16, 64) if wide else (8, 32)
    address = _effective_address(cpu, insn, insn.operands[0])
    if address is None:
        return None
    if wide and address % 16:
        cpu.inject_exception(GP, 0)
        return insn.mnemonic
    data = cpu.read_linear(address, size)
    if data is None:
        return None
    mask = (1 << half) - 1
    regs = cpu.regs
    current = int.from_bytes(data, "little")
    expected = (regs.rdx & mask) << half | (regs.rax & mask)
    if current == expected:
        new = (regs.rcx & mask) << half | (regs.rbx & mask)
        if not cpu.write_linear(address, new.to_bytes(size, "little")):
            return None
        regs.rflags |= RFLAGS_ZF
    else:
        regs.rax, regs.rdx = current & mask, current >> half     # a 32-bit load zero-extends
        regs.rflags &= ~RFLAGS_ZF
    regs.rip += insn.size
    cpu.regs_dirty = True
    cpu.commit()
    return insn.mnemonic
