"""The public API: a Machine a script or a test builds, runs, inspects and extends.

    from tinyvmm import Machine
    with Machine("bios.bin", mem=64 << 20) as machine:
        result = machine.run(timeout=10, until_console="nothing to boot")
        print(result.outcome, machine.debugcon_output)

The `tinyvmm` command line is built on this class: the same checks, the same run loop.
Addresses are guest-physical, sizes in bytes, times in seconds.
"""

import os
import threading

from . import layout
from .errors import ConfigError, MachineBusyError, MachineClosedError
from .outcome import Outcome, RunResult

PORT_SPACE = 0x10000
_STEPS_DONE = "steps done: {}"


class Machine:
    """One x86 guest on /dev/kvm: i440FX/PIIX chipset, one vCPU, RAM, fw_cfg, COM1, the debug
    console, optionally a Linux kernel and virtio-blk disks. Ready to run from the reset
    vector, or, for `boot="direct"`, from the kernel's entry.

    firmware      image bytes, a path, a shipped image's bare name ("bios.bin"), or None for
                  tinyvmm's BIOS: a multiple of 64 KiB, 64 KiB to 16 MiB, mapped to end at 4 GiB
    mem           guest RAM in bytes (2 MiB to 64 GiB, a multiple of 4 KiB; QEMU's -m)
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
    tracer        a tinyvmm.debug.trace.Tracer for the command line's --trace

    Raises ConfigError (bad input, with the command line's status-2 message),
    tinyvmm.kvm.KvmUnavailable or KvmError (no usable /dev/kvm, a KVM call failed) and
    tinyvmm.memory.HostMemoryError (the host cannot provide the RAM). A Machine holds file
    descriptors and guest RAM until close(); use it as a context manager.
    """

    def __init__(self, firmware=None, *, mem: int = 256 * layout.MiB, kernel=None, initrd=None,
                 append: str | None = None, append_as_is: bool = False, boot: str | None = None,
                 fw_cfg: dict | None = None, option_roms=(), fw_cfg_dma: bool = True,
                 fw_cfg_ports: bool = True, fw_cfg_mmio: int | None = None, drives=(),
                 serial=None, debugcon=None, tracer=None):
        from .config import MachineOptions
        image = None
        if isinstance(firmware, (bytes, bytearray, memoryview)):
            image = bytes(firmware)
            try:
                layout.check_firmware_size(len(image))
            except ValueError as exc:
                raise ConfigError(f"firmware: {exc}") from None
        elif firmware is not None:
            firmware = _path(firmware, "firmware")
        for name, value in (("append_as_is", append_as_is), ("fw_cfg_dma", fw_cfg_dma),
                            ("fw_cfg_ports", fw_cfg_ports)):
            _check_type(name, value, bool)
        _check_type("append", append, str, none=True)
        _check_type("boot", boot, str, none=True)
        _check_type("fw_cfg_mmio", fw_cfg_mmio, int, none=True)
        for name, value in (("serial", serial), ("debugcon", debugcon)):
            if not (value is None or isinstance(value, str) or callable(value)):
                raise TypeError(f"{name}: expected None, 'stdio', 'none', 'file:PATH' or a "
                                f"callable taking bytes, not {type(value).__name__}")
        if boot not in (None, "firmware", "direct"):
            raise ConfigError(f"boot={boot!r}: expected 'firmware' or 'direct'")
        if kernel is None and (initrd is not None or boot is not None or append is not None
                               or append_as_is):
            raise ConfigError("initrd, append, append_as_is and boot need a kernel")
        if fw_cfg_mmio is not None and fw_cfg_mmio < 0:
            raise ConfigError(f"fw_cfg_mmio={fw_cfg_mmio:#x}: not a guest-physical address")
        options = MachineOptions(
            bios=None if image is not None else firmware, mem=_checked_mem(mem),
            kernel=_path(kernel, "kernel"), initrd=_path(initrd, "initrd"), append=append,
            append_as_is=append_as_is, boot=boot, fw_cfg=_fw_cfg_specs(fw_cfg),
            option_roms=[_path(rom, "option_roms[]") for rom in _sequence("option_roms", option_roms)],
            fw_cfg_dma=fw_cfg_dma, fw_cfg_ports=fw_cfg_ports, fw_cfg_mmio=fw_cfg_mmio,
            drives=_drive_specs(drives))
        self._open(options, kernel is not None, image, serial, debugcon, tracer)

    @classmethod
    def from_options(cls, options, *, boot_linux: bool, serial=None, debugcon=None,
                     expect: bytes | None = None, tracer=None) -> "Machine":
        """A Machine from a config.MachineOptions (the command line's own path); with
        `boot_linux` and no options.kernel, the default test kernel. `expect`: --expect,
        watched on both consoles for the machine's life."""
        machine = cls.__new__(cls)
        machine._open(options, boot_linux, None, serial, debugcon, tracer, expect)
        machine._interrupt_raises = False       # the command line reports it with status 130
        return machine

    def _open(self, options, boot_linux, image, serial, debugcon, tracer, expect=None) -> None:
        from .config import firmware_image, open_disks, prepare_items
        self.options = options
        self._boot_linux = boot_linux
        self._firmware_given = image is not None
        self._symbols = None
        self.board = None
        self._closers = []
        self._started = False
        self._running = None        # the thread running the guest, while it runs
        self._interrupt_raises = True
        self._host_traceback = None
        self.last_result: RunResult | None = None
        self.firmware = image if image is not None else firmware_image(options)
        try:
            items, self.payload = prepare_items(options, self.firmware, boot_linux)
            self._serial, self._serial_buffer = self._console("serial", serial, expect)
            self._debugcon, self._debugcon_buffer = self._console("debugcon", debugcon, expect)
            disks, close_disks = open_disks(options.drives)
            self._closers.append(close_disks)
            self._build(items, disks, tracer)
        except BaseException:
            self.close()
            raise

    def _console(self, name: str, spec, expect: bytes | None):
        """A Console for `spec` (see the class), and the buffer keeping all it wrote (or None)."""
        from .console import Console, SinkSpecError, open_sink
        if spec is None:
            buffer = bytearray()
            return Console(name, buffer.extend, expect), buffer
        if callable(spec):
            return Console(name, self._guard(spec, f"the {name} output callable"), expect), None
        try:
            sink, close = open_sink(spec)
        except SinkSpecError as exc:
            raise ConfigError(str(exc)) from None
        self._closers.append(close)
        return Console(name, sink, expect), None

    def _build(self, items, disks, tracer) -> None:
        from .board import Board, BoardConfig
        from .fw_cfg.items import FwCfgConfigError
        from .fw_cfg.options import attach_fw_cfg
        from .runner import Runner
        self.board = board = Board(BoardConfig(self.firmware, self.options.mem, self._serial,
                                               self._debugcon, virtio_devices=disks), tracer=tracer)
        self._milestones = board.milestones
        payload = self.payload
        direct = payload is not None and payload.boot == "direct"
        if payload is not None and not direct:
            board.memory.prefault(payload.load_ranges())
        try:
            self.fw_cfg = attach_fw_cfg(board, self.options, items)
        except FwCfgConfigError as exc:
            raise ConfigError(str(exc)) from None
        self.runner = Runner(board, tracer=tracer)
        if direct:
            payload.enter(board.memory, board.vcpu, layout.e820_map(self.options.mem, len(self.firmware)))
        elif payload is not None and (self.options.bios or self.options.option_roms):
            payload.preload(board.memory)       # foreign firmware takes the kernel as loaded

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
        from .console import TAIL_SIZE
        self._check_idle()
        board = self.board
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout: expected seconds as int or float, not {type(timeout).__name__}")
            if not 0 < timeout <= 30 * 24 * 3600:
                raise ConfigError(f"timeout={timeout!r}: above 0 and at most 30 days")
            if threading.current_thread() is not threading.main_thread():
                raise ConfigError("timeout: a run with a timeout must be on the main thread "
                                  "(the timer is a signal)")
        text = None
        if until_console is not None:
            if not isinstance(until_console, (str, bytes)):
                raise TypeError(f"until_console: expected str or bytes, not {type(until_console).__name__}")
            text = os.fsencode(until_console) if isinstance(until_console, str) else until_console
            if not 0 < len(text) <= TAIL_SIZE // 2:
                raise ConfigError(f"until_console: the text must be 1 to {TAIL_SIZE // 2} bytes")
        if until_milestone is not None:
            _check_type("until_milestone", until_milestone, int)
            if not 0 <= until_milestone <= 0xFF:
                raise ConfigError(f"until_milestone={until_milestone!r}: a byte, 0 to 0xff")
        if until_address is not None:
            _check_type("until_address", until_address, int)
            if not 0 <= until_address < 1 << 64:
                raise ConfigError(f"until_address={until_address:#x}: not a linear address")
            if self._pc() == until_address:     # stopped there: step off it first
                stepped = self._step_over()
                if stepped is not None:
                    return stepped
        undo = []
        try:
            if text is not None:
                def seen():
                    board.request_stop(Outcome.EXPECTED, f"{text.decode(errors='replace')!r} seen")
                for console in (self._serial, self._debugcon):
                    console.watch(text, seen)
                    undo.append(lambda console=console: console.unwatch(seen))
            if until_milestone is not None:
                def milestone(written):
                    if written.value == until_milestone:
                        board.request_stop(Outcome.EXPECTED, f"milestone {until_milestone:#x} written")
                board.milestone_listeners.append(milestone)
                undo.append(lambda: board.milestone_listeners.remove(milestone))
            if until_address is not None:
                undo.append(self._break_at(until_address))
            self.runner.timeout = timeout
            return self._run()
        finally:
            self.runner.timeout = None
            for step in reversed(undo):
                step()

    def _check_idle(self) -> None:
        self._check_open()
        if self._running is not None:
            raise MachineBusyError("this Machine is running already: a device or callback "
                                   "ends the run with stop(), and the caller runs it again")

    def _pc(self) -> int:
        """The linear address of the vCPU's next instruction."""
        from .debug.report import instruction_pointer
        return instruction_pointer(self.board.vcpu.get_regs(), self.board.vcpu.get_sregs())

    def _step_over(self) -> RunResult | None:
        """Execute the one instruction at the vCPU's address (a breakpoint there would stop it
        again at once); the step's result if the run ended there, else None."""
        self.step(1)
        result = self.last_result
        if result.outcome is Outcome.STOPPED and result.message == _STEPS_DONE.format(1):
            return None
        return result

    def _run(self) -> RunResult:
        if not self._started:
            self._started = True
            self._serial.begin()        # a file sink drops what an earlier run left in it
            self._debugcon.begin()
        self._running = threading.get_ident()
        try:
            result = self.runner.run()
        finally:
            self._running = None
            self.board.stop_request = None      # a stop asked for before a run ends that run alone
        if self._host_traceback is not None and result.outcome is Outcome.CRASH:
            from .debug.report import crash_report
            result.report = (result.report or crash_report(self.runner, result.outcome, result.message)) \
                + "\n\nthe host code's traceback:\n" + self._host_traceback.rstrip()
            self._host_traceback = None
        self.last_result = result
        if result.outcome is Outcome.INTERRUPTED and self._interrupt_raises:
            raise KeyboardInterrupt(result.message)     # Ctrl-C stops a script or a test run
        return result

    def _break_at(self, address: int):
        """A DR0 execution breakpoint at linear `address` for one run; returns its undo."""
        from .kvm.debugregs import USE_HARDWARE_BREAKPOINTS, execution_breakpoint
        runner, vcpu = self.runner, self.board.vcpu
        if runner.on_debug_exit is not None or runner.debugger is not None:
            raise ConfigError("until_address: the vCPU's debug registers are taken (gdb, a trace "
                              "or the boot's kernel-entry mark)")
        vcpu.set_guest_debug(USE_HARDWARE_BREAKPOINTS, execution_breakpoint(address))

        def on_debug_exit(debug):
            if debug.pc == address:
                return Outcome.BREAKPOINT, f"breakpoint at {address:#x}"
            return None
        runner.on_debug_exit = on_debug_exit

        def undo():
            runner.on_debug_exit = None
            vcpu.set_guest_debug(0)
        return undo

    def step(self, count: int = 1) -> list[str]:
        """Execute `count` instructions (1 to 10**6) one at a time; returns one line for each, as
        `--trace steps` prints it: mode, CS:IP (or RIP), bytes, disassembly (capstone). The
        vCPU stops before the next instruction. An instruction that exits to a device (an
        I/O port, MMIO) is served as in run(). Fewer lines come back when the guest ends
        first (a crash, a reset, stop()): last_result says how the stepping ended."""
        from .debug.steps import StepTracer
        from .debug.trace import StepSpec
        self._check_idle()
        _check_type("count", count, int)
        if not 1 <= count <= 10 ** 6:
            raise ConfigError(f"count={count!r}: 1 to 1000000 instructions")
        runner = self.runner
        if runner.on_debug_exit is not None or runner.debugger is not None:
            raise ConfigError("step: the vCPU's debug registers are taken (gdb, a trace or the "
                              "boot's kernel-entry mark)")
        lines = []

        class Lines:        # what StepTracer writes its lines to
            step = lines.append
        board = self.board
        StepTracer(board, runner, Lines, StepSpec(count + 1), self.symbols,
                   on_limit=lambda: board.request_stop(Outcome.STOPPED, _STEPS_DONE.format(count)))
        try:
            self._run()
        finally:
            runner.stepper = runner.on_debug_exit = None
            board.vcpu.set_guest_debug(0)
        return lines[:count]

    @property
    def symbols(self):
        """The symbols step() and crash reports name code with (a tinyvmm.debug.symbols.SymbolTable,
        read once): the ELF beside a firmware or option ROM path (X.elf for X.bin), the
        shipped BIOS's and boot ROM's, the kernel's own."""
        if self._symbols is None:
            from types import SimpleNamespace
            from .debug.gdb.options import default_symbol_files
            from .debug.symbols import SymbolTable
            slots = {name: getattr(self.options, name) for name in type(self.options).__slots__}
            if slots["bios"] is None and not self._firmware_given and slots["boot"] != "direct":
                slots["bios"] = "bios.bin"          # tinyvmm's own, shipped with its ELF
            args = SimpleNamespace(command="boot" if self._boot_linux else "run", **slots)
            self._symbols = SymbolTable(default_symbol_files(args, []))
        return self._symbols

    def stop(self, message: str = "stopped by the host") -> None:
        """End the current run (Outcome.STOPPED): from a device or callback, after the access in
        progress; from another thread, at once (the vCPU is kicked out of the guest, when
        the run is on the main thread). Before a run, that run ends at its start."""
        self._check_open()
        _check_type("message", message, str)
        running = self._running
        if running is not None and running != threading.get_ident():
            self.board.stop_from_thread(Outcome.STOPPED, message)
        else:
            self.board.request_stop(Outcome.STOPPED, message)

    # --- guest state ---------------------------------------------------------------
    def read_memory(self, address: int, size: int) -> bytes:
        """`size` bytes of guest RAM or ROM at guest-physical `address`; GuestMemoryError
        (tinyvmm.memory, a ValueError) if any of them is not guest memory."""
        self._check_open()
        return b"".join(bytes(view) for view in self.board.memory.views(address, size))

    def write_memory(self, address: int, data: bytes) -> None:
        """Write `data` to guest RAM at guest-physical `address`; GuestMemoryError if any byte
        falls outside RAM (ROM included: the firmware image is read-only)."""
        self._check_open()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_memory: expected bytes, not {type(data).__name__}")
        data = memoryview(data).cast("B")
        done = 0
        for view in self.board.memory.views(address, len(data), True):
            view[:] = data[done:done + len(view)]
            done += len(view)

    def regs(self):
        """The vCPU's general registers: a kvm_regs (rax ... r15, rip, rflags), a copy."""
        self._check_open()
        return self.board.vcpu.get_regs()

    def set_regs(self, **values: int) -> None:
        """Set general registers by name (rax=..., rip=..., rflags=...); TypeError for a name
        kvm_regs does not have."""
        self._check_open()
        regs = self.board.vcpu.get_regs()
        names = {name for name, _ in type(regs)._fields_}
        for name, value in values.items():
            if name not in names:
                raise TypeError(f"set_regs: no register {name!r} (one of {', '.join(sorted(names))})")
            _check_type(name, value, int)
            if not 0 <= value < 1 << 64:
                raise ConfigError(f"set_regs: {name}={value:#x} does not fit 64 bits unsigned")
            setattr(regs, name, value)
        self.board.vcpu.set_regs(regs)

    def sregs(self):
        """The vCPU's system registers: a kvm_sregs (cs ... ss as kvm_segment, gdt, idt,
        cr0 ... cr4, efer), a copy; give it back changed with set_sregs()."""
        self._check_open()
        return self.board.vcpu.get_sregs()

    def set_sregs(self, sregs) -> None:
        """Give the vCPU system registers read with sregs() and changed; TypeError for
        anything but a kvm_sregs."""
        from .kvm.abi import kvm_sregs
        self._check_open()
        if not isinstance(sregs, kvm_sregs):
            raise TypeError(f"set_sregs: expected the kvm_sregs sregs() gives, not {type(sregs).__name__}")
        self.board.vcpu.set_sregs(sregs)

    def set_segment(self, name: str, selector: int) -> None:
        """Load segment register `name` ("cs", "ds", "es", "fs", "gs", "ss") as real mode
        does: the selector, and base = selector * 16."""
        if name not in ("cs", "ds", "es", "fs", "gs", "ss"):
            raise TypeError(f"set_segment: {name!r} is not a segment register")
        _check_type("selector", selector, int)
        if not 0 <= selector <= 0xFFFF:
            raise ConfigError(f"set_segment: selector {selector:#x} is not 16 bits")
        sregs = self.sregs()
        segment = getattr(sregs, name)
        segment.selector = selector & 0xFFFF
        segment.base = (selector & 0xFFFF) << 4
        self.board.vcpu.set_sregs(sregs)

    @property
    def serial_output(self) -> bytes:
        """What COM1 has written so far: all of it when kept in memory (serial=None), else the
        last few KiB."""
        return bytes(self._serial_buffer if self._serial_buffer is not None else self._serial.tail)

    @property
    def debugcon_output(self) -> bytes:
        """What the debug console (ports 0x402 and 0xe9) has written so far (as serial_output)."""
        return bytes(self._debugcon_buffer if self._debugcon_buffer is not None else self._debugcon.tail)

    @property
    def output_error(self) -> str | None:
        """Why a console's output could not be written ("cannot write the serial output: No
        space left on device"), which ended a run as OUTPUT_CLOSED; None while all is well."""
        return self._serial.failed or self._debugcon.failed

    @property
    def milestones(self) -> list:
        """The milestones written to ports 0xf4/0xf5 so far: (port, value, time_ns) each,
        time_ns from CLOCK_MONOTONIC (time.monotonic_ns())."""
        return list(self._milestones)

    def summary(self, tail: int = 2000) -> str:
        """What a person looking at a failed test wants: the last run's outcome and message,
        its crash report, and the last `tail` bytes of each console."""
        _check_type("tail", tail, int)
        tail = max(tail, 0)
        result = self.last_result
        lines = ["not run yet" if result is None else
                 f"last run: {result.outcome.description} ({result.outcome.name}): {result.message}"]
        if result is not None and result.completions:
            lines.append("completed for the host's KVM: " + ", ".join(
                f"{name} {count}" for name, count in sorted(result.completions.items(),
                                                            key=lambda kv: -kv[1])))
        if result is not None and result.report:
            lines += ["", result.report]
        for name, output in (("serial", self.serial_output), ("debug console", self.debugcon_output)):
            shown = output[len(output) - min(tail, len(output)):]
            text = shown.decode("utf-8", "replace")
            lines += ["", f"{name}, last {len(shown)} of {len(output)} bytes:" if output
                      else f"{name}: nothing written"]
            if text:
                lines.append(text.rstrip("\n"))
        return "\n".join(lines)

    # --- extending -----------------------------------------------------------------
    def add_port_device(self, base: int, size: int, device) -> None:
        """Put `device` on I/O ports base ... base+size-1. It answers read(offset, size) -> int
        and write(offset, size, value), `offset` from `base`, `size` 1, 2 or 4 bytes, the
        value 0 to 2**(8*size)-1. A string instruction (rep insb) makes one call per element.
        ConfigError for a range outside 0-0xffff, overlapping a device's, or one KVM serves
        itself (the PIC, the PIT). A method that raises or returns something other than such
        an int ends the run as a crash whose report holds its traceback."""
        self._check_open()
        _check_range("ports", base, size, PORT_SPACE)
        for start, length, what in layout.IN_KERNEL_PORTS:
            if base < start + length and start < base + size:
                raise ConfigError(f"ports {base:#x}-{base + size - 1:#x} overlap {what} at "
                                  f"{start:#x}-{start + length - 1:#x} (the guest never exits there)")
        self._register(self.board.pio, base, size, device)

    def add_mmio_device(self, base: int, size: int, device) -> None:
        """Put `device` (as add_port_device's; sizes up to 8 bytes) on guest-physical
        base ... base+size-1. ConfigError where guest RAM or ROM is, where KVM serves the
        APICs, or where another device is: the guest would never reach it there."""
        self._check_open()
        _check_range("MMIO", base, size, 1 << 52)
        conflict = layout.mmio_conflict(base, size, self.board.memory.regions)
        if conflict:
            raise ConfigError(f"MMIO {base:#x}-{base + size - 1:#x} overlaps {conflict}")
        self._register(self.board.mmio, base, size, device)

    def _register(self, bus, base: int, size: int, device) -> None:
        from .bus import BusError
        for method in ("read", "write"):
            if not callable(getattr(device, method, None)):
                raise ConfigError(f"{type(device).__name__} has no {method}() method")
        try:
            from .hostdevice import HostDevice
            bus.register(base, size, HostDevice(device, self._guard))
        except BusError as exc:
            raise ConfigError(str(exc)) from None

    def add_fw_cfg_file(self, name: str, data: bytes | str = b"", *, size: int | None = None,
                        read=None, write=None) -> None:
        """Serve a fw_cfg file `name` ("opt/..." for users, as in QEMU) of `size` bytes
        (default len(data)), holding `data` (a str is encoded as UTF-8) zero-padded.
        `read()`, if given, is called each time the guest selects the file and returns its
        contents (bytes, at most `size`, zero-padded). With `write(offset, data)` the file is
        writable by fw_cfg DMA, and each DMA write calls it with the bytes written: a
        guest-to-host request channel; a write() that returns False, or raises, gives the
        guest the DMA error bit. Only before the first run (the guest reads the directory once)."""
        from .fw_cfg.items import FwCfgConfigError, user_item_warning
        self._check_open()
        _check_type("name", name, str)
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"fw_cfg file {name!r}: data must be bytes or str, not {type(data).__name__}")
        for what, callback in (("read", read), ("write", write)):
            if callback is not None and not callable(callback):
                raise TypeError(f"fw_cfg file {name!r}: {what} must be callable")
        if self._started:
            raise ConfigError(f"fw_cfg file {name!r}: files are added before the first run")
        size = len(data) if size is None else size
        _check_type("size", size, int)
        limit = min(self.options.mem, 1 << 31)
        if not 0 <= size <= limit:
            raise ConfigError(f"fw_cfg file {name!r}: size {size} is outside 0 to {limit} bytes "
                              "(the guest's RAM, at most 2 GiB)")
        if len(data) > size:
            raise ConfigError(f"fw_cfg file {name!r}: {len(data)} bytes of data, size {size}")
        items = self.fw_cfg.items
        try:
            entry = items.add_file(name, bytes(data) + bytes(size - len(data)),
                                   writable=write is not None or read is not None)
        except FwCfgConfigError as exc:
            raise ConfigError(str(exc)) from None
        warning = user_item_warning(name)
        if warning:
            import warnings
            warnings.warn(warning, stacklevel=2)
        if read is not None:
            def on_select(entry):
                contents = read()
                if not isinstance(contents, (bytes, bytearray, memoryview)):
                    raise TypeError(f"read() of fw_cfg file {name!r} returned "
                                    f"{type(contents).__name__}, not bytes")
                if len(contents) > size:
                    raise ValueError(f"read() of fw_cfg file {name!r} gave {len(contents)} bytes; "
                                     f"the file holds {size}")
                entry.data[:] = bytes(contents) + bytes(size - len(contents))
            entry.on_select = self._guard(on_select, f"the read callback of fw_cfg file {name!r}")
        if write is not None:
            entry.on_write = self._guard(write, f"the write callback of fw_cfg file {name!r}",
                                         fallback=False)

    def fw_cfg_file_key(self, name: str) -> int:
        """The selector key of fw_cfg file `name` (0x20 and up, in the sorted order of all file
        names, as QEMU orders them: final once the last file is added); ConfigError if
        there is no such file."""
        self._check_open()
        if name not in self.fw_cfg.items.file_names():
            raise ConfigError(f"fw_cfg: no file {name!r}")
        return self.fw_cfg.items.file_key(name)

    def _guard(self, callback, what: str, fallback=None):
        """`callback` made safe for the run loop: an exception ends the run as a crash (its
        traceback kept for the report) and the call returns `fallback`."""
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as exc:
                import traceback
                if self._host_traceback is None:
                    self._host_traceback = traceback.format_exc()
                if self.board is not None:
                    self.board.request_stop(Outcome.CRASH, f"{what} raised {type(exc).__name__}: {exc}")
                return fallback
        return guarded

    # --- the end -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.board is None:
            raise MachineClosedError("this Machine is closed")

    def close(self) -> None:
        """Free the VM, its RAM and the files it opened. Safe to call twice; refused
        (MachineBusyError) while the guest runs. The consoles' output, last_result and
        summary() stay readable."""
        if self._running is not None:
            raise MachineBusyError("this Machine is running: stop() it, and close it after run() returns")
        board, self.board = self.board, None
        try:
            if board is not None:
                board.close()
        finally:
            closers, self._closers = self._closers, []
            for close in closers:
                close()

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_range(what: str, base, size, end: int) -> None:
    _check_type(f"{what} base", base, int)
    _check_type(f"{what} size", size, int)
    if not (size > 0 and 0 <= base and base + size <= end):
        raise ConfigError(f"{what} {base:#x}+{size:#x}: the range must lie in 0-{end - 1:#x}")


def _check_type(name: str, value, kind: type, none: bool = False) -> None:
    """TypeError unless `value` is a `kind` (or None, when `none`); bool is no int here."""
    if value is None and none:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name}: expected {kind.__name__}{' or None' if none else ''}, "
                        f"not {type(value).__name__}")


def _sequence(name: str, values) -> list:
    """A list or tuple of values; a lone str or bytes would be taken as its characters."""
    if isinstance(values, (str, bytes, os.PathLike)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a list, not {type(values).__name__}")
    return list(values)


def _checked_mem(mem) -> int:
    _check_type("mem", mem, int)
    if not layout.RAM_MIN_SIZE <= mem <= layout.RAM_MAX_SIZE:
        raise ConfigError(f"mem={mem!r}: RAM must be between {layout.RAM_MIN_SIZE // layout.MiB} MiB "
                          f"and {layout.RAM_MAX_SIZE // layout.GiB} GiB")
    if mem % layout.PAGE_SIZE:
        raise ConfigError(f"mem={mem!r}: RAM must be a multiple of 4 KiB")
    return mem


def _path(value, name: str) -> str | None:
    """A path given as str or os.PathLike, checked for what no file name holds."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path (str or os.PathLike), not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{name}: expected a str path, not {type(path).__name__}")
    if not path or "\0" in path:
        raise ConfigError(f"{name}: {path!r} is not a file name")
    return path


def _fw_cfg_specs(files) -> list:
    """{name: bytes | str | PathLike} as the command line's --fw-cfg items."""
    from .fw_cfg.items import FwCfgConfigError, UserItemSpec, check_file_name
    if files is not None and not isinstance(files, dict):
        raise TypeError(f"fw_cfg: expected a dict of name: contents, not {type(files).__name__}")
    specs = []
    for name, value in (files or {}).items():
        _check_type("fw_cfg name", name, str)
        try:
            check_file_name(name)
        except FwCfgConfigError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(value, (bytes, bytearray, memoryview)):
            specs.append(UserItemSpec(name, data=bytes(value)))
        elif isinstance(value, str):
            specs.append(UserItemSpec(name, string=value))
        elif isinstance(value, os.PathLike):
            specs.append(UserItemSpec(name, file=os.fspath(value)))
        else:
            raise ConfigError(f"fw_cfg[{name!r}]: expected bytes, a str or a path, "
                              f"not {type(value).__name__}")
    return specs


def _drive_specs(drives) -> list:
    drives = _sequence("drives", drives)
    if not drives:
        return []                   # no virtio modules to import on the way to KVM_RUN
    from .virtio.drive import DriveError, parse_drive
    specs = []
    for text in drives:
        _check_type("drives[]", text, str)
        try:
            specs.append(parse_drive(text))
        except DriveError as exc:
            raise ConfigError(str(exc)) from None
    return specs
