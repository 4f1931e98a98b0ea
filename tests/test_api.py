"""The public API (tinyvmm.Machine) and its pytest plugin: what a firmware test can do, and
the errors misuse gets."""

import subprocess
import sys
import textwrap

import pytest
from guest_build import build_guest

from tinyvmm import ConfigError, GuestMemoryError, Machine, MachineClosedError, Outcome
from tinyvmm.firmware import real_mode_image

MEM = 16 << 20
SPIN = real_mode_image(bytes.fromhex("eb fe"))                      # jmp $
OUT_IN = real_mode_image(bytes.fromhex("ba 00 06 ef ed eb fe"))     # out dx, ax; in ax, dx; jmp $


# --- bad input: found before KVM is touched (no fixture needed) -------------------------
@pytest.mark.parametrize("options,message", [
    (dict(firmware=b"x" * 1000), "a multiple of 64 KiB"),
    (dict(firmware="/nonexistent/bios.bin"), "cannot read firmware /nonexistent/bios.bin"),
    (dict(mem=1 << 20), "RAM must be between 2 MiB and 64 GiB"),
    (dict(mem=(16 << 20) + 1), "a multiple of 4 KiB"),
    (dict(boot="network"), "expected 'firmware' or 'direct'"),
    (dict(initrd="/x"), "initrd, append, append_as_is and boot need a kernel"),
    (dict(fw_cfg={"": b"x"}), "a file name cannot be empty"),
    (dict(fw_cfg={"etc/e820": b"x"}), "already provided by tinyvmm"),
    (dict(drives=["file=/nonexistent.img,if=virtio,format=raw"]), "/nonexistent.img"),
    (dict(serial="tty"), "expected stdio, none or file:PATH"),
])
def test_bad_options_raise_config_error_with_the_cli_message(options, message):
    options.setdefault("mem", MEM)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Machine(**options)


def test_a_kernel_error_is_the_cli_error(tmp_path, capsys):
    from tinyvmm import cli
    kernel = tmp_path / "k"
    kernel.write_bytes(b"not a kernel" * 100)
    with pytest.raises(ConfigError) as raised:
        Machine(kernel=kernel, mem=64 << 20)
    assert cli.main(["boot", "--kernel", str(kernel), "--mem", "64M"]) == cli.EXIT_USAGE
    assert f"tinyvmm: {raised.value}" in capsys.readouterr().err


# --- on KVM, through the plugin's fixture ------------------------------------------------
def test_run_until_a_console_text_then_on(machine):
    guest = machine(build_guest("hello").bin_path)
    result = guest.run(timeout=10, until_console="Hello from COM1")
    assert result.outcome is Outcome.EXPECTED
    assert guest.serial_output == b"Hello from COM1"     # stopped at the text's last byte
    assert guest.milestones[0][:2] == (0xF5, 1)
    result = guest.run(timeout=10)                  # on from there: the guest resets
    assert result.outcome is Outcome.RESET
    assert guest.serial_output == b"Hello from COM1\n"
    assert guest.debugcon_output == b"Hello from the debug console\n"


def test_run_until_a_milestone(machine):
    guest = machine(build_guest("hello").bin_path)
    result = guest.run(timeout=10, until_milestone=1)
    assert result.outcome is Outcome.EXPECTED and "milestone 0x1" in result.message
    assert guest.serial_output == b""               # stopped right after the `out`


def test_timeout_gives_a_report(machine):
    guest = machine(SPIN, mem=MEM)
    result = guest.run(timeout=0.3)
    assert result.outcome is Outcome.TIMEOUT and "f000:0000" in result.report


def test_step_disassembles_each_instruction_and_stops(machine):
    guest = machine(OUT_IN, mem=MEM)
    guest.add_port_device(0x600, 2, Register())
    lines = guest.step(4)
    assert [line.split()[1] for line in lines] == ["f000:fff0", "f000:0000", "f000:0003", "f000:0004"]
    assert "ljmp" in lines[0] and "out" in lines[2] and "in" in lines[3]
    assert guest.regs().rip == 5                    # before the jmp $
    assert guest.step(1)[0].split()[1] == "f000:0005"
    assert guest.regs().rip == 5                    # jmp $ jumps to itself


class Register:
    """A 16-bit register: reads give what was written last."""
    value = 0

    def read(self, offset, size):
        return self.value

    def write(self, offset, size, value):
        self.value = value


def test_memory_and_registers(machine):
    guest = machine(SPIN, mem=MEM)
    guest.write_memory(0x1000, b"tinyvmm")
    assert guest.read_memory(0x1000, 7) == b"tinyvmm"
    assert guest.read_memory(0xFFFFFFF0, 5) == b"\xea\x00\x00\x00\xf0"  # the firmware at 4 GiB
    guest.set_regs(rax=0x1234, rflags=0x202)
    assert guest.regs().rax == 0x1234
    guest.set_segment("ds", 0x1000)
    assert guest.sregs().ds.base == 0x10000
    with pytest.raises(GuestMemoryError):
        guest.read_memory(MEM - 4, 8)               # runs past the end of RAM
    with pytest.raises(GuestMemoryError):
        guest.write_memory(0xFFFFFFF0, b"x")        # ROM
    with pytest.raises(GuestMemoryError):
        guest.read_memory(1 << 40, 1)
    with pytest.raises(TypeError, match="no register 'eax'"):
        guest.set_regs(eax=1)
    with pytest.raises(TypeError):
        guest.set_segment("cr0", 0)


def test_device_ranges_are_checked(machine):
    guest = machine(SPIN, mem=MEM)
    with pytest.raises(ConfigError, match="overlap"):
        guest.add_port_device(0x3F8, 8, Register())             # COM1
    with pytest.raises(ConfigError, match="0-0xffff"):
        guest.add_port_device(0xFFFF, 2, Register())
    with pytest.raises(ConfigError, match="overlaps guest memory"):
        guest.add_mmio_device(0x1000, 4, Register())
    with pytest.raises(ConfigError, match="no read"):
        guest.add_port_device(0x600, 1, object())
    guest.add_mmio_device(0xD0000000, 4, Register())
    with pytest.raises(ConfigError, match="overlap"):
        guest.add_mmio_device(0xD0000002, 4, Register())


class Broken:
    def read(self, offset, size):
        raise KeyError("no such register")

    def write(self, offset, size, value):
        raise ZeroDivisionError("the device's own bug")


def test_a_device_that_raises_ends_the_run_as_a_crash_with_its_traceback(machine):
    guest = machine(OUT_IN, mem=MEM)
    guest.add_port_device(0x600, 2, Broken())
    result = guest.run(timeout=10)
    assert result.outcome is Outcome.CRASH
    assert result.message == "Broken.write raised ZeroDivisionError: the device's own bug"
    assert "Traceback" in result.report and "the device's own bug" in result.report
    assert "last run: guest crashed (CRASH): Broken.write raised" in guest.summary()


def test_a_fw_cfg_callback_that_raises_ends_the_run(machine):
    from tinyvmm.fw_cfg.device import FwCfg
    guest = machine(SPIN, mem=MEM)
    guest.add_fw_cfg_file("opt/bad", size=8, read=lambda: 1 / 0)
    fw_cfg: FwCfg = guest.fw_cfg
    fw_cfg.select(guest.fw_cfg_file_key("opt/bad"))        # as a guest's select would
    result = guest.run(timeout=10)
    assert result.outcome is Outcome.CRASH
    assert "read callback of fw_cfg file 'opt/bad' raised ZeroDivisionError" in result.message
    assert "1 / 0" in result.report


def test_fw_cfg_files_are_added_before_the_first_run(machine):
    guest = machine(SPIN, mem=MEM)
    guest.add_fw_cfg_file("opt/a", b"abc", size=8)
    assert bytes(guest.fw_cfg.items.file("opt/a").data) == b"abc" + bytes(5)
    with pytest.raises(ConfigError, match="duplicate"):
        guest.add_fw_cfg_file("opt/a", b"x")
    with pytest.raises(ConfigError, match="3 bytes of data, size 2"):
        guest.add_fw_cfg_file("opt/b", b"abc", size=2)
    with pytest.raises(ConfigError, match="no file 'opt/none'"):
        guest.fw_cfg_file_key("opt/none")
    guest.run(timeout=0.1)
    with pytest.raises(ConfigError, match="before the first run"):
        guest.add_fw_cfg_file("opt/c", b"x")


def test_until_address_and_step_refuse_taken_debug_registers(machine):
    guest = machine(SPIN, mem=MEM)
    guest.runner.guest_debug.claim("gdb", lambda debug: None)     # as gdb or boot marks take it
    with pytest.raises(ConfigError, match="until_address: the vCPU's debug registers are taken by gdb"):
        guest.run(until_address=0xF0000)
    with pytest.raises(ConfigError, match="step: the vCPU's debug registers are taken by gdb"):
        guest.step()
    guest.runner.guest_debug.release()
    assert len(guest.step(2)) == 2                  # free again, and step() gives them back
    assert guest.runner.guest_debug.holder is None


def test_a_closed_machine_says_so(machine):
    guest = machine(SPIN, mem=MEM)
    guest.close()
    guest.close()                                   # twice is fine
    for call in (lambda: guest.run(), lambda: guest.step(), lambda: guest.read_memory(0, 1),
                 lambda: guest.regs(), lambda: guest.add_port_device(0x600, 1, Register())):
        with pytest.raises(MachineClosedError, match="closed"):
            call()


def test_context_manager_closes(machine):
    with Machine(SPIN, mem=MEM) as guest:
        assert guest.run(timeout=0.1).outcome is Outcome.TIMEOUT
    with pytest.raises(MachineClosedError):
        guest.regs()


# --- the plugin, as a user's test suite sees it -------------------------------------------
def run_pytest(tmp_path, test: str, conftest: str = "") -> subprocess.CompletedProcess:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(test))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    return subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120)


def test_plugin_shows_the_consoles_and_report_of_a_failed_test(tmp_path):
    result = run_pytest(tmp_path, f"""
        from tinyvmm.firmware import real_mode_image
        def test_fails(machine):
            guest = machine({build_guest("hello").bin_path.as_posix()!r})
            guest.run(timeout=10)
            assert False, "the user's assertion"
    """)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "tinyvmm machine 1" in out and "last run: guest reset (RESET)" in out
    assert "Hello from COM1" in out and "Hello from the debug console" in out


def test_plugin_skips_with_the_reason_without_kvm(tmp_path):
    result = run_pytest(tmp_path, """
        def test_needs_kvm(machine):
            raise AssertionError("ran without KVM")
    """, conftest="""
        import tinyvmm.kvm.system
        tinyvmm.kvm.system.kvm_status = lambda: "no KVM in this test"
    """)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "needs /dev/kvm: no KVM in this test" in result.stdout


class Stopper:
    """Stops the run at its first write, and tries to run the machine from inside it."""

    def __init__(self):
        self.guest = None
        self.nested = None

    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        from tinyvmm.errors import MachineBusyError
        try:
            self.guest.run()
        except MachineBusyError as exc:
            self.nested = str(exc)
        self.guest.stop("the device has seen enough")


def test_a_device_stops_the_run_and_cannot_run_it_again_from_inside(machine):
    guest = machine(OUT_IN, mem=MEM)
    stopper = Stopper()
    stopper.guest = guest
    guest.add_port_device(0x600, 2, stopper)
    result = guest.run(timeout=10)
    assert (result.outcome, result.message) == (Outcome.STOPPED, "the device has seen enough")
    assert "running already" in stopper.nested
    assert guest.regs().rip == 4                    # after the `out`, before the `in`


def test_stop_before_a_run_ends_that_run_alone(machine):
    guest = machine(SPIN, mem=MEM)
    guest.stop("not now")
    result = guest.run(timeout=10)
    assert (result.outcome, result.message) == (Outcome.STOPPED, "not now")
    assert guest.run(timeout=0.2).outcome is Outcome.TIMEOUT


def test_stop_from_another_thread_kicks_a_spinning_guest(machine):
    import threading
    guest = machine(SPIN, mem=MEM)
    timer = threading.Timer(0.3, guest.stop, args=("from a thread",))
    timer.start()
    result = guest.run(timeout=20)
    timer.join()
    assert (result.outcome, result.message) == (Outcome.STOPPED, "from a thread")


def test_each_run_reports_its_own_outcome(machine):
    import time
    guest = machine(SPIN, mem=MEM)
    assert guest.run(timeout=0.3).outcome is Outcome.TIMEOUT
    start = time.monotonic()
    result = guest.run(timeout=2.5)             # not ended early by the last run's signal
    assert result.outcome is Outcome.TIMEOUT and "after 2.5 s" in result.message
    assert time.monotonic() - start >= 2.4
    guest.stop("once")
    assert guest.run(timeout=5).message == "once"
    assert guest.run(timeout=0.2).outcome is Outcome.TIMEOUT


def test_until_address_goes_on_from_a_breakpoint(machine):
    guest = machine(real_mode_image(bytes.fromhex("43 eb fd")), mem=MEM)   # inc bx; jmp 0
    for count in (1, 2, 3):
        result = guest.run(timeout=10, until_address=0xF0000)
        assert result.outcome is Outcome.BREAKPOINT
        assert guest.regs().rbx == count - 1        # stopped before each `inc bx`


def test_ports_kvm_serves_are_refused(machine):
    guest = machine(SPIN, mem=MEM)
    for base, what in ((0x20, "master PIC"), (0x43, "PIT"), (0x61, "speaker"), (0x4D1, "ELCR")):
        with pytest.raises(ConfigError, match=what):
            guest.add_port_device(base, 1, Register())
    for base, what in ((0xFEE00000, "local APIC"), (0xFEC00010, "I/O APIC")):
        with pytest.raises(ConfigError, match=what):
            guest.add_mmio_device(base, 4, Register())


class Returns:
    def __init__(self, value):
        self.value = value

    def read(self, offset, size):
        return self.value

    def write(self, offset, size, value):
        pass


@pytest.mark.parametrize("value,message", [
    ("12", "returned '12' (str), not an int"), (3.7, "(float), not an int"),
    (None, "(NoneType), not an int"), (True, "(bool), not an int"),
    (1 << 16, "returned 0x10000, which a 2-byte access cannot hold"), (-1, "cannot hold"),
])
def test_a_device_read_of_the_wrong_kind_is_a_crash(machine, value, message):
    guest = machine(OUT_IN, mem=MEM)
    guest.add_port_device(0x600, 2, Returns(value))
    result = guest.run(timeout=10)
    assert result.outcome is Outcome.CRASH and message in result.message


def test_wrong_types_are_type_errors(machine):
    guest = machine(SPIN, mem=MEM)
    with pytest.raises(TypeError, match="kvm_sregs"):
        guest.set_sregs(guest.regs())
    with pytest.raises(TypeError, match="expected bytes"):
        guest.write_memory(0x1000, 4)
    with pytest.raises(TypeError, match="rax: expected int"):
        guest.set_regs(rax="1")
    with pytest.raises(ConfigError, match="64 bits"):
        guest.set_regs(rax=-1)
    with pytest.raises(ConfigError, match="16 bits"):
        guest.set_segment("ds", 0x10000)
    with pytest.raises(TypeError, match="until_console"):
        guest.run(until_console=5)
    with pytest.raises(ConfigError, match="1 to 2048 bytes"):
        guest.run(until_console="")
    with pytest.raises(TypeError, match="read must be callable"):
        guest.add_fw_cfg_file("opt/x", b"x", read=5)
    with pytest.raises(TypeError, match="count: expected int"):
        guest.step("3")
    with pytest.raises(ConfigError, match="1 to 1000000"):
        guest.step(0)
    for options in (dict(mem="16M"), dict(fw_cfg_mmio="0x1000"), dict(option_roms="rom.bin"),
                    dict(drives="file=disk.img,if=virtio,format=raw"),
                    dict(serial=5), dict(kernel=b"bzImage"), dict(fw_cfg={b"opt/a": b"x"}),
                    dict(fw_cfg={"opt/x": 3}), dict(kernel="bz", append_as_is="yes"),
                    dict(trace=["io"])):
        with pytest.raises(TypeError):
            Machine(SPIN, **{"mem": MEM, **options})


def test_a_refused_fw_cfg_write_gives_the_guest_the_dma_error(machine):
    from tinyvmm.fw_cfg.device import FW_CFG_DMA_CTL_ERROR, FwCfgDmaPorts
    guest = machine(SPIN, mem=MEM)
    guest.add_fw_cfg_file("opt/request", size=4, write=lambda offset, data: data == b"good")
    key = guest.fw_cfg_file_key("opt/request")
    for request, status in ((b"good", 0), (b"bad!", FW_CFG_DMA_CTL_ERROR)):
        # a descriptor at 0x500 as a guest driver writes it: SELECT | WRITE, 4 bytes from 0x600
        guest.write_memory(0x500, (key << 16 | 0x18).to_bytes(4, "big") + (4).to_bytes(4, "big")
                           + (0x600).to_bytes(8, "big"))
        guest.write_memory(0x600, request)
        FwCfgDmaPorts(guest.fw_cfg).write(4, 4, (0x500).to_bytes(4, "big"))
        assert int.from_bytes(guest.read_memory(0x500, 4), "big") == status


class Closer(Register):
    def write(self, offset, size, value):
        from tinyvmm import MachineBusyError
        try:
            self.guest.close()
        except MachineBusyError as exc:
            self.refused = str(exc)
        self.guest.stop()


def test_close_inside_a_run_is_refused(machine):
    guest = machine(OUT_IN, mem=MEM)
    closer = Closer()
    closer.guest = guest
    guest.add_port_device(0x600, 2, closer)
    assert guest.run(timeout=10).outcome is Outcome.STOPPED
    assert "stop() it" in closer.refused


def test_ctrl_c_stops_a_script(machine):
    import os
    import signal
    import threading
    guest = machine(SPIN, mem=MEM)
    threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        guest.run(timeout=20)
    assert guest.last_result.outcome is Outcome.INTERRUPTED


@pytest.mark.kvm
def test_a_run_counts_what_it_completed_for_the_host():
    """The triple-fault guest's int3 in protected mode: an emulating host leaves it to tinyvmm,
    which delivers it (#GP: the IDT is empty), and the run and its summary say so."""
    from tinyvmm.kvm.system import is_emulating_host
    with Machine(build_guest("triple_fault").bin_path.read_bytes(), mem=MEM) as guest:
        result = guest.run(timeout=30)
        assert result.outcome is Outcome.CRASH and "triple fault" in result.message
        if is_emulating_host():
            assert result.completions == {"int3": 1}
            assert "completed for the host's KVM: int3 1" in guest.summary()
        else:
            assert result.completions == {}


# --- stop() and the timeout of a run on a worker thread (issue 24) --------------------------

def run_on_a_thread(guest, **options):
    """Start guest.run(**options) on a thread: (thread, results list)."""
    import threading
    results = []
    thread = threading.Thread(target=lambda: results.append(guest.run(**options)))
    thread.start()
    return thread, results


def test_stop_from_another_thread_ends_a_run_on_a_worker_thread(machine):
    # The instance: a spinning guest makes no exits, and only the main thread had the kick.
    import time
    guest = machine(SPIN, mem=MEM)
    thread, results = run_on_a_thread(guest, timeout=60)
    time.sleep(0.3)
    start = time.monotonic()
    guest.stop("from the main thread")
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - start < 2
    assert (results[0].outcome, results[0].message) == (Outcome.STOPPED, "from the main thread")
    assert guest.run(timeout=0.2).outcome is Outcome.TIMEOUT      # on the main thread again


def test_a_worker_thread_run_times_out_and_runs_again(machine):
    # The sibling: the timeout (no SIGALRM off the main thread), a second run on a thread
    # that is not ended by the first one's kick, and a stop from a third thread.
    import threading
    import time
    guest = machine(SPIN, mem=MEM)
    start = time.monotonic()
    thread, results = run_on_a_thread(guest, timeout=0.5)
    thread.join(10)
    assert results[0].outcome is Outcome.TIMEOUT and 0.4 < time.monotonic() - start < 5
    thread, results = run_on_a_thread(guest, timeout=60)
    threading.Timer(0.5, guest.stop, args=("third thread",)).start()
    thread.join(10)
    assert (results[0].outcome, results[0].message) == (Outcome.STOPPED, "third thread")
    assert time.monotonic() - start > 0.9


@pytest.mark.kvm
def test_the_interpreter_exits_after_stopping_a_worker_thread_run(tmp_path):
    script = textwrap.dedent(f"""
        import threading, time
        from tinyvmm import Machine
        from tinyvmm.firmware import real_mode_image
        guest = Machine(real_mode_image(bytes.fromhex("eb fe")), mem={MEM})
        worker = threading.Thread(target=lambda: print(guest.run().outcome.name))
        worker.start()
        time.sleep(0.3)
        guest.stop()
    """)
    import os
    import pathlib
    tree = str(pathlib.Path(__file__).resolve().parent.parent)     # this tree's tinyvmm
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, cwd=tmp_path, env={**os.environ, "PYTHONPATH": tree})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "STOPPED"
