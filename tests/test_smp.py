"""--smp N: several vCPUs, the APs woken by the guest's INIT and SIPI through KVM's in-kernel LAPIC."""

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from command_line import start_tinyvmm, tinyvmm
from guest_build import assemble, build_guest

from tinyvmm import Machine
from tinyvmm.board import check_vcpu_limit
from tinyvmm.cpu import guest_cpuid
from tinyvmm.devices.cmos import CMOS_CPUS_MINUS_ONE, Cmos
from tinyvmm.errors import ConfigError
from tinyvmm.kvm import abi
from tinyvmm.outcome import Outcome

SEABIOS_256K = Path("/usr/share/seabios/bios-256k.bin")


def smp_guest(tmp_path, *defines: str) -> bytes:
    """tests/guests/smp_wake.S built with the -D flags named."""
    source = Path(__file__).parent / "guests" / "smp_wake.S"
    return assemble(source, tmp_path / "smp_wake", defines={d: 1 for d in defines}).bin_path.read_bytes()


def cpuid_entry(function: int, index: int = 0, **registers) -> abi.kvm_cpuid_entry2:
    return abi.kvm_cpuid_entry2(function=function, index=index, **registers)


# --- without a guest ---------------------------------------------------------

def test_cpuid_gives_each_vcpu_its_apic_id_and_the_package_size():
    supported = [cpuid_entry(1, ebx=0x01020800), cpuid_entry(0xB, flags=1, edx=1),
                 cpuid_entry(0x80000008, ecx=0x7001)]
    entries = guest_cpuid(supported, hide_xsave=False, apic_id=2, cpus=3)
    leaf1 = next(e for e in entries if e.function == 1)
    assert leaf1.ebx >> 24 == 2 and (leaf1.ebx >> 16) & 0xFF == 3 and leaf1.ebx & 0xFFFF == 0x0800
    assert leaf1.edx & (1 << 28)                      # HTT: EBX[23:16] is meaningful
    levels = sorted((e.index, e.eax, e.ebx, e.ecx, e.edx) for e in entries if e.function == 0xB)
    assert levels == [(0, 0, 1, 0x100, 2), (1, 2, 3, 0x201, 2), (2, 0, 0, 2, 2)]
    amd = next(e for e in entries if e.function == 0x80000008)
    assert amd.ecx == (2 << 12) | 2
    single = next(e for e in guest_cpuid(supported, hide_xsave=False) if e.function == 1)
    assert single.ebx >> 24 == 0 and (single.ebx >> 16) & 0xFF == 1


def test_cmos_5f_holds_the_vcpus_less_one():
    assert Cmos(64 << 20).ram[CMOS_CPUS_MINUS_ONE] == 0
    assert Cmos(64 << 20, cpus=4).ram[CMOS_CPUS_MINUS_ONE] == 3
    assert Cmos(64 << 20, cpus=255).ram[CMOS_CPUS_MINUS_ONE] == 254


def test_more_vcpus_than_the_host_allows_is_a_config_error():
    class Host:
        def check_extension(self, cap: int) -> int:
            return {abi.KVM_CAP_MAX_VCPUS: 0, abi.KVM_CAP_NR_VCPUS: 2}[cap]
    check_vcpu_limit(Host(), 2)
    with pytest.raises(ConfigError, match="at most 2 vCPUs"):
        check_vcpu_limit(Host(), 3)


def test_more_vcpus_than_the_host_recommends_is_a_warning(capsys):
    class Host:
        def check_extension(self, cap: int) -> int:
            return {abi.KVM_CAP_MAX_VCPUS: 1024, abi.KVM_CAP_NR_VCPUS: 2}[cap]
    check_vcpu_limit(Host(), 2)
    assert capsys.readouterr().err == ""
    check_vcpu_limit(Host(), 3)
    assert "warning: --smp 3 is more vCPUs than this host's KVM recommends (2" in capsys.readouterr().err


@pytest.mark.kvm
def test_above_the_hosts_limit_the_command_line_says_so_with_status_2(monkeypatch, capsys):
    import tinyvmm.board
    from tinyvmm.cli import main
    monkeypatch.setattr(tinyvmm.board, "vcpu_limit", lambda kvm: 2)
    assert main(["run", "--bios", "bios.bin", "--smp", "3", "--serial", "none"]) == 2
    assert "--smp 3: this host's KVM allows at most 2 vCPUs per VM" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "256", "x", "-1"])
def test_bad_smp_is_status_2(value):
    result = tinyvmm("run", "--bios", "bios.bin", "--smp", value, text=True)
    assert result.returncode == 2, result.stderr
    assert "--smp" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("cpus", [1, 3])
def test_fw_cfg_gives_the_cpu_count_and_the_apic_id_limit(cpus):
    from tinyvmm.build import fw_cfg_items
    from tinyvmm.fw_cfg.items import FW_CFG_MAX_CPUS, FW_CFG_NB_CPUS
    from tinyvmm.spec import MachineSpec
    items = fw_cfg_items(MachineSpec(smp=cpus), bytes(65536), None)
    for key in (FW_CFG_NB_CPUS, FW_CFG_MAX_CPUS):
        entry = items.lookup(key)
        assert entry is not None and bytes(entry.data) == cpus.to_bytes(2, "little")


# --- tiny guests -----------------------------------------------------------

@pytest.mark.kvm
@pytest.mark.parametrize("cpus", [2, 4])
def test_the_guest_wakes_every_ap_with_init_sipi(tmp_path, cpus):
    with Machine(smp_guest(tmp_path), mem=16 << 20, smp=cpus) as machine:
        result = machine.run(timeout=30)
        log = machine.debugcon_output.decode()
    assert result.outcome is Outcome.RESET, result
    # Each AP's CPUID says its APIC ID; the BSP counted CMOS 0x5F + 1 CPUs in.
    assert sorted(line for line in log.splitlines() if line.startswith("AP ")) == \
        [f"AP {i} up" for i in range(1, cpus)]
    assert f"BSP saw {cpus - 1} APs" in log


@pytest.mark.kvm
def test_one_vcpu_wakes_nobody(tmp_path):
    with Machine(smp_guest(tmp_path), mem=16 << 20) as machine:
        result = machine.run(timeout=30)
        assert result.outcome is Outcome.RESET
        assert machine.debugcon_output == b"BSP saw 0 APs\n"


@pytest.mark.kvm
def test_halted_for_good_needs_every_vcpu_halted(tmp_path):
    with Machine(smp_guest(tmp_path, "END_HALT"), mem=16 << 20, smp=3) as machine:
        result = machine.run(timeout=30)
    assert result.outcome is Outcome.HALTED, result
    assert all(f"vCPU {i}: HLT with interrupts disabled" in result.message for i in range(3))


@pytest.mark.kvm
def test_an_ap_never_woken_counts_as_idle():
    with Machine(build_guest("spin").bin_path.read_bytes(), mem=16 << 20, smp=4) as machine:
        started = time.monotonic()
        result = machine.run(timeout=1.5)
        assert result.outcome is Outcome.TIMEOUT and result.vcpu == 0   # the BSP spins: not halted
        assert time.monotonic() - started < 5
        # The APs that never ran are one line, not three sets of reset registers.
        assert "vCPUs 1-3: waiting for INIT, never ran" in result.report
        assert result.report.count("rflags") == 1


@pytest.mark.kvm
def test_a_crash_on_an_ap_names_it(tmp_path):
    with Machine(smp_guest(tmp_path, "AP_CRASH"), mem=16 << 20, smp=2) as machine:
        result = machine.run(timeout=30)
    assert result.outcome is Outcome.CRASH and result.vcpu == 1
    assert result.message == "vCPU 1: triple fault (KVM_EXIT_SHUTDOWN)"
    assert "vCPU 1 (APIC ID 1) ended the run" in result.report
    assert "\nvCPU 0: " in result.report               # and the BSP's registers after it


@pytest.mark.kvm
def test_timeout_and_stop_end_every_vcpu_and_the_run_goes_on(tmp_path):
    # The BSP spins, the APs wait in KVM_RUN for a SIPI that never comes.
    with Machine(build_guest("spin").bin_path.read_bytes(), mem=16 << 20, smp=4) as machine:
        for _ in range(2):                          # run() again goes on, as with one vCPU
            started = time.monotonic()
            result = machine.run(timeout=0.5)
            assert result.outcome is Outcome.TIMEOUT
            assert time.monotonic() - started < 4
        stopper = threading.Timer(0.3, machine.stop)
        stopper.start()
        started = time.monotonic()
        result = machine.run(timeout=30)
        stopper.join()
        assert result.outcome is Outcome.STOPPED and time.monotonic() - started < 4
        assert threading.active_count() == 1, threading.enumerate()   # no vCPU thread left


@pytest.mark.kvm
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_end_every_vcpu(how):
    image = build_guest("spin")
    proc = start_tinyvmm("run", "--bios", str(image.bin_path), "--debugcon", "stdio", "--smp", "3",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(9) == b"spinning\n"
    started = time.monotonic()
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and time.monotonic() - started < 5, err
    assert b"interrupted" in err and b"Traceback" not in err


@pytest.mark.kvm
def test_command_line_crash_on_an_ap_is_status_3(tmp_path):
    image = tmp_path / "guest.bin"
    image.write_bytes(smp_guest(tmp_path, "AP_CRASH"))
    result = tinyvmm("run", "--bios", str(image), "--smp", "2", "--mem", "16M", "--serial", "none",
                     text=True)
    assert result.returncode == 3, result.stderr
    assert "vCPU 1: triple fault" in result.stderr and "Traceback" not in result.stderr


# --- SeaBIOS ---------------------------------------------------------------

@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.skipif(not SEABIOS_256K.exists(), reason=f"needs {SEABIOS_256K} (Debian package seabios)")
@pytest.mark.parametrize("cpus", [2, 4])
def test_seabios_finds_every_cpu(tmp_path, cpus):
    log = tmp_path / "firmware.log"
    result = tinyvmm("run", "--bios", str(SEABIOS_256K), "--smp", str(cpus), "--serial", "none",
                     "--debugcon", f"file:{log}", "--expect", "No bootable device",
                     "--timeout", "120", timeout=300, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    text = log.read_text(errors="replace")
    assert f"Found {cpus} cpu(s) max supported {cpus} cpu(s)" in text
    assert sorted(line for line in text.splitlines() if line.startswith("handle_smp")) == \
        [f"handle_smp: apic_id={i:#x}" for i in range(1, cpus)]


@pytest.mark.kvm
def test_stats_and_trace_are_per_vcpu(tmp_path):
    image = tmp_path / "guest.bin"
    image.write_bytes(smp_guest(tmp_path))
    trace = tmp_path / "trace.txt"
    result = tinyvmm("run", "--bios", str(image), "--smp", "2", "--mem", "16M", "--serial", "none",
                     "--stats", "--trace", "io", "--trace-file", str(trace), text=True)
    assert result.returncode == 0, result.stderr
    first, second = result.stderr.split("\nvCPU 1:\n")
    assert first.startswith("vCPU 0:\n") and "0x0064  i8042" in first     # the BSP's reset
    assert "0x0402  debugcon" in second and "i8042" not in second        # the AP's prints
    lines = trace.read_text().splitlines()
    assert any(" cpu1 real f000:" in line and "out 0x0402" in line for line in lines)
    assert any(" cpu0 real f000:" in line and "out 0x0064" in line for line in lines)
