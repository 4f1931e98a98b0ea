"""Exit traces with locations and symbols, --stats, crash reports with disassembly: for tiny
guests that do known things, plus the symbol and disassembly helpers on their own."""

import io
import re
import shutil
import subprocess
import sys

import pytest
from guest_build import build_guest, toolchain_missing
from guest_memory import guest_memory

from tinyvmm.debug import disasm, report
from tinyvmm.debug.symbols import SymbolFile, SymbolFileError, SymbolTable, parse_symbol_spec
from tinyvmm.debug.trace import ExitStats
from tinyvmm.kvm import abi
from tinyvmm.runner import Outcome


def run_guest(name, trace=(), stats=False, symbols=True, timeout=60):
    """Run a test guest through the same wiring the command line uses; (result, trace, stderr)."""
    from tinyvmm.board import Board, BoardConfig
    from tinyvmm.debug.session import DebugSession, symbol_loader
    from tinyvmm.debug.trace import Tracer
    from tinyvmm.runner import Runner
    from tinyvmm.spec import DebugSpec, MachineSpec
    image = build_guest(name)
    firmware = image.bin_path.read_bytes()
    spec = MachineSpec(firmware=firmware, debug=DebugSpec(
        stats=stats, symbols=(parse_symbol_spec(str(image.elf_path)),) if symbols else ()))
    out, err = io.StringIO(), io.StringIO()
    tracer = Tracer(out, set(trace)) if trace else None
    board = Board(BoardConfig(firmware), tracer=tracer)
    try:
        runner = Runner(board, timeout=timeout, tracer=tracer)
        with DebugSession(board, runner, spec.debug, symbol_loader(spec, None), err=err) as debug:
            result = debug.run()
    finally:
        board.close()
    return result, out.getvalue(), err.getvalue()


def linear(name, symbol):
    return SymbolFile(build_guest(name).elf_path).address_of(symbol)


# --- on KVM ---------------------------------------------------------------------


@pytest.mark.kvm
def test_trace_lines_carry_mode_cs_ip_and_symbol():
    result, trace, _ = run_guest("trace_ports", trace={"io", "milestones"})
    assert result.outcome is Outcome.RESET, result.message
    lines = trace.splitlines()

    def line_for(pattern):
        found = [line for line in lines if re.search(pattern, line)]
        assert len(found) == 1, (pattern, trace)
        return found[0]
    first = line_for(r"out 0x0080 size 1 11$")
    second = line_for(r"out 0x0080 size 1 22$")
    protected = line_for(r"out 0x0080 size 1 33$")
    milestone = line_for(r"milestone .*value 1")
    # The IP is the I/O instruction's or the next one's, depending on the host; both lie in the label.
    assert re.search(r" real f000:00[0-9a-f]{2} first_write\+0x[24] ", first), first
    assert re.search(r" real f000:00[0-9a-f]{2} second_write\+0x[24] ", second), second
    assert re.search(r" milestone_write\+0x[24] ", milestone), milestone
    assert re.search(r" pm32 0008:000f00[0-9a-f]{2} protected_write\+0x[24] ", protected), protected
    timestamps = [float(line.split()[0]) for line in lines]
    assert timestamps == sorted(timestamps)


@pytest.mark.kvm
def test_trace_without_symbols_still_shows_where():
    _, trace, _ = run_guest("trace_ports", trace={"io"}, symbols=False)
    line = [line for line in trace.splitlines() if line.endswith("size 1 11")][0]
    assert re.search(r" real f000:00[0-9a-f]{2} out ", line), line


@pytest.mark.kvm
def test_crash_report_disassembles_the_faulting_instruction_in_32_bit_mode():
    result, _, _ = run_guest("crash_pm32")
    assert result.outcome is Outcome.CRASH, result.message
    text = result.report
    crash = linear("crash_pm32", "crash_here")
    assert f"where: pm32 0008:{crash:08x} crash_here" in text, text
    assert re.search(rf"=> 0008:{crash:08x}  0f 0b +ud2   <crash_here>", text), text
    assert "mov eax, 0x12345678" in text, text           # only a 32-bit decode gives this
    assert "code (32-bit)" in text
    history = text[text.index("last 32 exits"):].splitlines()[1:33]
    assert len(history) == 32 and history[-1].strip() == "SHUTDOWN", text
    assert all("port 0x0080" in line for line in history[:-1])   # the tail of the 40 writes
    assert "data 01" in history[-2]                          # the loop counts down to 1


@pytest.mark.kvm
def test_timeout_report_shows_the_spin_loop():
    result, _, _ = run_guest("spin", timeout=1)
    assert result.outcome is Outcome.TIMEOUT
    assert re.search(r"where: real f000:00[0-9a-f]{2} start\+0x", result.report), result.report
    assert re.search(r"=> f000:00[0-9a-f]{2}  eb fe +jmp ", result.report), result.report


@pytest.mark.kvm
def test_stats_count_exits_and_ports():
    loops = 20000                                        # out_loop.S's LOOPS
    result, _, err = run_guest("out_loop", stats=True, symbols=False)
    assert result.outcome is Outcome.RESET
    rows = {line.split()[0]: line.split() for line in err.splitlines() if line.strip()}
    assert int(rows["IO"][1]) == loops + 1               # and the i8042 reset
    post = [line.split() for line in err.splitlines() if line.startswith("0x0080")]
    assert post and post[0][1:5] == ["post", "out", str(loops), str(loops)], err
    reset = [line.split() for line in err.splitlines() if line.startswith("0x0064")]
    assert reset[0][1:4] == ["i8042", "out", "1"], err
    assert "in KVM_RUN" in err


# --- without KVM ------------------------------------------------------------------


def test_stats_table_sorts_and_divides():
    stats = ExitStats()
    stats.port_access(0x3F8, True, 1, 3000)
    stats.port_access(0x3F8, True, 1, 1000)
    stats.port_access(0x510, False, 4, 9000)
    counts = [0] * 256
    counts[abi.KVM_EXIT_IO] = 3
    stats.handler_ns[abi.KVM_EXIT_IO] = 30000
    table = stats.table(counts, {0x3F8: "com1"}.get)
    lines = table.splitlines()
    assert lines[1].split() == ["IO", "3", "0.000030", "s", "10.0", "us"]
    ports = [line.split() for line in lines if line.startswith("0x")]
    assert ports[0][:5] == ["0x0510", "-", "in", "1", "4"]            # most time first
    assert ports[1][:5] == ["0x03f8", "com1", "out", "2", "2"] and ports[1][-2:] == ["2.0", "us"]


def test_disassembly_follows_the_mode():
    code = bytes.fromhex("b878563412")
    assert disasm.disassemble(code, 0, 16, 1)[0].text == "mov ax, 0x5678"
    assert disasm.disassemble(code, 0, 32, 1)[0].text == "mov eax, 0x12345678"
    insn = disasm.disassemble(bytes.fromhex("48b8efcdab8967452301"), 0x1000, 64, 1)[0]
    assert insn.text == "movabs rax, 0x123456789abcdef" and insn.address == 0x1000
    sregs = abi.kvm_sregs()
    assert disasm.code_bits(sregs) == 16
    sregs.cr0, sregs.cs.db = 1, 1
    assert disasm.code_bits(sregs) == 32
    sregs.efer, sregs.cs.l, sregs.cs.db = 1 << 10, 1, 0
    assert disasm.code_bits(sregs) == 64


class _Vcpu:
    def translate(self, linear):
        return linear


def _listing(code: bytes, symbols=None):
    ram = bytearray(0x20000)
    ram[0x10100:0x10100 + len(code)] = code
    regs, sregs = abi.kvm_regs(rip=0x100), abi.kvm_sregs()
    sregs.cs.selector, sregs.cs.base = 0x1000, 0x10000
    return report.code_listing(_Vcpu(), guest_memory((0, ram)), regs, sregs, symbols)


def test_code_listing_marks_the_instruction_pointer():
    lines = _listing(bytes.fromhex("31c0" "ebfe"))
    assert lines[0] == "code (16-bit), from the instruction pointer:"
    assert lines[1].split() == ["=>", "1000:0100", "31", "c0", "xor", "ax,", "ax"]
    assert lines[2].split()[:4] == ["1000:0102", "eb", "fe", "jmp"]


def test_code_listing_without_capstone_shows_bytes_and_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "capstone", None)        # import fails
    monkeypatch.setattr(disasm, "_engines", {})
    lines = _listing(bytes.fromhex("0f0b"))
    assert len(lines) == 1 and lines[0].startswith("code: 0f 0b") and "capstone is not installed" in lines[0]


def test_code_listing_outside_memory_says_so():
    regs, sregs = abi.kvm_regs(rip=0), abi.kvm_sregs()
    sregs.cs.base = 0x80000000
    lines = report.code_listing(_Vcpu(), guest_memory((0, 4096)), regs, sregs)
    assert lines[0].startswith("code: cannot read")


def test_where_formats_each_mode():
    regs, sregs = abi.kvm_regs(rip=0xFFF0), abi.kvm_sregs()
    sregs.cs.selector, sregs.cs.base = 0xF000, 0xFFFF0000
    assert report.where(regs, sregs) == "real f000:fff0"
    sregs.cr0, sregs.cs.db, sregs.cs.selector, sregs.cs.base = 1, 1, 8, 0
    regs.rip = 0x100000
    assert report.where(regs, sregs) == "pm32 0008:00100000"
    sregs.efer, sregs.cs.l, sregs.cs.selector = 1 << 10, 1, 0x10
    regs.rip = 0xFFFFFFFF81000000
    assert report.where(regs, sregs) == "long 0010:ffffffff81000000"


# --- symbols -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello_symbols():
    if toolchain_missing():
        pytest.skip(toolchain_missing())
    return SymbolFile(build_guest("hello").elf_path)


def test_real_mode_image_symbols_are_found_at_both_firmware_aliases(hello_symbols):
    table = SymbolTable([hello_symbols])
    assert hello_symbols.real_mode_image and hello_symbols.bases == (0xF0000, 0xFFFF0000)
    assert table.name(0xFFFFFFF0) == "reset"                     # where the CPU starts
    assert table.name(0xFFFF0) == "reset"
    assert table.name(0xF0000) == "start"
    assert table.name(0xF0004) == "start+0x4"
    assert table.name(0x500) == ""                               # not in the image
    assert table.name(0xF0000 + 0x8000) == ""                    # inside the segment, past .text
    assert hello_symbols.gdb_command().endswith(" -o 0xf0000")


def test_symbol_at_an_explicit_address(hello_symbols):
    moved = parse_symbol_spec(f"{hello_symbols.path}@0xc0000")
    assert moved.bases == (0xC0000,)
    assert SymbolTable([moved]).name(0xC0000) == "start"
    assert moved.gdb_command().endswith(" -o 0xc0000")


def test_bad_symbol_files_are_reported(tmp_path):
    with pytest.raises(SymbolFileError, match="cannot read"):
        SymbolFile(tmp_path / "missing.elf")
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"not an elf at all" * 10)
    with pytest.raises(SymbolFileError, match="not an ELF"):
        SymbolFile(junk)
    with pytest.raises(SymbolFileError, match="not an address"):
        parse_symbol_spec(f"{junk}@nowhere")


def test_an_elf_linked_high_is_taken_at_its_link_addresses(tmp_path):
    if toolchain_missing() or shutil.which("gcc") is None:
        pytest.skip(toolchain_missing() or "gcc not found")
    source = tmp_path / "high.S"
    source.write_text(".text\n.globl kernel_entry\n.type kernel_entry,@function\nkernel_entry:\n"
                      "  nop\n  nop\n  ret\n.size kernel_entry, 3\nlocal_label:\n  hlt\n")
    subprocess.run(["as", "--32", "-o", str(tmp_path / "high.o"), str(source)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-e", "kernel_entry",
                    "-o", str(tmp_path / "high.elf"), str(tmp_path / "high.o")], check=True)
    high = SymbolFile(tmp_path / "high.elf")
    assert not high.real_mode_image and high.bases == (0,)
    table = SymbolTable([high])
    assert table.name(0x100001) == "kernel_entry+0x1"
    assert table.name(0x100003) == "local_label"
    assert table.name(0xF0000) == ""
    assert table.address_of("kernel_entry") == 0x100000
