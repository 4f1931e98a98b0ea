"""Completion of instructions the host's KVM cannot emulate, on hand-made vCPU states: the
fast paths, the software CPU, and the two against each other. No KVM needed."""

import ctypes
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvmm.completion import Completer, exit_instruction, fastpaths
from tinyvmm.completion.cpu import MSR_FMASK, MSR_LSTAR, GuestCpu, Refused
from tinyvmm.completion.softcpu import SoftCpu
from tinyvmm.kvm import abi
from tinyvmm.memory import GuestMemory
from tinyvmm.outcome import Outcome

RAM_SIZE = 4 << 20
KERNEL_BASE = 0xFFFF_FFFF_8000_0000       # mapped onto physical 0
PML4, PDPT_LOW, PDPT_HIGH, PD = 0x1000, 0x2000, 0x4000, 0x3000
IDT = 0x5000
CODE = 0x10000
STACK_TOP = 0x20000
LSTAR = KERNEL_BASE + 0x8000
FMASK = 0x47700
PF_HANDLER = KERNEL_BASE + 0x9000
USER_RIP = 0x40_1000
USER_RSP = 0x7FFF_F000


class FakeVcpu:
    """A vCPU that is only its state: what Vcpu's getters and setters would move."""

    def __init__(self):
        self.regs = abi.kvm_regs()
        self.sregs = abi.kvm_sregs()
        self.fpu = abi.kvm_fpu()
        self.events = abi.kvm_vcpu_events()
        self.msrs = {MSR_LSTAR: LSTAR, MSR_FMASK: FMASK}
        self.fpu_sets = 0

    def get_regs(self):
        return _copy(self.regs)

    def set_regs(self, regs):
        self.regs = _copy(regs)

    def get_sregs(self):
        return _copy(self.sregs)

    def set_sregs(self, sregs):
        self.sregs = _copy(sregs)

    def get_fpu(self):
        return _copy(self.fpu)

    def set_fpu(self, fpu):
        self.fpu = _copy(fpu)
        self.fpu_sets += 1

    def get_msrs(self, indices):
        return {i: self.msrs[i] for i in indices if i in self.msrs}

    def get_vcpu_events(self):
        return _copy(self.events)

    def set_vcpu_events(self, events):
        self.events = _copy(events)


def _copy(struct):
    return type(struct).from_buffer_copy(bytes(struct))


class Slots:
    """What SoftCpu needs of a SlotMap: the memory slots and their update counter."""

    def __init__(self, ram: bytearray):
        self.address = ctypes.addressof((ctypes.c_char * len(ram)).from_buffer(ram))
        self.mapped = {0: (len(ram), self.address, False, 0)}
        self.updates = 1


def _gate(offset: int, dpl: int = 0, present: bool = True, kind: int = 0xE) -> bytes:
    attributes = (0x80 if present else 0) | dpl << 5 | kind
    low = (offset & 0xFFFF) | 0x10 << 16 | attributes << 40 | ((offset >> 16) & 0xFFFF) << 48
    return low.to_bytes(8, "little") + (offset >> 32).to_bytes(4, "little") + bytes(4)


def long_mode_state(ram=None):
    """(vcpu, memory, ram): a long-mode vCPU at CPL 0 with 4 MiB of RAM mapped at 0 and at
    KERNEL_BASE (2 MiB pages), an IDT of 256 present interrupt gates (DPL 0, vector 0x80 DPL 3)
    and RIP at CODE. `ram`, if given, is the 4 MiB buffer to use (zeroed)."""
    ram = bytearray(RAM_SIZE) if ram is None else ram

    def put(gpa, value):
        ram[gpa:gpa + 8] = value.to_bytes(8, "little")
    put(PML4, PDPT_LOW | 3)
    put(PML4 + 511 * 8, PDPT_HIGH | 3)
    put(PDPT_LOW, PD | 3)
    put(PDPT_HIGH + 510 * 8, PD | 3)
    put(PD, 0x83)
    put(PD + 8, 0x20_0000 | 0x83)
    for vector in range(256):
        gate = _gate(KERNEL_BASE + 0xA000 + vector * 16, dpl=3 if vector == 0x80 else 0)
        ram[IDT + vector * 16:IDT + vector * 16 + 16] = gate
    ram[IDT + 14 * 16:IDT + 15 * 16] = _gate(PF_HANDLER)
    vcpu = FakeVcpu()
    s = vcpu.sregs
    s.cr0, s.cr3, s.cr4, s.efer = 0x8005_0033, PML4, 0x3006A0, 0xD01
    s.cs.selector, s.cs.l, s.cs.present, s.cs.s, s.cs.type = 0x10, 1, 1, 1, 0xB
    s.ss.selector, s.ss.present, s.ss.s, s.ss.type = 0x18, 1, 1, 3
    s.idt.base, s.idt.limit = KERNEL_BASE + IDT, 256 * 16 - 1
    s.gdt.base, s.gdt.limit = KERNEL_BASE + 0x6000, 0x7F
    vcpu.regs.rip = KERNEL_BASE + CODE
    vcpu.regs.rsp = KERNEL_BASE + STACK_TOP
    vcpu.regs.rflags = 0x46
    vcpu.fpu.fcw, vcpu.fpu.mxcsr = 0x40, 0x1F80      # not what finit leaves
    memory = GuestMemory([(0, RAM_SIZE, ram, True)])
    return vcpu, memory, ram


@pytest.fixture
def cpu_state():
    """A fresh long_mode_state() for each test."""
    return long_mode_state()


def _code(ram: bytearray, code: bytes) -> bytes:
    ram[CODE:CODE + len(code)] = code
    return code


def _cpu(cpu_state) -> GuestCpu:
    vcpu, memory, _ = cpu_state
    return GuestCpu(vcpu, memory)


def _at_user_level(vcpu) -> None:
    vcpu.sregs.cs.selector, vcpu.sregs.cs.dpl = 0x33, 3
    vcpu.sregs.ss.selector, vcpu.sregs.ss.dpl = 0x2B, 3


# --- fast paths -------------------------------------------------------------------
@pytest.mark.parametrize("code,ac", [(fastpaths.CLAC, 0), (fastpaths.STAC, 1)])
def test_clac_and_stac_change_ac_and_step_over(cpu_state, code, ac):
    vcpu, _, ram = cpu_state
    vcpu.regs.rflags = 0x46 | (1 - ac) << 18
    assert fastpaths.complete(_cpu(cpu_state), _code(ram, code)) == ("stac" if ac else "clac")
    assert vcpu.regs.rflags >> 18 & 1 == ac
    assert vcpu.regs.rip == KERNEL_BASE + CODE + 3
    assert not vcpu.events.exception.injected


def test_clac_above_cpl_0_is_an_invalid_opcode(cpu_state):
    vcpu, _, ram = cpu_state
    _at_user_level(vcpu)
    fastpaths.complete(_cpu(cpu_state), _code(ram, fastpaths.CLAC))
    assert (vcpu.events.exception.injected, vcpu.events.exception.nr) == (1, 6)
    assert vcpu.regs.rip == KERNEL_BASE + CODE        # a fault: at the instruction


def test_int3_is_a_breakpoint_trap(cpu_state):
    vcpu, _, ram = cpu_state
    assert fastpaths.complete(_cpu(cpu_state), _code(ram, b"\xcc")) == "int3"
    events = vcpu.events.exception
    assert (events.injected, events.nr, events.has_error_code) == (1, 3, 0)
    assert vcpu.regs.rip == KERNEL_BASE + CODE + 1


def test_int_n_at_user_level_through_a_gate_that_allows_it(cpu_state):
    vcpu, _, ram = cpu_state
    _at_user_level(vcpu)
    assert fastpaths.complete(_cpu(cpu_state), _code(ram, b"\xcd\x80")) == "int 0x80"
    interrupt = vcpu.events.interrupt
    assert (interrupt.injected, interrupt.nr, interrupt.soft) == (1, 0x80, 1)
    assert vcpu.regs.rip == KERNEL_BASE + CODE + 2


@pytest.mark.parametrize("code,vector", [(b"\xcc", 3), (b"\xcd\x81", 0x81)])
def test_a_gate_above_cpl_is_a_general_protection_fault(cpu_state, code, vector):
    vcpu, _, ram = cpu_state
    _at_user_level(vcpu)
    fastpaths.complete(_cpu(cpu_state), _code(ram, code))
    events = vcpu.events.exception
    assert (events.injected, events.nr, events.has_error_code, events.error_code) == \
        (1, 13, 1, vector * 8 + 2)
    assert vcpu.regs.rip == KERNEL_BASE + CODE
    assert not vcpu.events.interrupt.injected


def test_a_missing_gate_is_not_present_and_one_past_the_limit_is_protection(cpu_state):
    vcpu, _, ram = cpu_state
    ram[IDT + 0x40 * 16 + 5] &= 0x7F                   # vector 0x40: not present
    fastpaths.complete(_cpu(cpu_state), _code(ram, b"\xcd\x40"))
    assert (vcpu.events.exception.nr, vcpu.events.exception.error_code) == (11, 0x40 * 8 + 2)
    vcpu.sregs.idt.limit = 0x40 * 16 - 1
    fastpaths.complete(_cpu(cpu_state), _code(ram, b"\xcd\x40"))
    assert (vcpu.events.exception.nr, vcpu.events.exception.error_code) == (13, 0x40 * 8 + 2)


def _half_done_syscall(cpu_state, **frame):
    """The state the host leaves: the vCPU at the #PF handler's clac, the fault's frame on
    the kernel stack returning to LSTAR at CPL 3, RCX/R11 as the syscall set them."""
    vcpu, _, ram = cpu_state
    values = dict(error=0x15, rip=LSTAR, cs=0x33, rflags=0x10246, rsp=USER_RSP, ss=0x2B)
    values.update(frame)
    sp = STACK_TOP - 48
    for i, name in enumerate(("error", "rip", "cs", "rflags", "rsp", "ss")):
        ram[sp + 8 * i:sp + 8 * i + 8] = values[name].to_bytes(8, "little")
    vcpu.regs.rsp = KERNEL_BASE + sp
    vcpu.regs.rip = PF_HANDLER
    vcpu.regs.rcx = USER_RIP
    vcpu.regs.r11 = 0x246
    vcpu.sregs.cr2 = LSTAR
    ram[0x9000:0x9003] = fastpaths.CLAC
    return fastpaths.CLAC


def test_a_half_done_syscall_is_finished_at_the_page_fault_entry(cpu_state):
    vcpu, _, _ = cpu_state
    code = _half_done_syscall(cpu_state)
    assert fastpaths.complete(_cpu(cpu_state), code) == "syscall"
    regs = vcpu.regs
    assert (regs.rip, regs.rsp, regs.rcx, regs.r11) == (LSTAR, USER_RSP, USER_RIP, 0x246)
    assert regs.rflags == (0x10246 & ~FMASK & ~(1 << 16)) | 2
    assert not vcpu.events.exception.injected


@pytest.mark.parametrize("frame,rcx", [
    ({"rip": LSTAR + 1}, USER_RIP),             # the fault was not at the system-call entry
    ({"cs": 0x10}, USER_RIP),                   # nor from user mode
    ({"error": 0x05}, USER_RIP),                # nor an instruction fetch
    ({}, KERNEL_BASE + 0x100),                  # RCX is not a user return address
])
def test_a_page_fault_that_fails_a_guard_stays_a_page_fault(cpu_state, frame, rcx):
    vcpu, _, _ = cpu_state
    code = _half_done_syscall(cpu_state, **frame)
    vcpu.regs.rcx = rcx
    assert fastpaths.complete(_cpu(cpu_state), code) == "clac"
    assert vcpu.regs.rip == PF_HANDLER + 3 and vcpu.regs.rsp == KERNEL_BASE + STACK_TOP - 48


def _user_int_made_invalid(cpu_state, vector: int) -> bytes:
    """The state the host leaves for a 32-bit program's `int n`: the vCPU at the #UD
    handler's clac, the #UD frame on the kernel stack returning to `cd nn` at CPL 3."""
    vcpu, _, ram = cpu_state
    ud_handler = KERNEL_BASE + 0xB000
    ram[IDT + 6 * 16:IDT + 7 * 16] = _gate(ud_handler)
    ram[0xB000:0xB003] = fastpaths.CLAC
    ram[0x50000:0x50002] = bytes([0xCD, vector])
    sp = STACK_TOP - 40
    for i, value in enumerate((0x50000, 0x23, 0x246, 0xFFD0_0000, 0x2B)):
        ram[sp + 8 * i:sp + 8 * i + 8] = value.to_bytes(8, "little")
    vcpu.regs.rip, vcpu.regs.rsp, vcpu.regs.rflags = ud_handler, KERNEL_BASE + sp, 0x46
    return fastpaths.CLAC


def test_a_user_int_the_host_made_invalid_becomes_the_interrupt(cpu_state):
    vcpu, _, ram = cpu_state
    code = _user_int_made_invalid(cpu_state, 0x80)
    assert fastpaths.complete(_cpu(cpu_state), code) == "int 0x80 (user)"
    assert vcpu.regs.rip == KERNEL_BASE + 0xA000 + 0x80 * 16      # gate 0x80's handler
    assert int.from_bytes(ram[STACK_TOP - 40:STACK_TOP - 32], "little") == 0x50002
    assert vcpu.regs.rflags == 0x46 and vcpu.regs.rsp == KERNEL_BASE + STACK_TOP - 40


def test_a_user_int_through_a_gate_it_may_not_use_stays_invalid(cpu_state):
    vcpu, _, ram = cpu_state
    code = _user_int_made_invalid(cpu_state, 0x81)              # DPL 0: the CPU would refuse it
    assert fastpaths.complete(_cpu(cpu_state), code) == "clac"
    assert int.from_bytes(ram[STACK_TOP - 40:STACK_TOP - 32], "little") == 0x50000


@pytest.mark.parametrize("equal", [True, False])
def test_cmpxchg16b_through_gs_compares_and_exchanges(cpu_state, equal):
    vcpu, _, ram = cpu_state
    vcpu.sregs.gs.base = KERNEL_BASE + 0x30000
    vcpu.regs.rsi = 0x10
    ram[0x30010:0x30020] = (0x1111 | 0x2222 << 64).to_bytes(16, "little")
    vcpu.regs.rax, vcpu.regs.rdx = (0x1111, 0x2222) if equal else (0x1111, 0x9999)
    vcpu.regs.rbx, vcpu.regs.rcx = 0x3333, 0x4444
    code = _code(ram, bytes.fromhex("65f0480fc70e"))          # lock cmpxchg16b gs:[rsi]
    assert fastpaths.complete(_cpu(cpu_state), code) == "lock cmpxchg16b"
    stored = int.from_bytes(ram[0x30010:0x30020], "little")
    if equal:
        assert stored == 0x3333 | 0x4444 << 64 and vcpu.regs.rflags & 0x40
    else:
        assert stored == 0x1111 | 0x2222 << 64 and not vcpu.regs.rflags & 0x40
        assert (vcpu.regs.rax, vcpu.regs.rdx) == (0x1111, 0x2222)
    assert vcpu.regs.rip == KERNEL_BASE + CODE + 6


def test_a_misaligned_cmpxchg16b_is_a_general_protection_fault(cpu_state):
    vcpu, _, ram = cpu_state
    vcpu.regs.rsi = KERNEL_BASE + 0x30008
    fastpaths.complete(_cpu(cpu_state), _code(ram, bytes.fromhex("480fc70e")))
    assert (vcpu.events.exception.nr, vcpu.events.exception.error_code) == (13, 0)
    assert vcpu.regs.rip == KERNEL_BASE + CODE


# --- the software CPU -------------------------------------------------------------
def _soft(cpu_state, code: bytes) -> str:
    vcpu, memory, ram = cpu_state
    return SoftCpu(Slots(ram)).execute(GuestCpu(vcpu, memory), _code(ram, code))


def test_popcnt_in_the_software_cpu(cpu_state):
    vcpu, _, _ = cpu_state
    vcpu.regs.rbx = 0xF0F0_0000_0000_0007
    assert _soft(cpu_state, bytes.fromhex("f3480fb8c3")) == "popcnt"      # popcnt rax, rbx
    assert vcpu.regs.rax == 11
    assert vcpu.regs.rip == KERNEL_BASE + CODE + 5
    assert not vcpu.regs.rflags & 0x40                                  # ZF: not zero


def test_finit_fldcw_ldmxcsr_reach_the_fpu(cpu_state):
    vcpu, memory, ram = cpu_state
    softcpu = SoftCpu(Slots(ram))
    _code(ram, bytes.fromhex("9bdbe3" "d928" "0fae10"))     # finit; fldcw [rax]; ldmxcsr [rax]
    ram[0x30000:0x30004] = (0x1F80 | 0x6000).to_bytes(4, "little")
    vcpu.regs.rax = KERNEL_BASE + 0x30000

    def step() -> str:
        pc = vcpu.regs.rip - KERNEL_BASE
        return softcpu.execute(GuestCpu(vcpu, memory), bytes(ram[pc:pc + 15]))
    assert [step(), step()] == ["wait", "fninit"]          # finit is two instructions
    assert (vcpu.fpu.fcw, vcpu.fpu.fsw, vcpu.fpu.ftwx) == (0x37F, 0, 0)
    assert vcpu.regs.rip == KERNEL_BASE + CODE + 3
    assert [step(), step()] == ["fldcw", "ldmxcsr"]
    assert vcpu.fpu.fcw == 0x7F80 and vcpu.fpu.mxcsr == 0x7F80


def test_a_store_through_a_kernel_address_lands_in_guest_ram(cpu_state):
    vcpu, _, ram = cpu_state
    vcpu.regs.rax, vcpu.regs.rbx = KERNEL_BASE + 0x30008, 0x1122_3344_5566_7788
    _soft(cpu_state, bytes.fromhex("488918"))                           # mov [rax], rbx
    assert ram[0x30008:0x30010] == (0x1122_3344_5566_7788).to_bytes(8, "little")


def test_an_access_outside_guest_ram_is_refused(cpu_state):
    vcpu, _, ram = cpu_state
    ram[PD + 16:PD + 24] = (0xFEC0_0000 | 0x83).to_bytes(8, "little")  # 4 MiB up: MMIO
    vcpu.regs.rax = KERNEL_BASE + 0x40_0000
    before = bytes(vcpu.regs)
    with pytest.raises(Refused, match="stopped"):
        _soft(cpu_state, bytes.fromhex("488918"))
    assert bytes(vcpu.regs) == before


@pytest.mark.parametrize("code,user", [
    (fastpaths.CLAC, False), (fastpaths.STAC, False), (b"\xcc", False),
    (bytes.fromhex("480fc70e"), False), (bytes.fromhex("0fc70e"), False),
    (b"\xcd\x81", False), (b"\xcd\x80", True),      # int n through a gate that allows it
    (b"\xcc", True), (b"\xcd\x81", True)])           # ... and through one that does not: #GP
@pytest.mark.parametrize("equal", [True, False])
def test_the_software_cpu_agrees_with_the_fast_paths(code, user, equal):
    results = []
    for complete in (lambda m: fastpaths.complete(_cpu(m), _code(m[2], code)), lambda m: _soft(m, code)):
        m = long_mode_state()
        vcpu, _, ram = m
        if user:
            _at_user_level(vcpu)
        vcpu.regs.rflags = 0x46 | 1 << 18
        vcpu.regs.rsi = KERNEL_BASE + 0x30010           # the cmpxchg8b/16b operand
        ram[0x30010:0x30020] = bytes(range(1, 17))
        vcpu.regs.rax, vcpu.regs.rdx = ((0x0807060504030201, 0x100F0E0D0C0B0A09) if equal
                                        else (5, 6))
        vcpu.regs.rbx, vcpu.regs.rcx = 0xAAAA_BBBB_CCCC_DDDD, 0x1111_2222_3333_4444
        if len(code) == 3 and code[0] == 0x0F and code[1] == 0xC7:   # cmpxchg8b: EDX:EAX
            vcpu.regs.rax, vcpu.regs.rdx = (0x04030201, 0x08070605) if equal else (5, 6)
        assert complete(m) is not None
        results.append((bytes(vcpu.regs), bytes(vcpu.sregs), bytes(vcpu.events), bytes(ram[0x30010:0x30020])))
    assert results[0] == results[1]


# --- the completer ----------------------------------------------------------------
def _internal(code: bytes) -> abi.kvm_run_internal:
    internal = abi.kvm_run_internal(suberror=1, ndata=4)
    raw = bytes([15]) + code.ljust(15, b"\x90") + bytes(32)
    internal.data[0] = 1
    for i in range(3):
        internal.data[1 + i] = int.from_bytes(raw[8 * i:8 * i + 8], "little")
    return internal


def test_the_exit_carries_the_instruction_bytes():
    assert exit_instruction(_internal(b"\x0f\x01\xca"))[:3] == b"\x0f\x01\xca"
    assert exit_instruction(abi.kvm_run_internal(suberror=1, ndata=1)) is None


def test_the_completer_counts_and_names_what_it_cannot_do(cpu_state):
    vcpu, memory, ram = cpu_state
    completer = Completer(vcpu, memory, Slots(ram))
    assert completer.complete(_internal(_code(ram, fastpaths.CLAC))) is None
    vcpu.regs.rip = KERNEL_BASE + CODE
    outcome, message = completer.complete(_internal(_code(ram, b"\x0f\x0b")))     # ud2
    assert outcome is Outcome.CRASH and "`ud2`" in message and "#UD" in message
    assert completer.stats.counts == {"clac": 1}
    outcome, message = completer.complete(abi.kvm_run_internal(suberror=3, ndata=0))
    assert outcome is Outcome.CRASH and "DELIVERY_EV" in message


# Any value, or one at an edge of guest RAM (a store there may straddle it).
registers = st.integers(0, (1 << 64) - 1) | st.sampled_from(
    [(base + offset) % (1 << 64) for base in (0, KERNEL_BASE)
     for offset in (-8, -1, RAM_SIZE - 8, RAM_SIZE - 1)])


GUARD = 64 << 10


@settings(max_examples=150, deadline=None)
@given(code=st.binary(min_size=1, max_size=15), rax=registers, rbx=registers, rsp=registers,
       rflags=st.integers(0, 0x3F_FFFF), long_mode=st.booleans())
def test_random_instructions_complete_or_are_refused(code, rax, rbx, rsp, rflags, long_mode):
    # Guest RAM is the middle of a larger buffer: what lies either side must stay as it was.
    host = bytearray(b"\xa5" * GUARD + bytes(RAM_SIZE) + b"\xa5" * GUARD)
    vcpu, memory, ram = long_mode_state(memoryview(host)[GUARD:GUARD + RAM_SIZE])
    vcpu.regs.rip = KERNEL_BASE + CODE
    vcpu.regs.rax, vcpu.regs.rbx, vcpu.regs.rsp, vcpu.regs.rflags = rax, rbx, rsp, rflags | 2
    if not long_mode:                    # flat 32-bit protected mode, no paging
        vcpu.sregs.efer, vcpu.sregs.cr0, vcpu.sregs.cs.l, vcpu.sregs.cs.db = 0, 0x11, 0, 1
        vcpu.regs.rip = CODE
    completer = Completer(vcpu, memory, Slots(ram))
    result = completer.complete(_internal(_code(ram, code)))
    assert result is None or (result[0] is Outcome.CRASH and "could not be completed" in result[1])
    assert host[:GUARD] == host[-GUARD:] == b"\xa5" * GUARD


@pytest.mark.parametrize("cmdline,warned", [
    ("clearcpuid=308 quiet", True), ("clearcpuid=1,308", True), ("clearcpuid=151,smap", True),
    ("clearcpuid=308 clearcpuid=1", False),         # Linux takes the last one
    ("console=ttyS0 clearcpuid=151", False), ("nosmap", False)])   # x86 has no nosmap
def test_a_command_line_without_smap_is_warned_of_on_an_emulating_host(monkeypatch, cmdline, warned):
    from tinyvmm.boot import payload
    monkeypatch.setattr(payload, "is_emulating_host", lambda: True)
    assert (payload.cmdline_warning(cmdline) is not None) == warned
    monkeypatch.setattr(payload, "is_emulating_host", lambda: False)
    assert payload.cmdline_warning(cmdline) is None


def test_without_unicorn_the_fallback_names_what_is_missing(cpu_state, monkeypatch):
    vcpu, memory, ram = cpu_state
    monkeypatch.setitem(sys.modules, "unicorn", None)        # import unicorn raises ImportError
    monkeypatch.delitem(sys.modules, "tinyvmm.completion.softcpu", raising=False)
    outcome, message = Completer(vcpu, memory, Slots(ram)).complete(
        _internal(_code(ram, bytes.fromhex("f3480fb8c3"))))
    assert outcome is Outcome.CRASH and "`popcnt rax, rbx`" in message and "pip install unicorn" in message


def test_an_sse_instruction_reads_and_writes_only_its_own_registers(cpu_state):
    vcpu, _, _ = cpu_state
    for i in range(16):
        ctypes.memmove(vcpu.fpu.xmm[i], (0x0101_0101_0101_0101 * (i + 1)).to_bytes(16, "little"), 16)
    before = [bytes(vcpu.fpu.xmm[i]) for i in range(16)]
    assert _soft(cpu_state, bytes.fromhex("660ffec6")) == "paddd"            # paddd xmm0, xmm6
    lanes = [int.from_bytes(before[0][i:i + 4], "little") + int.from_bytes(before[6][i:i + 4], "little")
             for i in range(0, 16, 4)]
    assert bytes(vcpu.fpu.xmm[0]) == b"".join((lane & 0xFFFF_FFFF).to_bytes(4, "little") for lane in lanes)
    assert [bytes(vcpu.fpu.xmm[i]) for i in range(1, 16)] == before[1:]
    assert vcpu.fpu.mxcsr == 0x1F80 and vcpu.fpu.fcw == 0x40          # the x87 state untouched
