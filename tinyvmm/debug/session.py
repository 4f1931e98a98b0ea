"""The debugging aids of a run, attached from its MachineSpec's DebugSpec: symbols (--symbols and
the ELF files beside the firmware, ROM and kernel run), --stats, the gdb server, trace locations."""

from __future__ import annotations

import signal
import sys
import threading

from ..errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..board import Board
    from ..outcome import RunResult
    from ..runner import Runner
    from ..spec import DebugSpec, MachineSpec
    from .gdb.server import GdbServer
    from .gdb.stub import GdbStub
    from .symbols import SymbolTable


class DebugSetupError(ConfigError):
    """The debugging options cannot be honoured (bad combination, socket in use)."""


def default_symbol_files(spec: MachineSpec, boot: str | None, given=()) -> list:
    """The ELF files kept beside the firmware a machine runs, unless `given` (--symbols) has them.
    `boot`: the method the kernel is booted by ("firmware", "direct"), None without a kernel.

    A firmware path X.bin: X.elf if it exists; no firmware image: the shipped
    BIOS's. A kernel booted through firmware also gets the boot ROM (linuxboot,
    or PVH for a vmlinux) at the first option ROM slot, where the BIOS copies
    it; with an option ROM Y.bin, Y.elf there instead, if it exists (never the
    shipped ROM's symbols for someone else's ROM). And the kernel's own: the
    vmlinux booted, or the one built beside the default bzImage.
    """
    from pathlib import Path

    from .. import firmware, layout
    from .symbols import SymbolFile, SymbolFileError
    wanted: list[tuple[Path, tuple[int, ...] | None]] = []
    booting = spec.kernel is not None
    kernel = kernel_symbol_file(spec.kernel.path) if spec.kernel is not None else None
    elf_kernel = kernel is not None and spec.kernel is not None and kernel == spec.kernel.path
    bios = spec.firmware
    option_roms = spec.fw_cfg.option_roms
    firmware_runs = boot != "direct"        # a direct boot runs neither BIOS nor ROM
    if isinstance(bios, str):
        wanted.append((Path(firmware.resolve(bios)).with_suffix(".elf"), None))
    elif bios is None and firmware_runs:
        wanted.append((Path(firmware.DIRECTORY, "bios.elf"), None))
    if option_roms:
        wanted.append((Path(option_roms[0]).with_suffix(".elf"), (layout.OPTION_ROM_START,)))
    elif booting and firmware_runs:
        dma = spec.fw_cfg.dma
        rom = firmware.pvh_name(dma) if elf_kernel else firmware.linuxboot_name(dma)
        wanted.append((Path(firmware.DIRECTORY, rom.replace(".bin", ".elf")), (layout.OPTION_ROM_START,)))
    if kernel is not None:
        wanted.append((Path(kernel), None))
    known = {f.path.resolve() for f in given}
    files = []
    for path, bases in wanted:
        if path.is_file() and path.resolve() not in known:
            try:
                files.append(SymbolFile(path, bases))
            except SymbolFileError:
                pass                     # a stray file with that name: no symbols from it
    return files


def kernel_symbol_file(kernel: str | None) -> str | None:
    """The ELF kernel a boot runs (a vmlinux `kernel`), or the vmlinux built beside the default
    bzImage when `kernel` is None; None when there is neither."""
    import os

    from ..boot.elf import is_elf
    from ..boot.payload import DEFAULT_VMLINUX
    if kernel is None:
        return DEFAULT_VMLINUX if os.path.isfile(DEFAULT_VMLINUX) else None
    try:
        with open(kernel, "rb") as f:
            return kernel if is_elf(f.read(4)) else None
    except OSError:
        return None


class LazySymbols:
    """A SymbolTable loaded on first use: most runs never name an address, and
    reading the ELF files (pyelftools) would otherwise delay every boot."""

    def __init__(self, load):
        self._load = load
        self._table = None

    def loaded(self):
        """The SymbolTable, read now if it was not yet."""
        if self._table is None:
            self._table = self._load()
        return self._table

    def __getattr__(self, name):
        return getattr(self.loaded(), name)


def symbol_loader(spec: MachineSpec, boot: str | None, board: Board | None = None,
                  runner: Runner | None = None) -> Callable[[], SymbolTable]:
    """What reads the symbols of a machine built from `spec` (its kernel booted by `boot`):
    the spec's symbol files, then the ELF files kept beside what it runs; with its `board`
    and `runner`, last the UEFI modules its firmware holds (tinyvmm.debug.uefi_images), found
    in guest memory."""
    def load() -> SymbolTable:
        from .symbols import SymbolTable
        given = list(spec.debug.symbols)
        files = given + default_symbol_files(spec, boot, given)
        if board is not None and runner is not None and board.memory.rom is not None:
            from .gdb.linear import LinearMemory
            from .uefi_images import UefiImages
            memory = LinearMemory(runner.vcpu, board.memory)
            rom = board.memory.rom
            files.append(UefiImages(lambda: bytes(rom), memory.read))
        return SymbolTable(files)
    return load


class DebugSession:
    """The debugging aids a DebugSpec asks for, attached to `board` and `runner` for the
    machine's life: symbols (`load` reads them, at once when debugging, else at first use),
    trace locations, --trace steps, --stats and the gdb server. run() runs the guest through
    them; close() ends them. ConfigError (DebugSetupError, StepError) when they cannot be
    attached."""

    def __init__(self, board: Board, runner: Runner, debug: DebugSpec,
                 load: Callable[[], SymbolTable], err=None):
        self.runner = runner
        self.err = err or sys.stderr
        self.stub: GdbStub | None = None
        self.server: GdbServer | None = None
        self._previous_kick: signal.Handlers | Callable | int | None = None
        gdb = debug.gdb
        debugging = gdb is not None or runner.tracer is not None or debug.stats
        # Load now when debugging (gdb's thread must not import pyelftools midway), else lazily.
        self.symbols = load() if debugging else LazySymbols(load)
        runner.symbols = self.symbols
        tracer = runner.tracer
        if tracer is not None and tracer.locate is None:
            from .report import where
            # The vCPU whose thread writes the line: another vCPU's registers would wait for
            # its KVM_RUN to return.
            current, symbols, several = runner.current, self.symbols, len(runner.cpus) > 1

            def locate() -> str:
                cpu = current()
                text = where(cpu.vcpu.get_regs(), cpu.vcpu.get_sregs(), symbols)
                return f"cpu{cpu.index} {text}" if several else text
            tracer.locate = locate
        if debug.stats:
            from .trace import ExitStats
            runner.stats = ExitStats()
        steps = debug.trace.steps if debug.trace else None
        if steps is not None and tracer is not None:
            from .steps import StepTracer
            StepTracer(board, runner, tracer, steps, self.symbols)
        if gdb is not None:
            from ..kvm.system import is_emulating_host
            # An emulating KVM (kvm_pvm) lets int3 reach the guest and never checks DR0-3
            # on data accesses: measured on the development host.
            self._start_gdb(board, runner, gdb, debug.gdb_wait, full_debug=not is_emulating_host())

    def _start_gdb(self, board: Board, runner: Runner, address, wait: bool, full_debug: bool) -> None:
        from .gdb.server import GdbServer
        from .gdb.stub import KICK_SIGNAL, GdbStub
        from .gdb.target import KvmTarget
        can_kick = threading.current_thread() is threading.main_thread()
        if can_kick:
            # The kick only has to interrupt KVM_RUN; the default action would end the process.
            self._previous_kick = signal.signal(KICK_SIGNAL, lambda *_: None)
        def tell_both(text: str) -> None:       # on tinyvmm's stderr and in gdb's console
            self.notice(text)
            if self.stub is not None:
                self.stub.hints.append(text)
        target = KvmTarget(board.vcpu, board.memory, software_breakpoints=full_debug,
                           data_breakpoints=full_debug, notice=tell_both, symbols=self.symbols,
                           vcpus=board.vcpus)
        server = self.server = GdbServer(address)
        try:
            bound = server.open()
        except OSError as exc:
            self.close()
            raise DebugSetupError(f"--gdb {address.describe()}: {exc.strerror or exc}") from None
        stub = self.stub = GdbStub(server, target, runner, wait=wait, notice=self.notice,
                                   can_kick=can_kick)
        runner.guest_debug.claim("gdb", stub.on_debug_exit)
        runner.debugger = stub
        self.notice(f"listening on {bound.describe()}; connect with: "
                    f"gdb -ex 'target remote {bound.gdb_target()}' (gdb is told the vCPU's mode "
                    f"when it connects: i8086, i386 or i386:x86-64)")
        for command in self.symbols.gdb_commands():
            self.notice(f"symbols: {command}")

    def notice(self, text: str) -> None:
        print(f"tinyvmm: gdb: {text}", file=self.err, flush=True)

    def run(self) -> RunResult:
        """Run the guest; tell gdb how the run ended, and print --stats."""
        result = self.runner.run()
        if self.stub is not None:
            self.stub.finish(result)
        if self.runner.stats is not None:
            from ..console import end_stdout_line_before_stderr
            end_stdout_line_before_stderr()
            table = self.runner.board.pio.table

            def port_name(port: int) -> str:
                entry = table.get(port)
                return entry[2].name if entry else ""
            cpus = self.runner.cpus
            for cpu in cpus:                # one table per vCPU
                if cpu.stats is None:
                    continue
                if len(cpus) > 1:
                    print(f"{'' if cpu is cpus[0] else chr(10)}vCPU {cpu.index}:", file=self.err)
                print(cpu.stats.table(cpu.exit_counts, port_name), file=self.err)
                completions = cpu.completer.stats
                if completions.total:
                    print("\n" + completions.table(), file=self.err)
                if cpu.stretches is not None and cpu.stretches.stretches:
                    print("\n" + cpu.stretches.table(), file=self.err)
        return result

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self._previous_kick is not None:
            from .gdb.stub import KICK_SIGNAL
            signal.signal(KICK_SIGNAL, self._previous_kick)
            self._previous_kick = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
