"""One guest instruction executed in a software CPU (unicorn) that shares guest RAM.

Guest memory is mapped into the software CPU as KVM's memory slots map it, without a
copy; the guest's page tables are walked by the software CPU's MMU. The vCPU's state is
copied in (general registers, RIP, RFLAGS, control registers, EFER, segment selectors
and FS/GS bases, descriptor tables, x87 and SSE), the one instruction runs, and what it
changed is written back. An exception the instruction raises is delivered to the guest
when it carries no error code; anything else (a fault with an error code, #UD, an access
outside guest RAM such as MMIO, a change of segment registers) is refused.
"""

import ctypes

import unicorn
from unicorn import x86_const as X

from ..debug.disasm import DisassemblerUnavailable, code_bits, decode
from .cpu import GuestCpu, Refused
from .fastpaths import software_interrupt

EFER = 0xC000_0080
MSR_FS_BASE = 0xC000_0100
MSR_GS_BASE = 0xC000_0101
# Instructions that read or write x87, MMX or SSE state: only theirs is copied (a copy both
# ways costs more than the rest of a completion).
VECTOR_GROUPS = ("fpu", "mmx", "sse", "avx", "3dnow", "fma", "f16c", "aes", "sha", "pclmul", "xop")
VECTOR_MNEMONICS = ("fx", "xsave", "xrstor", "fnsave", "fsave", "frstor", "fnstenv", "fldenv", "emms")
VECTOR_REGISTERS = ("st", "fp", "mm", "xmm", "ymm", "zmm", "mxcsr")
SEEN_CODE_MAX = 4096
GPRS = (("rax", X.UC_X86_REG_RAX), ("rbx", X.UC_X86_REG_RBX), ("rcx", X.UC_X86_REG_RCX),
        ("rdx", X.UC_X86_REG_RDX), ("rsi", X.UC_X86_REG_RSI), ("rdi", X.UC_X86_REG_RDI),
        ("rsp", X.UC_X86_REG_RSP), ("rbp", X.UC_X86_REG_RBP), ("r8", X.UC_X86_REG_R8),
        ("r9", X.UC_X86_REG_R9), ("r10", X.UC_X86_REG_R10), ("r11", X.UC_X86_REG_R11),
        ("r12", X.UC_X86_REG_R12), ("r13", X.UC_X86_REG_R13), ("r14", X.UC_X86_REG_R14),
        ("r15", X.UC_X86_REG_R15))
GPRS_32 = (("rax", X.UC_X86_REG_EAX), ("rbx", X.UC_X86_REG_EBX), ("rcx", X.UC_X86_REG_ECX),
           ("rdx", X.UC_X86_REG_EDX), ("rsi", X.UC_X86_REG_ESI), ("rdi", X.UC_X86_REG_EDI),
           ("rsp", X.UC_X86_REG_ESP), ("rbp", X.UC_X86_REG_EBP))
DATA_SEGMENTS = (("ds", X.UC_X86_REG_DS), ("es", X.UC_X86_REG_ES), ("ss", X.UC_X86_REG_SS),
                 ("fs", X.UC_X86_REG_FS), ("gs", X.UC_X86_REG_GS))
# A recent CPU model: the default one lacks SMAP (clac/stac) and other instructions
# today's kernels use.
CPU_MODEL = X.UC_CPU_X86_EPYC_ROME
MODES = {16: unicorn.UC_MODE_16, 32: unicorn.UC_MODE_32, 64: unicorn.UC_MODE_64}
# Exceptions without an error code, delivered as raised; #UD is refused instead: the host's
# CPU may know an instruction the software CPU does not.
NO_ERROR_CODE = {0, 1, 3, 4, 5, 7, 16, 18, 19}
TRAPS = {1, 3, 4}                    # RIP after the instruction (int1/int3/into)
# What a protected-mode gate's DPL applies to (not int1, nor an exception the CPU raises).
SOFTWARE_INTERRUPTS = ("int3", "int", "into")
UD = 6
NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
         10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC",
         18: "#MC", 19: "#XM"}


class SoftCpu:
    """Executes single instructions for one VM. `slots` is the VM's tinyvmm.kvm.slots
    SlotMap, or anything with its `mapped` (gpa -> (size, host address, read-only, slot))
    and `updates` (a counter that moves when the mapping changes)."""

    def __init__(self, slots):
        self.slots = slots
        self._engines: dict[int, list] = {}      # bits -> [Uc, slot updates mapped]
        # (bits, address) -> the bytes translated there last: the software CPU keeps its
        # translations, and one is dropped only when the guest has rewritten its code.
        self._seen_code: dict[tuple[int, int], bytes] = {}
        self._raised: int | None = None        # the vector the last instruction raised, if any

    def _engine(self, bits: int) -> unicorn.Uc:
        entry = self._engines.get(bits)
        if entry is None:
            uc = unicorn.Uc(unicorn.UC_ARCH_X86, MODES[bits])
            uc.ctl_set_cpu_model(CPU_MODEL)
            uc.hook_add(unicorn.UC_HOOK_INTR, self._on_interrupt)
            entry = self._engines[bits] = [uc, None]
        uc = entry[0]
        if entry[1] != self.slots.updates:
            map_slots(uc, self.slots)
            entry[1] = self.slots.updates
        return uc

    def _on_interrupt(self, uc, vector: int, _user) -> None:
        self._raised = vector
        uc.emu_stop()

    def execute(self, cpu: GuestCpu, code: bytes) -> str:
        """Run the instruction at the vCPU's RIP; returns its mnemonic. Raises Refused."""
        sregs = cpu.sregs
        bits = code_bits(sregs)
        try:
            insn = decode(code, cpu.pc, bits)
        except DisassemblerUnavailable as exc:
            raise Refused(str(exc)) from None
        if insn is None:
            raise Refused("its bytes do not decode")
        name, length = insn.mnemonic, insn.size
        vector = _vector_registers(insn, bits)
        if bits == 16 and any(getattr(sregs, s).base != getattr(sregs, s).selector << 4
                              for s in ("cs", "ds", "es", "ss", "fs", "gs")):
            raise Refused("a segment base in real mode is not its selector times 16")
        uc = self._engine(bits)
        fpu = cpu.vcpu.get_fpu() if vector is not None else None
        try:
            load_state(uc, cpu, fpu, vector, bits)
        except unicorn.UcError as exc:
            raise Refused(f"the software CPU cannot take the vCPU's state ({exc})") from None
        self._raised = None
        start = cpu.regs.rip if bits != 16 else cpu.pc
        key = (bits, start)
        if self._seen_code.get(key) != code[:length]:
            if len(self._seen_code) >= SEEN_CODE_MAX:
                self._seen_code.clear()
            uc.ctl_remove_cache(start, start + length)
            self._seen_code[key] = code[:length]
        try:
            # count=1: one instruction (one iteration of a rep-prefixed one), so it ends.
            uc.emu_start(start, (1 << 64) - 1 if bits == 64 else (1 << 32) - 1, count=1)
        except unicorn.UcError as exc:
            if exc.errno == unicorn.UC_ERR_INSN_INVALID:
                raise Refused("the software CPU does not know it either (#UD)") from None
            raise Refused(f"the software CPU stopped: {exc}") from None
        raised = self._raised
        if raised is not None:
            return self._deliver(cpu, raised, name, length)
        self._store(uc, cpu, fpu, vector, bits)
        return name

    def _deliver(self, cpu: GuestCpu, vector: int, name: str, length: int) -> str:
        """The instruction raised `vector`: a trap returns after it, a fault at it, with the
        vCPU's state untouched."""
        label = NAMES.get(vector, f"vector {vector}")
        if vector == UD:
            raise Refused("the software CPU does not know it either (#UD)")
        if vector >= 32 or (name in SOFTWARE_INTERRUPTS and cpu.sregs.cr0 & 1):
            # Through the gate as the CPU would: its DPL checked against the CPL (#GP).
            completed = software_interrupt(cpu, vector, length)
            return name if name == "into" else completed
        if vector not in NO_ERROR_CODE:
            raise Refused(f"it raised {label}, whose error code the software CPU does not give")
        if vector in TRAPS:
            cpu.regs.rip += length
            cpu.regs_dirty = True
        cpu.inject_exception(vector)
        return name if vector not in TRAPS else f"{name} ({label})"

    def _store(self, uc, cpu: GuestCpu, fpu, vector, bits: int) -> None:
        regs, sregs = cpu.regs, cpu.sregs
        for name, reg in DATA_SEGMENTS + (("cs", X.UC_X86_REG_CS),):
            if uc.reg_read(reg) != getattr(sregs, name).selector:
                raise Refused(f"it loads {name.upper()}, which the software CPU cannot hand back")
        for name, reg in GPRS if bits == 64 else GPRS_32:
            value = uc.reg_read(reg)
            setattr(regs, name, value if bits == 64 else (getattr(regs, name) & ~0xFFFF_FFFF) | value)
        regs.rflags = uc.reg_read(X.UC_X86_REG_RFLAGS if bits == 64 else X.UC_X86_REG_EFLAGS)
        rip = uc.reg_read(X.UC_X86_REG_RIP if bits == 64 else X.UC_X86_REG_EIP)
        regs.rip = rip - sregs.cs.base if bits == 16 else rip
        cpu.regs_dirty = True
        changed = False
        for index, name in ((0, "cr0"), (3, "cr3"), (4, "cr4")):     # CR2 only changes on #PF
            value = uc.reg_read(getattr(X, f"UC_X86_REG_CR{index}"))
            if value != getattr(sregs, name):
                setattr(sregs, name, value)
                changed = True
        if bits == 64:
            for name, reg in (("fs", X.UC_X86_REG_FS_BASE), ("gs", X.UC_X86_REG_GS_BASE)):
                value = uc.reg_read(reg)
                if value != getattr(sregs, name).base:
                    getattr(sregs, name).base = value
                    changed = True
        cpu.sregs_dirty = changed
        if fpu is not None:
            store_fpu(uc, cpu.vcpu, fpu, vector, bits)
        cpu.commit()


ALL = "all"


def map_slots(uc, slots) -> None:
    """Map guest memory into the software CPU as KVM's memory slots map it, without a copy."""
    for begin, end, _ in list(uc.mem_regions()):
        uc.mem_unmap(begin, end - begin + 1)
    for gpa, (size, host, readonly, _) in sorted(slots.mapped.items()):
        perms = unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC
        if not readonly:
            perms |= unicorn.UC_PROT_WRITE
        uc.mem_map_ptr(gpa, size, perms, host)


def load_state(uc, cpu: GuestCpu, fpu, vector, bits: int) -> None:
    """Copy the vCPU's state into the software CPU: what load_system copies, the general
    registers and RFLAGS (before the segments: how they load follows RFLAGS.VM),
    and of `fpu` (a kvm_fpu, or None) what `vector` names."""
    regs, sregs = cpu.regs, cpu.sregs
    _load_control(uc, sregs)
    for name, reg in GPRS if bits == 64 else GPRS_32:
        uc.reg_write(reg, getattr(regs, name) if bits == 64 else getattr(regs, name) & 0xFFFF_FFFF)
    uc.reg_write(X.UC_X86_REG_RFLAGS if bits == 64 else X.UC_X86_REG_EFLAGS, regs.rflags)
    _load_segments(uc, sregs, bits)
    if fpu is not None:
        load_fpu(uc, fpu, vector, bits)


def load_system(uc, sregs, bits: int) -> None:
    """What kvm_sregs `sregs` holds, into the software CPU: control registers, EFER,
    descriptor tables, segment selectors (the software CPU loads their descriptors from the
    tables, as the CPU loads them) and in 64-bit code the FS and GS bases."""
    _load_control(uc, sregs)
    _load_segments(uc, sregs, bits)


def _load_control(uc, sregs) -> None:
    uc.reg_write(X.UC_X86_REG_MSR, (EFER, sregs.efer))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, sregs.gdt.base, sregs.gdt.limit, 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, sregs.idt.base, sregs.idt.limit, 0))
    for index, name in ((4, "cr4"), (3, "cr3"), (0, "cr0")):   # CR3 flushes the TLB
        uc.reg_write(getattr(X, f"UC_X86_REG_CR{index}"), getattr(sregs, name))


def _load_segments(uc, sregs, bits: int) -> None:
    """Raises unicorn.UcError where a selector names no descriptor the software CPU can
    load (it takes a segment's base and limit from the tables, not from kvm_sregs)."""
    uc.reg_write(X.UC_X86_REG_CS, sregs.cs.selector)
    for name, reg in DATA_SEGMENTS:
        try:
            uc.reg_write(reg, getattr(sregs, name).selector)
        except unicorn.UcError:
            if bits != 64:
                raise
            # 64-bit code ignores a data segment's base (FS's and GS's are written below)
            # and limit: the null selector runs it the same. Linux's PVH entry reaches its
            # 64-bit code with FS and GS still holding selectors of the loader's table.
            uc.reg_write(reg, 0)
    if bits == 64:
        uc.reg_write(X.UC_X86_REG_FS_BASE, sregs.fs.base)
        uc.reg_write(X.UC_X86_REG_GS_BASE, sregs.gs.base)


def load_fpu(uc, fpu, vector, bits: int) -> None:
    """What `vector` names of `fpu` (a kvm_fpu) into the software CPU."""
    if vector is not ALL:
        for i in vector:
            uc.reg_write(X.UC_X86_REG_XMM0 + i, int.from_bytes(bytes(fpu.xmm[i]), "little"))
        uc.reg_write(X.UC_X86_REG_MXCSR, fpu.mxcsr)
        return
    top = (fpu.fsw >> 11) & 7
    uc.reg_write(X.UC_X86_REG_FPCW, fpu.fcw)
    uc.reg_write(X.UC_X86_REG_FPSW, fpu.fsw)
    uc.reg_write(X.UC_X86_REG_FPTAG, _full_tags(fpu.ftwx))
    for i in range(8):           # fpr[i] is ST(i); FP0-7 are the physical registers
        raw = bytes(fpu.fpr[i])
        uc.reg_write(X.UC_X86_REG_FP0 + ((top + i) & 7),
                     (int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:10], "little")))
    for i in range(16 if bits == 64 else 8):
        uc.reg_write(X.UC_X86_REG_XMM0 + i, int.from_bytes(bytes(fpu.xmm[i]), "little"))
    uc.reg_write(X.UC_X86_REG_MXCSR, fpu.mxcsr)


def store_fpu(uc, vcpu, fpu, vector, bits: int) -> None:
    """Copy back into `fpu` what `vector` names and hand it to `vcpu` if it changed."""
    before = bytes(fpu)
    if vector is not ALL:
        for i in vector:
            ctypes.memmove(fpu.xmm[i], uc.reg_read(X.UC_X86_REG_XMM0 + i).to_bytes(16, "little"), 16)
        fpu.mxcsr = uc.reg_read(X.UC_X86_REG_MXCSR)
        if bytes(fpu) != before:
            vcpu.set_fpu(fpu)
        return
    fpu.fcw = uc.reg_read(X.UC_X86_REG_FPCW)
    fpu.fsw = uc.reg_read(X.UC_X86_REG_FPSW)
    fpu.ftwx = _abridged_tags(uc.reg_read(X.UC_X86_REG_FPTAG))
    top = (fpu.fsw >> 11) & 7
    for i in range(8):
        mantissa, exponent = uc.reg_read(X.UC_X86_REG_FP0 + ((top + i) & 7))
        raw = mantissa.to_bytes(8, "little") + exponent.to_bytes(2, "little") + bytes(6)
        ctypes.memmove(fpu.fpr[i], raw, 16)
    for i in range(16 if bits == 64 else 8):
        ctypes.memmove(fpu.xmm[i], uc.reg_read(X.UC_X86_REG_XMM0 + i).to_bytes(16, "little"), 16)
    fpu.mxcsr = uc.reg_read(X.UC_X86_REG_MXCSR)
    if bytes(fpu) != before:
        vcpu.set_fpu(fpu)


def _vector_registers(insn, bits: int):
    """Which x87/MMX/SSE state the instruction may use: None (none of it), a tuple of the XMM
    register numbers it names (an SSE instruction on XMM registers only: those and MXCSR
    are copied), or ALL (x87, MMX, state save and restore, MXCSR loads: everything)."""
    names = [insn.reg_name(reg) for reg in sum(insn.regs_access(), [])]
    vector_names = [name for name in names if name.startswith(VECTOR_REGISTERS)]
    groups = [insn.group_name(group) for group in insn.groups]
    if not vector_names and not insn.mnemonic.startswith(VECTOR_MNEMONICS) and \
            not any(group.startswith(VECTOR_GROUPS) for group in groups):
        return None
    if insn.mnemonic.startswith(VECTOR_MNEMONICS) or "mxcsr" in insn.mnemonic or \
            any(group in ("fpu", "mmx", "3dnow") for group in groups) or not vector_names or \
            any(not name.startswith("xmm") for name in vector_names):
        return ALL
    numbers = tuple(sorted({int(name[3:]) for name in vector_names}))
    return numbers if all(n < (16 if bits == 64 else 8) for n in numbers) else ALL


def _full_tags(abridged: int) -> int:
    """FXSAVE's abridged tag byte (1 = valid) as the x87 tag word (2 bits each, 3 = empty)."""
    return sum((0 if abridged >> i & 1 else 3) << 2 * i for i in range(8))


def _abridged_tags(full: int) -> int:
    return sum(1 << i for i in range(8) if (full >> 2 * i) & 3 != 3)
