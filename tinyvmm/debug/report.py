"""Readable reports of a guest that crashed or stopped answering: why, where, and what led there."""

from ..kvm import abi
from ..x86 import CR0_PE, EFER_LMA

SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
GENERAL = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def cpu_mode(sregs) -> str:
    """'real', 'protected16', 'protected32', 'long' or 'compat' from the control state."""
    if not sregs.cr0 & CR0_PE:
        return "real"
    if sregs.efer & EFER_LMA:
        return "long" if sregs.cs.l else "compat"
    return "protected32" if sregs.cs.db else "protected16"


def instruction_pointer(regs, sregs) -> int:
    """The linear address of the next instruction."""
    return (sregs.cs.base + regs.rip) & 0xFFFFFFFFFFFFFFFF


def format_registers(regs, sregs) -> list[str]:
    lines = [f"mode {cpu_mode(sregs)}   rip {regs.rip:#018x}   rflags {regs.rflags:#010x}   "
             f"linear pc {instruction_pointer(regs, sregs):#x}"]
    values = [f"{name:>3} {getattr(regs, name):#018x}" for name in GENERAL]
    for i in range(0, len(values), 4):
        lines.append("   ".join(values[i:i + 4]))
    for name in SEGMENTS:
        seg = getattr(sregs, name)
        lines.append(f"{name:>3} sel {seg.selector:#06x} base {seg.base:#018x} limit {seg.limit:#010x} "
                     f"type {seg.type:#x} p{seg.present} dpl{seg.dpl} db{seg.db} s{seg.s} "
                     f"l{seg.l} g{seg.g}{' unusable' if seg.unusable else ''}")
    lines.append(f"gdt base {sregs.gdt.base:#x} limit {sregs.gdt.limit:#x}   "
                 f"idt base {sregs.idt.base:#x} limit {sregs.idt.limit:#x}")
    lines.append(f"cr0 {sregs.cr0:#010x}  cr2 {sregs.cr2:#x}  cr3 {sregs.cr3:#x}  "
                 f"cr4 {sregs.cr4:#x}  efer {sregs.efer:#x}  apic_base {sregs.apic_base:#x}")
    return lines


_SHORT_MODE = {"real": "real", "protected16": "pm16", "protected32": "pm32", "long": "long",
               "compat": "compat"}


def where(regs, sregs, symbols=None) -> str:
    """'real f000:fff0 reset': mode, CS:IP (or CS:RIP in long mode), and the symbol if known."""
    mode = cpu_mode(sregs)
    width = 16 if mode == "long" else 8 if mode != "real" else 4
    text = f"{_SHORT_MODE[mode]} {sregs.cs.selector:04x}:{regs.rip:0{width}x}"
    name = symbols.name(instruction_pointer(regs, sregs)) if symbols else ""
    return f"{text} {name}" if name else text


def code_listing(vcpu, memory, regs, sregs, symbols=None, count: int = 6) -> list[str]:
    """The instructions from the instruction pointer on, decoded in the vCPU's mode."""
    from ..memory import GuestMemoryError
    from ..x86 import MAX_INSTRUCTION
    from .disasm import DisassemblerUnavailable, code_bits, disassemble
    from .gdb.linear import LinearMemory
    pc = instruction_pointer(regs, sregs)
    bits = code_bits(sregs)
    try:
        code = LinearMemory(vcpu, memory).read(pc, count * MAX_INSTRUCTION, sregs)
    except (GuestMemoryError, OSError) as exc:
        return [f"code: cannot read the instruction bytes: {exc}"]
    try:
        instructions = disassemble(code, regs.rip, bits, count)
    except DisassemblerUnavailable as exc:
        return [f"code: {code[:MAX_INSTRUCTION].hex(' ')} ({exc})"]
    if not instructions:
        return [f"code: {code[:MAX_INSTRUCTION].hex(' ')} (does not decode as {bits}-bit code)"]
    lines = [f"code ({bits}-bit), from the instruction pointer:"]
    width = 16 if bits == 64 else 8 if bits == 32 else 4
    for i, insn in enumerate(instructions):
        name = symbols.name(pc + insn.address - regs.rip) if symbols else ""
        lines.append(f"  {'=>' if i == 0 else '  '} {sregs.cs.selector:04x}:{insn.address:0{width}x}  "
                     f"{insn.raw.hex(' '):<30} {insn.text}{f'   <{name}>' if name else ''}")
    return lines


MP_STATES = {abi.KVM_MP_STATE_RUNNABLE: "runnable", abi.KVM_MP_STATE_UNINITIALIZED: "waiting for INIT",
             abi.KVM_MP_STATE_INIT_RECEIVED: "waiting for SIPI", abi.KVM_MP_STATE_HALTED: "halted"}


def crash_report(runner, outcome, message: str) -> str:
    """The report of the run `runner`'s vCPU ended: its registers, code and last exits first,
    then (with several vCPUs) each other vCPU's state and registers. Called once no vCPU is in
    KVM_RUN, so any thread may read every vCPU."""
    cpus = runner.leader.cpus
    lines = [f"tinyvmm: {outcome.description}: {message}"]
    if len(cpus) > 1:
        lines.append(f"vCPU {runner.index} (APIC ID {runner.index}) ended the run:")
    lines += _vcpu_report(runner)
    never_ran = []
    for other in cpus:
        if other is runner:
            continue
        if _mp_state(other) == abi.KVM_MP_STATE_UNINITIALIZED:
            never_ran.append(other.index)       # never started: its reset registers say nothing
            continue
        lines.append("")
        lines += _vcpu_state(other, code=False)
    if never_ran:
        lines += ["", f"{_vcpu_list(never_ran)}: waiting for INIT, never ran"]
    for name, tail in runner.board.console_tails().items():
        if tail:
            text = tail.decode("latin-1").rstrip("\n").splitlines()[-5:]
            lines.append(f"last {name} output:")
            lines += ["  | " + line for line in text]
    return "\n".join(lines)


def _mp_state(runner) -> int | None:
    try:
        return runner.vcpu.get_mp_state()
    except OSError:
        return None


def _vcpu_list(indexes: list[int]) -> str:
    """"vCPU 3" or "vCPUs 1, 3-254": indexes as runs."""
    runs: list[list[int]] = []
    for index in indexes:
        if runs and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"vCPU{'s' if len(indexes) > 1 else ''} {text}"


def _vcpu_report(runner) -> list[str]:
    """One vCPU's registers and code, its exits and the last of them."""
    from ..outcome import ExitRecord
    lines = _vcpu_state(runner, code=True, title=False)
    counts = ", ".join(f"{abi.EXIT_REASON_NAMES.get(r, r)} {n}"
                       for r, n in sorted(enumerate(runner.exit_counts), key=lambda kv: -kv[1]) if n)
    lines.append(f"exits: {counts or 'none'}")
    if runner.history:
        lines.append(f"last {len(runner.history)} exits (oldest first):")
        lines += ["  " + ExitRecord(*record).describe() for record in runner.history]
    return lines


def _vcpu_state(runner, code: bool, title: bool = True) -> list[str]:
    """A vCPU's registers (with `title`, a line naming it and its KVM mp_state first)."""
    vcpu, lines = runner.vcpu, []
    try:
        if title:
            state = vcpu.get_mp_state()
            lines.append(f"vCPU {runner.index}: {MP_STATES.get(state, f'mp_state {state}')}, "
                         f"{sum(runner.exit_counts)} exits")
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    except OSError as exc:
        return lines + [f"(registers unavailable: {exc})"]
    lines += format_registers(regs, sregs)
    symbols = runner.leader.symbols
    lines.append(f"where: {where(regs, sregs, symbols)}")
    if code:
        lines += code_listing(vcpu, runner.board.memory, regs, sregs, symbols)
    return lines


def run_summary(result, outputs: dict[str, bytes], tail: int) -> str:
    """A run's outcome and message (`result` a RunResult, or None: not run yet), the
    instructions completed for the host's KVM, its crash report, and the last `tail` bytes of
    each console output in `outputs` (name: bytes): Machine.summary()."""
    tail = max(tail, 0)
    lines = ["not run yet" if result is None else
             f"last run: {result.outcome.description} ({result.outcome.name}): {result.message}"]
    if result is not None and result.completions:
        lines.append("completed for the host's KVM: " + ", ".join(
            f"{name} {count}" for name, count in sorted(result.completions.items(),
                                                        key=lambda kv: -kv[1])))
    if result is not None and result.report:
        lines += ["", result.report]
    for name, output in outputs.items():
        shown = output[len(output) - min(tail, len(output)):]
        text = shown.decode("utf-8", "replace")
        lines += ["", f"{name}, last {len(shown)} of {len(output)} bytes:" if output
                  else f"{name}: nothing written"]
        if text:
            lines.append(text.rstrip("\n"))
    return "\n".join(lines)
