"""The gdb stub on /dev/kvm: the real gdb in batch mode, and a raw protocol client for what
batch mode cannot do (Ctrl-C while the guest runs, stepping over port I/O)."""

import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from command_line import start_tinyvmm, tinyvmm
from guest_build import build_guest

from tinyvmm.debug.gdb import rsp, tdesc
from tinyvmm.debug.symbols import SymbolFile

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.kvm
DEADLINE = 120


class Vmm:
    """`tinyvmm run` in a subprocess, its stderr collected line by line."""

    def __init__(self, image, *options):
        self.proc = start_tinyvmm(
            "run", "--bios", str(image.bin_path), "--serial", "none", "--timeout", str(DEADLINE),
            *options, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.output: list[str] = []                 # stdout: the consoles sent to stdio
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True)
        self._reader.start()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.output), daemon=True).start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > end or self.proc.poll() is not None:
                raise AssertionError(f"no {text!r} on stdout: {self.output}; stderr:\n{self.stderr}")
            time.sleep(0.05)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None:
                self._reader.join(timeout=2)
                break
            time.sleep(0.05)
        for line in self.lines:
            if re.search(pattern, line):
                return re.search(pattern, line)
        raise AssertionError(f"no line matching {pattern!r}; stderr so far:\n{self.stderr}")

    def port(self) -> int:
        return int(self.wait_for(r"listening on tcp 127\.0\.0\.1:(\d+)").group(1))

    def finish(self, timeout: float = 60) -> int:
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"tinyvmm did not end; stderr:\n{self.stderr}") from None
        self._reader.join(timeout=5)
        return status

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def vmm_factory():
    started = []

    def start(image, *options):
        vmm = Vmm(image, *options)
        started.append(vmm)
        return vmm
    yield start
    for vmm in started:
        vmm.close()


def run_gdb(port: int, *commands: str) -> str:
    argv = ["gdb", "-batch", "-nx", "-ex", "set architecture i8086", "-ex", f"target remote :{port}"]
    for command in commands:
        argv += ["-ex", command]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DEADLINE)
    return done.stdout + done.stderr


def register_values(output: str, name: str) -> list[int]:
    return [int(m.group(1), 16) for m in re.finditer(rf"^{name}\s+0x([0-9a-f]+)", output, re.MULTILINE)]


@pytest.mark.gdb
def test_gdb_sees_the_reset_vector_steps_stops_at_an_hbreak_and_the_guest_finishes(vmm_factory):
    image = build_guest("gdb_target")
    symbols = SymbolFile(image.elf_path)
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--gdb-wait", "--symbols", str(image.elf_path))
    port = vmm.port()
    add_symbols = vmm.wait_for(r"symbols: (add-symbol-file .*)").group(1)
    assert add_symbols.endswith("-o 0xf0000")

    output = run_gdb(port, "info registers cs eip", "stepi", "info registers cs eip",
                     add_symbols, "hbreak *breakpoint_here", "continue", "info registers eip ecx",
                     "continue")
    assert register_values(output, "cs")[:2] == [0xF000, 0xF000], output
    eips = register_values(output, "eip")
    start = symbols.address_of("start") - 0xF0000
    stop = symbols.address_of("breakpoint_here") - 0xF0000
    assert eips == [0xFFF0, start, stop], output                  # reset, after the far jump, the break
    assert register_values(output, "ecx") == [0], output           # stopped before `mov $0xbeef, %cx`
    assert "exited normally" in output, output
    assert vmm.finish() == 0, vmm.stderr                           # the guest's i8042 reset
    assert "Traceback" not in vmm.stderr


@pytest.mark.gdb
def test_gdb_breaks_watches_in_software_and_kills(vmm_factory):
    image = build_guest("gdb_target")
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--gdb-wait", "--symbols", str(image.elf_path))
    port = vmm.port()
    output = run_gdb(port, vmm.wait_for(r"symbols: (add-symbol-file .*)").group(1),
                     "set can-use-hw-watchpoints 0", "watch *(char*)0x500", "continue", "continue",
                     "delete", "break *after_count", "continue", "info registers eip eax",
                     "monitor where", "p/x $cs_base", "kill")
    assert "Old value = 0 '\\000'" in output and "New value = 1 '\\001'" in output, output
    assert "New value = 2 '\\002'" in output, output
    after_count = SymbolFile(image.elf_path).address_of("after_count")
    assert register_values(output, "eip")[-1] == after_count - 0xF0000, output
    assert f"f000:{after_count - 0xF0000:04x} after_count (linear {after_count:#x})" in output, output
    assert "$1 = 0xf0000" in output, output
    assert vmm.finish() == 130, vmm.stderr                         # killed from gdb
    if "kvm_pvm" in vmm.stderr or Path("/sys/module/kvm_pvm").is_dir():
        assert "software breakpoints become hardware breakpoints" in vmm.stderr


def test_gdb_is_told_why_a_watchpoint_is_refused(vmm_factory):
    """Where KVM reports no data breakpoints, gdb itself prints tinyvmm's hint (console output
    before the next stop), not only tinyvmm's stderr."""
    from tinyvmm.kvm.system import is_emulating_host
    if not is_emulating_host():
        pytest.skip("this host's KVM reports data breakpoints: nothing is refused")
    image = build_guest("gdb_target")
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--gdb-wait")
    output = run_gdb(vmm.port(), "watch *(char*)0x500", "continue", "delete", "stepi", "kill")
    assert "tinyvmm: this host's KVM does not report data breakpoints" in output, output
    assert "set can-use-hw-watchpoints 0" in output, output
    assert vmm.finish() == 130, vmm.stderr


class RspClient:
    """Just enough of gdb's side of the protocol: packets with acks, and Ctrl-C."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.decoder = rsp.PacketDecoder()
        self.pending: list = []
        self.console = ""

    def _next_packet(self) -> bytes:
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, rsp.Packet):
                    self.sock.sendall(b"+")
                    return event.payload
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the stub hung up")
            self.pending += self.decoder.feed(data)

    def ask(self, payload: bytes) -> bytes:
        self.sock.sendall(rsp.frame(payload))
        return self._next_packet()

    def resume(self, payload: bytes) -> None:
        self.sock.sendall(rsp.frame(payload))

    def wait_stop(self) -> bytes:
        """The stop reply; console output ('O' packets, tinyvmm's hints) before it is kept."""
        while True:
            packet = self._next_packet()
            if not (packet.startswith(b"O") and packet != b"OK"):
                return packet
            self.console += bytes.fromhex(packet[1:].decode()).decode()

    def interrupt(self) -> None:
        self.sock.sendall(b"\x03")

    def registers(self) -> dict:
        return tdesc.I386.unpack(self.ask(b"g"))


def test_ctrl_c_stops_a_running_guest_and_detach_lets_it_run_on(vmm_factory):
    image = build_guest("spin")
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--debugcon", "stdio")
    client = RspClient(vmm.port())                 # no --gdb-wait: connecting stops the guest
    assert client.ask(b"?").startswith(b"T05")
    client.resume(b"vCont;c")
    time.sleep(0.5)
    client.interrupt()
    assert client.wait_stop().startswith(b"T02")  # SIGINT
    loop = SymbolFile(image.elf_path).address_of("start") - 0xF0000
    regs = client.registers()
    assert regs["cs"] == 0xF000 and loop <= regs["eip"] < loop + 0x20, regs
    assert client.ask(b"D") == b"OK"
    time.sleep(0.3)
    assert vmm.proc.poll() is None                 # still running, without gdb
    vmm.proc.send_signal(signal.SIGTERM)
    assert vmm.finish() == 130
    assert "gdb detached" in vmm.stderr


def test_single_steps_end_right_after_port_io_and_kill_ends_the_run(vmm_factory):
    image = build_guest("gdb_target")
    symbols = SymbolFile(image.elf_path)
    after_count = symbols.address_of("after_count")       # mov $0x55,%al; out %al,$0x80; nop
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--gdb-wait")
    client = RspClient(vmm.port())
    client.ask(b"qSupported:hwbreak+")
    assert client.ask(b"Z1,%x,1" % after_count) == b"OK"
    client.resume(b"c")
    assert client.wait_stop().startswith(b"T05")
    eips = [client.registers()["eip"]]
    for _ in range(2):
        client.resume(b"s")
        assert client.wait_stop().startswith(b"T05")
        eips.append(client.registers()["eip"])
    base = after_count - 0xF0000
    assert eips == [base, base + 2, base + 4]              # the out is 2 bytes; no instruction skipped
    assert client.ask(b"m%x,4" % after_count) == b"b055e680"   # linear memory: the code itself
    assert client.ask(b"vKill;1") == b"OK"
    assert vmm.finish() == 130


@pytest.mark.gdb
def test_gdb_attaches_to_a_long_mode_guest_with_x86_64_registers(vmm_factory):
    image = build_guest("long_mode")
    loop = SymbolFile(image.elf_path).address_of("long_loop")
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--debugcon", "stdio")
    port = vmm.port()
    vmm.wait_for_output("long")                    # the guest is in long mode now
    argv = ["gdb", "-batch", "-nx", "-ex", f"target remote :{port}", "-ex", "show architecture",
            "-ex", f"hbreak *{loop:#x}", "-ex", "continue", "-ex", "info registers rip cs",
            "-ex", "x/2i $pc", "-ex", "p/x $efer", "-ex", "stepi", "-ex", "info registers rip",
            "-ex", "kill"]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=DEADLINE)
    output = done.stdout + done.stderr
    assert '(currently "i386:x86-64")' in output, output
    assert re.search(rf"Breakpoint 1, 0x0*{loop:x} in", output), output    # gdb sees its breakpoint
    assert register_values(output, "rip") == [loop, loop + 3], output      # inc %rbx is 3 bytes
    assert register_values(output, "cs") == [0x18], output
    assert re.search(rf"=> 0x{loop:x}:\s+inc\s+%rbx", output), output     # read through the page tables
    assert re.search(r"\$1 = 0x5[0-9a-f]{2}", output), output                # EFER: LME and LMA
    assert vmm.finish() == 130


def test_a_breakpoint_in_protected_mode_is_reported_as_one(vmm_factory):
    image = build_guest("trace_ports")
    target = SymbolFile(image.elf_path).address_of("protected_write")
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--gdb-wait")
    client = RspClient(vmm.port())
    client.ask(b"qSupported:hwbreak+")
    assert client.ask(b"Z1,%x,1" % target) == b"OK"
    client.resume(b"c")
    assert client.wait_stop() == b"T05thread:01;hwbreak:;"  # CS base 0: gdb's pc is the address
    regs = client.registers()
    assert regs["eip"] == target and regs["cs"] == 0x08 and regs["cr0"] & 1
    client.resume(b"c")                                       # off the breakpoint, to the reset
    assert client.wait_stop() == b"W00"
    assert vmm.finish() == 0


def test_gdb_wait_without_gdb_is_a_usage_error():
    done = tinyvmm("run", "--bios", str(build_guest("hello").bin_path), "--gdb-wait",
                   cwd=ROOT, text=True, timeout=DEADLINE)
    assert done.returncode == 2
    assert "--gdb-wait needs --gdb" in done.stderr


@pytest.mark.gdb
def test_gdb_sees_each_vcpu_as_a_thread(vmm_factory):
    image = build_guest("smp_wake")
    symbols = SymbolFile(image.elf_path)
    vmm = vmm_factory(image, "--gdb", "tcp::0", "--gdb-wait", "--smp", "2")
    all_in = symbols.address_of("all_in") - 0xF0000
    output = run_gdb(vmm.port(), f"hbreak *{all_in + 0xF0000:#x}", "continue", "info threads",
                     "info registers eip", "thread 2", "info registers cs eip", "thread 1",
                     "info registers eip", "kill")
    assert re.search(r"\* 1\s+Thread 1 \(vCPU 0 \(BSP\), APIC ID 0\)", output), output
    assert re.search(r"  2\s+Thread 2 \(vCPU 1, APIC ID 1\)", output), output
    ap_idle = symbols.address_of("ap_idle") - 0xF0000
    # The BSP at the breakpoint; the AP halted in its idle loop (at the hlt or just after it).
    assert register_values(output, "eip") == [all_in, register_values(output, "eip")[1], all_in], output
    assert register_values(output, "eip")[1] in (ap_idle, ap_idle + 1), output
    assert register_values(output, "cs") == [0xF000], output
    assert vmm.finish() == 130, vmm.stderr
