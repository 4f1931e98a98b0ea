"""The gdb stub: stops and resumes the run loop for gdb, and serves gdb while the guest is stopped.

It is the Runner's `debugger`. The run loop calls it before the first entry
(`--gdb-wait`), on KVM_EXIT_DEBUG, after each device access (a single step
must end right after an I/O instruction: this KVM loses the step trap of an
`out`), and when KVM_RUN was interrupted. Interrupting is the reader thread's
job: when gdb sends Ctrl-C, connects or hangs up while the guest runs, it sets
immediate_exit and sends KICK_SIGNAL to the vCPU thread, so KVM_RUN returns
at once (immediate_exit covers a signal that arrives just before entry).
"""

import queue
import signal
import threading

from ...outcome import Outcome
from . import rsp
from .commands import CommandHandler, Detach, Kill, Resume, exit_reply, stop_reply
from .events import SIGTRAP, StopEvent
from .server import Connected, Disconnected

KICK_SIGNAL = signal.SIGUSR1
POLL_SECONDS = 0.2


class GdbStub:
    def __init__(self, server, target, runner, wait: bool = False, notice=None, can_kick: bool = True):
        self.server = server
        self.target = target
        self.runner = runner
        self.wait = wait
        self.notice = notice or (lambda text: None)
        self.handler = CommandHandler(target)
        self.vcpu = runner.vcpu          # its run page is looked up each time: it goes away at close
        self._lock = threading.Lock()
        self._running = False
        self._pause = False
        self._pause_reason = ""
        self._loop_thread: int | None = None
        # Without a handler for KICK_SIGNAL (attached off the main thread) only
        # immediate_exit is left: the guest stops at its next exit.
        self._can_kick = can_kick
        # What tinyvmm has to tell the gdb user (a refused watchpoint, a breakpoint kind this
        # host cannot give): sent as console output ('O' packets), which gdb prints, before
        # the next stop reply.
        self.hints: list[str] = []
        server.wake = self.request_pause

    # --- the reader thread's side ----------------------------------------------
    def request_pause(self, why: str) -> None:
        """Get the vCPU thread out of KVM_RUN so that it serves gdb."""
        with self._lock:
            if not self._running:
                return                     # already stopped: the serve loop sees the event
            self._pause = True
            self._pause_reason = why
            thread = self._loop_thread
        self.vcpu.run_page.immediate_exit = 1
        if thread is not None and self._can_kick:
            signal.pthread_kill(thread, KICK_SIGNAL)

    # --- the run loop's side ----------------------------------------------------
    def on_start(self):
        self._loop_thread = threading.get_ident()
        if self.wait:
            self.notice(f"waiting for gdb on {self.server.address.describe()}")
            return self._serve(StopEvent(SIGTRAP), announce=False)
        self._set_running()
        return None

    def on_kick(self):
        with self._lock:
            pause, self._pause = self._pause, False
            why = self._pause_reason
        if pause:
            event = self.target.interrupted()
            if why == "connect":
                event = StopEvent(SIGTRAP)          # gdb attaching, not a Ctrl-C
            return self._serve(event, announce=False)
        if self.target.stepping:
            event = self.target.step_cut_short()
            if event is not None:
                return self._serve(event, announce=True)
        return None

    def on_debug_exit(self, debug):
        event = self.target.debug_exit(debug.exception, debug.dr6)
        if event is None:
            return None
        return self._serve(event, announce=True)

    def after_access(self) -> None:
        if self.target.stepping:
            self.vcpu.run_page.immediate_exit = 1  # let KVM finish the I/O, then stop

    def finish(self, result) -> None:
        """The run ended: tell a connected gdb how, then hang up."""
        if self.server.connected:
            self.server.send(exit_reply(result.status))
            self.server.drop()

    # --- serving gdb while the guest is stopped -----------------------------------
    def _set_running(self) -> None:
        with self._lock:
            self._running = True
            self._pause = False

    def _serve(self, event: StopEvent, announce: bool):
        """Answer gdb until it resumes, detaches or kills; returns what the run loop returns."""
        with self._lock:
            self._running = False
            self._pause = False
        # All-stop: the other vCPUs leave KVM_RUN and wait for the device lock this thread
        # holds, so gdb can read their registers; stops and steps are vCPU 0's.
        kick_others = getattr(self.runner, "_kick_all", None)
        if kick_others is not None and len(self.runner.cpus) > 1:
            kick_others(but=self.runner)
        select = getattr(self.target, "select_thread", None)
        if select is not None:
            select(1)
        self.handler.last_stop = event
        announced = False
        if announce and self.server.connected:
            self._send_hints()
            self.server.send(stop_reply(event, self.handler.gdb_reasons))
            announced = True
        while True:
            if self.runner.signalled:
                return None                         # the run loop ends the run on its next entry
            try:
                item = self.server.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, Connected):
                self.target.choose_layout()
                self.handler.reset()
                announced = True                    # gdb asks with '?'
            elif isinstance(item, Disconnected):
                self.notice("gdb hung up; the guest runs on")
                self.target.detach()
                self._set_running()
                return None
            elif isinstance(item, rsp.Interrupt):
                if not announced:
                    self._send_hints()
                    self.server.send(stop_reply(event, self.handler.gdb_reasons))
                    announced = True
            elif isinstance(item, rsp.Nack):
                self.server.resend()
            elif isinstance(item, rsp.Packet):
                response = self.handler.handle(item.payload)
                for reply in response.replies:
                    self.server.send(reply)
                if self.handler.no_ack:
                    self.server.stop_acks()
                ended = self._act(response.action)
                if ended is not False:
                    return ended

    def _send_hints(self) -> None:
        hints, self.hints = self.hints, []
        for text in hints:
            self.server.send(b"O" + f"tinyvmm: {text}\n".encode().hex().encode())

    def _act(self, action):
        """False to keep serving; otherwise what _serve returns."""
        if action is None:
            return False
        if isinstance(action, Resume):
            self.target.resume(action.step)
            self._set_running()
            return None
        if isinstance(action, Detach):
            self.target.detach()
            self.server.drop()
            self.notice("gdb detached; the guest runs on")
            self._set_running()
            return None
        if isinstance(action, Kill):
            self.target.detach()
            self.server.drop()
            return Outcome.INTERRUPTED, "killed from gdb"
        raise AssertionError(f"unknown action {action!r}")
