"""What the gdb stub does to the vCPU: registers, linear memory, breakpoints, stepping, stop reasons.

Addresses from gdb are linear addresses: CS base + IP in real mode (so
F000:FFF0 at reset is 0xFFFFFFF0, and 0xFFFF0 once the firmware has jumped
low), paged through the guest's tables when CR0.PG is set.
"""

from ...kvm import abi
from ...kvm.debugregs import (
    BREAK_HARDWARE,
    BREAK_SOFTWARE,
    DEBUG_SLOTS,
    WATCH_ACCESS,
    WATCH_READ,
    WATCH_WRITE,
    DebugRegisterError,
    DebugRegisters,
)
from ...memory import GuestMemoryError
from ..report import format_registers
from . import tdesc
from .events import SIGINT, SIGTRAP, StopEvent, TargetError
from .linear import LinearMemory, linear_pc
from .registers import layout_for, read_registers, write_registers

BP_VECTOR = 3                    # #BP, from int3
INT3 = 0xCC


# The reply QEMU's stub gives to a memory access it cannot serve: "E14".
MEMORY_ERROR = 0x14

class KvmTarget:
    """The stub's view of the vCPUs and their memory. Breakpoints, steps and stops are vCPU 0's
    (`vcpu`); registers and `monitor regs`/`where` are the selected thread's (gdb's Hg), one
    gdb thread per vCPU, numbered from 1."""

    def __init__(self, vcpu, memory, software_breakpoints: bool = False, data_breakpoints: bool = True,
                 notice=None, symbols=None, vcpus=None):
        self.vcpu = vcpu
        self.vcpus = list(vcpus) if vcpus else [vcpu]
        self.selected = vcpu                # whose registers gdb reads and writes
        self.linear = LinearMemory(vcpu, memory)
        self.software_breakpoints = software_breakpoints    # KVM traps int3 for us
        self.data_breakpoints = data_breakpoints            # KVM reports DR0-3 data hits
        self.notice = notice or (lambda text: None)
        self.symbols = symbols
        self.layout = tdesc.I386
        self.hardware = DebugRegisters()
        self.int3: dict[int, int] = {}       # linear address -> the byte the int3 replaced
        self.stepping = False
        self._step_over = False
        self._suspended_int3: int | None = None
        self._told_fallback = False
        self._told_segmented = False

    # --- registers ----------------------------------------------------------
    def choose_layout(self) -> tdesc.Layout:
        self.layout = layout_for(self.vcpu.get_sregs())
        return self.layout

    def read_registers(self) -> dict[str, int | None]:
        return read_registers(self.selected, self.layout)

    def write_registers(self, values: dict[str, int]) -> None:
        """Apply the registers whose value differs from the vCPU's (a G packet sends them all)."""
        write_registers(self.selected, self.layout, values)

    # --- threads: one per vCPU ----------------------------------------------
    def threads(self) -> list[int]:
        return list(range(1, len(self.vcpus) + 1))

    def select_thread(self, thread: int) -> bool:
        """gdb's Hg: thread 0 (any) is vCPU 0; False for a thread that does not exist."""
        if thread == 0:
            thread = 1
        if not 1 <= thread <= len(self.vcpus):
            return False
        self.selected = self.vcpus[thread - 1]
        return True

    def thread_info(self, thread: int) -> str:
        index = thread - 1
        return f"vCPU {index}{' (BSP)' if index == 0 else ''}, APIC ID {index}"

    # --- memory -------------------------------------------------------------
    def read_memory(self, address: int, length: int) -> bytes:
        try:
            data = bytearray(self.linear.read(address, length))
        except GuestMemoryError as exc:
            raise TargetError(str(exc), errno=MEMORY_ERROR) from None
        for where, original in self.int3.items():     # gdb must not see our int3s
            if address <= where < address + len(data):
                data[where - address] = original
        return bytes(data)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write; bytes under our int3s become what the int3 will restore instead."""
        patched = bytearray(data)
        covered = {where: patched[where - address] for where in self.int3
                   if address <= where < address + len(patched)}
        for where in covered:
            patched[where - address] = INT3
        try:
            self.linear.write(address, bytes(patched))
        except GuestMemoryError as exc:
            raise TargetError(str(exc), errno=MEMORY_ERROR) from None
        self.int3.update(covered)

    # --- breakpoints --------------------------------------------------------
    def add_breakpoint(self, kind: int, address: int, length: int) -> None:
        if kind == BREAK_SOFTWARE:
            if address in self.int3:
                return
            if self.software_breakpoints:
                try:
                    original = self.linear.read(address, 1)[0]
                    self.linear.write(address, bytes((INT3,)))
                except GuestMemoryError:
                    self._fallback(f"{address:#x} is not in guest RAM")
                else:
                    self.int3[address] = original
                    return
            else:
                self._fallback("this host's KVM does not trap int3 for the debugger "
                               "(KVM_GUESTDBG_USE_SW_BP)")
        if kind > WATCH_ACCESS:
            raise TargetError(f"unknown breakpoint type {kind}")
        if kind >= WATCH_WRITE and not self.data_breakpoints:
            self.notice("this host's KVM does not report data breakpoints, so hardware watchpoints "
                        "never fire; 'set can-use-hw-watchpoints 0' makes gdb single-step instead")
            raise TargetError("no hardware watchpoints on this host", errno=95)
        try:
            self.hardware.add(kind, address, length)
        except DebugRegisterError as exc:
            raise TargetError(str(exc), errno=exc.errno) from None

    def _fallback(self, why: str) -> None:
        if not self._told_fallback:
            self._told_fallback = True
            self.notice(f"software breakpoints become hardware breakpoints: {why}; "
                        f"at most {DEBUG_SLOTS} breakpoints and watchpoints together")

    def remove_breakpoint(self, kind: int, address: int, length: int) -> None:
        if kind == BREAK_SOFTWARE and address in self.int3:
            original = self.int3.pop(address)
            if self._suspended_int3 == address:
                self._suspended_int3 = None
            else:
                try:
                    self.linear.write(address, bytes((original,)))
                except GuestMemoryError:
                    pass                    # the page went away; nothing left to restore
            return
        self.hardware.remove(kind, address, length)

    # --- running ------------------------------------------------------------
    def pc(self) -> int:
        return linear_pc(self.vcpu.get_regs(), self.vcpu.get_sregs())

    def resume(self, step: bool) -> None:
        """Program guest debugging for a continue or a single step.

        Instruction breakpoints fire before the instruction runs, and this
        KVM ignores RFLAGS.RF, so leaving a breakpoint needs one step with
        it taken out: continuing from a breakpoint steps first, silently.
        """
        pc = self.pc()
        at_breakpoint = self.hardware.executes_at(pc) or pc in self.int3
        self._step_over = at_breakpoint and not step
        self.stepping = step or self._step_over
        if self.stepping and pc in self.int3:
            self.linear.write(pc, bytes((self.int3[pc],)))
            self._suspended_int3 = pc
        self._program()

    def _program(self) -> None:
        control = 0
        if self.hardware:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP
        if self.int3:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_SW_BP
        if self.stepping:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP
        self.vcpu.set_guest_debug(control, self.hardware.debugreg(executes=not self.stepping))

    def _end_step(self) -> bool:
        """Put back what the step took out; True when the step was ours (continue now)."""
        self.stepping = False
        if self._suspended_int3 is not None:
            address, self._suspended_int3 = self._suspended_int3, None
            if address in self.int3:
                self.linear.write(address, bytes((INT3,)))
        ours, self._step_over = self._step_over, False
        return ours

    def debug_exit(self, exception: int, dr6: int) -> StopEvent | None:
        """Why the vCPU stopped (KVM_EXIT_DEBUG), or None when it should simply go on."""
        watch = self.hardware.hit(dr6) if exception != BP_VECTOR else None
        if self.stepping:
            if watch and watch[0] in (BREAK_SOFTWARE, BREAK_HARDWARE):
                watch = None                # instruction breakpoints are off while stepping
            ours = self._end_step()
            self._program()
            if ours and watch is None:
                return None                 # stepped off a breakpoint: on with the continue
        if exception == BP_VECTOR:
            if self.pc() in self.int3:
                return self._breakpoint_stop("swbreak")
            return StopEvent(SIGTRAP)       # the guest's own int3
        if watch is not None:
            kind, address, _ = watch
            if kind in (BREAK_SOFTWARE, BREAK_HARDWARE):
                return self._breakpoint_stop("swbreak" if kind == BREAK_SOFTWARE else "hwbreak")
            reason = {WATCH_WRITE: "watch", WATCH_READ: "rwatch", WATCH_ACCESS: "awatch"}[kind]
            return StopEvent(SIGTRAP, reason, address)
        return StopEvent(SIGTRAP)

    def _breakpoint_stop(self, reason: str) -> StopEvent:
        """A breakpoint stop, named as such only where gdb can see the breakpoint at its pc.

        gdb's pc is EIP/RIP, breakpoints are linear: with a non-zero CS base
        (real mode outside segment 0) they differ, and gdb would take a stop
        "at a breakpoint" that is not at its pc for a stale one and resume.
        Without the reason gdb reports a plain SIGTRAP and stays stopped.
        """
        sregs = self.vcpu.get_sregs()
        if sregs.cs.base == 0:
            return StopEvent(SIGTRAP, reason)
        if not self._told_segmented:
            self._told_segmented = True
            self.notice("a breakpoint hit with CS base != 0 (real mode) shows in gdb as SIGTRAP: "
                        "gdb's $pc is the IP, breakpoints are linear ($cs*16+$eip); "
                        "'monitor where' names the spot")
        return StopEvent(SIGTRAP)

    def step_cut_short(self) -> StopEvent | None:
        """The step ended at an I/O exit (the vCPU was kicked right after it completed)."""
        if not self.stepping:
            return None
        ours = self._end_step()
        self._program()
        return None if ours else StopEvent(SIGTRAP)

    def interrupted(self) -> StopEvent:
        if self.stepping:
            self._end_step()
            self._program()
        return StopEvent(SIGINT)

    def detach(self) -> None:
        """Take every breakpoint out and stop debugging the vCPU."""
        for address in list(self.int3):
            self.remove_breakpoint(BREAK_SOFTWARE, address, 1)
        self.hardware = DebugRegisters()
        self.stepping = self._step_over = False
        self.vcpu.set_guest_debug(0)

    # --- monitor commands -----------------------------------------------------
    def monitor(self, command: str) -> str:
        from ..report import where
        words = command.split()
        if not words or words[0] == "help":
            return ("tinyvmm monitor commands:\n"
                    "  regs      all registers, descriptor caches and control registers\n"
                    "  where     CPU mode, CS:IP or RIP, linear address and symbol\n"
                    "  symbols   the add-symbol-file commands for the --symbols files\n"
                    "  breaks    the hardware debug register slots in use\n")
        regs, sregs = self.selected.get_regs(), self.selected.get_sregs()
        if words[0] == "regs":
            return "\n".join(format_registers(regs, sregs)) + "\n"
        if words[0] == "where":
            return f"{where(regs, sregs, self.symbols)} (linear {linear_pc(regs, sregs):#x})\n"
        if words[0] == "symbols":
            if not self.symbols:
                return "no symbol files (use --symbols FILE)\n"
            return "".join(line + "\n" for line in self.symbols.gdb_commands())
        if words[0] == "breaks":
            lines = [f"slot {n}: " + ("free" if slot is None else
                                      f"type Z{slot[0]} at {slot[1]:#x} length {slot[2]}")
                     for n, slot in enumerate(self.hardware.slots)]
            lines += [f"int3 at {address:#x}" for address in self.int3]
            return "\n".join(lines) + "\n"
        raise TargetError(f"unknown monitor command {words[0]!r}; try 'monitor help'")
