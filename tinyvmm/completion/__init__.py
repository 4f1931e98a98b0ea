"""Completion of what the host's KVM cannot emulate.

A KVM that runs privileged guest code through its instruction emulator (kvm_pvm) ends a
run with KVM_EXIT_INTERNAL_ERROR (suberror EMULATION) at each instruction that emulator
lacks: clac/stac, int3, popcnt, x87... The Completer finishes such an instruction in the
VMM and lets the guest go on: the frequent and special ones on fast paths
(tinyvmm.completion.fastpaths), anything else in a software CPU sharing guest RAM
(tinyvmm.completion.softcpu, unicorn, imported at its first use). What neither can do
ends the run as before, naming the instruction. On hosts with hardware virtualization
these exits never come and nothing here runs.
"""

import time

from ..kvm import abi
from ..outcome import Outcome
from ..x86 import MAX_INSTRUCTION
from . import fastpaths
from .cpu import GuestCpu, Refused

EMULATION = 1                       # KVM_INTERNAL_ERROR_EMULATION
INSTRUCTION_BYTES = 1               # data[0] flag: the instruction's bytes follow


def exit_instruction(internal) -> bytes | None:
    """The instruction bytes KVM put in kvm_run.internal (flags in data[0], then a length
    byte and up to 15 bytes from RIP), or None when it gave none."""
    if internal.ndata < 2 or not internal.data[0] & INSTRUCTION_BYTES:
        return None
    raw = b"".join(internal.data[i].to_bytes(8, "little") for i in range(1, min(internal.ndata, 16)))
    size = min(raw[0], MAX_INSTRUCTION, len(raw) - 1)
    return raw[1:1 + size] if size else None


def describe(code: bytes, address: int, sregs) -> str:
    """'`mnemonic operands` (bytes)' of the first instruction of `code` in the vCPU's mode
    (`sregs`), or its first bytes when it does not decode."""
    from ..debug.disasm import DisassemblerUnavailable, code_bits, disassemble
    try:
        found = disassemble(code, address, code_bits(sregs), count=1)
    except DisassemblerUnavailable:
        found = []
    if not found:
        return f"bytes {code[:8].hex(' ')}"
    return f"`{found[0].text}` ({found[0].raw.hex(' ')})"


class CompletionStats:
    """How many completions of each instruction, and the time they took (ns)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.ns: dict[str, int] = {}

    def add(self, name: str, ns: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        self.ns[name] = self.ns.get(name, 0) + ns

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def total_ns(self) -> int:
        return sum(self.ns.values())

    def table(self) -> str:
        lines = [f"{'completed':<18}{'count':>10}{'time':>13}{'each':>12}"]
        for name, count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            ns = self.ns[name]
            lines.append(f"{name:<18}{count:>10}{ns / 1e9:>11.6f} s{ns / count / 1e3:>9.1f} us")
        return "\n".join(lines)


class Completer:
    """Completes emulation failures of one vCPU. `slots` is the VM's tinyvmm.kvm.slots
    SlotMap (the software CPU maps guest memory as KVM does); `trace(text)`, if given,
    hears of each completion."""

    def __init__(self, vcpu, memory, slots=None, trace=None):
        self.vcpu = vcpu
        self.memory = memory
        self.slots = slots
        self.trace = trace
        self.stats = CompletionStats()
        self._softcpu = None

    def complete(self, internal) -> tuple[Outcome, str] | None:
        """Handle one KVM_EXIT_INTERNAL_ERROR: None when the instruction was completed and the
        guest may go on, else how the run ends."""
        if internal.suberror != EMULATION:
            return _failure(internal)
        started = time.perf_counter_ns()
        cpu = GuestCpu(self.vcpu, self.memory)
        pc = cpu.pc
        code = None
        try:
            code = exit_instruction(internal) or cpu.read_linear(pc, MAX_INSTRUCTION)
            if not code:
                raise Refused(f"its bytes at {pc:#x} are not in guest memory")
            name = fastpaths.complete(cpu, code)
            if name is None:
                name = self.softcpu.execute(cpu, code)
        except Refused as exc:
            where = describe(code, pc, cpu.sregs) if code else "an instruction"
            return Outcome.CRASH, (f"KVM cannot emulate {where} at {pc:#x}, "
                                   f"and it could not be completed: {exc}")
        self.stats.add(name, time.perf_counter_ns() - started)
        if self.trace is not None:
            resume = (f"with {cpu.delivered}" if cpu.delivered else
                      f"at {cpu.sregs.cs.base + cpu.regs.rip:#x}")
            self.trace(f"{name}: exit at {pc:#x}, the guest goes on {resume}")
        return None

    @property
    def softcpu(self):
        if self._softcpu is None:
            try:
                from .softcpu import SoftCpu
            except ImportError as exc:
                raise Refused(f"the software CPU needs the unicorn package ({exc}): "
                              "pip install unicorn") from None
            self._softcpu = SoftCpu(self.slots)
        return self._softcpu


def _failure(internal) -> tuple[Outcome, str]:
    sub = abi.KVM_INTERNAL_ERROR_NAMES.get(internal.suberror, str(internal.suberror))
    data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
    return Outcome.CRASH, f"KVM internal error {sub}{f' data {data}' if data else ''}"
