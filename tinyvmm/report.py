"""Readable reports of a guest that crashed or stopped answering: why, where, and what led there."""

from .kvm import abi

CR0_PE = 1 << 0
CR0_PG = 1 << 31
EFER_LMA = 1 << 10
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


def crash_report(runner, outcome, message: str) -> str:
    from .runner import ExitRecord
    machine = runner.machine
    lines = [f"tinyvmm: {outcome.description}: {message}"]
    try:
        regs, sregs = machine.vcpu.get_regs(), machine.vcpu.get_sregs()
    except OSError as exc:
        lines.append(f"(registers unavailable: {exc})")
    else:
        lines += format_registers(regs, sregs)
        extra = machine.describe_location(regs, sregs) if hasattr(machine, "describe_location") else []
        lines += extra
    counts = ", ".join(f"{abi.EXIT_REASON_NAMES.get(r, r)} {n}"
                       for r, n in sorted(enumerate(runner.exit_counts), key=lambda kv: -kv[1]) if n)
    lines.append(f"exits: {counts or 'none'}")
    if runner.history:
        lines.append(f"last {len(runner.history)} exits (oldest first):")
        lines += ["  " + ExitRecord(*record).describe() for record in runner.history]
    for name, tail in machine.console_tails().items():
        if tail:
            text = tail.decode("latin-1").rstrip("\n").splitlines()[-5:]
            lines.append(f"last {name} output:")
            lines += ["  | " + line for line in text]
    return "\n".join(lines)
