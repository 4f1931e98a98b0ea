"""The gdb stub without KVM: the packet codec, each command against a fake target, and the
target's register, memory, breakpoint and stepping logic against a fake vCPU."""

import xml.etree.ElementTree as ET

import pytest
from guest_memory import guest_memory
from hypothesis import given
from hypothesis import strategies as st

from tinyvmm.debug.gdb import commands, rsp, tdesc
from tinyvmm.debug.gdb.commands import CommandHandler, Detach, Kill, Resume
from tinyvmm.debug.gdb.events import StopEvent, TargetError
from tinyvmm.debug.gdb.linear import LinearMemory
from tinyvmm.debug.gdb.registers import abridged_tag, full_tag_word
from tinyvmm.debug.gdb.target import KvmTarget
from tinyvmm.kvm import abi
from tinyvmm.kvm.debugregs import (
    BREAK_HARDWARE,
    BREAK_SOFTWARE,
    DR6_BS,
    WATCH_ACCESS,
    WATCH_READ,
    WATCH_WRITE,
    DebugRegisterError,
    DebugRegisters,
    execution_breakpoint,
)
from tinyvmm.memory import GuestMemoryError

# --- the codec ------------------------------------------------------------------


def test_checksum_and_frame_match_the_protocol_examples():
    assert rsp.checksum(b"OK") == 0x9A
    assert rsp.frame(b"OK") == b"$OK#9a"
    assert rsp.frame(b"") == b"$#00"
    assert rsp.frame(b"qSupported") == b"$qSupported#37"


def test_escape_covers_the_four_special_bytes():
    assert rsp.escape(b"a$b#c}d*e") == b"a}\x04b}\x03c}]d}\x0ae"
    assert rsp.unescape(b"a}\x04b}\x03c}]d}\x0ae") == b"a$b#c}d*e"
    with pytest.raises(rsp.ProtocolError):
        rsp.unescape(b"abc}")


@given(st.binary(max_size=300))
def test_escape_round_trips_and_leaves_no_special_byte(data):
    escaped = rsp.escape(data)
    assert rsp.unescape(escaped) == data
    plain = escaped.replace(b"}\x04", b"").replace(b"}\x03", b"").replace(b"}]", b"").replace(b"}\x0a", b"")
    assert not set(plain) & set(b"$#*")


def test_run_lengths_expand():
    # '*' then chr(n + 29) repeats the previous byte n more times.
    assert rsp.expand_runs(b"0* ") == b"0" * 4
    assert rsp.expand_runs(b"ab*\"c") == b"ab" + b"b" * 5 + b"c"
    assert rsp.expand_runs(b"x}*y") == b"x}*y"          # an escaped '*' is data
    with pytest.raises(rsp.ProtocolError):
        rsp.expand_runs(b"*!")


def test_decoder_handles_split_packets_acks_interrupts_and_garbage():
    decoder = rsp.PacketDecoder()
    assert [type(e) for e in decoder.feed(b"+$qSupp")] == [rsp.Ack]      # the rest waits
    events = decoder.feed(b"orted#37\x03-junk$g#67")
    kinds = [type(e) for e in events]
    assert kinds == [rsp.Packet, rsp.Interrupt, rsp.Nack, rsp.Packet]
    assert events[0].payload == b"qSupported" and events[3].payload == b"g"


def test_decoder_reports_a_bad_checksum_and_goes_on():
    decoder = rsp.PacketDecoder()
    events = decoder.feed(b"$g#00$?#3f")
    assert isinstance(events[0], rsp.BadPacket)
    assert events[1] == rsp.Packet(b"?")


def test_decoder_does_not_end_a_packet_at_an_escaped_hash():
    body = b"X0,1:}\x03"                # binary data 0x23 ('#') escaped
    events = rsp.PacketDecoder().feed(rsp.frame(body))
    assert events == [rsp.Packet(body)]


@given(st.lists(st.binary(max_size=40), max_size=5), st.integers(1, 7))
def test_decoder_gets_the_same_packets_whatever_the_chunking(payloads, chunk):
    stream = b"".join(rsp.frame(rsp.escape(p)) for p in payloads)
    decoder = rsp.PacketDecoder()
    got = []
    for i in range(0, len(stream), chunk):
        got += decoder.feed(stream[i:i + chunk])
    assert [rsp.unescape(e.payload) for e in got] == payloads


# --- target description ---------------------------------------------------------


@pytest.mark.parametrize("layout, first, pc, core", [
    (tdesc.I386, "eax", "eip", 32), (tdesc.AMD64, "rax", "rip", 40)])
def test_target_xml_is_well_formed_with_gdbs_core_registers_in_order(layout, first, pc, core):
    root = ET.fromstring(tdesc.target_xml(layout))
    assert root.find("architecture").text == layout.name
    regs = root.findall("./feature/reg")
    assert [int(r.get("regnum")) for r in regs] == list(range(len(layout.registers)))
    core_names = [r.get("name") for r in root.find("./feature[@name='org.gnu.gdb.i386.core']").findall("reg")]
    assert core_names[0] == first and pc in core_names and len(core_names) == core
    assert core_names[-8:] == ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]
    names = {r.get("name") for r in regs}
    assert {"cr0", "cr3", "efer", "cs_base", "gdtr_base"} <= names
    # every type a register uses is declared in its own feature or predefined by gdb
    for feature in root.findall("feature"):
        declared = {t.get("id") for t in feature if t.tag in ("flags", "vector", "union")}
        for reg in feature.findall("reg"):
            assert reg.get("type") in declared | {"int32", "int64", "int", "code_ptr", "data_ptr",
                                                  "i387_ext", "uint16", "uint64"}


def test_real_mode_layout_has_the_i386_registers_under_the_i8086_name():
    assert tdesc.I8086.registers == tdesc.I386.registers
    assert "<architecture>i8086</architecture>" in tdesc.target_xml(tdesc.I8086)


def test_pack_and_unpack_are_inverse_and_little_endian():
    values = {reg.name: (i * 0x01020304) & ((1 << reg.bits) - 1)
              for i, reg in enumerate(tdesc.I386.registers)}
    packed = tdesc.I386.pack(values)
    assert len(packed) == 2 * tdesc.I386.g_size
    assert packed.startswith(b"00000000" + b"04030201")      # eax 0, ecx 0x01020304
    assert tdesc.I386.unpack(packed) == values


def test_unavailable_registers_travel_as_x_and_are_not_written_back():
    packed = tdesc.I386.pack({"eax": 5})
    assert packed[8:16] == b"xxxxxxxx"
    assert tdesc.I386.unpack(packed) == {"eax": 5}


# --- commands against a fake target ------------------------------------------------


class FakeTarget:
    layout = tdesc.I386

    def __init__(self):
        self.registers = {reg.name: 0 for reg in self.layout.registers}
        self.registers.update(cs=0xF000, eip=0xFFF0)
        self.memory = bytearray(0x1000)
        self.breakpoints = set()

    def read_registers(self):
        return dict(self.registers)

    def write_registers(self, values):
        unknown = set(values) - set(self.registers)
        if unknown:
            raise TargetError(f"unknown {unknown}")
        self.registers.update(values)

    def read_memory(self, address, length):
        if address >= len(self.memory):
            raise TargetError("unmapped", errno=0x14)
        return bytes(self.memory[address:address + length])

    def write_memory(self, address, data):
        if address + len(data) > len(self.memory):
            raise TargetError("unmapped", errno=0x14)
        self.memory[address:address + len(data)] = data

    def add_breakpoint(self, kind, address, length):
        if kind == WATCH_READ:
            raise TargetError("no read watchpoints", errno=95)
        self.breakpoints.add((kind, address, length))

    def remove_breakpoint(self, kind, address, length):
        self.breakpoints.discard((kind, address, length))

    def monitor(self, command):
        if command != "hello":
            raise TargetError("unknown")
        return "hi there\n"


@pytest.fixture
def handler():
    return CommandHandler(FakeTarget())


def reply(handler, payload: bytes) -> bytes:
    response = handler.handle(payload)
    assert len(response.replies) == 1 and response.action is None, response
    return response.replies[0]


def test_qsupported_announces_xml_and_stop_reasons_and_remembers_gdbs(handler):
    answer = reply(handler, b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+")
    assert b"qXfer:features:read+" in answer and b"PacketSize=4000" in answer
    assert b"swbreak+" in answer and b"hwbreak+" in answer
    assert handler.gdb_reasons == {"swbreak", "hwbreak"}


def test_target_xml_is_served_in_pieces(handler):
    whole = tdesc.target_xml(tdesc.I386).encode()
    first = reply(handler, b"qXfer:features:read:target.xml:0,100")
    assert first[:1] == b"m" and rsp.unescape(first[1:]) == whole[:0x100]
    last = reply(handler, b"qXfer:features:read:target.xml:%x,ffff" % (len(whole) - 10))
    assert last[:1] == b"l" and rsp.unescape(last[1:]) == whole[-10:]
    assert reply(handler, b"qXfer:features:read:other.xml:0,10").startswith(b"E")


def test_g_reads_all_registers_in_layout_order(handler):
    answer = reply(handler, b"g")
    values = tdesc.I386.unpack(answer)
    assert values["cs"] == 0xF000 and values["eip"] == 0xFFF0


def test_G_and_P_write_registers(handler):
    values = dict(handler.target.registers, eax=0x11223344)
    assert reply(handler, b"G" + tdesc.I386.pack(values)) == b"OK"
    assert handler.target.registers["eax"] == 0x11223344
    ebx = tdesc.I386.index("ebx")
    assert reply(handler, b"P%x=efbeadde" % ebx) == b"OK"
    assert handler.target.registers["ebx"] == 0xDEADBEEF
    assert reply(handler, b"p%x" % ebx) == b"efbeadde"
    assert reply(handler, b"P%x=01" % ebx).startswith(b"E")        # wrong width
    assert reply(handler, b"p999").startswith(b"E")


def test_memory_read_write_and_binary_write(handler):
    assert reply(handler, b"M10,4:deadbeef") == b"OK"
    assert reply(handler, b"m10,4") == b"deadbeef"
    assert reply(handler, b"X20,3:" + rsp.escape(b"#}*")) == b"OK"
    assert handler.target.memory[0x20:0x23] == b"#}*"
    assert reply(handler, b"X0,0:") == b"OK"                          # gdb's probe
    assert reply(handler, b"m5000,4") == b"E14"
    assert reply(handler, b"M10,4:dead").startswith(b"E")            # short data
    assert reply(handler, b"mzz,4").startswith(b"E")


def test_breakpoint_packets(handler):
    assert reply(handler, b"Z1,f001c,1") == b"OK"
    assert reply(handler, b"Z2,500,4") == b"OK"
    assert handler.target.breakpoints == {(BREAK_HARDWARE, 0xF001C, 1), (WATCH_WRITE, 0x500, 4)}
    assert reply(handler, b"z1,f001c,1") == b"OK"
    assert handler.target.breakpoints == {(WATCH_WRITE, 0x500, 4)}
    assert reply(handler, b"Z3,500,1") == b"E5f"
    assert reply(handler, b"Z7,0,1") == b""                          # unknown type: unsupported


@pytest.mark.parametrize("packet, step", [(b"c", False), (b"s", True), (b"C05", False), (b"S05", True),
                                          (b"vCont;c", False), (b"vCont;s:1;c", True),
                                          (b"vCont;C05:1", False)])
def test_resume_packets_return_the_action_and_no_reply(handler, packet, step):
    response = handler.handle(packet)
    assert response.replies == [] and response.action == Resume(step=step)


def test_resume_at_an_address_sets_the_pc_first(handler):
    response = handler.handle(b"c1234")
    assert response.action == Resume(step=False)
    assert handler.target.registers["eip"] == 0x1234


def test_detach_and_kill(handler):
    response = handler.handle(b"D")
    assert response.replies == [b"OK"] and isinstance(response.action, Detach)
    response = handler.handle(b"k")
    assert response.replies == [] and isinstance(response.action, Kill)
    response = handler.handle(b"vKill;1")
    assert response.replies == [b"OK"] and isinstance(response.action, Kill)


def test_stop_replies(handler):
    handler.handle(b"qSupported:hwbreak+")
    assert reply(handler, b"?") == b"T05thread:01;"
    handler.last_stop = StopEvent(5, "hwbreak")
    assert reply(handler, b"?") == b"T05thread:01;hwbreak:;"
    handler.last_stop = StopEvent(5, "swbreak")                       # gdb did not ask for it
    assert reply(handler, b"?") == b"T05thread:01;"
    handler.last_stop = StopEvent(5, "watch", 0x500)
    assert reply(handler, b"?") == b"T05thread:01;watch:500;"
    handler.last_stop = StopEvent(2)
    assert reply(handler, b"?") == b"T02thread:01;"
    assert commands.exit_reply(3) == b"W03"


def test_thread_and_misc_queries(handler):
    assert reply(handler, b"qfThreadInfo") == b"m1"
    assert reply(handler, b"qsThreadInfo") == b"l"
    assert reply(handler, b"qC") == b"QC1"
    assert reply(handler, b"qAttached") == b"1"
    assert reply(handler, b"Hg0") == b"OK"
    assert reply(handler, b"Hg2") == b"E16"          # the fake has one thread
    assert reply(handler, b"T1") == b"OK" and reply(handler, b"T2") == b"E16"
    assert reply(handler, b"vCont?") == b"vCont;c;C;s;S"
    assert reply(handler, b"qSymbol::") == b"OK"
    assert reply(handler, b"vMustReplyEmpty") == b""
    assert reply(handler, b"qTStatus") == b""
    assert reply(handler, b"QStartNoAckMode") == b"OK" and handler.no_ack


def test_monitor_output_comes_as_console_packets(handler):
    response = handler.handle(b"qRcmd," + b"hello".hex().encode())
    assert response.replies[-1] == b"OK"
    assert b"".join(bytes.fromhex(r[1:].decode()) for r in response.replies[:-1]) == b"hi there\n"
    assert handler.handle(b"qRcmd," + b"nope".hex().encode()).replies[0].startswith(b"E")


# --- the target's logic against a fake vCPU -----------------------------------------


class FakeVcpu:
    """Registers in KVM's structures; records guest-debug settings; identity 'paging'."""

    def __init__(self):
        self.regs = abi.kvm_regs(rip=0xFFF0, rflags=2)
        self.sregs = abi.kvm_sregs()
        self.sregs.cs.selector, self.sregs.cs.base = 0xF000, 0xFFFF0000
        self.fpu = abi.kvm_fpu(fcw=0x37F)
        self.debug = []
        self.unmapped = set()

    def get_regs(self):
        return abi.kvm_regs.from_buffer_copy(self.regs)

    def set_regs(self, regs):
        self.regs = abi.kvm_regs.from_buffer_copy(regs)

    def get_sregs(self):
        return abi.kvm_sregs.from_buffer_copy(self.sregs)

    def set_sregs(self, sregs):
        self.sregs = abi.kvm_sregs.from_buffer_copy(sregs)

    def get_fpu(self):
        return abi.kvm_fpu.from_buffer_copy(self.fpu)

    def set_fpu(self, fpu):
        self.fpu = abi.kvm_fpu.from_buffer_copy(fpu)

    def set_guest_debug(self, control, debugreg=None):
        self.debug.append((control, list(debugreg or [0] * 8)))

    def translate(self, linear):
        return None if linear // 4096 in self.unmapped else linear + 0x100000


def make_target(**kw):
    vcpu = FakeVcpu()
    ram = bytearray(0x300000)
    rom = bytearray(0x10000)
    memory = guest_memory((0, ram), (0xFFFF0000, rom, False))
    return KvmTarget(vcpu, memory, **kw), vcpu, ram


def test_registers_at_the_reset_vector_and_writes_reach_kvm():
    target, vcpu, _ = make_target()
    target.choose_layout()
    assert target.layout is tdesc.I8086
    values = target.read_registers()
    assert values["cs"] == 0xF000 and values["eip"] == 0xFFF0 and values["cs_base"] == 0xFFFF0000
    assert values["fctrl"] == 0x37F and values["ftag"] == 0xFFFF   # all x87 registers empty
    vcpu.regs.rax = 0xAAAABBBBCCCCDDDD
    target.write_registers(dict(target.read_registers(), eax=0x12345678, ds=0x40))
    assert vcpu.regs.rax == 0xAAAABBBB12345678                        # upper half kept
    assert vcpu.sregs.ds.selector == 0x40 and vcpu.sregs.ds.base == 0x400   # real mode: base follows
    target.write_registers({"cr0": 0x11, "xmm1": 1 << 100, "st0": 0x3FFF8000000000000000})
    assert vcpu.sregs.cr0 == 0x11
    assert int.from_bytes(bytes(vcpu.fpu.xmm[1]), "little") == 1 << 100
    assert int.from_bytes(bytes(vcpu.fpu.fpr[0])[:10], "little") == 0x3FFF8000000000000000
    with pytest.raises(TargetError):
        target.write_registers({"fiseg": 7})


def test_long_mode_gets_the_x86_64_layout():
    target, vcpu, _ = make_target()
    vcpu.sregs.efer = 1 << 10 | 1 << 8
    vcpu.sregs.cr0 = 0x80000011
    vcpu.regs.rip = 0xFFFFFFFF81000000
    assert target.choose_layout() is tdesc.AMD64
    assert target.read_registers()["rip"] == 0xFFFFFFFF81000000


def test_x87_tag_word_conversion():
    one = 0x3FFF8000000000000000
    # top = 7: physical register 7 holds st0
    assert full_tag_word(7 << 11, 0x80, [one] + [0] * 7) == 0x3FFF
    assert full_tag_word(0, 0x01, [0] * 8) == 0xFFFD                    # st0 = +0: tag "zero"
    assert abridged_tag(0x3FFF) == 0x80


def test_linear_memory_pages_when_paging_is_on():
    target, vcpu, ram = make_target()
    linear = LinearMemory(vcpu, target.linear.memory)
    ram[0x1234] = 0x5A
    assert linear.read(0x1234, 1) == b"\x5a"                           # paging off: linear = physical
    vcpu.sregs.cr0 = 0x80000011
    ram[0x101234] = 0xA5
    assert linear.read(0x1234, 1) == b"\xa5"                           # through translate()
    vcpu.unmapped = {2}
    assert len(linear.read(0x1F00, 0x200)) == 0x100                    # stops at the unmapped page
    with pytest.raises(GuestMemoryError):
        linear.read(0x2000, 4)
    with pytest.raises(GuestMemoryError):
        linear.write(0x1FFE, b"abcd")                                 # nothing written
    assert ram[0x101FFE:0x102000] == b"\0\0"


def test_memory_errors_become_target_errors():
    target, _, _ = make_target()
    with pytest.raises(TargetError) as info:
        target.read_memory(0x80000000, 4)
    assert info.value.errno == 0x14                                  # "E14", as QEMU's stub replies


@pytest.mark.parametrize("address", [0x1_0000_1234, 0x1_0000_0000 - 2, 2**64 - 4])
def test_addresses_past_4_gib_with_paging_off_never_wrap_onto_low_memory(address):
    target, _, ram = make_target()
    ram[0x1234] = 0x5A
    ram[0:2] = b"\x11\x22"
    try:
        data = target.read_memory(address, 4)
    except TargetError as exc:
        assert exc.errno == 0x14
    else:                                       # what lies below 4 GiB, and nothing past it
        assert address < 2**32 and len(data) == 2**32 - address
    with pytest.raises(TargetError):
        target.write_memory(address, b"\xcc\xcc\xcc\xcc")
    assert ram[0x1234] == 0x5A and ram[0:2] == b"\x11\x22"
    with pytest.raises(TargetError):
        target.write_memory(0xFFFFFFF0, b"\x90")                      # firmware is read-only


def test_debug_registers_encode_dr7():
    dr = DebugRegisters()
    assert dr.add(BREAK_HARDWARE, 0xF001C, 1) == 0
    assert dr.add(WATCH_WRITE, 0x500, 4) == 1
    assert dr.add(WATCH_ACCESS, 0x508, 8) == 2
    values = dr.debugreg()
    assert values[:3] == [0xF001C, 0x500, 0x508]
    # slot 0: enable bit 0, R/W 00 LEN 00; slot 1: bit 2, R/W 01 LEN 11; slot 2: bit 4, R/W 11 LEN 10
    assert values[7] == (1 << 10) | 0b10101 | (0b1101 << 20) | (0b1011 << 24)
    assert dr.debugreg(executes=False)[7] & 1 == 0
    assert dr.hit(0b10) == (WATCH_WRITE, 0x500, 4)
    dr.add(WATCH_READ, 0x600, 2)
    with pytest.raises(DebugRegisterError) as full:
        dr.add(BREAK_HARDWARE, 0x1, 1)                                  # all four in use
    assert full.value.errno == 28                                       # gdb's ENOSPC
    with pytest.raises(DebugRegisterError):
        DebugRegisters().add(WATCH_WRITE, 0x501, 4)                     # misaligned
    with pytest.raises(DebugRegisterError):
        DebugRegisters().add(WATCH_WRITE, 0x500, 3)
    assert execution_breakpoint(0xF001C) == [0xF001C, 0, 0, 0, 0, 0, 0, (1 << 10) | 1]
    assert dr.remove(WATCH_WRITE, 0x500, 4) and not dr.remove(WATCH_WRITE, 0x500, 4)


def test_software_breakpoints_fall_back_to_hardware_and_say_so():
    notes = []
    target, vcpu, _ = make_target(software_breakpoints=False, notice=notes.append)
    target.add_breakpoint(BREAK_SOFTWARE, 0xF0010, 1)
    assert target.hardware.slots[0] == (BREAK_SOFTWARE, 0xF0010, 1)
    assert len(notes) == 1 and "hardware" in notes[0]
    target.add_breakpoint(BREAK_SOFTWARE, 0xF0020, 1)
    assert len(notes) == 1                                              # said once


def test_watchpoints_are_refused_where_kvm_does_not_report_them():
    notes = []
    target, _, _ = make_target(data_breakpoints=False, notice=notes.append)
    with pytest.raises(TargetError):
        target.add_breakpoint(WATCH_WRITE, 0x500, 1)
    assert "can-use-hw-watchpoints 0" in notes[0]


def test_int3_breakpoints_patch_ram_and_stay_invisible():
    target, vcpu, ram = make_target(software_breakpoints=True)
    ram[0x7C00] = 0x90
    target.add_breakpoint(BREAK_SOFTWARE, 0x7C00, 1)
    assert ram[0x7C00] == 0xCC
    assert target.read_memory(0x7C00, 1) == b"\x90"
    target.write_memory(0x7BFF, b"\x11\x22")                           # gdb rewrites the byte
    assert ram[0x7C00] == 0xCC and target.read_memory(0x7C00, 1) == b"\x22"
    target.remove_breakpoint(BREAK_SOFTWARE, 0x7C00, 1)
    assert ram[0x7C00] == 0x22
    target.add_breakpoint(BREAK_SOFTWARE, 0xFFFFFFF0, 1)               # ROM: a hardware slot
    assert target.hardware.slots[0] == (BREAK_SOFTWARE, 0xFFFFFFF0, 1)


def test_continue_from_a_breakpoint_steps_over_it_first():
    target, vcpu, _ = make_target()
    target.add_breakpoint(BREAK_HARDWARE, 0xFFFFFFF0, 1)                # at the pc
    target.resume(step=False)
    control, debugreg = vcpu.debug[-1]
    assert control & abi.KVM_GUESTDBG_SINGLESTEP and debugreg[7] & 1 == 0
    vcpu.regs.rip = 0xFFF5
    assert target.debug_exit(1, DR6_BS) is None                          # our step: run on
    control, debugreg = vcpu.debug[-1]
    assert not control & abi.KVM_GUESTDBG_SINGLESTEP and debugreg[7] & 1
    assert control & abi.KVM_GUESTDBG_USE_HW_BP


def test_breakpoint_stops_name_the_reason_only_where_gdb_sees_the_pc():
    target, vcpu, _ = make_target()
    target.add_breakpoint(BREAK_HARDWARE, 0x7C00, 1)
    target.resume(step=False)
    vcpu.sregs.cs.base, vcpu.regs.rip = 0, 0x7C00
    assert target.debug_exit(1, 0b1) == StopEvent(5, "hwbreak")
    vcpu.sregs.cs.base, vcpu.regs.rip = 0x7C0, 0                          # same spot, CS=0x7C0
    assert target.debug_exit(1, 0b1) == StopEvent(5, "")


def test_a_step_stops_after_one_instruction_and_steps_disable_breakpoints():
    target, vcpu, _ = make_target()
    target.add_breakpoint(BREAK_HARDWARE, 0x12345, 1)
    target.resume(step=True)
    assert target.stepping and vcpu.debug[-1][1][7] & 1 == 0
    assert target.debug_exit(1, DR6_BS) == StopEvent(5)
    assert not target.stepping and vcpu.debug[-1][1][7] & 1


def test_a_step_cut_short_by_io_stops_and_an_interrupt_is_sigint():
    target, vcpu, _ = make_target()
    target.resume(step=True)
    assert target.step_cut_short() == StopEvent(5)
    assert target.step_cut_short() is None                               # not stepping any more
    assert target.interrupted() == StopEvent(2)


def test_detach_clears_everything():
    target, vcpu, ram = make_target(software_breakpoints=True)
    target.add_breakpoint(BREAK_SOFTWARE, 0x7C00, 1)
    target.add_breakpoint(BREAK_HARDWARE, 0x7D00, 1)
    target.detach()
    assert ram[0x7C00] == 0 and not target.hardware and vcpu.debug[-1][0] == 0


def test_an_int3_hit_is_stepped_over_with_the_original_byte_back_in_place():
    target, vcpu, ram = make_target(software_breakpoints=True)
    vcpu.sregs.cs.base, vcpu.sregs.cs.selector, vcpu.regs.rip = 0, 0, 0x7C00
    ram[0x7C00] = 0x90
    target.add_breakpoint(BREAK_SOFTWARE, 0x7C00, 1)
    assert target.debug_exit(3, 0) == StopEvent(5, "swbreak")
    target.resume(step=False)
    control = vcpu.debug[-1][0]
    assert ram[0x7C00] == 0x90 and control & abi.KVM_GUESTDBG_SINGLESTEP
    assert control & abi.KVM_GUESTDBG_USE_SW_BP
    vcpu.regs.rip = 0x7C01
    assert target.debug_exit(1, DR6_BS) is None                          # on with the continue
    assert ram[0x7C00] == 0xCC and not target.stepping
    vcpu.regs.rip = 0x7D00
    assert target.debug_exit(3, 0) == StopEvent(5)                        # the guest's own int3
