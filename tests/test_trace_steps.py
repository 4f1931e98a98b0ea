"""--trace steps: the grammar, its usage errors, and instruction traces of the shipped BIOS and
of tiny guests on KVM (first line, limit, start conditions, port I/O, the trace file)."""

import re
from pathlib import Path

import pytest
from command_line import tinyvmm
from guest_build import build_guest

from tinyvmm import cli
from tinyvmm import firmware as shipped
from tinyvmm.debug.symbols import SymbolFile
from tinyvmm.debug.trace import CATEGORIES, DEFAULT_STEPS, StepSpec, TraceSpecError, parse_spec

SHIPPED_BIOS = str(Path(shipped.DIRECTORY, shipped.BIOS))   # its bios.elf beside it names things
SHIPPED_BIOS_ELF = str(Path(shipped.DIRECTORY, "bios.elf"))
STEP_LINE = re.compile(r"^ *\d+\.\d+ step       (?!steps: )")


def step_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if STEP_LINE.match(line)]


def symbols_of(lines: list[str]) -> list[str]:
    """The <symbol+offset> that ends each line."""
    return [re.search(r"<([^>]+)>$", line).group(1) for line in lines]


# --- the grammar ------------------------------------------------------------------


def test_steps_grammar():
    assert parse_spec("steps") == (set(), StepSpec(DEFAULT_STEPS))
    assert parse_spec("steps=20000").steps == StepSpec(20000)
    assert parse_spec("steps=5@0xf0135").steps == StepSpec(5, address=0xF0135)
    assert parse_spec("steps@setup_pic").steps == StepSpec(DEFAULT_STEPS, symbol="setup_pic")
    assert parse_spec("steps=9@milestone:0x5").steps == StepSpec(9, milestone=5)
    spec = parse_spec("io, steps=500@milestone:1 ,milestones")
    assert spec.categories == {"io", "milestones"} and spec.steps == StepSpec(500, milestone=1)
    assert parse_spec("all") == (set(CATEGORIES), None)        # all: the events, never steps
    assert parse_spec("all,steps=3").steps == StepSpec(3)
    assert parse_spec("steps=1") and not parse_spec("io").steps


@pytest.mark.parametrize("spec,message", [
    ("steps=abc", "must be 1 to"),
    ("steps=0", "must be 1 to"),
    ("steps=", "must be 1 to"),
    ("steps=-5", "must be 1 to"),
    ("steps=\u00b2", "must be 1 to"),
    ("steps=1000000001", "must be 1 to"),
    ("steps=5,steps=6", "more than once"),
    ("steps=5@milestone:256", "a byte value"),
    ("steps=5@milestone:", "a byte value"),
    ("steps=5@0xzz", "not a linear address"),
    ("steps=5@", "after @ comes"),
    ("steps=5@a-b", "after @ comes"),
    ("stepsx", "unknown trace categories stepsx"),
    ("", "no trace category given"),
])
def test_bad_steps_specs(spec, message):
    with pytest.raises(TraceSpecError, match=re.escape(message)):
        parse_spec(spec)


@pytest.mark.parametrize("spec", ["steps=abc", "steps=0", "io,steps=5@milestone:x"])
def test_bad_specs_are_one_usage_error_line(capsys, spec):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--bios", "x.bin", "--trace", spec])
    assert exc.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error:" in line] == [
        f"tinyvmm run: error: argument --trace: {parse_error(spec)}"]
    assert "Traceback" not in err


def parse_error(spec: str) -> str:
    try:
        parse_spec(spec)
    except TraceSpecError as exc:
        return str(exc)
    raise AssertionError(spec)


def test_help_gives_the_grammar():
    result = tinyvmm("run", "--help", text=True)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "steps[=N][@START]" in text and "milestone:VALUE" in text and "--trace-file" in text


# --- usage errors found before the guest runs --------------------------------------


@pytest.mark.parametrize("extra,message", [
    (["--trace", "steps", "--gdb", "tcp::0"], "--trace steps cannot be used with --gdb"),
    (["--trace-file", "{tmp}/t.txt"], "--trace-file needs --trace"),
    (["--trace", "io", "--trace-file", "{tmp}"], "cannot write the trace to"),
])
def test_combinations_refused_in_one_line(tmp_path, extra, message):
    result = tinyvmm("run", "--bios", SHIPPED_BIOS, *[a.format(tmp=tmp_path) for a in extra],
                     text=True)
    assert result.returncode == cli.EXIT_USAGE
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"tinyvmm: {message}"), result.stderr


@pytest.mark.kvm
def test_an_unknown_start_symbol_is_a_usage_error():
    result = tinyvmm("run", "--bios", SHIPPED_BIOS, "--trace", "steps=5@no_such_label", text=True)
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr == "tinyvmm: --trace steps@no_such_label: no symbol file names no_such_label\n"


# --- on KVM ---------------------------------------------------------------------------


@pytest.mark.kvm
def test_shipped_bios_trace_starts_at_the_reset_vector_and_the_guest_runs_on(tmp_path):
    trace = tmp_path / "steps.txt"
    result = tinyvmm("run", "--bios", SHIPPED_BIOS, "--trace", "steps=40", "--trace-file",
                     str(trace), "--serial", "none", "--debugcon", "stdio",
                     "--expect", "no bootable option ROM", text=True)
    assert result.returncode == 0, result.stderr           # the BIOS went on to its end
    assert "step" not in result.stderr                      # every trace line went to the file
    lines = trace.read_text().splitlines()
    steps = step_lines("\n".join(lines))
    assert len(steps) == 40
    assert re.search(r" step       real f000:fff0 ea 00 00 00 f0 +ljmp 0xf000:0 +<reset_vector>$",
                     steps[0]), steps[0]
    assert re.search(r" real f000:0000 fa +cli +<bios_entry>$", steps[1]), steps[1]
    assert lines[-1].endswith("steps: 40 instructions traced; the guest runs on at full speed")
    names = symbols_of(steps)
    # Port I/O ends a step of its own, neither skipped nor counted twice: the `out` of the
    # firmware-start milestone, then the debug console's `in al, dx`.
    out = names.index("bios_entry+0x19")
    assert "out 0xf5, al" in steps[out] and names[out + 1] == "bios_entry+0x1b"
    inb = names.index("debugcon_present+0x5")
    assert "in al, dx" in steps[inb] and names[inb + 1] == "debugcon_present+0x6"


@pytest.mark.kvm
def test_whole_guest_through_a_mode_switch_ends_with_its_reset():
    image = build_guest("trace_ports")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--trace", "steps", text=True)
    assert result.returncode == 0, result.stderr
    steps = step_lines(result.stderr)
    assert symbols_of(steps[:8]) == [
        "reset", "milestone_write", "milestone_write+0x2", "milestone_write+0x4",
        "first_write", "first_write+0x2", "first_write+0x4", "second_write"]
    assert " pm16 f000:00000020 " in steps[-8] and "ljmp 8:0xf0028" in steps[-8]
    assert re.search(r" pm32 0008:000f0028 66 b8 10 00 +mov ax, 0x10 +<protected>$", steps[-7])
    assert "out 0x64, al" in steps[-1]          # the reset ended the run within the limit
    assert "instructions traced" not in result.stderr


@pytest.mark.kvm
def test_start_at_an_address_and_at_a_symbol():
    image = build_guest("trace_ports")
    second = SymbolFile(image.elf_path).address_of("second_write")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--symbols", str(image.elf_path),
                     "--trace", f"steps=3@{second:#x}", text=True)
    assert result.returncode == 0, result.stderr
    assert f"steps: waiting for the first instruction at {second:#x} <second_write>" in result.stderr
    assert symbols_of(step_lines(result.stderr)) == ["second_write", "second_write+0x2",
                                                     "second_write+0x4"]
    result = tinyvmm("run", "--bios", SHIPPED_BIOS, "--trace", "steps=2@setup_pic",
                     "--debugcon", "stdio", "--expect", "no bootable option ROM", text=True)
    assert result.returncode == 0, result.stderr
    steps = step_lines(result.stderr)
    setup_pic = SymbolFile(SHIPPED_BIOS_ELF).address_of("setup_pic")
    assert symbols_of(steps) == ["setup_pic", "setup_pic+0x1"]
    assert f" real f000:{setup_pic & 0xFFFF:04x} " in steps[0]


@pytest.mark.kvm
def test_start_after_a_milestone_with_other_categories():
    image = build_guest("trace_ports")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--symbols", str(image.elf_path),
                     "--trace", "steps=2@milestone:1,milestones", text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "steps: waiting for milestone 1 on port 0xf4 or 0xf5" in lines[0]
    assert "value 1: firmware start" in lines[1]
    assert symbols_of(step_lines(result.stderr)) == ["milestone_write+0x4", "first_write"]
    assert lines[4].endswith("steps: 2 instructions traced; the guest runs on at full speed")


@pytest.mark.kvm
def test_a_trace_file_that_fills_up_is_one_error_line():
    result = tinyvmm("run", "--bios", SHIPPED_BIOS, "--trace", "steps=500", "--trace-file",
                     "/dev/full", "--serial", "none", "--debugcon", "none", text=True)
    assert result.returncode == cli.EXIT_HOST_ERROR
    assert result.stderr == "tinyvmm: cannot write the trace to /dev/full: No space left on device\n"


@pytest.mark.kvm
def test_a_start_that_never_comes_leaves_the_guest_alone():
    image = build_guest("trace_ports")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--trace", "steps=5@milestone:9",
                     text=True)
    assert result.returncode == 0, result.stderr
    assert step_lines(result.stderr) == []


@pytest.mark.kvm
def test_boot_steps_from_do_boot_to_the_kernel_jump(payload, tmp_path):
    """boot: the BIOS writes do_boot (0xf4 = 5) itself; the ROM's jump into the kernel still
    ends the run (--stop-at-kernel), with stepping over by then."""
    trace = tmp_path / "steps.txt"
    result = tinyvmm("boot", "--kernel", str(payload), "--serial", "none", "--stop-at-kernel",
                     "--trace", "steps=50@milestone:5", "--trace-file", str(trace), text=True)
    assert result.returncode == 0, result.stderr
    steps = step_lines(trace.read_text())
    assert len(steps) == 50
    assert all(re.search(r" real [0-9a-f]{4}:[0-9a-f]{4} ", line) for line in steps), steps[:3]
