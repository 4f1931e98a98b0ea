"""Privileged guest code run in the software CPU, on hosts whose KVM emulates it.

On an emulating host (kvm_pvm) KVM runs every instruction of privileged code through its
instruction emulator, 0.5-2 us each. The software CPU (unicorn, which is QEMU's TCG) runs
the same code from guest RAM, mapped without a copy, far faster. It runs the vCPU in
stretches: from the state KVM holds to the first instruction only KVM may execute, where
the registers go back and KVM executes that one instruction (KVM_GUESTDBG_SINGLESTEP).

Only KVM executes: port I/O to its in-kernel PIC and PIT, string port I/O, MSRs, CPUID,
RDTSC, HLT, software interrupts, IRET, XSAVE and its kin, and every instruction that changes
what kvm_sregs holds (segment loads, far transfers, descriptor-table and control registers).
So the software CPU never changes the vCPU's system state: only its general registers,
RIP, RFLAGS and its x87/SSE state, which it keeps until KVM needs it. Anything the software
CPU faults on, and every access outside guest RAM (MMIO, writes to ROM), is left to KVM as
well. Served inside a stretch instead: port I/O to tinyvmm's own devices, and CPUID and
RDMSR of a few MSRs once KVM has answered them for the same inputs. A run lasts at most a
few milliseconds; with interrupts enabled the stretch then ends, so KVM's in-kernel irqchip
delivers what is pending (STI and POPF run in the software CPU, and an interrupt waits for
the slice's end).

A run of the software CPU ends at the start of a translated block a few milliseconds on
(tinyvmm.completion.preempt: never mid-instruction); between runs the stretch looks at the
clock, the run's end (--timeout, a signal, a power-off) and IF.

Each block of code is decoded once, when the software CPU translates it and before it
runs (UC_HOOK_EDGE_GENERATED, and the block a run starts with): the instructions above
become the software CPU's exits, so translated code stops exactly before them. So do the
execution breakpoints of whoever holds the debug registers (the boot's kernel-entry mark,
run(until_address=)): KVM executes the instruction there with its breakpoint set.

A fault stops the software CPU at the faulting instruction, which KVM executes again and
delivers; an access outside RAM stops it before the instruction too (unicorn checks after
every memory access). An event KVM is to deliver (a completion's #BP, a fault it raised)
is delivered before the software CPU runs again.
"""

import ctypes
import re
import time

import unicorn
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib

from ..debug.disasm import code_bits
from ..kvm import abi
from ..x86 import MAX_INSTRUCTION, RFLAGS_IF, RFLAGS_VM
from .paging import PAGE_SIZE as PAGE
from .paging import translate
from .preempt import Preemption, Ticker
from .softcpu import ALL, load_fpu, load_system, map_slots, store_fpu

TYPE_CHECKING = False           # True for type checkers only
if TYPE_CHECKING:
    from collections.abc import Callable

STEP, FREE = "step", "free"
STI = b"\xfb"
# A run with interrupts enabled ends at the first instruction only KVM executes (then KVM
# delivers what is pending), which in firmware and kernels comes every few hundred us; one
# that has lasted SLICE_NS (a loop waiting for a timer tick) still goes on to the next such
# instruction unless another slice passes (OVMF's boots, corrupted then by the way runs were
# stopped (see preempt), crashed less often so). Each ~10 ms waited costs a kernel waiting for
# its tick (~50 ms made the test kernel's boot to its init 1.8 times as long, ~10 ms 1.2 times).
SLICE_NS = 10_000_000
# A run begun with interrupts disabled that has enabled them (STI, POPF) is cut after ~50 ms:
# late enough to leave OVMF's short critical sections alone, soon enough for a kernel that
# waits for its timer's ticks.
ENABLED_NS = 50_000_000
ANALYSIS_MAX = 65536

# What only KVM executes (capstone mnemonics, prefixes dropped).
KVM_ONLY = frozenset((
    "insb", "insw", "insd", "outsb", "outsw", "outsd",
    "rdmsr", "wrmsr", "rdtsc", "rdtscp", "rdpmc", "cpuid", "hlt",
    "int", "int1", "int3", "into", "iret", "iretd", "iretq",
    "syscall", "sysret", "sysretq", "sysenter", "sysexit", "swapgs",
    "monitor", "mwait", "xsetbv", "xgetbv", "invd", "wbinvd", "vmcall", "vmmcall", "rsm",
    # TLB flushes: KVM's shadow page tables (user mode runs on them) learn of the guest's
    # page-table changes through them, which the software CPU writes to RAM unseen (before
    # the vCPU first reaches user mode there is nothing to learn: the software CPU runs them)
    "invlpg", "invpcid", "invlpga",
    "xsave", "xsave64", "xsaveopt", "xsaveopt64", "xsavec", "xsavec64", "xsaves", "xsaves64",
    "xrstor", "xrstor64", "xrstors", "xrstors64", "getsec", "rdpid", "rdpkru", "wrpkru",
    # what changes kvm_sregs
    "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "lds", "les", "lfs", "lgs", "lss",
    "ljmp", "lcall", "retf", "retfq", "retfw", "lret", "lretq", "wrfsbase", "wrgsbase",
))
TLB_FLUSHES = frozenset(("invlpg", "invpcid", "invlpga"))
SEGMENTS = ("cs", "ds", "es", "ss", "fs", "gs")
SYSTEM_REGISTER = re.compile(r"[cd]r\d+")
PORT_IO = frozenset(("in", "out"))
# legacy prefixes and REX, which come before an opcode
PREFIXES = bytes((0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, *range(0x40, 0x50)))
VECTOR_GROUPS = ("fpu", "mmx", "sse", "avx", "3dnow", "fma", "f16c", "aes", "sha", "pclmul")
VECTOR_MNEMONICS = ("fx", "f", "ldmxcsr", "stmxcsr", "emms", "xsave", "xrstor")

# kvm_regs is 18 u64 in this order: the software CPU's registers, copied in one call each way.
GPR_IDS = (X.UC_X86_REG_RAX, X.UC_X86_REG_RBX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX,
           X.UC_X86_REG_RSI, X.UC_X86_REG_RDI, X.UC_X86_REG_RSP, X.UC_X86_REG_RBP,
           X.UC_X86_REG_R8, X.UC_X86_REG_R9, X.UC_X86_REG_R10, X.UC_X86_REG_R11,
           X.UC_X86_REG_R12, X.UC_X86_REG_R13, X.UC_X86_REG_R14, X.UC_X86_REG_R15,
           X.UC_X86_REG_RIP, X.UC_X86_REG_RFLAGS)
REGS_SIZE = 8 * len(GPR_IDS)
# 32-bit code: the eight legacy registers, EIP and EFLAGS
GPR_IDS_32 = (X.UC_X86_REG_EAX, X.UC_X86_REG_EBX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX,
              X.UC_X86_REG_ESI, X.UC_X86_REG_EDI, X.UC_X86_REG_ESP, X.UC_X86_REG_EBP,
              X.UC_X86_REG_EIP, X.UC_X86_REG_EFLAGS)
REGISTERS_32 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "rip", "rflags")
string_at = ctypes.string_at
CPUID, RDMSR = b"\x0f\xa2", b"\x0f\x32"
MOV_FROM_DR, MOV_TO_DR, MOV_FROM_CR = b"\x0f\x21", b"\x0f\x23", b"\x0f\x20"
# General registers in their encoding's order (a ModRM r/m field without REX.B)
ENCODED_GPRS = {64: (X.UC_X86_REG_RAX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_RBX,
                     X.UC_X86_REG_RSP, X.UC_X86_REG_RBP, X.UC_X86_REG_RSI, X.UC_X86_REG_RDI),
                32: (X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
                     X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)}
DR7_GD = 1 << 13
MASK32 = 0xFFFF_FFFF
# MSRs only WRMSR changes, whose RDMSR is answered again as KVM answered it: the APIC base,
# MTRRcap, the MTRR default type.
STABLE_MSRS = frozenset((0x1B, 0xFE, 0x2FF))
ANSWER_REGISTERS = {0xA2: ("ax", "bx", "cx", "dx"), 0x32: ("ax", "dx")}
# The registers a stretch reads and writes by name, in each code size.
NAMED = {64: {"ax": X.UC_X86_REG_RAX, "bx": X.UC_X86_REG_RBX, "cx": X.UC_X86_REG_RCX,
              "dx": X.UC_X86_REG_RDX, "ip": X.UC_X86_REG_RIP, "flags": X.UC_X86_REG_RFLAGS},
         32: {"ax": X.UC_X86_REG_EAX, "bx": X.UC_X86_REG_EBX, "cx": X.UC_X86_REG_ECX,
              "dx": X.UC_X86_REG_EDX, "ip": X.UC_X86_REG_EIP, "flags": X.UC_X86_REG_EFLAGS}}


def sensitive(insn) -> bool:
    """Whether only KVM may execute `insn` (a capstone instruction)."""
    name = insn.mnemonic.split()[-1]
    if name in KVM_ONLY or name in PORT_IO:
        return True
    if name in ("jmp", "call"):             # far: EA, 9A, FF /3, FF /5
        opcode = bytes(insn.bytes).lstrip(PREFIXES)
        return opcode[:1] in (b"\xea", b"\x9a") or \
            (opcode[:1] == b"\xff" and len(opcode) > 1 and (opcode[1] >> 3) & 7 in (3, 5))
    if name == "mov":       # to or from control and debug registers, to segment registers
        operands = [operand.strip() for operand in insn.op_str.split(",")]
        return operands[0] in SEGMENTS or any(SYSTEM_REGISTER.fullmatch(o) for o in operands)
    return name == "pop" and insn.op_str in SEGMENTS


def flushes_tlb(insn) -> bool:
    """Whether `insn` (a capstone instruction) may drop translations: a TLB flush, or a move
    to a control register (CR3 reloaded with the same value flushes without changing it)."""
    return insn.mnemonic in TLB_FLUSHES or (insn.mnemonic == "mov" and insn.op_str.startswith("cr"))


def uses_vector_state(insn) -> bool:
    if insn.mnemonic.startswith(VECTOR_MNEMONICS):
        return True
    return any((insn.group_name(g) or "").startswith(VECTOR_GROUPS) for g in insn.groups)


class _Engine:
    """A software CPU for one code size (unicorn takes a 32-bit or a 64-bit mode when made),
    with its exits."""

    def __init__(self, bits: int, on_translated, on_interrupt):
        self.bits = bits
        mode = unicorn.UC_MODE_64 if bits == 64 else unicorn.UC_MODE_32
        self.uc = uc = unicorn.Uc(unicorn.UC_ARCH_X86, mode)
        uc.ctl_set_cpu_model(X.UC_CPU_X86_EPYC_ROME)
        uc.hook_add(unicorn.UC_HOOK_EDGE_GENERATED, on_translated)
        uc.hook_add(unicorn.UC_HOOK_INTR, on_interrupt)
        uc.ctl_exits_enabled(True)
        self.exits: set[int] = set()         # where translated code stops for KVM
        self.breakpoints: frozenset[int] = frozenset()   # the debug registers' holder's, too
        self.tlb_stale = False               # KVM may have flushed the TLB since it ran
        self.sregs_raw = b""                 # kvm_sregs as last loaded
        self.mapped = None                   # the SlotMap's `updates` mapped
        self.preemption = Preemption(uc)     # ends a run at a block's start, from a timer
        # The CPU as made, restored after a fault: the software CPU records a fault as in
        # flight until it delivers it, which it never does here (KVM executes the
        # instruction again and delivers it), so the next fault would be taken for a double
        # fault, the one after for a triple fault, which stops it without a word. A page
        # fault while it translates code for a control call is recorded the same way.
        self.clean = uc.context_save()
        self.reg = NAMED[bits]
        ids = GPR_IDS if bits == 64 else GPR_IDS_32
        self.count = len(ids)
        self.ids = (ctypes.c_int * self.count)(*ids)
        self.values = (ctypes.c_uint64 * self.count)()
        base = ctypes.addressof(self.values)
        self.pointers = (ctypes.c_void_p * self.count)(*(base + 8 * i for i in range(self.count)))

    def follow_slots(self, slots) -> bool:
        """Map guest memory again if the VM's memory slots changed since; whether it did."""
        if self.mapped == slots.updates:
            return False
        map_slots(self.uc, slots)
        self.mapped = slots.updates
        self.flush_tlb()
        return True

    def flush_tlb(self) -> None:
        self.uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)
        self.tlb_stale = False


class Stretches:
    """Runs one vCPU's privileged code in the software CPU (see the module's docstring).

    `vcpu` is a tinyvmm.kvm.Vcpu, `memory` the GuestMemory, `slots` the VM's SlotMap, `ports`
    the board's port bus (its devices are served inside a stretch) and `in_kernel` the
    (first port, count, ...) ranges KVM's irqchip serves.
    """

    def __init__(self, vcpu, memory, slots, ports, in_kernel):
        import capstone
        self.vcpu, self.memory, self.slots, self.ports = vcpu, memory, slots, ports
        self.in_kernel = frozenset(p for first, count, *_ in in_kernel for p in range(first, first + count))
        self._decoders = {}
        for bits, mode in ((32, capstone.CS_MODE_32), (64, capstone.CS_MODE_64)):
            decoder = self._decoders[bits] = capstone.Cs(capstone.CS_ARCH_X86, mode)
            decoder.detail = True
        self._engines: dict[int, _Engine] = {}
        self._current: _Engine | None = None
        self._sregs = None
        self._bits = 64
        # (address, size) -> (host address or None, bytes, exits in it)
        self._blocks: dict[tuple[int, int], tuple] = {}
        self._new_exits: list[int] = []
        self._fault: int | None = None
        self._enabled = False                # RFLAGS.IF as the vCPU was last handed to KVM
        self._user_seen = False              # the vCPU has run user code: TLB flushes go to KVM
        self._fpu = None                     # kvm_fpu while the software CPU holds the state
        self._debugregs = None               # kvm_debugregs, read at a stretch's first need
        # What KVM answered to CPUID (by leaf, subleaf and CR4) and to RDMSR of MSRs that only
        # WRMSR changes, served again inside a stretch; the one KVM executes now, to learn.
        self._answers: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._learning: tuple[int, ...] | None = None
        # Guest-physical pages the translated code came from, and those written since by a
        # device or the completions (memory.write_observer); after KVM ran freely, anything.
        self._code_pages: set[int] = set()
        self._written: list[tuple[int, int]] = []
        self._stale = False
        memory.write_observer = self._on_write
        # what the run did, for --stats
        self.stretches = 0                   # runs in the software CPU
        self.shadows = 0                     # handed to KVM inside an STI shadow
        self.handed: dict[str, int] = {}     # why each ended: the instruction KVM executed next
        self.ports_served = 0                # port accesses served inside a stretch
        self.port_stats: Callable[[int, bool, int, int], object] | None = None   # --stats' port table
        self.served_instructions = 0         # CPUIDs, RDMSRs, debug-register moves served
        self.ns = 0                          # time in stretches, copies of state included
        Ticker(self, lambda stretches: stretches._current and stretches._current.preemption)

    # --- the engine -------------------------------------------------------
    @property
    def _exits(self) -> set[int]:
        assert self._current is not None        # a stretch is running
        return self._current.exits

    def _engine(self, bits: int) -> _Engine:
        engine = self._engines.get(bits)
        if engine is None:
            engine = self._engines[bits] = _Engine(bits, self._on_translated, self._on_interrupt)
        if engine is not self._current:
            self._give_back_vector_state()      # the other engine held it
            self._blocks.clear()
            self._current = engine
        engine.follow_slots(self.slots)
        return engine

    def _on_interrupt(self, uc, vector: int, _user) -> None:
        self._fault = vector
        uc.emu_stop()

    def _on_translated(self, uc, new_tb, _previous, _user) -> None:
        self._check_block(uc, new_tb.pc, new_tb.size)

    def _check_block(self, uc, address: int, size: int) -> None:
        """Stop before a block runs whose KVM-only instructions are not exits yet: it is
        translated again once they are."""
        entry = self._blocks.get((address, size))
        if entry is None or (entry[0] is not None and string_at(entry[0], size) != entry[1]):
            entry = self._analyse(uc, address, size)
        for stop in entry[2]:
            if stop not in self._exits:
                self._new_exits.append(stop)
        if self._new_exits:
            uc.emu_stop()

    def _analyse(self, uc, address: int, size: int) -> tuple[int | None, bytes, tuple[int, ...]]:
        host = self._host_address(uc, address, size)
        entry: tuple[int | None, bytes, tuple[int, ...]]
        if host is None:                        # not in one memory slot: KVM executes it
            entry = (None, b"", (address,))
        else:
            code = string_at(host, size)
            stops, done = [], 0
            for insn in self._decoders[self._bits].disasm(code, address):
                if sensitive(insn) and (self._user_seen or insn.mnemonic not in TLB_FLUSHES):
                    stops.append(insn.address)
                done += insn.size
            if done < size:                     # bytes the decoder does not know: KVM decides
                stops.append(address + done)
            entry = (host, code, tuple(stops))
        if len(self._blocks) >= ANALYSIS_MAX:
            self._blocks.clear()
        self._blocks[(address, size)] = entry
        return entry

    def _on_write(self, gpa: int, size: int) -> None:
        if len(self._written) < 256:
            self._written.append((gpa, size))
        else:
            self._stale = True

    def _drop_rewritten_code(self, uc) -> None:
        """Translations of code a device (or KVM, running freely) may have rewritten are
        dropped: the software CPU only notices its own writes."""
        stale = self._stale
        if not stale:
            pages = self._code_pages
            stale = any(page in pages for gpa, size in self._written
                        for page in range(gpa // PAGE, (gpa + size - 1) // PAGE + 1))
        self._written.clear()
        self._stale = False
        if stale:
            uc.ctl_flush_tb()
            self._blocks.clear()
            self._code_pages.clear()

    def _host_address(self, uc, address: int, size: int) -> int | None:
        """Where the `size` bytes at linear `address` lie in tinyvmm's memory, when they
        are in one memory slot (its guest-physical pages are noted as code)."""
        sregs = self._sregs
        assert sregs is not None                # set before the software CPU runs
        physical = translate(self.memory, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, address)
        if physical is None:
            return None
        if (address + size - 1) // PAGE != address // PAGE:
            last = translate(self.memory, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, address + size - 1)
            if last != physical + size - 1:
                return None
        for gpa, (length, host, _, _) in self.slots.mapped.items():
            if gpa <= physical and physical + size <= gpa + length:
                self._code_pages.update(range(physical // PAGE, (physical + size - 1) // PAGE + 1))
                return host + physical - gpa
        return None

    def _code(self, uc, address: int, size: int) -> bytes:
        host = self._host_address(uc, address, size)
        return b"" if host is None else string_at(host, size)

    def _add_exits(self, uc) -> None:
        for stop in self._new_exits:
            self._exits.add(stop)
            uc.ctl_remove_cache(stop, stop + 1)     # every block holding it is translated again
        self._new_exits.clear()
        self._set_exits(uc)

    def _set_exits(self, uc) -> None:
        engine = self._current
        assert engine is not None
        uc.ctl_set_exits(sorted(engine.exits | engine.breakpoints))

    def _set_breakpoints(self, uc, breakpoints: frozenset[int]) -> None:
        engine = self._current
        assert engine is not None
        for address in breakpoints ^ engine.breakpoints:
            uc.ctl_remove_cache(address, address + 1)
        engine.breakpoints = breakpoints
        self._set_exits(uc)

    # --- a run ------------------------------------------------------------
    def run(self, stop_wanted=lambda: False, breakpoints: frozenset[int] = frozenset()) -> str:
        """Run the vCPU in the software CPU from the state KVM holds, and hand it back:
        STEP when KVM is to execute the next instruction, FREE when the vCPU is in a mode
        left to KVM (16-bit code, real mode or not, virtual-8086 mode, user mode, a
        segmented CS). `stop_wanted()` is asked when a slice ends; a stretch stops before
        the linear addresses in `breakpoints` (KVM then executes them, its debug registers
        set)."""
        vcpu = self.vcpu
        sregs = vcpu.get_sregs()
        regs = vcpu.get_regs()
        if self._learning is not None:
            self._learn(regs)
        events = vcpu.get_vcpu_events()
        if (events.exception.injected or events.exception.pending or events.interrupt.injected
                or events.nmi[0] or events.nmi[1]):
            # An event KVM delivers at its next entry (a completion's #BP, a fault it raised
            # while stepping): the software CPU must not run past it.
            self._give_back_vector_state()
            return STEP
        enabled = bool(regs.rflags & RFLAGS_IF)
        if enabled and not self._enabled and self.vcpu.lapic_requests():
            # KVM's instruction enabled interrupts (IRET) with one waiting in the local
            # APIC: KVM takes one more step, at whose entry it delivers it. Entries after
            # the registers were set from the software CPU deliver the PIC's interrupts
            # but not the local APIC's here (its timer's went untaken for good).
            self._enabled = True
            self._give_back_vector_state()
            return STEP
        self._enabled = enabled
        bits = code_bits(sregs)
        if bits == 16 or regs.rflags & RFLAGS_VM or sregs.cs.base or sregs.ss.dpl:
            self._give_back_vector_state()
            self._stale = True                  # KVM runs freely: it may write anything
            self._tlb_flushed()
            self._user_seen |= bool(sregs.ss.dpl)   # (and blocks are decoded again)
            return FREE
        started = time.perf_counter_ns()
        self._debugregs = None                  # KVM may have changed them since
        self.stretches += 1
        self._sregs = sregs
        self._bits = bits
        engine = self._engine(self._bits)
        uc = engine.uc
        if self._written or self._stale:
            self._drop_rewritten_code(uc)
        if engine.tlb_stale:
            # KVM executed a TLB flush since this engine last ran (`mov cr3` of the same
            # value, `invlpg` once user code has run), which leaves kvm_sregs as they were:
            # without this the software CPU would go on using translations the guest dropped.
            engine.flush_tlb()
        raw = bytes(sregs)
        if breakpoints != engine.breakpoints:
            self._set_breakpoints(uc, breakpoints)
        if raw != engine.sregs_raw:
            self._blocks.clear()                # other page tables may map other code
            engine.sregs_raw = b""
            try:
                load_system(uc, sregs, engine.bits)
            except unicorn.UcError:
                # A segment whose selector names no valid descriptor (the PVH entry's, before
                # the kernel's own GDT): KVM executes on until the tables match the registers.
                self._handed("a segment outside its table", started)
                return STEP
            engine.sregs_raw = raw
        values = engine.values
        if engine.bits == 64:
            ctypes.memmove(values, ctypes.addressof(regs), REGS_SIZE)
        else:
            for i, name in enumerate(REGISTERS_32):
                values[i] = getattr(regs, name) & MASK32
        uclib.uc_reg_write_batch(uc._uch, engine.ids, engine.pointers, engine.count)
        if self._fpu is None:
            self._fpu = vcpu.get_fpu()
            load_fpu(uc, self._fpu, ALL, engine.bits)
        pc = started_at = regs.rip
        reg = engine.reg
        silent = False                          # the software CPU stopped for no reason it gives
        cut = False                             # a slice has ended once: end at an exit
        clock = time.perf_counter_ns
        slice_start = clock()
        began_enabled = bool(regs.rflags & RFLAGS_IF)
        while True:
            self._fault = None
            insn = None                         # the KVM-only instruction the run stopped at
            # The block a run starts with is translated before the hook can see it (unicorn
            # tells of a new block only when another jumps to it), so it would run unchecked:
            # after KVM executed an exit, the code after it is such a block. It is looked up
            # (translated if new) and checked here.
            if self._host_address(uc, pc, 1) is None:
                break
            first = uc.ctl_request_cache(pc)
            self._check_block(uc, first[0], first[2])
            if self._new_exits:
                self._add_exits(uc)
                continue
            engine.preemption.clear()
            try:
                uc.emu_start(pc, 0)
                error = None
            except unicorn.UcError as exc:
                error = exc                     # outside guest RAM, or written read-only
            pc = uc.reg_read(reg["ip"])
            if error is not None or self._fault is not None:
                break
            if self._new_exits:
                self._add_exits(uc)
                continue
            if pc in breakpoints:
                break
            # A run with interrupts enabled is sliced (then KVM delivers them); one begun
            # without them only once it has enabled them and lasted longer.
            flags = uc.reg_read(reg["flags"])
            elapsed = clock() - slice_start
            sliced = (elapsed >= SLICE_NS if began_enabled else
                      elapsed >= ENABLED_NS and bool(flags & RFLAGS_IF)) or stop_wanted()
            if pc in self._exits:
                insn = self._instruction(uc, pc)
                if insn is not None and not sensitive(insn):
                    self._drop_exit(uc, pc)         # the code there was replaced since
                    continue
                if cut and flags & RFLAGS_IF:
                    break                           # KVM executes it and delivers interrupts
                if not self._serve(uc, pc, bytes(insn.bytes) if insn is not None else b""):
                    break
                self._after_device(uc, engine)
                pc = uc.reg_read(reg["ip"])
                if stop_wanted():
                    break                           # the access ended the run (power-off)
                if not sliced:
                    continue
            elif not engine.preemption.asked:
                silent = True                   # a triple fault (see _Engine.clean)
                break
            elif not sliced:
                continue                        # a tick: the slice goes on
            # The slice ended: KVM delivers what is pending, if interrupts are enabled, at
            # the next instruction only it executes (or here, after a second slice).
            if stop_wanted() or (flags & RFLAGS_IF and (cut or pc in self._exits)):
                break
            cut = True
            slice_start = clock()
            began_enabled = bool(flags & RFLAGS_IF)
        self._read_regs(engine, regs)
        vcpu.set_regs(regs)
        self._enabled = bool(regs.rflags & RFLAGS_IF)
        if self._enabled and pc != started_at and self._code(uc, pc - 1, 1) == STI:
            # STI's interrupt shadow: the instruction after it runs before any interrupt
            # (KVM cannot tell from the registers; `sti; hlt` would otherwise take the
            # interrupt before the HLT and then sleep until the next one)
            events = vcpu.get_vcpu_events()
            events.interrupt.shadow = abi.KVM_X86_SHADOW_INT_STI
            events.flags = abi.KVM_VCPUEVENT_VALID_SHADOW
            vcpu.set_vcpu_events(events)
            self.shadows += 1
        if insn is None:
            insn = self._instruction(uc, pc)
        faulted = self._fault is not None or silent
        if faulted or error is not None or insn is None or uses_vector_state(insn):
            self._give_back_vector_state()
        if faulted:
            uc.context_restore(engine.clean)
            engine.sregs_raw = b""              # loaded again at the next stretch
        reason = ("an access outside RAM" if error is not None else
                  "a fault" if self._fault is not None else
                  "a stop without a cause" if silent else
                  "a breakpoint" if pc in breakpoints else
                  insn.mnemonic if insn is not None and pc in self._exits else "the slice's end")
        self._handed(reason, started)
        if insn is not None and pc in self._exits and flushes_tlb(insn):
            self._tlb_flushed()
        return STEP

    def _tlb_flushed(self) -> None:
        """KVM is to run what may flush the TLB: every engine looks translations up again."""
        for engine in self._engines.values():
            engine.tlb_stale = True

    def _handed(self, reason: str, started: int) -> None:
        self.handed[reason] = self.handed.get(reason, 0) + 1
        self.ns += time.perf_counter_ns() - started

    @staticmethod
    def _read_regs(engine: _Engine, regs) -> None:
        """The software CPU's registers into kvm_regs `regs` (in 32-bit code, the low halves
        of the legacy registers: the rest stays)."""
        values = engine.values
        uclib.uc_reg_read_batch(engine.uc._uch, engine.ids, engine.pointers, engine.count)
        if engine.bits == 64:
            ctypes.memmove(ctypes.addressof(regs), values, REGS_SIZE)
        else:
            for i, name in enumerate(REGISTERS_32):
                setattr(regs, name, values[i] & MASK32)     # unicorn writes 4 bytes of each

    def table(self) -> str:
        """--stats: the stretches, and what ended them."""
        lines = [f"software CPU: {self.stretches} stretches ({self.shadows} handed in an STI "
                 f"shadow), {self.ns / 1e9:.3f} s; "
                 f"{self.ports_served} port accesses, {self.served_instructions} CPUID, RDMSR, "
                 "control- and debug-register moves served in them",
                 f"{'handed to KVM at':<28}{'times':>10}"]
        for reason, count in sorted(self.handed.items(), key=lambda item: -item[1])[:12]:
            lines.append(f"{reason:<28}{count:>10}")
        return "\n".join(lines)

    def _drop_exit(self, uc, pc: int) -> None:
        self._exits.discard(pc)
        self._set_exits(uc)
        uc.ctl_remove_cache(pc, pc + 1)

    def _instruction(self, uc, pc: int):
        """The instruction at `pc` (capstone), or None."""
        code = self._code(uc, pc, MAX_INSTRUCTION)
        return next(self._decoders[self._bits].disasm(code, pc, count=1), None)

    def settle(self) -> None:
        """A run ends: KVM holds the vCPU's whole state again (the x87/SSE state the software
        CPU kept between stretches), for whatever reads it or runs the vCPU next."""
        self._give_back_vector_state()

    def _after_device(self, uc, engine: _Engine) -> None:
        """A device served inside the stretch may have moved memory (the PAM registers, a
        flash unit's mode) or written code (DMA): the software CPU sees it before it goes
        on, as KVM would at its next instruction."""
        if engine.follow_slots(self.slots):
            self._stale = True                  # its translations may be of the old memory
        if self._written or self._stale:
            self._drop_rewritten_code(uc)

    def _give_back_vector_state(self) -> None:
        """The x87/SSE state the software CPU holds, to KVM (it is taken again at the next
        stretch)."""
        if self._fpu is not None and self._current is not None:
            store_fpu(self._current.uc, self.vcpu, self._fpu, ALL, self._current.bits)
            self._fpu = None

    @property
    def _reg(self) -> dict[str, int]:
        assert self._current is not None        # a stretch is running
        return self._current.reg

    def _serve(self, uc, pc: int, code: bytes) -> bool:
        """Serve the instruction at exit `pc` (`code`: its bytes) here when its result is
        known: port I/O to tinyvmm's devices, CPUID and the RDMSRs KVM answered before.
        False: KVM executes it."""
        if code[:2] == CPUID or code[:2] == RDMSR:
            reg = self._reg
            rax, rcx = uc.reg_read(reg["ax"]) & MASK32, uc.reg_read(reg["cx"]) & MASK32
            if code == CPUID:
                assert self._sregs is not None
                key: tuple[int, ...] = (pc, 0xA2, rax, rcx, self._sregs.cr4)
            elif rcx in STABLE_MSRS:
                key = (pc, 0x32, rcx)
            else:
                return False
            answer = self._answers.get(key[1:])
            if answer is None:
                self._learning = key
                return False
            for name, value in zip(ANSWER_REGISTERS[code[1]], answer):
                uc.reg_write(reg[name], value & (MASK32 if self._bits == 32 else (1 << 64) - 1))
            uc.reg_write(reg["ip"], pc + 2)
            self.served_instructions += 1
            return True
        if code[:1] == b"\x0f" and code[1:2] in (b"\x30", b"\x01"):   # wrmsr, xsetbv and kin
            self._answers.clear()
        if code[:2] in (MOV_FROM_CR, MOV_FROM_DR, MOV_TO_DR):
            return self._serve_register_move(uc, pc, code)
        return self._serve_port(uc, pc, code)

    def _serve_register_move(self, uc, pc: int, code: bytes) -> bool:
        """`mov r, crN` (CR0, CR2, CR3, CR4: kvm_sregs hold them as the stretch began, and
        nothing in a stretch changes them) and `mov r, drN` answered here, and `mov drN, r` of
        the value the debug register already holds skipped: firmware's interrupt entry saves
        (and restores) them all, which in OVMF took about 20 hand-offs to KVM per timer tick.
        Other control registers, DR4/DR5, a REX prefix (DR8 and above, or R8-R15) and DR7.GD
        (a #DB on every access) go to KVM."""
        if len(code) < 3 or code[2] >> 6 != 3:
            return False
        number, gpr = (code[2] >> 3) & 7, ENCODED_GPRS[self._bits][code[2] & 7]
        if code[:2] == MOV_FROM_CR:
            if number not in (0, 2, 3, 4):
                return False
            assert self._sregs is not None
            value = getattr(self._sregs, f"cr{number}")
        else:
            if number in (4, 5):
                return False
            if self._debugregs is None:
                self._debugregs = self.vcpu.get_debugregs()
            debugregs = self._debugregs
            if debugregs.dr7 & DR7_GD:
                return False
            value = debugregs.db[number] if number < 4 else \
                debugregs.dr6 if number == 6 else debugregs.dr7
        if code[:2] != MOV_TO_DR:
            uc.reg_write(gpr, value)
        elif uc.reg_read(gpr) != value:
            return False
        uc.reg_write(self._reg["ip"], pc + 3)
        self.served_instructions += 1
        return True

    def _learn(self, regs) -> None:
        """KVM has executed the CPUID or RDMSR at self._learning's address: keep its answer."""
        pc, opcode, *inputs = self._learning or (0, 0)
        self._learning = None
        if regs.rip != pc + 2:
            return                              # an event came between: nothing learnt
        if opcode == 0xA2:
            answer: tuple[int, ...] = (regs.rax, regs.rbx, regs.rcx, regs.rdx)
        else:
            answer = (regs.rax, regs.rdx)
        self._answers[(opcode,) + tuple(inputs)] = answer

    def _serve_port(self, uc, pc: int, code: bytes) -> bool:
        """IN or OUT to one of tinyvmm's devices at `pc` (`code`: its bytes): served here;
        False for anything else (string I/O, the in-kernel ports)."""
        if not code:
            return False
        operand16 = code[0] == 0x66
        op = code[1] if operand16 else code[0]
        length = 1 + operand16
        if op in (0xE4, 0xE5, 0xE6, 0xE7):
            port = code[length]
            length += 1
        elif op in (0xEC, 0xED, 0xEE, 0xEF):
            port = uc.reg_read(X.UC_X86_REG_DX)
        else:
            return False
        size = 1 if op in (0xE4, 0xE6, 0xEC, 0xEE) else (2 if operand16 else 4)
        if any(p in self.in_kernel for p in range(port, port + size)):
            return False
        reg = self._reg
        rax = uc.reg_read(reg["ax"])
        started = time.perf_counter_ns()
        is_out = op in (0xE6, 0xE7, 0xEE, 0xEF)
        if is_out:
            self.ports.write(port, size, (rax & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
        else:
            value = int.from_bytes(self.ports.read(port, size, 1), "little")
            # a 32-bit result clears bits 32-63, a narrower one keeps the rest
            rax = value if size == 4 else (rax & ~((1 << 8 * size) - 1)) | value
            uc.reg_write(reg["ax"], rax)
        uc.reg_write(reg["ip"], pc + length)
        self.ports_served += 1
        if self.port_stats is not None:
            self.port_stats(port, is_out, size, time.perf_counter_ns() - started)
        return True

