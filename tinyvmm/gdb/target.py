"""What the gdb stub does to the vCPU: registers, linear memory, breakpoints, stepping, stop reasons.

Addresses from gdb are linear addresses: CS base + IP in real mode (so
F000:FFF0 at reset is 0xFFFF0 once the firmware has jumped low, 0xFFFFFFF0
before), paged through the guest's tables when CR0.PG is set.
"""

from dataclasses import dataclass

from ..kvm import abi
from ..memory import GuestMemoryError
from ..report import format_registers
from . import tdesc

CR0_PE = 1 << 0
CR0_PG = 1 << 31
EFER_LMA = 1 << 10
RFLAGS_VM = 1 << 17
PAGE_SIZE = 4096

# gdb's Z/z packet types
BREAK_SOFTWARE, BREAK_HARDWARE, WATCH_WRITE, WATCH_READ, WATCH_ACCESS = range(5)

# DR7 (Intel SDM vol. 3, 18.2.4): enable bit 2n per slot, then R/W and LEN nibbles from bit 16.
DR7_RESERVED_ONE = 1 << 10
DR7_RW_EXECUTE, DR7_RW_WRITE, DR7_RW_READ_WRITE = 0, 1, 3
DR7_LEN = {1: 0b00, 2: 0b01, 8: 0b10, 4: 0b11}
DR6_BS = 1 << 14                 # single step
DEBUG_SLOTS = 4
BP_VECTOR = 3                    # #BP, from int3
INT3 = 0xCC

SIGINT = 2
SIGTRAP = 5


class TargetError(Exception):
    """A request the target refuses; `errno` goes back to gdb as Exx."""

    def __init__(self, message: str, errno: int = 22):
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class StopEvent:
    signal: int = SIGTRAP
    reason: str = ""              # "", "swbreak", "hwbreak", "watch", "rwatch" or "awatch"
    address: int = 0              # the data address, for watchpoints


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
            raise TargetError(f"a hardware watchpoint covers 1, 2, 4 or 8 bytes, not {length}")
        elif address % length:
            raise TargetError(f"a {length}-byte watchpoint needs an address aligned to {length}")
        if (kind, address, length) in self.slots:
            return self.slots.index((kind, address, length))
        if None not in self.slots:
            raise TargetError(f"all {DEBUG_SLOTS} hardware breakpoint slots are in use", errno=28)
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


class LinearMemory:
    """Guest memory seen through the vCPU: linear addresses, paged when the guest pages."""

    def __init__(self, vcpu, memory):
        self.vcpu = vcpu
        self.memory = memory

    def physical(self, linear: int, sregs) -> int | None:
        if sregs.cr0 & CR0_PG:
            return self.vcpu.translate(linear)
        return linear & 0xFFFFFFFF

    def read(self, linear: int, size: int, sregs=None) -> bytes:
        """Up to size bytes: stops at the first page that is not mapped to guest memory.

        Raises GuestMemoryError when not even the first byte can be read.
        """
        sregs = sregs or self.vcpu.get_sregs()
        out = bytearray()
        while len(out) < size:
            address = linear + len(out)
            chunk = min(size - len(out), PAGE_SIZE - address % PAGE_SIZE)
            physical = self.physical(address, sregs)
            if physical is None or not self.memory.contains(physical, chunk):
                if out:
                    break
                raise GuestMemoryError(f"linear address {address:#x} is not mapped to guest memory")
            out += self.memory.read(physical, chunk)
        return bytes(out)

    def write(self, linear: int, data: bytes, sregs=None) -> None:
        sregs = sregs or self.vcpu.get_sregs()
        done = 0
        pieces = []
        while done < len(data):               # check every page before writing any
            address = linear + done
            chunk = min(len(data) - done, PAGE_SIZE - address % PAGE_SIZE)
            physical = self.physical(address, sregs)
            if physical is None or not self.memory.contains(physical, chunk, writable=True):
                raise GuestMemoryError(f"linear address {address:#x} is not writable guest RAM")
            pieces.append((physical, data[done:done + chunk]))
            done += chunk
        for physical, piece in pieces:
            self.memory.write(physical, piece)


def linear_pc(regs, sregs) -> int:
    pc = sregs.cs.base + regs.rip
    return pc & (0xFFFFFFFFFFFFFFFF if sregs.efer & EFER_LMA else 0xFFFFFFFF)


_I386_GPRS = {"eax": "rax", "ecx": "rcx", "edx": "rdx", "ebx": "rbx",
              "esp": "rsp", "ebp": "rbp", "esi": "rsi", "edi": "rdi", "eip": "rip"}
_AMD64_GPRS = {name: name for name in
               ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip")
               + tuple(f"r{i}" for i in range(8, 16))}
_CONTROL = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")
_FPU_SCALARS = {"fctrl": "fcw", "fstat": "fsw", "fioff": "last_ip", "fooff": "last_dp", "fop": "last_opcode"}


def _x87_tag(value: int) -> int:
    """The full tag of one non-empty x87 register: 0 valid, 1 zero, 2 special."""
    exponent, mantissa = (value >> 64) & 0x7FFF, value & ((1 << 64) - 1)
    if exponent == 0x7FFF:
        return 2
    if exponent == 0:
        return 1 if mantissa == 0 else 2
    return 0 if mantissa >> 63 else 2


def full_tag_word(fsw: int, ftwx: int, fpr: list[int]) -> int:
    """The 16-bit x87 tag word from FXSAVE's abridged one (a bit per physical register)."""
    top = (fsw >> 11) & 7
    word = 0
    for physical in range(8):
        tag = 3 if not ftwx & (1 << physical) else _x87_tag(fpr[(physical - top) & 7])
        word |= tag << (2 * physical)
    return word


def abridged_tag(tag_word: int) -> int:
    return sum(1 << i for i in range(8) if (tag_word >> (2 * i)) & 3 != 3)


class KvmTarget:
    """The stub's view of one vCPU and its memory."""

    def __init__(self, vcpu, memory, software_breakpoints: bool = False, data_breakpoints: bool = True,
                 notice=None, symbols=None):
        self.vcpu = vcpu
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

    # --- layout -------------------------------------------------------------
    def choose_layout(self) -> tdesc.Layout:
        """The registers and code size gdb gets, from the vCPU's mode when gdb connects.

        gdb reads the description once: a guest that changes mode later keeps
        the layout (the i386 one shows the low 32 bits of 64-bit registers;
        `set architecture` changes how gdb decodes code).
        """
        sregs = self.vcpu.get_sregs()
        if sregs.efer & EFER_LMA:
            self.layout = tdesc.AMD64
        elif sregs.cr0 & CR0_PE:
            self.layout = tdesc.I386
        else:
            self.layout = tdesc.I8086
        return self.layout

    # --- registers ----------------------------------------------------------
    def _gprs(self) -> dict[str, str]:
        return _AMD64_GPRS if self.layout is tdesc.AMD64 else _I386_GPRS

    def read_registers(self) -> dict[str, int]:
        regs, sregs, fpu = self.vcpu.get_regs(), self.vcpu.get_sregs(), self.vcpu.get_fpu()
        mask = (1 << 64) - 1 if self.layout is tdesc.AMD64 else 0xFFFFFFFF
        values = {name: getattr(regs, field) & mask for name, field in self._gprs().items()}
        values["eflags"] = regs.rflags & 0xFFFFFFFF
        for seg in tdesc.SEGMENT_NAMES:
            values[seg] = getattr(sregs, seg).selector
            values[f"{seg}_base"] = getattr(sregs, seg).base & mask
        values["gdtr_base"], values["gdtr_limit"] = sregs.gdt.base & mask, sregs.gdt.limit
        values["idtr_base"], values["idtr_limit"] = sregs.idt.base & mask, sregs.idt.limit
        for name in _CONTROL:
            values[name] = getattr(sregs, name)
        fpr = [int.from_bytes(bytes(fpu.fpr[i])[:10], "little") for i in range(8)]
        for i in range(8):
            values[f"st{i}"] = fpr[i]
        for name, field in _FPU_SCALARS.items():
            values[name] = getattr(fpu, field) & 0xFFFFFFFF
        values["ftag"] = full_tag_word(fpu.fsw, fpu.ftwx, fpr)
        values["fiseg"] = values["foseg"] = 0       # KVM's FXSAVE image has no selectors
        for i in range(16):
            values[f"xmm{i}"] = int.from_bytes(bytes(fpu.xmm[i]), "little")
        values["mxcsr"] = fpu.mxcsr
        return {reg.name: values.get(reg.name) for reg in self.layout.registers}

    def write_registers(self, values: dict[str, int]) -> None:
        """Apply the registers whose value differs from the vCPU's (a G packet sends them all)."""
        current = self.read_registers()
        changed = {name: value for name, value in values.items()
                   if name in current and current[name] != value}
        if not changed:
            return
        regs, sregs, fpu = self.vcpu.get_regs(), self.vcpu.get_sregs(), self.vcpu.get_fpu()
        touched = set()
        gprs = self._gprs()
        for name, value in changed.items():
            if name in gprs:
                field = gprs[name]
                if self.layout is not tdesc.AMD64 and name != "eip":
                    value = (getattr(regs, field) & ~0xFFFFFFFF) | value
                setattr(regs, field, value)
                touched.add("regs")
            elif name == "eflags":
                regs.rflags = value
                touched.add("regs")
            elif name in tdesc.SEGMENT_NAMES:
                seg = getattr(sregs, name)
                seg.selector = value
                if not sregs.cr0 & CR0_PE or regs.rflags & RFLAGS_VM:
                    seg.base = value << 4       # real mode: the base follows the selector
                touched.add("sregs")
            elif name.endswith("_base") and name[:-5] in tdesc.SEGMENT_NAMES:
                getattr(sregs, name[:-5]).base = value
                touched.add("sregs")
            elif name in ("gdtr_base", "gdtr_limit", "idtr_base", "idtr_limit"):
                table = sregs.gdt if name.startswith("gdtr") else sregs.idt
                setattr(table, name[5:], value)
                touched.add("sregs")
            elif name in _CONTROL:
                setattr(sregs, name, value)
                touched.add("sregs")
            elif name.startswith("st"):
                index = int(name[2:])
                raw = (value & ((1 << 80) - 1)).to_bytes(10, "little") + bytes(fpu.fpr[index])[10:]
                fpu.fpr[index][:] = list(raw)
                touched.add("fpu")
            elif name in _FPU_SCALARS:
                setattr(fpu, _FPU_SCALARS[name], value)
                touched.add("fpu")
            elif name == "ftag":
                fpu.ftwx = abridged_tag(value)
                touched.add("fpu")
            elif name.startswith("xmm"):
                fpu.xmm[int(name[3:])][:] = list(value.to_bytes(16, "little"))
                touched.add("fpu")
            elif name == "mxcsr":
                fpu.mxcsr = value
                touched.add("fpu")
            else:
                raise TargetError(f"register {name} cannot be set through KVM")
        if "regs" in touched:
            self.vcpu.set_regs(regs)
        if "sregs" in touched:
            self.vcpu.set_sregs(sregs)
        if "fpu" in touched:
            self.vcpu.set_fpu(fpu)

    # --- memory -------------------------------------------------------------
    def read_memory(self, address: int, length: int) -> bytes:
        try:
            data = bytearray(self.linear.read(address, length))
        except GuestMemoryError as exc:
            raise TargetError(str(exc), errno=14) from None
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
            raise TargetError(str(exc), errno=14) from None
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
        self.hardware.add(kind, address, length)

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
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
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
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
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
