"""The debugging options of `run` and `boot` (--gdb, --gdb-wait, --stats, --symbols), and wiring them up."""

import argparse
import signal
import sys
import threading


class DebugSetupError(ValueError):
    """The debugging options cannot be honoured (bad combination, socket in use)."""


def parse_gdb_address(text: str):
    from .server import AddressError, ListenAddress   # sockets only for runs that ask for gdb
    try:
        return ListenAddress.parse(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_symbols(text: str):
    from ..symbols import SymbolFileError, parse_symbol_spec   # pyelftools only for runs that ask
    try:
        return parse_symbol_spec(text)
    except SymbolFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_debug_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("debugging")
    group.add_argument("--gdb", type=parse_gdb_address, metavar="tcp::PORT|unix:PATH",
                       help="serve gdb's remote protocol: tcp::PORT (localhost), tcp:HOST:PORT, "
                            "or a unix socket path; port 0 picks a free one (printed)")
    group.add_argument("--gdb-wait", action="store_true",
                       help="with --gdb: stop before the first instruction until gdb connects")
    group.add_argument("--stats", action="store_true",
                       help="print exits per reason and per port, the time in each handler, and "
                            "the instructions completed for the host's KVM (count and time), "
                            "at the end")
    group.add_argument("--symbols", type=parse_symbols, nargs="+", action="extend", default=[],
                       metavar="ELF[@ADDRESS]",
                       help="ELF files whose symbols name addresses in traces, crash reports and "
                            "gdb; @ADDRESS is where link address 0 sits (default: 0xF0000 for "
                            "real-mode images linked at 0, else the link addresses)")


def default_symbol_files(args, given) -> list:
    """The ELF files kept beside the firmware this run uses, unless --symbols named them.

    `--bios X.bin`: X.elf if it exists; `boot` without --bios: the shipped
    BIOS. `boot` also gets the boot ROM (linuxboot, or PVH for a vmlinux) at
    the first option ROM slot, where the BIOS copies it; with --option-rom
    Y.bin, Y.elf there instead, if it exists (never the shipped ROM's symbols
    for someone else's ROM). And the kernel's own: the vmlinux booted, or the
    one built beside the default bzImage.
    """
    from pathlib import Path

    from ... import firmware, layout
    from ..symbols import SymbolFile, SymbolFileError
    wanted = []
    booting = getattr(args, "command", None) == "boot"
    kernel = kernel_symbol_file(args) if booting else None
    elf_kernel = kernel is not None and kernel == getattr(args, "kernel", None)
    bios = getattr(args, "bios", None)
    option_roms = getattr(args, "option_roms", None)
    # `boot` is the method the loader chose (cli.prepare_items): a direct boot runs neither
    # BIOS nor ROM.
    firmware_runs = not booting or getattr(args, "boot", None) != "direct"
    if bios:
        wanted.append((Path(firmware.resolve(bios)).with_suffix(".elf"), None))
    elif booting and firmware_runs:
        wanted.append((Path(firmware.DIRECTORY, "bios.elf"), None))
    if option_roms:
        wanted.append((Path(option_roms[0]).with_suffix(".elf"), (layout.OPTION_ROM_START,)))
    elif booting and firmware_runs:
        dma = getattr(args, "fw_cfg_dma", True)
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


def kernel_symbol_file(args) -> str | None:
    """The ELF kernel a boot runs (--kernel VMLINUX), or the vmlinux built beside the default
    bzImage when no --kernel is given; None when there is neither."""
    import os

    from ...boot.elf import is_elf
    from ...boot.payload import DEFAULT_VMLINUX
    kernel = getattr(args, "kernel", None)
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

    def __getattr__(self, name):
        if self._table is None:
            self._table = self._load()
        return getattr(self._table, name)


class DebugSession:
    """The debugging aids of one run; use as a context manager around run()."""

    def __init__(self, machine, runner, args, err=None):
        self.runner = runner
        self.err = err or sys.stderr
        self.stub = self.server = None
        self._previous_kick = None
        gdb = getattr(args, "gdb", None)
        if getattr(args, "gdb_wait", False) and gdb is None:
            raise DebugSetupError("--gdb-wait needs --gdb")
        given = list(getattr(args, "symbols", None) or [])

        def load():
            from ..symbols import SymbolTable
            return SymbolTable(given + default_symbol_files(args, given))
        debugging = gdb is not None or runner.tracer is not None or getattr(args, "stats", False)
        # Load now when debugging (gdb's thread must not import pyelftools midway), else lazily.
        self.symbols = load() if debugging else LazySymbols(load)
        runner.symbols = self.symbols
        tracer = runner.tracer
        if tracer is not None and tracer.locate is None:
            from ..report import where
            vcpu, symbols = machine.vcpu, self.symbols
            tracer.locate = lambda: where(vcpu.get_regs(), vcpu.get_sregs(), symbols)
        if getattr(args, "stats", False):
            from ..trace import ExitStats
            runner.stats = ExitStats()
        if gdb is not None:
            from ...kvm.system import is_emulating_host
            # An emulating KVM (kvm_pvm) lets int3 reach the guest and never checks DR0-3
            # on data accesses: measured on the development host.
            self._start_gdb(machine, runner, gdb, args.gdb_wait, full_debug=not is_emulating_host())

    def _start_gdb(self, machine, runner, address, wait: bool, full_debug: bool) -> None:
        from .server import GdbServer
        from .stub import KICK_SIGNAL, GdbStub
        from .target import KvmTarget
        can_kick = threading.current_thread() is threading.main_thread()
        if can_kick:
            # The kick only has to interrupt KVM_RUN; the default action would end the process.
            self._previous_kick = signal.signal(KICK_SIGNAL, lambda *_: None)
        target = KvmTarget(machine.vcpu, machine.memory, software_breakpoints=full_debug,
                           data_breakpoints=full_debug, notice=self.notice, symbols=self.symbols)
        self.server = GdbServer(address)
        try:
            bound = self.server.open()
        except OSError as exc:
            self.close()
            raise DebugSetupError(f"--gdb {address.describe()}: {exc.strerror or exc}") from None
        self.stub = GdbStub(self.server, target, runner, wait=wait, notice=self.notice,
                            can_kick=can_kick)
        runner.debugger = self.stub
        self.notice(f"listening on {bound.describe()}; connect with: "
                    f"gdb -ex 'target remote {bound.gdb_target()}' (gdb is told the vCPU's mode "
                    f"when it connects: i8086, i386 or i386:x86-64)")
        for command in self.symbols.gdb_commands():
            self.notice(f"symbols: {command}")

    def notice(self, text: str) -> None:
        print(f"tinyvmm: gdb: {text}", file=self.err, flush=True)

    def run(self, run=None):
        """Run the guest (through `run()`, by default the runner's); tell gdb how it ended
        and print --stats."""
        result = (run or self.runner.run)()
        if self.stub is not None:
            self.stub.finish(result)
        if self.runner.stats is not None:
            from ...console import end_stdout_line_before_stderr
            end_stdout_line_before_stderr()
            machine = self.runner.machine
            table = machine.pio.table

            def port_name(port: int) -> str:
                entry = table.get(port)
                return entry[2].name if entry else ""
            print(self.runner.stats.table(self.runner.exit_counts, port_name), file=self.err)
            completions = self.runner.completer.stats
            if completions.total:
                print("\n" + completions.table(), file=self.err)
        return result

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self._previous_kick is not None:
            from .stub import KICK_SIGNAL
            signal.signal(KICK_SIGNAL, self._previous_kick)
            self._previous_kick = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def attach_debug_tools(machine, runner, args, err=None) -> DebugSession:
    """Give the run its --symbols, --stats, --gdb and trace locations; raises DebugSetupError."""
    return DebugSession(machine, runner, args, err)
