"""--trace steps: single-step the vCPU and log each instruction before it runs.

One trace line per instruction: the mode, CS:IP (CS:EIP, CS:RIP), the
instruction's bytes, its disassembly in the vCPU's mode (16, 32 or 64-bit)
and the symbol covering it. After the limit, guest debugging is switched off
and the guest runs on at full speed; one line says so.

Stepping starts at the first instruction, or later: at the first execution of
a linear address (an execution breakpoint in DR0 until then), or right after
the first write of a milestone value to port 0xf4 or 0xf5. The Runner calls
after_access() after each device access and on_interrupt() when KVM_RUN
returned EINTR; KVM_EXIT_DEBUG comes through the runner's guest_debug, which
the tracer holds from its start to its limit.

An I/O instruction's step ends at its exit: the next KVM_RUN completes the
access and returns at once (immediate_exit), because an emulating KVM
(kvm_pvm) loses the step trap of an `out`; it keeps that of an `in` and
reports it as a debug exit instead of returning EINTR. Either way is one step.
"""

from ..kvm import abi
from ..kvm.debugregs import USE_HARDWARE_BREAKPOINTS, execution_breakpoint
from ..memory import GuestMemoryError
from ..x86 import MAX_INSTRUCTION
from .disasm import DisassemblerUnavailable, code_bits, disassemble
from .gdb.linear import LinearMemory
from .report import instruction_pointer, where
from .session import DebugSetupError

TYPE_CHECKING = False           # True for type checkers only: no import cycle at run time
if TYPE_CHECKING:
    from ..board import Board

STEP = abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP
# Decoded instructions by (bits, IP, bytes): firmware loops over the same few, and capstone
# takes about 10 us an instruction, a third of a step here. Emptied when full.
DECODED_CACHE_SIZE = 1 << 16


class StepError(DebugSetupError):
    """A start symbol that no symbol file names (a usage error, as bad debugging options are)."""


class StepTracer:
    """Logs `spec.limit` instructions (a trace.StepSpec) of `board`'s vCPU, run by `runner`,
    through `tracer` (a trace.Tracer).

    Holds the vCPU's debug registers (runner.guest_debug, as `holder`) until the limit:
    ConfigError when something else holds them (--gdb, the kernel-entry breakpoint of
    boot.marks). At the limit the guest runs on at full speed, or `on_limit()` is called
    (Machine.step stops the run there). `symbols` (a SymbolTable, or None) names the
    instructions and resolves `spec.symbol`; StepError if it cannot.
    """

    def __init__(self, board: "Board", runner, tracer, spec, symbols=None, on_limit=None,
                 holder: str = "--trace steps"):
        self.vcpu = board.vcpu
        self.on_limit = on_limit        # called at the limit instead of running on
        self.runner = runner
        self.tracer = tracer
        self.limit = spec.limit
        self.symbols = symbols
        self.linear = LinearMemory(board.vcpu, board.memory)
        self.count = 0
        self.stepping = False
        self._io_pending = False        # an I/O step waits for KVM to complete the access
        self._decoded: dict[tuple, tuple[int, str]] = {}
        self._no_disassembler = ""
        self.address = spec.address
        if spec.symbol is not None:
            self.address = symbols.address_of(spec.symbol) if symbols else None
            if self.address is None:
                raise StepError(f"--trace steps@{spec.symbol}: no symbol file names {spec.symbol}"
                                + ("" if symbols else " (there are none; give --symbols ELF)"))
        self.milestone = spec.milestone
        runner.guest_debug.claim(holder, self.on_debug_exit)
        runner.stepper = self
        if self.address is not None:
            name = symbols.name(self.address) if symbols else ""
            self._note(f"waiting for the first instruction at {self.address:#x}"
                       + (f" <{name}>" if name else ""))
            runner.guest_debug.set(USE_HARDWARE_BREAKPOINTS, execution_breakpoint(self.address))
        elif self.milestone is not None:
            self._note(f"waiting for milestone {self.milestone} on port 0xf4 or 0xf5")
            board.milestone_listeners.append(self._on_milestone)
        else:
            self._begin()
            self._stopped()

    # --- the run loop's hooks ---------------------------------------------------
    def on_debug_exit(self, debug) -> None:
        """KVM_EXIT_DEBUG (kvm_run.debug): a step ended, or the start address was reached.
        Never ends the run."""
        if self.stepping:
            if self._io_pending:
                self._end_io_step()
            self._stopped()
        elif self.address is not None and debug.pc == self.address:
            self._begin()
            self._stopped()

    def after_access(self) -> None:
        """A device access: KVM completes the instruction at the next KVM_RUN, which
        returns straight after it."""
        if self.stepping:
            self._io_pending = True
            self.vcpu.run_page.immediate_exit = 1

    def on_interrupt(self) -> None:
        """KVM_RUN returned EINTR (the loop has cleared immediate_exit): the end of an
        I/O step, or a signal that ran no instruction."""
        if self._io_pending:
            self._io_pending = False
            self._stopped()

    # --- stepping -----------------------------------------------------------------
    def _on_milestone(self, milestone) -> None:
        if self.milestone is not None and milestone.value == self.milestone:
            self.milestone = None
            self._begin()
            self.after_access()         # stepping starts after the `out` that wrote it

    def _begin(self) -> None:
        self.stepping = True
        self.runner.guest_debug.set(STEP)

    def _end_io_step(self) -> None:
        """The step trap came as a debug exit: immediate_exit is still set, and must not
        stay set, unless a signal set it too (cleared first, so none is lost)."""
        self._io_pending = False
        run_page = self.vcpu.run_page
        run_page.immediate_exit = 0
        if self.runner.signalled:
            run_page.immediate_exit = 1

    def _stopped(self) -> None:
        """The vCPU stands before its next instruction: log it, and stop at the limit."""
        self.tracer.step(self._describe(self.vcpu.get_regs(), self.vcpu.get_sregs()))
        self.count += 1
        if self.count >= self.limit:
            self.stepping = False
            self.runner.guest_debug.release()
            if self.on_limit is not None:
                self.on_limit()
                return
            plural = "s" if self.count > 1 else ""
            self._note(f"{self.count} instruction{plural} traced; the guest runs on at full speed")

    def _describe(self, regs, sregs) -> str:
        """'real f000:fff0 ea 00 00 00 f0  ljmp 0xf000:0  <reset_vector>' (padded to columns)."""
        pc = instruction_pointer(regs, sregs)
        bits = code_bits(sregs)
        name = self.symbols.name(pc) if self.symbols else ""
        symbol = f"  <{name}>" if name else ""
        try:
            code = self.linear.read(pc, MAX_INSTRUCTION, sregs)
        except (GuestMemoryError, OSError) as exc:
            return f"{where(regs, sregs)} (cannot read the instruction: {exc}){symbol}"
        key = (bits, regs.rip, code)
        decoded = self._decoded.get(key)
        if decoded is None:
            decoded = self._decode(code, regs.rip, bits)
            if len(self._decoded) >= DECODED_CACHE_SIZE:
                self._decoded.clear()
            self._decoded[key] = decoded
        length, text = decoded
        return f"{where(regs, sregs)} {code[:length].hex(' '):<20} {text:<32}{symbol}".rstrip()

    def _decode(self, code: bytes, ip: int, bits: int) -> tuple[int, str]:
        """(length, text) of the instruction at the start of `code`."""
        if self._no_disassembler:
            return MAX_INSTRUCTION, self._no_disassembler
        try:
            found = disassemble(code, ip, bits, count=1)
        except DisassemblerUnavailable as exc:
            self._no_disassembler = f"({exc})"
            return MAX_INSTRUCTION, self._no_disassembler
        if not found:
            return MAX_INSTRUCTION, f"(does not decode as {bits}-bit code)"
        return len(found[0].raw), found[0].text

    def _note(self, text: str) -> None:
        self.tracer.step(f"steps: {text}")
