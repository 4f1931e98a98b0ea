"""The public API: a Machine a script or a test builds, runs, inspects and extends.

    from tinyvmm import Machine
    with Machine("bios.bin", mem=64 << 20) as machine:
        result = machine.run(timeout=10, until_console="no bootable option ROM")
        print(result.outcome, machine.debugcon_output)

A thin facade: the machine is described by a tinyvmm.spec.MachineSpec, built by
tinyvmm.build and run by tinyvmm.runner. The `tinyvmm` command line uses the same three.
Addresses are guest-physical, sizes in bytes, times in seconds.
"""

from __future__ import annotations

import os
import threading

from .errors import ConfigError, MachineBusyError, MachineClosedError
from .hostdevice import HostCallbacks
from .outcome import Outcome, RunResult
from .spec import MachineSpec, check_type

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .board import Board
    from .debug.symbols import SymbolTable
    from .hostdevice import UserDevice
    from .kvm.abi import kvm_regs, kvm_sregs

_STEPS_DONE = "steps done: {}"


class Machine:
    """One x86 guest on /dev/kvm: i440FX/PIIX chipset, vCPUs, RAM, ACPI, fw_cfg, COM1, the
    debug console, optionally a Linux kernel and virtio-blk disks. Ready to run from the reset
    vector, or, for `boot="direct"`, from the kernel's entry.

    Machine(spec) builds the machine a tinyvmm.spec.MachineSpec describes; Machine(firmware,
    **options) builds MachineSpec.from_api(firmware, **options):

    firmware      image bytes, a path, a shipped image's bare name ("bios.bin"), or None for
                  tinyvmm's BIOS: a multiple of 64 KiB, 64 KiB to 16 MiB, mapped to end at 4 GiB
    mem           guest RAM in bytes (2 MiB to 64 GiB, a multiple of 4 KiB; QEMU's -m)
    smp           the number of vCPUs, 1 to 255 and to the host's limit (QEMU's -smp); vCPU 0
                  starts, the guest wakes the others (INIT, SIPI); several run from the main thread
    acpi          False: no ACPI tables (QEMU's -machine acpi=off)
    kernel        a bzImage or an ELF vmlinux with a PVH entry, booted as `tinyvmm boot` does
    initrd, append, append_as_is, boot    as the command line's --initrd, --append,
                  --append-as-is and --boot ("firmware" or "direct")
    fw_cfg        {name: bytes | str | os.PathLike}: files served to the guest (QEMU's -fw_cfg:
                  bytes as they are, str as string=, a path as file=)
    option_roms   paths, served as genroms/NAME (QEMU's -option-rom)
    fw_cfg_dma, fw_cfg_ports, fw_cfg_mmio   the fw_cfg interfaces (DMA, ports 0x510/0x514,
                  an MMIO window base address)
    drives        QEMU -drive strings ("file=disk.img,if=virtio,format=raw"): virtio-blk disks
    serial, debugcon   where COM1 and the debug console (ports 0x402, 0xe9) write: None keeps
                  everything in memory (serial_output, debugcon_output), or "stdio", "none",
                  "file:PATH", or a callable taking bytes
    trace, trace_file   the command line's --trace categories ("io,fw_cfg") and --trace-file
    software_cpu  "auto", "on" or "off": the command line's --software-cpu (MachineSpec says more)

    Raises TypeError for an argument of the wrong type, ConfigError (bad input, with the
    command line's status-2 message), tinyvmm.errors.HostError: KvmUnavailable or KvmError
    (no usable /dev/kvm, a KVM call failed) and HostMemoryError (the host cannot provide the
    RAM). A Machine holds file descriptors and guest RAM until close(); use it as a context
    manager. `raise_on_interrupt` False: a Ctrl-C ends run() with Outcome.INTERRUPTED instead
    of raising KeyboardInterrupt (the command line's choice).
    """

    def __init__(self, firmware: MachineSpec | bytes | str | os.PathLike[str] | None = None, *,
                 raise_on_interrupt: bool = True, **options: Any) -> None:
        from .build import build
        if isinstance(firmware, MachineSpec) and not options:
            spec = firmware
        elif isinstance(firmware, MachineSpec):
            raise TypeError("Machine(spec) takes no other arguments: the spec holds them")
        else:
            spec = MachineSpec.from_api(firmware, **options)
        self.spec = spec
        self.board = None
        self._started = False
        self._running: int | None = None    # the thread running the guest, while it runs
        self._interrupt_raises = raise_on_interrupt
        self._callbacks = HostCallbacks()
        self.last_result: RunResult | None = None
        self._built = built = build(spec, self._callbacks.guard)
        self.firmware, self.payload = built.firmware, built.payload
        self._serial, self._debugcon = built.serial, built.debugcon
        self.board, self.fw_cfg, self.runner = built.board, built.fw_cfg, built.runner
        self._milestones = built.board.milestones
        self._callbacks.board = built.board
        try:
            from .debug.session import DebugSession, symbol_loader
            self._debug = DebugSession(built.board, built.runner, spec.debug,
                                       symbol_loader(spec, self.boot, built.board, built.runner))
        except BaseException:
            built.close()
            raise

    @classmethod
    def from_spec(cls, spec: MachineSpec, *, raise_on_interrupt: bool = True) -> Machine:
        """The Machine `spec` describes (as Machine(spec)); TypeError for anything but a
        MachineSpec."""
        if not isinstance(spec, MachineSpec):
            raise TypeError(f"from_spec: expected a MachineSpec, not {type(spec).__name__}")
        return cls(spec, raise_on_interrupt=raise_on_interrupt)

    @property
    def boot(self) -> str | None:
        """How the kernel is booted: "firmware" or "direct" (as chosen when not given); None
        without a kernel."""
        return self.payload.boot if self.payload is not None else None

    # --- running -----------------------------------------------------------------
    def run(self, *, timeout: float | None = None, until_console: str | bytes | None = None,
            until_milestone: int | None = None, until_address: int | None = None) -> RunResult:
        """Run the guest until it resets, powers off, crashes, halts for good, or one of:
        `timeout` seconds pass (Outcome.TIMEOUT), `until_console` appears on the serial or
        debug console (EXPECTED), the byte `until_milestone` is written to port 0xf4 or 0xf5
        (EXPECTED), the vCPU is about to execute linear address `until_address` (BREAKPOINT,
        a DR0 breakpoint), or host code calls stop() (STOPPED). May be called again to go
        on from where the last run stopped. Returns a tinyvmm.outcome.RunResult: outcome,
        message, report (a crash report for CRASH and TIMEOUT) and exits."""
        from .until import arm, check_limits
        board = self._check_idle()
        limits = check_limits(timeout, until_console, until_milestone, until_address)
        if limits.address is not None and self._pc() == limits.address:
            stepped = self._step_over()         # stopped there: step off it first
            if stepped is not None:
                return stepped
        disarm = arm(limits, board, self.runner, (self._serial, self._debugcon))
        try:
            return self._run()
        finally:
            disarm()

    def _check_idle(self) -> Board:
        board = self._check_open()
        if self._running is not None:
            raise MachineBusyError("this Machine is running already: a device or callback "
                                   "ends the run with stop(), and the caller runs it again")
        return board

    def _pc(self) -> int:
        """The linear address of the vCPU's next instruction."""
        from .debug.report import instruction_pointer
        vcpu = self._check_open().vcpu
        return instruction_pointer(vcpu.get_regs(), vcpu.get_sregs())

    def _step_over(self) -> RunResult | None:
        """Execute the one instruction at the vCPU's address (a breakpoint there would stop it
        again at once); the step's result if the run ended there, else None."""
        self.step(1)
        result = self.last_result
        assert result is not None               # step() ran
        if result.outcome is Outcome.STOPPED and result.message == _STEPS_DONE.format(1):
            return None
        return result

    def _run(self) -> RunResult:
        board = self._check_open()
        if not self._started:
            self._started = True
            self._serial.begin()        # a file sink drops what an earlier run left in it
            self._debugcon.begin()
            tracer = self._built.tracer
            if tracer is not None and hasattr(tracer.out, "begin"):
                tracer.out.begin()      # a trace file, likewise
        self._running = threading.get_ident()
        try:
            result = self._debug.run()
        finally:
            self._running = None
            board.stop_request = None           # a stop asked for before a run ends that run alone
        traceback = self._callbacks.take_traceback() if result.outcome is Outcome.CRASH else None
        if traceback is not None:
            from .debug.report import crash_report
            result.report = (result.report or crash_report(self.runner, result.outcome, result.message)) \
                + "\n\nthe host code's traceback:\n" + traceback.rstrip()
        self.last_result = result
        if result.outcome is Outcome.INTERRUPTED and self._interrupt_raises:
            raise KeyboardInterrupt(result.message)     # Ctrl-C stops a script or a test run
        return result

    def step(self, count: int = 1) -> list[str]:
        """Execute `count` instructions (1 to 10**6) one at a time; returns one line for each, as
        `--trace steps` prints it: mode, CS:IP (or RIP), bytes, disassembly (capstone). The
        vCPU stops before the next instruction. An instruction that exits to a device (an
        I/O port, MMIO) is served as in run(). Fewer lines come back when the guest ends
        first (a crash, a reset, stop()): last_result says how the stepping ended. With
        software_cpu "on", KVM executes the steps (the software CPU runs the runs)."""
        from .debug.steps import StepTracer
        from .debug.trace import StepSpec
        from .runner import API_STEPS
        board = self._check_idle()
        check_type("count", count, int)
        if not 1 <= count <= 10 ** 6:
            raise ConfigError(f"count={count!r}: 1 to 1000000 instructions")
        runner = self.runner
        lines: list[str] = []

        class Lines:        # what StepTracer writes its lines to
            step = lines.append
        try:
            StepTracer(board, runner, Lines, StepSpec(count + 1), self.symbols, holder=API_STEPS,
                       on_limit=lambda: board.request_stop(Outcome.STOPPED, _STEPS_DONE.format(count)))
        except ConfigError as exc:
            raise ConfigError(f"step: {exc}") from exc
        try:
            self._run()
        finally:
            runner.stepper = None
            runner.guest_debug.release()
        return lines[:count]

    @property
    def symbols(self) -> SymbolTable:
        """The symbols step() and crash reports name code with (a tinyvmm.debug.symbols.SymbolTable,
        read once): the spec's symbol files, the ELF beside a firmware or option ROM path (X.elf
        for X.bin), the shipped BIOS's and boot ROM's, the kernel's own."""
        from .debug.session import LazySymbols
        symbols = self._debug.symbols
        return symbols.loaded() if isinstance(symbols, LazySymbols) else symbols

    def stop(self, message: str = "stopped by the host") -> None:
        """End the current run (Outcome.STOPPED): from a device or callback, after the access in
        progress; from another thread, at once (the vCPU is kicked out of the guest, whichever
        thread runs it). Before a run, that run ends at its start."""
        board = self._check_open()
        check_type("message", message, str)
        running = self._running
        if running is not None and running != threading.get_ident():
            board.stop_from_thread(Outcome.STOPPED, message)
        else:
            board.request_stop(Outcome.STOPPED, message)

    # --- guest state ---------------------------------------------------------------
    def read_memory(self, address: int, size: int) -> bytes:
        """`size` bytes of guest RAM or ROM at guest-physical `address`; GuestMemoryError
        (tinyvmm.memory, a ValueError) if any of them is not guest memory."""
        board = self._check_open()
        check_type("address", address, int)
        check_type("size", size, int)
        return b"".join(bytes(view) for view in board.memory.views(address, size))

    def write_memory(self, address: int, data: bytes) -> None:
        """Write `data` to guest RAM at guest-physical `address`; GuestMemoryError if any byte
        falls outside RAM (ROM included: the firmware image is read-only)."""
        from .guest_state import write_memory
        write_memory(self._check_open().memory, address, data)

    def regs(self) -> kvm_regs:
        """The vCPU's general registers: a kvm_regs (rax ... r15, rip, rflags), a copy."""
        board = self._check_open()
        return board.vcpu.get_regs()

    def set_regs(self, **values: int) -> None:
        """Set general registers by name (rax=..., rip=..., rflags=...); TypeError for a name
        kvm_regs does not have."""
        from .guest_state import set_regs
        set_regs(self._check_open().vcpu, values)

    def sregs(self) -> kvm_sregs:
        """The vCPU's system registers: a kvm_sregs (cs ... ss as kvm_segment, gdt, idt,
        cr0 ... cr4, efer), a copy; give it back changed with set_sregs()."""
        board = self._check_open()
        return board.vcpu.get_sregs()

    def set_sregs(self, sregs: kvm_sregs) -> None:
        """Give the vCPU system registers read with sregs() and changed; TypeError for
        anything but a kvm_sregs."""
        from .kvm.abi import kvm_sregs
        board = self._check_open()
        if not isinstance(sregs, kvm_sregs):
            raise TypeError(f"set_sregs: expected the kvm_sregs sregs() gives, not {type(sregs).__name__}")
        board.vcpu.set_sregs(sregs)

    def set_segment(self, name: str, selector: int) -> None:
        """Load segment register `name` ("cs", "ds", "es", "fs", "gs", "ss") as real mode
        does: the selector, and base = selector * 16."""
        from .guest_state import set_segment
        set_segment(self._check_open().vcpu, name, selector)

    @property
    def serial_output(self) -> bytes:
        """What COM1 has written so far: all of it when kept in memory (serial=None), else the
        last few KiB."""
        buffer = self._built.serial_buffer
        return bytes(buffer if buffer is not None else self._serial.tail)

    @property
    def debugcon_output(self) -> bytes:
        """What the debug console (ports 0x402 and 0xe9) has written so far (as serial_output)."""
        buffer = self._built.debugcon_buffer
        return bytes(buffer if buffer is not None else self._debugcon.tail)

    @property
    def output_error(self) -> str | None:
        """Why a console's output could not be written ("cannot write the serial output: No
        space left on device"), which ended a run as OUTPUT_CLOSED, or (after close()) why the
        trace file could not; None while all is well."""
        return self._serial.failed or self._debugcon.failed or self._built.trace_error

    @property
    def milestones(self) -> list:
        """The milestones written to ports 0xf4/0xf5 so far: (port, value, time_ns) each,
        time_ns from CLOCK_MONOTONIC (time.monotonic_ns())."""
        return list(self._milestones)

    def summary(self, tail: int = 2000) -> str:
        """What a person looking at a failed test wants: the last run's outcome and message,
        its crash report, and the last `tail` bytes of each console."""
        from .debug.report import run_summary
        check_type("tail", tail, int)
        return run_summary(self.last_result, {"serial": self.serial_output,
                                              "debug console": self.debugcon_output}, tail)

    # --- extending -----------------------------------------------------------------
    def add_port_device(self, base: int, size: int, device: UserDevice) -> None:
        """Put `device` on I/O ports base ... base+size-1. It answers read(offset, size) -> int
        and write(offset, size, value), `offset` from `base`, `size` 1, 2 or 4 bytes, the
        value 0 to 2**(8*size)-1. A string instruction (rep insb) makes one call per element.
        ConfigError for a range outside 0-0xffff, overlapping a device's, or one KVM serves
        itself (the PIC, the PIT). A method that raises or returns something other than such
        an int ends the run as a crash whose report holds its traceback."""
        from .hostdevice import add_port_device
        add_port_device(self._check_open(), base, size, device, self._callbacks.guard)

    def add_mmio_device(self, base: int, size: int, device: UserDevice) -> None:
        """Put `device` (as add_port_device's; sizes up to 8 bytes) on guest-physical
        base ... base+size-1. ConfigError where guest RAM or ROM is, where KVM serves the
        APICs, or where another device is: the guest would never reach it there."""
        from .hostdevice import add_mmio_device
        add_mmio_device(self._check_open(), base, size, device, self._callbacks.guard)

    def add_fw_cfg_file(self, name: str, data: bytes | str = b"", *, size: int | None = None,
                        read: Callable[[], bytes] | None = None,
                        write: Callable[[int, bytes], object] | None = None) -> None:
        """Serve a fw_cfg file `name` ("opt/..." for users, as in QEMU) of `size` bytes
        (default len(data)), holding `data` (a str is encoded as UTF-8) zero-padded.
        `read()`, if given, is called each time the guest selects the file and returns its
        contents (bytes, at most `size`, zero-padded). With `write(offset, data)` the file is
        writable by fw_cfg DMA, and each DMA write calls it with the bytes written: a
        guest-to-host request channel; a write() that returns False, or raises, gives the
        guest the DMA error bit. Only before the first run (the guest reads the directory once)."""
        from .fw_cfg.attach import add_host_file
        self._check_open()
        if self._started:
            raise ConfigError(f"fw_cfg file {name!r}: files are added before the first run")
        warning = add_host_file(self.fw_cfg.items, name, data, size=size, read=read, write=write,
                                limit=min(self.spec.mem, 1 << 31), guard=self._callbacks.guard)
        if warning:
            import warnings
            warnings.warn(warning.removeprefix("warning: "), stacklevel=2)

    def fw_cfg_file_key(self, name: str) -> int:
        """The selector key of fw_cfg file `name` (0x20 and up, in the sorted order of all file
        names, as QEMU orders them: final once the last file is added); ConfigError if
        there is no such file."""
        self._check_open()
        if name not in self.fw_cfg.items.file_names():
            raise ConfigError(f"fw_cfg: no file {name!r}")
        return self.fw_cfg.items.file_key(name)

    # --- the end -------------------------------------------------------------------
    def _check_open(self) -> Board:
        if self.board is None:
            raise MachineClosedError("this Machine is closed")
        return self.board

    def close(self) -> None:
        """Free the VM, its RAM and the files it opened. Safe to call twice; refused
        (MachineBusyError) while the guest runs. The consoles' output, last_result and
        summary() stay readable."""
        if self._running is not None:
            raise MachineBusyError("this Machine is running: stop() it, and close it after run() returns")
        self.board = None
        try:
            self._debug.close()
        finally:
            self._built.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
