"""The software CPU (tinyvmm.completion.stretches): which instructions only KVM executes, the
option's rules, and unmodified firmware run through it giving what KVM alone gives."""

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from command_line import start_tinyvmm, tinyvmm
from guest_build import build_guest
from payloads import KERNEL_INITRD, ROOT, VMLINUX, cloud_kernel, initramfs_with_module

from tinyvmm.errors import ConfigError
from tinyvmm.spec import KernelSpec, MachineSpec, check_software_cpu

capstone = pytest.importorskip("capstone", reason="the software CPU needs capstone (make setup)")
pytest.importorskip("unicorn", reason="the software CPU needs unicorn (make setup)")
from tinyvmm.completion.stretches import sensitive, uses_vector_state  # noqa: E402

SEABIOS = Path("/usr/share/seabios/bios.bin")


def decode(code: bytes, bits: int = 64):
    decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32)
    decoder.detail = True
    return next(decoder.disasm(code, 0x1000))


@pytest.mark.parametrize("code, bits", [
    (b"\xec", 64), (b"\xee", 64), (b"\xe4\x21", 64), (b"\x66\xed", 32),     # port I/O
    (b"\xf3\x6e", 64),                                                      # rep outsb
    (b"\x0f\x32", 64), (b"\x0f\x30", 64), (b"\x0f\x31", 64), (b"\x0f\xa2", 64),
    (b"\xf4", 64), (b"\xcc", 64), (b"\xcd\x80", 32), (b"\x48\xcf", 64),
    (b"\x0f\x22\xd8", 64), (b"\x0f\x20\xd0", 64), (b"\x44\x0f\x22\xc0", 64),  # cr3, cr2, cr8
    (b"\x0f\x23\xf8", 64),                                                  # mov dr7, rax
    (b"\x8e\xd8", 64), (b"\x1f", 32), (b"\x0f\xa1", 64),                    # mov ds / pop ds / pop fs
    (b"\x0f\x01\x10", 64), (b"\x0f\x01\x18", 64), (b"\x0f\x00\xd8", 64),    # lgdt, lidt, ltr
    (b"\xea\x00\x10\x00\x00\x08\x00", 32), (b"\xff\x2c\x24", 64), (b"\x48\xcb", 64),  # far jmp, ret
    (b"\x0f\x01\xf8", 64), (b"\x0f\x05", 64), (b"\x48\x0f\x07", 64),        # swapgs, syscall, sysret
    (b"\x0f\xae\x20", 64), (b"\x0f\x01\xd1", 64),                           # xsave, xsetbv
    (b"\x0f\x01\x38", 64), (b"\x66\x0f\x38\x82\x00", 64),                  # invlpg, invpcid
])
def test_what_only_kvm_executes(code, bits):
    assert sensitive(decode(code, bits))


@pytest.mark.parametrize("code", [
    b"\xbe\x00\x00\x20\x00",            # mov esi, imm: "esi" is not the segment register es
    b"\x48\x8b\x07", b"\x8c\xd8",       # loads, a read of a segment register
    b"\xfa", b"\xfb", b"\x9c", b"\x9d",  # cli, sti, pushf, popf: RFLAGS goes back every time
    b"\xff\x24\x24", b"\xff\x14\x24", b"\xff\xd0", b"\xc3",   # near jumps, calls and ret
    b"\xf3\xa4", b"\xf3\x48\xab",       # rep movsb, rep stosq
    b"\x0f\x01\xca", b"\x0f\x01\xcb",   # clac, stac
    b"\xf3\x0f\xb8\xc1",                # popcnt
    b"\x66\x0f\xef\xc0", b"\xdb\xe3",   # pxor, fninit: x87/SSE state stays in the software CPU
])
def test_what_the_software_cpu_executes(code):
    assert not sensitive(decode(code))


def test_a_flagged_run_stops_before_a_block_even_in_a_loop_of_one_instruction():
    # the preemption hook (native code) ends the run at the next block's start once the flag
    # is set from another thread; nothing of that block has run
    import threading

    import unicorn

    from tinyvmm.completion.preempt import Preemption
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, b"\x48\xff\x04\x25\x00\x18\x00\x00\xeb\xf6")  # inc qword [0x1800]; jmp
    preemption = Preemption(uc)
    timer = threading.Timer(0.05, preemption.request)
    timer.start()
    started = time.monotonic()
    uc.emu_start(0x1000, 0)
    assert time.monotonic() - started < 5 and preemption.asked
    assert uc.reg_read(unicorn.x86_const.UC_X86_REG_RIP) == 0x1000
    preemption.clear()
    count = int.from_bytes(uc.mem_read(0x1800, 8), "little")
    assert count > 1000
    spin = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)   # jmp $
    spin.mem_map(0x1000, 0x1000)
    spin.mem_write(0x1000, b"\xeb\xfe")
    stop = Preemption(spin)
    threading.Timer(0.05, stop.request).start()
    spin.emu_start(0x1000, 0)
    assert spin.reg_read(unicorn.x86_const.UC_X86_REG_RIP) == 0x1000 and stop.asked


def test_x87_and_sse_instructions_are_told_apart():
    assert uses_vector_state(decode(b"\x66\x0f\xef\xc0"))      # pxor
    assert uses_vector_state(decode(b"\xdb\xe3"))              # fninit
    assert uses_vector_state(decode(b"\x0f\xae\x10"))          # ldmxcsr
    assert not uses_vector_state(decode(b"\x48\x8b\x07"))


def test_the_option_takes_three_values():
    assert check_software_cpu("auto") == "auto"
    with pytest.raises(ConfigError, match="expected one of auto, on, off"):
        MachineSpec(software_cpu="yes")
    assert MachineSpec().software_cpu == "off"


def test_the_command_line_refuses_an_unknown_value():
    result = tinyvmm("run", "--software-cpu", "maybe", text=True)
    assert result.returncode == 2 and "--software-cpu" in result.stderr


@pytest.mark.parametrize("option, named", [(["--smp", "2"], "--smp above 1"),
                                           (["--gdb", "tcp::0"], "--gdb"),
                                           (["--trace", "steps"], "--trace steps")])
def test_on_refuses_a_run_it_cannot_serve_before_anything_starts(option, named):
    result = tinyvmm("run", "--bios", "bios.bin", "--software-cpu", "on", *option,
                     "--timeout", "5", text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tinyvmm: --software-cpu on runs one vCPU"), result.stderr
    assert named in result.stderr


def test_a_kernel_boot_shares_the_debug_registers_with_it():
    # The kernel-entry mark and run(until_address=) set execution breakpoints only: the
    # software CPU stops before their addresses and KVM, its breakpoint set, executes them.
    assert MachineSpec(kernel=KernelSpec("bzImage"), software_cpu="on").software_cpu == "on"


def run_to_reset(guest_name: str, software_cpu: str, timeout: float = 30):
    """Run test guest `guest_name` to its keyboard-controller reset: (its debug console's
    output, the run's Stretches or None without the software CPU)."""
    from tinyvmm import Machine
    with Machine(build_guest(guest_name).bin_path.read_bytes(), software_cpu=software_cpu,
                 debugcon=None) as guest:
        result = guest.run(timeout=timeout)
        assert result.outcome.name == "RESET", guest.summary()
        return guest.debugcon_output, guest.runner.stretches


@pytest.mark.kvm
def test_a_tlb_flush_kvm_executes_reaches_the_software_cpu():
    """A page remapped and the TLB flushed with `mov cr3` of the same value (KVM executes
    it; kvm_sregs do not change): the next read through the page sees the new page."""
    image = build_guest("tlb_flush")
    result = tinyvmm("run", "--bios", str(image.bin_path), "--software-cpu", "on",
                     "--debugcon", "stdio", "--serial", "none", "--timeout", "30", "--stats")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"ABABABAB\n"
    assert b"software CPU:" in result.stderr
    plain = tinyvmm("run", "--bios", str(image.bin_path), "--debugcon", "stdio", "--serial",
                    "none", "--timeout", "30")
    assert plain.stdout == b"ABABABAB\n"            # what KVM alone does


@pytest.mark.kvm
@pytest.mark.parametrize("software_cpu", ["off", "on"])
def test_a_pam_change_served_inside_a_stretch_is_seen_by_the_next_instruction(software_cpu):
    # the guest shadows the BIOS segment into RAM, writes a byte there, maps the ROM back and
    # reads the byte at once: the ROM's ("R"), not the RAM's ("!")
    assert run_to_reset("pam_lock", software_cpu)[0] == b"MR\n"


@pytest.mark.kvm
def test_a_guest_spinning_with_interrupts_off_still_times_out():
    """The timeout's signal handler cannot run while the software CPU executes: it looks at
    the deadline itself between its runs."""
    image = build_guest("spin_pm32")
    start = time.monotonic()
    result = tinyvmm("run", "--bios", str(image.bin_path), "--software-cpu", "on",
                     "--debugcon", "stdio", "--timeout", "1", "--stats")
    assert time.monotonic() - start < 20
    assert result.returncode == 4, result.stderr.decode()
    assert result.stdout == b"spinning\n"
    assert b"software CPU:" in result.stderr                  # it ran the loop


@pytest.mark.kvm
def test_a_guest_polling_a_port_the_software_cpu_serves_still_times_out():
    """Each read is served inside the software CPU's stretch, which still sees the deadline."""
    image = build_guest("poll_pm32")
    start = time.monotonic()
    result = tinyvmm("run", "--bios", str(image.bin_path), "--software-cpu", "on",
                     "--debugcon", "stdio", "--timeout", "1", "--stats", timeout=60)
    assert time.monotonic() - start < 20
    assert result.returncode == 4, result.stderr.decode()
    assert result.stdout == b"polling\n"
    assert b"timeout" in result.stderr
    # the loop's reads were served inside the software CPU's run, not by exits
    assert re.search(rb"0x0071 +cmos +in +\d{4,}", result.stderr), result.stderr.decode()


@pytest.mark.kvm
@pytest.mark.parametrize("software_cpu", ["off", "on"])
def test_a_reset_served_inside_a_stretch_ends_the_run_before_the_next_instruction(software_cpu):
    assert run_to_reset("reset_pm32", software_cpu)[0] == b""


@pytest.mark.kvm
@pytest.mark.parametrize("software_cpu", ["off", "on"])
def test_debug_and_control_register_reads_are_served_as_kvm_answers_them(software_cpu):
    output, stretches = run_to_reset("dr_moves", software_cpu)
    assert output == b"DC\n"
    if software_cpu == "on":        # the reads and the same-value write stayed in a stretch
        assert stretches is not None and stretches.served_instructions >= 4


@pytest.mark.kvm
def test_an_instruction_that_wrote_memory_never_runs_twice_across_slices():
    # 2^25 read-modify-write instructions with interrupts enabled: the software CPU ends a
    # slice every ~10 ms, and the counter must come out exact (a run stopped from another
    # thread after an instruction's store went on from that instruction: "BAD")
    output, stretches = run_to_reset("rmw_count", "on", timeout=120)
    assert output == b"OK\n"
    assert stretches is not None and stretches.handed.get("the slice's end", 0) > 5, stretches.table()


@pytest.mark.kvm
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_a_guest_spinning_with_interrupts_off_ends_at_a_signal(signum, status):
    image = build_guest("spin_pm32")
    process = start_tinyvmm("run", "--bios", str(image.bin_path), "--software-cpu", "on",
                            "--debugcon", "stdio", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(9) == b"spinning\n"
    time.sleep(0.5)                                             # into the loop
    process.send_signal(signum)
    _, err = process.communicate(timeout=20)
    assert process.returncode == status, err.decode()
    assert b"interrupted" in err and b"Traceback" not in err


def _seabios_log(tmp_path, mode: str) -> tuple[str, str]:
    log = tmp_path / f"seabios-{mode}.log"
    result = tinyvmm("run", "--bios", str(SEABIOS), "--software-cpu", mode, "--stats",
                     "--debugcon", f"file:{log}", "--serial", "none",
                     "--expect", "No bootable device", "--timeout", "200",
                     timeout=300, text=True, errors="replace")
    assert result.returncode == 0, result.stderr[-3000:]
    return log.read_text(errors="replace"), result.stderr


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.skipif(not SEABIOS.exists(), reason="needs /usr/share/seabios/bios.bin (Debian "
                                                  "package seabios; make setup)")
def test_seabios_logs_the_same_machine_through_the_software_cpu(tmp_path):
    """SeaBIOS's 32-bit POST (PCI enumeration, fw_cfg, ACPI, PS/2, the boot menu) through
    the software CPU writes the log it writes under KVM alone, line for line, but for its
    clock: through the software CPU it finds kvmclock yet takes the PM timer (README says so)."""
    by_kvm, _ = _seabios_log(tmp_path, "off")
    by_software, stats = _seabios_log(tmp_path, "on")
    assert "software CPU:" in stats and "handed to KVM at" in stats
    stretches = int(stats.split("software CPU:")[1].split()[0])
    assert stretches > 10

    def steady(log: str) -> list[str]:
        # its clock source and speed: kvmclock under KVM alone, the PM timer through the software CPU
        return [line for line in log.splitlines()
                if not any(word in line.lower() for word in ("mhz", "tsc", "pmtimer", "kvmclock"))]
    assert steady(by_software) == steady(by_kvm)
    assert "Found 3 PCI devices" in by_software


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("boot", [["--kernel", str(VMLINUX), "--initrd", str(KERNEL_INITRD)], []],
                         ids=["pvh", "bios-dma"])
def test_linux_runs_its_init_through_the_software_cpu(boot):
    """The test kernel, with its kernel-entry mark, from its entry (PVH) or through tinyvmm's
    BIOS and DMA ROM (real mode stays with KVM) to its init: the init's system calls run in
    user mode under KVM, Linux's fw_cfg driver lists the files, the machine restarts."""
    result = tinyvmm("boot", *boot, "--software-cpu", "on", "--stats", "--timeout", "300",
                     "--fw-cfg", "name=opt/tinyvmm/test,string=hello", cwd=ROOT, timeout=400)
    console, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, console[-3000:] + err[-3000:]
    assert "TINYVMM-INIT-OK" in console
    assert "fw_cfg: opt/tinyvmm/test = hello" in console
    assert "init: restarting the machine" in console
    stretches = int(err.split("software CPU:")[1].split()[0])
    assert stretches > 100


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
def test_debians_cloud_kernel_runs_the_test_init(tmp_path):
    """A distribution kernel (PTI, retpolines, its own CPU features, the fw_cfg driver as a
    module) through tinyvmm's BIOS and DMA ROM to the test init, which loads the driver and
    lists the files; ACPI powers the machine off."""
    kernel, module = cloud_kernel()
    initrd = initramfs_with_module(KERNEL_INITRD, module, tmp_path / "initramfs.cpio")
    result = tinyvmm("boot", "--kernel", str(kernel), "--initrd", str(initrd), "--software-cpu",
                     "on", "--stats", "--timeout", "900", cwd=ROOT, timeout=1000)
    console, err = result.stdout.decode(errors="replace"), result.stderr.decode()
    assert result.returncode == 0, console[-3000:] + err[-3000:]
    assert "Linux version" in console and "cloud-amd64" in console
    assert "TINYVMM-INIT-OK" in console
    assert "fw_cfg: module loaded" in console
    assert "fw_cfg: etc/e820 (size " in console
    assert "init: powering the machine off" in console


def _symbol(name: str) -> int:
    from elftools.elf.elffile import ELFFile
    with open(VMLINUX, "rb") as file:
        symbols = ELFFile(file).get_section_by_name(".symtab").get_symbol_by_name(name)
    assert symbols, f"{name} is not in {VMLINUX}"
    return symbols[0]["st_value"]


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.slow
def test_a_breakpoint_stops_the_software_cpu_at_its_address():
    # start_kernel is 64-bit code the software CPU runs: it stops before the address and
    # KVM, its debug registers set, reports the breakpoint
    from tinyvmm import Machine
    from tinyvmm.outcome import Outcome
    address = _symbol("start_kernel")
    spec = MachineSpec(kernel=KernelSpec(str(VMLINUX), initrd=str(KERNEL_INITRD)), software_cpu="on")
    with Machine(spec) as machine:
        result = machine.run(until_address=address, timeout=120)
        assert result.outcome is Outcome.BREAKPOINT, result.message
        assert machine.runner.vcpu.get_regs().rip == address
        assert machine.runner.stretches.stretches > 10


@pytest.mark.kvm
def test_a_script_stops_at_a_breakpoint_again_and_steps_through_the_software_cpu():
    # Running on from a breakpoint steps over its instruction first, and step() steps: KVM
    # executes those (a software-CPU machine refused them with a ConfigError before).
    from tinyvmm import Machine
    from tinyvmm.debug.symbols import SymbolFile
    from tinyvmm.outcome import Outcome
    image = build_guest("spin_pm32")
    spin = SymbolFile(image.elf_path).address_of("spin")       # linear, as CS base 0 runs it
    with Machine(image.bin_path.read_bytes(), mem=16 << 20, software_cpu="on") as machine:
        for _ in range(3):
            result = machine.run(until_address=spin, timeout=60)
            assert result.outcome is Outcome.BREAKPOINT, result.message
            assert machine.regs().rip == spin
        assert machine.runner.stretches.stretches >= 1      # the loop ran in the software CPU
        lines = machine.step(2)
        assert len(lines) == 2 and all("jmp" in line for line in lines), lines
        assert machine.regs().rip == spin
