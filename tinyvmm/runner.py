"""The vCPU run loop: enter the guest, hand each exit to its handler, act on what it returns.

Handlers return None to go on, or an Outcome to end the run. Devices that end
the run (a reset, an expected console line) do it through Board.request_stop,
which the loop checks after every device access.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import threading
import time
from collections import deque

from . import layout
from .completion import Completer
from .kvm import abi
from .kvm.debugregs import execution_addresses
from .kvm.ioctl import KvmError
from .outcome import Outcome, RunResult
from .x86 import RFLAGS_IF

# The holder Machine.step() takes the debug registers as: with --software-cpu on, its steps
# (and the step over a breakpoint run(until_address=) takes) are KVM's.
API_STEPS = "step()"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .board import Board
    from .completion.stretches import Stretches
    from .debug.gdb.stub import GdbStub
    from .debug.session import LazySymbols
    from .debug.steps import StepTracer
    from .debug.symbols import SymbolTable
    from .debug.trace import ExitStats, Tracer
    from .kvm.vcpu import Vcpu

KVM_RUN = abi.KVM_RUN
SINGLE_STEP = abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP
_kvm_run = fcntl.ioctl      # faster than the ctypes path; KVM_RUN takes no argument

HISTORY_SIZE = 32
# How often the vCPU is looked at for a halt it can never leave (HLT with interrupts off,
# which the in-kernel irqchip keeps inside KVM_RUN for ever).
HALT_CHECK_S = 1.0


# kvm_run.exit_reason at offset 8, then kvm_run.io at offset 32 (garbage for other exits)
_EXIT_IO = struct.Struct("<I20xBBHIQ")
_EXIT_REASON = 8
_MMIO = struct.Struct("<Q8sIB")        # kvm_run.mmio at offset 32
_EXIT_UNION = 32


# Signals a vCPU thread other than the run's leaves to the thread that runs the Python handlers.
_PROCESS_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)


class Runner:
    """Runs the vCPUs of a Board until the guest ends, crashes or time runs out.

    The Runner the caller makes drives vCPU 0 (the BSP) on the calling thread and leads the run;
    with several vCPUs it makes one Runner more per AP (`aps`), each run on a thread of its own.
    Every exit is handled while holding `lock`, the one device lock (None with one vCPU): a
    vCPU thread holds it except inside KVM_RUN. A run ends for all vCPUs when it ends for one:
    the others are kicked out of KVM_RUN (immediate_exit, then SIGUSR1 to their thread).

    A kick needs a SIGUSR1 handler, which Python installs only from the main thread. A run
    with one vCPU on another thread blocks SIGUSR1 in that thread instead and lets it
    through only inside KVM_RUN (KVM_SET_SIGNAL_MASK, as QEMU's vCPU threads do): a kick
    then interrupts the guest with no handler to run, and the loop takes the pending
    signal back with sigtimedwait. So stop() from any thread, and the timeout (a timer
    thread there, no SIGALRM), end such a run too. Several vCPUs still need the main thread.
    """

    def __init__(self, board: Board, timeout: float | None = None, tracer: Tracer | None = None,
                 index: int = 0, leader: Runner | None = None):
        self.board = board
        self.index = index                  # the vCPU id, and its APIC ID
        vcpus = getattr(board, "vcpus", None) or [board.vcpu]
        self.vcpu = vcpus[index]
        self.leader = self if leader is None else leader
        self.timeout = timeout
        self.tracer = tracer
        self.thread_id: int | None = None   # the thread running this vCPU, during a run
        self.error: BaseException | None = None     # what ended an AP's thread
        self._idle_round = 0                # the last halt check this vCPU answered
        self.history: deque[tuple] = deque(maxlen=HISTORY_SIZE)  # ExitRecord fields
        # What the host's KVM cannot emulate is finished here (tinyvmm.completion).
        self.completer = Completer(self.vcpu, board.memory, board.slots,
                                   trace=tracer.completion if tracer else None)
        self.exit_counts = [0] * 256      # by exit reason
        self.pio_bytes = 0                 # data moved by port I/O, both directions
        self._signal: Outcome | None = None
        self._deadline: float | None = None
        self._signal_message = ""
        self._wakeup: _Wakeup | None = None     # the software CPU's view of signals
        # The leader's, for the whole run: which vCPU ended it first and how; the halt check's
        # round and each vCPU's answer (vCPU index: (round, idle description or None)).
        self._ended: tuple[Runner, Outcome, str] | None = None
        self._halt_round = 0
        self._idle: dict[int, tuple[int, str | None]] = {}
        # Debugging aids (tinyvmm.debug.session and tinyvmm.debug.steps attach them). With any of the
        # first three set the run goes through _observed_loop; _loop stays lean.
        self.debugger: GdbStub | None = None    # on_start, on_kick, after_access
        self.stats: ExitStats | None = None     # for --stats
        self.stepper: StepTracer | None = None  # --trace steps: after_access, on_interrupt
        self.symbols: SymbolTable | LazySymbols | None = None  # names code in crash reports
        self.guest_debug = GuestDebug(self.vcpu)    # who holds the debug registers
        # MachineSpec.software_cpu; the Stretches that run privileged code in the software CPU
        self.software_cpu = "off"
        self.stretches: Stretches | None = None
        self.lock: threading.Lock | None = None
        # Held while kicking and while a run's thread lets go of its vCPU, so no kick lands
        # on a thread that no longer expects it (SIGUSR1's default action ends the process).
        self._kick_lock = threading.RLock()
        self._thread_kicks = False          # this run blocks SIGUSR1 outside KVM_RUN
        self.aps: list[Runner] = []
        if leader is None and len(vcpus) > 1:
            self.lock = threading.Lock()
            self.aps = [Runner(board, timeout, tracer, index=i, leader=self) for i in range(1, len(vcpus))]
            for ap in self.aps:
                ap.lock = self.lock
        self.cpus: list[Runner] = [self, *self.aps]

    def current(self) -> Runner:
        """The Runner of the vCPU whose thread calls (vCPU 0's from any other thread)."""
        me = threading.get_ident()
        for cpu in self.leader.cpus:
            if cpu.thread_id == me:
                return cpu
        return self.leader

    @property
    def signalled(self) -> bool:
        """A timeout, Ctrl-C or SIGTERM arrived: whoever holds the loop should give it back."""
        return self._signal is not None

    # --- signals: a timer and Ctrl-C kick the vCPU out of KVM_RUN -----------
    def _on_signal(self, outcome: Outcome) -> None:
        if self._signal is None:
            self._signal = outcome
        self._kick_all()

    def _kick_all(self, but: Runner | None = None) -> None:
        """Make every vCPU (but `but`) leave KVM_RUN, or not enter it: immediate_exit covers a
        vCPU between two entries, the signal one inside KVM_RUN (where an AP may wait for its
        SIPI, or a vCPU sit in HLT, for ever)."""
        me = threading.get_ident()
        with self.leader._kick_lock:
            for cpu in self.cpus:
                if cpu is but:
                    continue
                cpu.vcpu.run_page.immediate_exit = 1
                thread = cpu.thread_id
                if thread is not None and thread != me:
                    try:
                        signal.pthread_kill(thread, signal.SIGUSR1)
                    except OSError:
                        pass            # the thread has just ended its loop: nothing to kick

    def stop_from_thread(self, outcome: Outcome, message: str) -> None:
        """End the run from another thread (the console's Ctrl-A x): every vCPU is kicked out
        of KVM_RUN, where it may sit for good in an idle guest."""
        leader = self.leader
        if leader._signal is None:
            leader._signal, leader._signal_message = outcome, message
        if leader.thread_id is None:        # not running: the next run ends at once
            leader.vcpu.run_page.immediate_exit = 1
        leader._kick_all()

    def _start_thread_kicks(self):
        """Off the main thread with one vCPU: SIGUSR1 blocked here but let through inside
        KVM_RUN (see the class docstring). The thread's previous mask, or None if this vCPU
        cannot take a signal mask (nothing changed then)."""
        set_mask = getattr(self.vcpu, "set_signal_mask", None)
        if set_mask is None:
            return None
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            set_mask(set(previous) - {signal.SIGUSR1})
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            return None
        self._thread_kicks = True
        return previous

    def _end_thread_kicks(self, previous) -> None:
        """Undo _start_thread_kicks: KVM's mask cleared, kicks still pending taken, the
        thread's mask as it was."""
        self._thread_kicks = False
        try:
            self.vcpu.set_signal_mask(None)
        finally:
            _take_kicks()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {
            signal.SIGUSR1: signal.signal(signal.SIGUSR1, lambda *_: None),  # a kick
            signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: self._on_signal(Outcome.INTERRUPTED)),
            signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: self._on_signal(Outcome.INTERRUPTED)),
            # The terminal went away (a closed window, a dropped ssh session): as QEMU does.
            signal.SIGHUP: signal.signal(signal.SIGHUP, lambda *_: self._on_signal(Outcome.INTERRUPTED)),
            signal.SIGALRM: signal.signal(signal.SIGALRM, lambda *_: self._on_alarm()),
        }
        now = time.monotonic()
        self._deadline = now + self.timeout if self.timeout else None
        self._arm_alarm(now)
        self._wakeup = _Wakeup() if self.software_cpu != "off" else None
        return previous

    def _arm_alarm(self, now: float) -> None:
        """The next SIGALRM: at the deadline, or sooner to look for a halt (not under gdb,
        whose stops are halts on purpose)."""
        delays = [] if self.debugger is not None else [HALT_CHECK_S]
        if self._deadline is not None:
            delays.append(self._deadline - now)
        if delays:
            signal.setitimer(signal.ITIMER_REAL, max(min(delays), 1e-4))

    def _on_alarm(self) -> None:
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            self._on_signal(Outcome.TIMEOUT)
            return
        self._halt_round += 1           # each vCPU answers from its own thread when kicked
        self._kick_all()
        self._arm_alarm(now)

    def _idle_state(self) -> str | None:
        """How this vCPU waits for ever, or None when it may still run: HALTED with interrupts
        disabled (nothing but an NMI wakes it, and none will come), or an AP that never got its
        INIT and SIPI (only a running vCPU could send them)."""
        state = self.vcpu.get_mp_state()
        if state in (abi.KVM_MP_STATE_UNINITIALIZED, abi.KVM_MP_STATE_INIT_RECEIVED):
            return "waiting for INIT and SIPI"
        if state != abi.KVM_MP_STATE_HALTED:
            return None
        regs = self.vcpu.get_regs()
        if regs.rflags & RFLAGS_IF:
            return None
        cs = self.vcpu.get_sregs().cs
        return (f"HLT with interrupts disabled at {cs.selector:04x}:{regs.rip:04x} "
                f"(linear {cs.base + regs.rip:#x})")

    def _halted_for_good(self) -> tuple[Outcome, str] | None:
        """This vCPU's answer to the leader's halt check; the run ends when every vCPU's answer
        to the same round is that it waits for ever (the answers are made under the lock)."""
        leader = self.leader
        round_ = self._idle_round = leader._halt_round
        leader._idle[self.index] = (round_, self._idle_state())
        answers = [leader._idle.get(cpu.index, (0, None)) for cpu in leader.cpus]
        if any(seen != round_ or state is None for seen, state in answers):
            return None
        if len(answers) == 1:
            return Outcome.HALTED, answers[0][1] or ""
        return Outcome.HALTED, "; ".join(f"vCPU {i}: {state}" for i, (_, state) in enumerate(answers))

    def _restore_signals(self, previous) -> None:
        if previous is None:
            return
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    # --- the loop ----------------------------------------------------------
    def run(self) -> RunResult:
        """Run until the guest ends or is stopped; may be called again to go on. Each run's
        result is its own: the signal that ended the last one is forgotten."""
        exits_before = self._total_exits()
        completed_before = self._completions()
        previous = self._install_signals()
        if self.aps and previous is None and not callable(signal.getsignal(signal.SIGUSR1)):
            from .errors import ConfigError
            raise ConfigError("a machine with several vCPUs runs from the main thread, whose "
                              "signal handlers kick the vCPU threads")
        thread_mask = self._start_thread_kicks() if previous is None and not self.aps else None
        # Device threads (virtio's I/O thread) and stop() stop the run through the board; they
        # may kick the vCPU only while a kick cannot end the process.
        self.board.runner = self if previous is not None or thread_mask is not None else None
        self._ended, self._idle = None, {}
        self.thread_id = threading.get_ident()
        threads = []
        timer = None
        if thread_mask is not None and self.timeout:
            # No SIGALRM off the main thread: a timer thread ends the run as the alarm would.
            timer = threading.Timer(self.timeout, self.stop_from_thread, args=(Outcome.TIMEOUT, ""))
            timer.daemon = True
            timer.start()
        try:
            if self.lock is not None:
                self.lock.acquire()     # released inside KVM_RUN and when the run ends
            try:
                for ap in self.aps:
                    if self.stats is not None and ap.stats is None:
                        ap.stats = type(self.stats)()
                    thread = threading.Thread(target=ap._ap_thread, name=f"vCPU {ap.index}", daemon=True)
                    thread.start()
                    threads.append(thread)
                self._vcpu_ended(self, self._pick_loop()())
            finally:
                if self._ended is None:         # the BSP's loop raised: the APs end too
                    self._ended = (self, Outcome.CRASH, "the run loop failed")
                self._kick_all(but=self)
                if self.lock is not None:
                    self.lock.release()
                for thread in threads:
                    thread.join()
        finally:
            self.board.runner = None
            with self._kick_lock:
                self.thread_id = None
            if timer is not None:
                timer.cancel()
                timer.join()                    # its stop must not reach the next run
            if thread_mask is not None:
                self._end_thread_kicks(thread_mask)
            self._restore_signals(previous)
            self._signal, self._signal_message = None, ""
        assert self._ended is not None          # _vcpu_ended was called at least once
        ender, outcome, message = self._ended
        if ender.error is not None:             # an AP's thread failed: as the BSP's would
            error, ender.error = ender.error, None
            raise error
        result = RunResult(outcome, message, exits=self._total_exits() - exits_before)
        result.vcpu = ender.index
        result.completions = {name: count - completed_before.get(name, 0)
                              for name, count in self._completions().items()
                              if count != completed_before.get(name, 0)}
        if outcome in (Outcome.CRASH, Outcome.TIMEOUT):
            from .debug.report import crash_report
            result.report = crash_report(ender, outcome, message)
        return result

    def _total_exits(self) -> int:
        return sum(sum(cpu.exit_counts) for cpu in self.cpus)

    def _completions(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for cpu in self.cpus:
            for name, count in cpu.completer.stats.counts.items():
                total[name] = total.get(name, 0) + count
        return total

    def _pick_loop(self) -> Callable[[], tuple[Outcome, str]]:
        if self._software_cpu_wanted():
            if self.stretches is None:
                from .completion.stretches import Stretches
                board = self.board
                self.stretches = Stretches(self.vcpu, board.memory, board.slots, board.pio,
                                           layout.IN_KERNEL_PORTS)
            return self._stretch_loop
        observed = self.debugger is not None or self.stats is not None or self.stepper is not None
        return self._observed_loop if observed else self._loop

    def _software_cpu_wanted(self) -> bool:
        """Whether this run goes through the software CPU (MachineSpec.software_cpu): "auto"
        on an emulating host, for one vCPU that nothing observes step by step."""
        mode = self.software_cpu
        if mode == "off":
            return False
        guest_debug = self.guest_debug
        alone = (self.lock is None and (guest_debug.holder is None or guest_debug.breakpoints_only)
                 and self.debugger is None and self.stepper is None)
        if mode == "on":
            if not alone and self._api_steps():
                return False                    # step(): KVM executes them, one at a time
            if not alone:
                from .errors import ConfigError
                from .spec import SOFTWARE_CPU_ALONE
                holder = guest_debug.holder
                held = f" (here: {holder})" if holder else ""
                raise ConfigError(f"{SOFTWARE_CPU_ALONE}: not with --smp above 1, --gdb or "
                                  f"--trace steps{held}")
            return True
        from .kvm.system import is_emulating_host
        return alone and is_emulating_host() and _software_cpu_installed()

    def _api_steps(self) -> bool:
        """Whether this run is the API's step() alone (nothing else observes the vCPU)."""
        return (self.stepper is not None and self.guest_debug.holder == API_STEPS
                and self.lock is None and self.debugger is None)

    def _vcpu_ended(self, cpu: Runner, ended: tuple[Outcome, str]) -> None:
        """`cpu`'s loop returned `ended`: the first vCPU to end ends the run (the others see
        _ended when kicked)."""
        if self._ended is None:
            outcome, message = ended
            if outcome is self._signal or outcome is Outcome.HALTED:
                cpu = self              # the whole machine's, not one vCPU's
            if len(self.cpus) > 1 and outcome is Outcome.CRASH:
                message = f"vCPU {cpu.index}: {message}"
            self._ended = (cpu, outcome, message)
        self._kick_all(but=cpu)

    def _ap_thread(self) -> None:
        """An AP's thread: its run loop, under the lock except inside KVM_RUN."""
        leader, lock = self.leader, self.lock
        assert lock is not None                 # APs exist only with the lock
        # Process signals go to the thread that runs Python's handlers, not to an AP.
        signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
        self.thread_id = threading.get_ident()
        try:
            with lock:
                try:
                    ended = self._pick_loop()()
                except BaseException as exc:    # handed to the leader, which raises it
                    self.error = exc
                    ended = (Outcome.CRASH, f"{type(exc).__name__}: {exc}")
                leader._vcpu_ended(self, ended)
        finally:
            self.thread_id = None

    def _loop(self) -> tuple[Outcome, str]:
        # The hot path: one ioctl, one unpack, one dict lookup and the device call
        # per port-I/O exit. Everything else leaves through _other_exit.
        board = self.board
        fd = self.vcpu.fd
        mm = self.vcpu.run_mmap
        kvm_run = self._kvm_run()
        pio = board.pio
        ports = pio.table
        unpack_exit = _EXIT_IO.unpack_from
        remember = self.history.append
        counts = self.exit_counts
        tracer = self.tracer
        EXIT_IO, EXIT_MMIO = abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO

        if board.first_run_ns is None:
            board.first_run_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if board.stop_request is not None:        # asked for before the run: it ends at once
            return board.stop_request
        while True:
            try:
                kvm_run(fd, KVM_RUN, 0)
            except InterruptedError:
                ended, _ = self._on_interrupt()
                if ended:
                    return ended
                continue
            except BlockingIOError:
                continue            # EAGAIN: an AP took its INIT or SIPI inside KVM_RUN
            except OSError as exc:
                raise KvmError(exc.errno, f"KVM_RUN: {exc.strerror}") from None
            reason, is_out, size, port, count, offset = unpack_exit(mm, _EXIT_REASON)
            counts[reason] += 1
            if reason == EXIT_IO:
                length = size * count
                self.pio_bytes += length
                entry = ports.get(port)
                if entry is not None and port + size <= entry[1]:
                    if is_out:
                        data = mm[offset:offset + length]
                        entry[2].write(port - entry[0], size, data)
                    else:
                        data = entry[2].read(port - entry[0], size, count)
                        mm[offset:offset + length] = data
                elif is_out:
                    data = mm[offset:offset + length]
                    pio.write(port, size, data)
                else:
                    data = pio.read(port, size, count)
                    mm[offset:offset + length] = data
                remember((reason, port, is_out, size, count, data))
                if tracer:
                    tracer.io(port, bool(is_out), size, count, data)
            elif reason == EXIT_MMIO:
                self._mmio(mm, tracer)
            else:
                ended = self._other_exit(reason)
                if ended:
                    return ended
            if board.stop_request is not None:
                return board.stop_request

    def _stretch_loop(self) -> tuple[Outcome, str]:
        """_loop with privileged code run in the software CPU (tinyvmm.completion.stretches):
        KVM executes one instruction at a time between its stretches, and runs freely
        where the vCPU is in a mode left to it."""
        from .completion.stretches import STEP
        stretches = self.stretches
        assert stretches is not None            # _pick_loop made it
        board = self.board
        vcpu = self.vcpu
        fd = vcpu.fd
        mm = vcpu.run_mmap
        run_page = vcpu.run_page
        kvm_run = self._kvm_run()
        counts = self.exit_counts
        leader = self.leader
        guest_debug = self.guest_debug
        EXIT_IO, EXIT_MMIO, EXIT_DEBUG = abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO, abi.KVM_EXIT_DEBUG
        stepping = False
        stats = self.stats
        clock = time.perf_counter_ns
        stretches.port_stats = stats.port_access if stats is not None else None

        wakeup, deadline = leader._wakeup, leader._deadline
        monotonic = time.monotonic

        def stop_wanted() -> bool:
            """Asked by the software CPU between its runs too, where a guest spinning with
            interrupts disabled keeps Python's signal handlers from running."""
            return (leader._signal is not None or board.stop_request is not None
                    or (wakeup is not None and wakeup.ending())
                    or (deadline is not None and monotonic() >= deadline))

        if board.first_run_ns is None:
            board.first_run_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if board.stop_request is not None:
            return board.stop_request
        boundary = True
        delivering = False
        try:
            while True:
                if boundary:
                    # What a completion injected KVM delivers first (KVM_GET_VCPU_EVENTS
                    # does not show an injected #BP: the software CPU could not tell).
                    step = delivering or stretches.run(stop_wanted, guest_debug.breakpoints) == STEP
                    delivering = False
                    if board.stop_request is not None:
                        return board.stop_request
                    if step != stepping:
                        guest_debug.step(step)
                        stepping = step
                    boundary = False
                if stats is not None:
                    entered = clock()
                try:
                    kvm_run(fd, KVM_RUN, 0)
                except InterruptedError:
                    if stats is not None:
                        stats.run_ns += clock() - entered
                    ended, _ = self._on_interrupt()
                    if ended:
                        return ended
                    boundary = True
                    continue
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise KvmError(exc.errno, f"KVM_RUN: {exc.strerror}") from None
                if stats is not None:
                    left = clock()
                    stats.run_ns += left - entered
                reason, is_out, size, port, count, offset = _EXIT_IO.unpack_from(mm, _EXIT_REASON)
                counts[reason] += 1
                if reason == EXIT_IO:
                    self._port_exit(mm, is_out, size, port, count, offset)
                    # The next entry completes the access and returns at once: a boundary
                    # (an emulating KVM loses the step trap of an `out`).
                    run_page.immediate_exit = 1
                elif reason == EXIT_MMIO:
                    self._mmio(mm, self.tracer)
                    run_page.immediate_exit = 1
                elif reason == EXIT_DEBUG:
                    # a step, or the holder's breakpoint (a step onto its address counts too)
                    on_exit = guest_debug.on_exit
                    ended = on_exit(run_page.exit.debug) if on_exit is not None else None
                    if ended:
                        return ended
                    boundary = True
                else:
                    ended = self._other_exit(reason)
                    if ended:
                        return ended
                    boundary = delivering = True
                if stats is not None:
                    stats.handler_ns[reason] += clock() - left
                if board.stop_request is not None:
                    return board.stop_request
        finally:
            if stepping:
                guest_debug.step(False)
            stretches.settle()                  # the vCPU's whole state with KVM between runs

    def _kvm_run(self) -> Callable:
        """KVM_RUN as the loop calls it: bare with one vCPU; with several, the device lock is
        let go for the time the vCPU runs the guest."""
        lock = self.lock
        if lock is None:
            return _kvm_run
        release, acquire = lock.release, lock.acquire

        def locked_kvm_run(fd: int, request: int, arg: int) -> int:
            release()
            try:
                return _kvm_run(fd, request, arg)
            finally:
                acquire()
        return locked_kvm_run

    def _on_interrupt(self) -> tuple[tuple[Outcome, str] | None, bool]:
        """KVM_RUN returned EINTR: how the run ends (or None), and whether the interrupt was the
        loop's own (a signal, another vCPU's end, the halt check) rather than a kick for the
        debugger."""
        self.exit_counts[abi.KVM_EXIT_INTR] += 1
        if self.tracer:
            self.tracer.exit(abi.KVM_EXIT_INTR)
        self.vcpu.run_page.immediate_exit = 0
        if self._thread_kicks:
            _take_kicks()                       # or the next KVM_RUN returns EINTR at once
        leader = self.leader
        if leader._signal is not None:
            return leader._signal_outcome(), True
        if leader._ended is not None:
            return leader._ended[1:], True
        if self._idle_round != leader._halt_round:
            return self._halted_for_good(), True
        return None, False

    def _signal_outcome(self) -> tuple[Outcome, str]:
        signalled = self._signal
        assert signalled is not None            # called once a signal has come
        if signalled is Outcome.TIMEOUT:
            return signalled, f"guest still running after {self.timeout:g} s"
        return signalled, self._signal_message or "stopped by a signal"

    def _observed_loop(self) -> tuple[Outcome, str]:
        """_loop with the hooks --stats, the gdb stub and --trace steps need; handles exits
        the same way.

        Stats time KVM_RUN, each exit's handling (from KVM_RUN returning to the
        next entry) and each port's device calls. The debugger may take the
        loop over before the first entry, when a kick (its signal) interrupts
        KVM_RUN, at debug exits, and after each device access. The stepper
        hears of each device access and of each EINTR.
        """
        board = self.board
        fd = self.vcpu.fd
        mm = self.vcpu.run_mmap
        kvm_run = self._kvm_run()
        unpack_exit = _EXIT_IO.unpack_from
        counts = self.exit_counts
        tracer, stats, debugger, stepper = self.tracer, self.stats, self.debugger, self.stepper
        clock = time.perf_counter_ns
        EXIT_IO, EXIT_MMIO = abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO

        if debugger is not None:
            ended = debugger.on_start()
            if ended:
                return ended
        if board.first_run_ns is None:
            board.first_run_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if board.stop_request is not None:
            return board.stop_request
        while True:
            if stats is not None:
                entered = clock()
            try:
                kvm_run(fd, KVM_RUN, 0)
            except InterruptedError:
                if stats is not None:           # a run cut short by a signal ran all the same
                    stats.run_ns += clock() - entered
                ended, ours = self._on_interrupt()
                if ended:
                    return ended
                if stepper is not None:
                    stepper.on_interrupt()
                    if board.stop_request is not None:     # its last step
                        return board.stop_request
                if not ours and debugger is not None:
                    ended = debugger.on_kick()
                    if ended:
                        return ended
                continue
            except BlockingIOError:
                continue            # EAGAIN: an AP took its INIT or SIPI inside KVM_RUN
            except OSError as exc:
                raise KvmError(exc.errno, f"KVM_RUN: {exc.strerror}") from None
            if stats is not None:
                left = clock()
                stats.run_ns += left - entered
            reason, is_out, size, port, count, offset = unpack_exit(mm, _EXIT_REASON)
            counts[reason] += 1
            if reason == EXIT_IO:
                self._port_exit(mm, is_out, size, port, count, offset)
                if debugger is not None:
                    debugger.after_access()
                if stepper is not None:
                    stepper.after_access()
            elif reason == EXIT_MMIO:
                self._mmio(mm, tracer)
                if debugger is not None:
                    debugger.after_access()
                if stepper is not None:
                    stepper.after_access()
            else:
                ended = self._other_exit(reason)
                if ended:
                    return ended
            if stats is not None:
                stats.handler_ns[reason] += clock() - left
            if board.stop_request is not None:
                return board.stop_request

    def _port_exit(self, mm, is_out: bool, size: int, port: int, count: int, offset: int) -> None:
        """A KVM_EXIT_IO through the port bus, for the loops other than the lean _loop: the
        data moved between kvm_run and the device, the device call timed for --stats, the
        access remembered and traced."""
        length = size * count
        self.pio_bytes += length
        stats = self.stats
        if stats is not None:
            entered = time.perf_counter_ns()
        pio = self.board.pio
        if is_out:
            data = mm[offset:offset + length]
            pio.write(port, size, data)
        else:
            data = pio.read(port, size, count)
        if stats is not None:
            stats.port_access(port, is_out, length, time.perf_counter_ns() - entered)
        if not is_out:
            mm[offset:offset + length] = data
        self.history.append((abi.KVM_EXIT_IO, port, is_out, size, count, data))
        if self.tracer:
            self.tracer.io(port, bool(is_out), size, count, data)

    def _mmio(self, mm, tracer) -> None:
        address, raw, length, is_write = _MMIO.unpack_from(mm, _EXIT_UNION)
        length = min(length, 8)
        if is_write:
            data = raw[:length]
            self.board.mmio.write(address, length, data)
        else:
            data = self.board.mmio.read(address, length, 1)
            mm[_EXIT_UNION + 8:_EXIT_UNION + 8 + length] = data
        self.history.append((abi.KVM_EXIT_MMIO, address, is_write, length, 1, data))
        if tracer:
            tracer.mmio(address, bool(is_write), length, data)

    def _other_exit(self, reason: int) -> tuple[Outcome, str] | None:
        run = self.vcpu.run_page
        self.history.append((reason, 0, False, 0, 0, b""))
        if self.tracer:
            self.tracer.exit(reason)
        if reason == abi.KVM_EXIT_SHUTDOWN:
            return Outcome.CRASH, "triple fault (KVM_EXIT_SHUTDOWN)"
        if reason == abi.KVM_EXIT_SYSTEM_EVENT:
            kind = run.exit.system_event.type
            if kind == abi.KVM_SYSTEM_EVENT_SHUTDOWN:
                return Outcome.POWEROFF, "system event: shutdown"
            if kind == abi.KVM_SYSTEM_EVENT_RESET:
                return Outcome.RESET, "system event: reset"
            return Outcome.CRASH, f"system event {abi.KVM_SYSTEM_EVENT_NAMES.get(kind, kind)}"
        if reason == abi.KVM_EXIT_HLT:
            return Outcome.POWEROFF, "guest halted (KVM_EXIT_HLT)"
        if reason == abi.KVM_EXIT_INTERNAL_ERROR:
            return self.completer.complete(run.exit.internal)
        if reason == abi.KVM_EXIT_FAIL_ENTRY:
            code = run.exit.fail_entry.hardware_entry_failure_reason
            return Outcome.CRASH, f"VM entry failed, hardware reason {code:#x}"
        if reason == abi.KVM_EXIT_EXCEPTION:
            ex = run.exit.ex
            return Outcome.CRASH, f"unhandled exception {ex.exception} error code {ex.error_code:#x}"
        if reason == abi.KVM_EXIT_DEBUG:
            on_exit = self.guest_debug.on_exit
            return on_exit(run.exit.debug) if on_exit is not None else None
        if reason in (abi.KVM_EXIT_IRQ_WINDOW_OPEN, abi.KVM_EXIT_NMI):
            return None
        name = abi.EXIT_REASON_NAMES.get(reason, str(reason))
        return Outcome.CRASH, f"unexpected exit {name}"


class GuestDebug:
    """The vCPU's debug registers (KVM_SET_GUEST_DEBUG) and the KVM_EXIT_DEBUG they cause, held
    by one user at a time: gdb, --trace steps, the boot's kernel-entry mark, Machine.step() or
    Machine.run(until_address=...). The holder's `on_exit` gets kvm_run.debug and returns None
    to go on, or an (Outcome, message) to end the run. The software CPU's loop adds its single
    steps to what the holder set (`step`), where the holder sets execution breakpoints only."""

    def __init__(self, vcpu: Vcpu):
        self.vcpu = vcpu
        self.holder: str | None = None
        self.on_exit: Callable | None = None
        self.breakpoints_only = False       # the holder sets nothing but execution breakpoints
        self._control = 0
        self._debugreg: list[int] | None = None
        self._stepping = False
        # the linear addresses of the holder's execution breakpoints (the software CPU's
        # loop reads them before every stretch: worked out when they are set)
        self.breakpoints: frozenset[int] = frozenset()

    def claim(self, holder: str, on_exit: Callable, breakpoints_only: bool = False) -> None:
        """Take the debug registers for `holder` (a name the refusal of the next claim gives);
        ConfigError while someone else holds them. `breakpoints_only`: the holder promises to
        set execution breakpoints alone, which the software CPU honours."""
        if self.holder is not None:
            from .errors import ConfigError
            raise ConfigError(f"the vCPU's debug registers are taken by {self.holder}")
        self.holder, self.on_exit, self.breakpoints_only = holder, on_exit, breakpoints_only

    def set(self, control: int, debugreg: list[int] | None = None) -> None:
        """KVM_SET_GUEST_DEBUG (tinyvmm.kvm.debugregs spells `control` and `debugreg`)."""
        self._control, self._debugreg = control, debugreg
        self.breakpoints = execution_addresses(debugreg) if control else frozenset()
        self._apply()

    def step(self, on: bool) -> None:
        """The software CPU's loop: KVM stops after each instruction (or not), on top of the
        holder's breakpoints."""
        self._stepping = on
        self._apply()

    def _apply(self) -> None:
        control = self._control | (SINGLE_STEP if self._stepping else 0)
        self.vcpu.set_guest_debug(control, self._debugreg if self._control else None)

    def release(self) -> None:
        """Give the debug registers back, cleared (nothing happens when nobody holds them)."""
        if self.holder is not None:
            self.holder = self.on_exit = None
            self.breakpoints_only = False
            self._control, self._debugreg = 0, None
            self.breakpoints = frozenset()
            self._apply()


def _software_cpu_installed() -> bool:
    from importlib.util import find_spec
    return find_spec("unicorn") is not None and find_spec("capstone") is not None


class _Wakeup:
    """The signals that end a run (Ctrl-C, SIGTERM, SIGHUP), seen from any thread: Python runs
    its handlers on the main thread between two bytecodes, never while the software CPU is
    inside one call, so a guest spinning there with interrupts disabled would outlive them.
    signal.set_wakeup_fd makes the C-level handler write each signal's number to a pipe."""

    ENDING = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGHUP))

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self.ended = False

    def ending(self) -> bool:
        """Whether one of ENDING has arrived since the run began."""
        if not self.ended:
            try:
                numbers = os.read(self._read, 256)
            except BlockingIOError:
                return False
            self.ended = any(number in self.ENDING for number in numbers)
        return self.ended

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


def _take_kicks() -> None:
    """Take the SIGUSR1 kicks pending for this thread, which blocks them."""
    while signal.sigtimedwait({signal.SIGUSR1}, 0) is not None:
        pass
