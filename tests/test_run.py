"""`tinyvmm run` with tiny guests on /dev/kvm: output, statuses, crash reports, timeouts."""

import re
import signal
import subprocess
import time

import pytest
from command_line import start_tinyvmm, tinyvmm
from guest_build import build_guest

pytestmark = pytest.mark.kvm


def test_hello_serial_and_debug_console(tmp_path):
    image = build_guest("hello")
    debug = tmp_path / "debug.txt"
    result = tinyvmm("run", "--bios", str(image.bin_path), "--debugcon", f"file:{debug}",
                     "--mem", "16M")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"Hello from COM1\n"
    assert debug.read_bytes() == b"Hello from the debug console\n"


def test_serial_to_file_and_none(tmp_path):
    image = build_guest("hello")
    out = tmp_path / "serial.txt"
    result = tinyvmm("run", "--bios", str(image.bin_path), "--serial", f"file:{out}")
    assert result.returncode == 0
    assert out.read_bytes() == b"Hello from COM1\n"
    result = tinyvmm("run", "--bios", str(image.bin_path), "--serial", "none")
    assert result.returncode == 0 and result.stdout == b""


def test_a_reset_before_the_expected_text_is_status_6_and_after_it_status_0():
    image = build_guest("hello")
    missed = tinyvmm("run", "--bios", str(image.bin_path), "--expect", "never printed")
    assert missed.returncode == 6
    assert missed.stderr.decode().strip().endswith("tinyvmm: guest reset before 'never printed' appeared")
    seen = tinyvmm("run", "--bios", str(image.bin_path), "--expect", "from COM1")
    assert seen.returncode == 0 and seen.stderr == b""
    assert tinyvmm("run", "--bios", str(image.bin_path)).returncode == 0    # a reset, unwatched


@pytest.mark.parametrize("point,said", [("banner", "the kernel printed its banner"),
                                         ("init", "the test init printed its first line")])
def test_a_reset_before_the_stop_at_point_is_status_6(point, said, capsys):
    # `tinyvmm boot` ends this way when its kernel panics (and resets) before the point; the
    # hello guest resets at once, and the command line's launch() is the same for every guest
    from tinyvmm.cli.launch import RunOptions, launch
    from tinyvmm.spec import MachineSpec
    spec = MachineSpec(firmware=build_guest("hello").bin_path.read_bytes(), serial="none")
    assert launch(spec, RunOptions(timeout=30, stop_at=point)) == 6
    assert capsys.readouterr().err.strip() == f"tinyvmm: guest reset before {said}"
    assert launch(spec, RunOptions(timeout=30)) == 0


def test_stop_at_and_stop_at_kernel_are_one_choice():
    both = tinyvmm("boot", "--stop-at", "init", "--stop-at-kernel")
    assert both.returncode == 2 and b"not allowed with" in both.stderr


def test_io_string_unclaimed_mmio_cmos():
    image = build_guest("io_checks")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--debugcon", "stdio",
                     "--trace", "unclaimed")
    assert result.returncode == 0, result.stderr.decode()
    fields = result.stdout.decode().split()
    assert fields[0] == "io-checks:"
    assert fields[1:5] == ["ff", "ff", "7f", "ff"]
    trace = result.stderr.decode()
    assert "pio read 0x99" in trace
    assert "mmio read 0xa0000" in trace


def test_string_io_reaches_devices_in_few_exits():
    image = build_guest("io_checks")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--trace", "io")
    reads = [line for line in result.stderr.decode().splitlines() if "in  0x0099" in line]
    counts = [int(line.split(" x")[1].split()[0]) if " x" in line else 1 for line in reads]
    assert sum(counts) == 3000 + 1          # the rep insb, and the single inb before it
    assert len(reads) < 10                  # KVM hands over up to 1024 bytes per exit


def test_crash_yields_report_and_status_3():
    image = build_guest("triple_fault")
    result = tinyvmm("run", "--bios", str(image.bin_path))
    report = result.stderr.decode()
    assert result.returncode == 3, report
    assert "guest crashed" in report
    for name in ("rax", "rbx", "rip", "rflags", "cr0", "cr2", "cr3", "cr4", "efer"):
        assert name in report
    for seg in (" cs sel", " ds sel", " ss sel"):
        assert seg in report
    assert "0x0000000000001234" in report               # AX as the guest left it
    assert "exits:" in report


def test_timeout_status_and_report():
    image = build_guest("spin")
    start = time.monotonic()
    result = tinyvmm("run", "--bios", str(image.bin_path), "--timeout", "0.5", "--debugcon", "stdio")
    assert time.monotonic() - start < 20
    assert result.returncode == 4
    report = result.stderr.decode()
    assert "timeout" in report and "cs sel 0xf000" in report
    assert "spinning" in report                          # last debug console output
    assert result.stdout == b"spinning\n"


def test_ctrl_c_ends_cleanly():
    image = build_guest("spin")
    proc = start_tinyvmm("run", "--bios", str(image.bin_path), "--debugcon", "stdio",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(9) == b"spinning\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert b"interrupted" in err and b"Traceback" not in err


def test_expect_ends_run_early():
    image = build_guest("spin")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--debugcon", "none",
                     "--expect", "spinn", "--timeout", "30")
    assert result.returncode == 0, result.stderr.decode()


def test_in_process_machine_records_milestones(machine):
    from tinyvmm import Outcome
    guest = machine(build_guest("hello").bin_path, mem=16 << 20)
    result = guest.run(timeout=30)
    assert result.outcome is Outcome.RESET
    assert [(m.port, m.value) for m in guest.milestones] == [(0xF5, 1)]
    assert guest.board.first_run_ns <= guest.milestones[0].time_ns


@pytest.mark.kvm
def test_a_guest_halted_for_good_ends_the_run_with_status_5():
    """tinyvmm's BIOS with nothing to boot says so and halts with interrupts off."""
    import time

    from tinyvmm import firmware
    start = time.monotonic()
    result = tinyvmm("run", "--bios", firmware.image_path(firmware.BIOS), "--timeout", "60",
                     text=True)
    assert result.returncode == 5, result.stderr
    assert "halted for good: HLT with interrupts disabled at f000:" in result.stderr
    assert time.monotonic() - start < 10


def test_tinyvmm_ends_the_guest_line_before_its_own_when_both_share_a_file(tmp_path):
    from tinyvmm.firmware import real_mode_image
    bios = tmp_path / "bios.bin"
    # mov al, 'a'; mov dx, 0x3f8; out dx, al; cli; hlt: a line without its newline, then a halt
    bios.write_bytes(real_mode_image(bytes.fromhex("b061 baf803 ee fa f4")))
    log = tmp_path / "both.txt"
    with open(log, "wb") as out:
        result = tinyvmm("run", "--bios", str(bios), "--timeout", "30", stdout=out, stderr=out)
    text = log.read_bytes()
    assert result.returncode == 5 and text.startswith(b"a\ntinyvmm: "), text[:200]   # HALTED
    apart = tmp_path / "apart.txt"
    with open(apart, "wb") as out:
        tinyvmm("run", "--bios", str(bios), "--timeout", "30", stdout=out,
                stderr=subprocess.DEVNULL)
    assert apart.read_bytes() == b"a"          # the guest's own output, untouched


def test_report_file_holds_the_last_runs_crash_report(tmp_path):
    report = tmp_path / "report.txt"
    crash = tinyvmm("run", "--bios", str(build_guest("triple_fault").bin_path), "--serial", "none",
                    "--report", str(report), "--timeout", "30")
    assert crash.returncode == 3
    assert "triple fault" in report.read_text().lower()
    assert report.read_text().strip() in crash.stderr.decode()     # the same text as on stderr
    fine = tinyvmm("run", "--bios", str(build_guest("hello").bin_path), "--serial", "none",
                   "--report", str(report), "--timeout", "30")
    assert fine.returncode == 0 and not report.exists()             # no stale report left
    refused = tinyvmm("run", "--bios", "bios.bin", "--report", str(tmp_path))
    assert refused.returncode == 2 and b"is a directory" in refused.stderr


def test_trace_completions_and_stats_show_what_the_host_left_to_tinyvmm():
    """The triple-fault guest's int3 (protected mode, empty IDT): an emulating host leaves
    it to tinyvmm, which delivers it as the CPU would (#GP, selector error 3 * 8 + 2)."""
    from tinyvmm.kvm.system import is_emulating_host
    crash = tinyvmm("run", "--bios", str(build_guest("triple_fault").bin_path), "--serial", "none",
                    "--trace", "completions", "--stats", "--timeout", "30", text=True)
    assert crash.returncode == 3, crash.stderr
    traced = [line.split(None, 2) for line in crash.stderr.splitlines() if " complete " in line]
    if not is_emulating_host():
        assert traced == [] and "\ncompleted " not in crash.stderr
        return
    assert len(traced) == 1, crash.stderr
    float(traced[0][0])                                   # seconds since the start
    assert re.fullmatch(r"int3: exit at 0xf[0-9a-f]{4}, the guest goes on with exception 13 \(0x1a\)",
                        traced[0][2]), traced
    table = crash.stderr.split("\ncompleted ", 1)[1].splitlines()
    assert table[0].split() == ["count", "time", "each"] and table[1].split()[:2] == ["int3", "1"]


def test_a_report_file_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    for path in ("/proc/version", "/sys/kernel/mm/transparent_hugepage/enabled", ""):
        refused = tinyvmm("run", "--bios", str(build_guest("triple_fault").bin_path), "--serial",
                          "none", "--report", path)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.decode().splitlines()) == 1, refused.stderr


def test_kernel_files_and_unseekable_disks_are_read_or_refused_in_one_line(tmp_path):
    from tinyvmm.files import read_bounded
    assert read_bounded("/proc/version", 1 << 20).startswith(b"Linux version")  # stat says 0
    for disk in ("--disk", "/proc/version"), ("--drive", "file=/proc/version,if=virtio,format=raw"):
        result = tinyvmm("run", "--bios", "bios.bin", *disk)
        assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr
        assert b"has no size" in result.stderr or b"at least one" in result.stderr
