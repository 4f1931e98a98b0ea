"""Where guest text goes: stdout, a file, or nowhere; with a tail kept for reports and watchers
for texts (--expect, until_console).

Back-pressure: a reader that stops reading (`tinyvmm boot | (sleep 60; cat)`, a
terminal paused with Ctrl-S, a FIFO) must not stop the run loop, whose thread
also runs the signal handlers: the timeout and SIGTERM/SIGINT/SIGHUP would wait
for the reader. So output that could block (a pipe, a terminal, a FIFO, a socket)
goes through a Writer: the run loop queues the bytes and a thread of the
Writer's own writes them. A regular file never blocks for long and is written
directly. What a full queue does:
- stdout (--serial/--debugcon stdio): the queue holds STDOUT_QUEUE_LIMIT bytes; what
  arrives while it is full is dropped and counted, and stderr says how much at the
  end. The console's tail and --expect/until_console see every byte all the same.
  At the end of the run, tinyvmm waits for the reader only while it keeps reading
  (STDOUT_PATIENCE_S without progress ends the wait; the rest is counted as dropped).
- file:PATH: nothing is dropped: the queue has no limit, and the end of the run
  waits until the reader has taken every byte, as the user asked to keep them.
"""

import errno
import os
import select
import stat
import sys
import threading
from collections import deque

from .errors import ConfigError

TYPE_CHECKING = False           # True for type checkers only
if TYPE_CHECKING:
    from collections.abc import Callable

TAIL_SIZE = 4096
STDOUT_QUEUE_LIMIT = 1 << 20     # bytes waiting for stdout's reader before new ones are dropped
STDOUT_PATIENCE_S = 0.5          # how long the end of a run waits for a reader that reads nothing


class Writer:
    """Writes bytes to `fd` from a thread of its own, so that the caller never waits for
    the reader. `limit`: bytes queued at most (None: no limit), beyond which new bytes
    are dropped and counted in `dropped`. A write error (EPIPE: the reader is gone) is
    raised by the next write() after it, in the caller's thread."""

    def __init__(self, fd: int, limit: int | None):
        self.fd = fd
        self.limit = limit
        self.dropped = 0
        self.error: OSError | None = None
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._written = 0                  # bytes written so far: progress, for flush()
        self._ready = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closing = False
        self._holding = False              # the thread has bytes taken from the queue
        self._abandon = False              # flush() gave up: drop what the thread holds

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        with self._ready:
            if self.limit is not None and self._queued + len(data) > self.limit:
                self.dropped += len(data)
                return
            self._chunks.append(bytes(data))
            self._queued += len(data)
            self._ready.notify()
            if self._thread is None:
                # A daemon: output still queued when the interpreter ends is not waited
                # for there (flush() decides how long to wait).
                self._thread = threading.Thread(target=self._run, name=f"writer fd {self.fd}",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._chunks and not self._closing:
                    self._ready.wait()
                if not self._chunks:
                    return                      # closed, and nothing left to write
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._holding = True
            try:
                self._write_all(data)
            except OSError as exc:
                with self._ready:
                    self.error = exc
                    self._holding = False
                    self.dropped += self._queued - self._written
                    self._queued = self._written
                    self._ready.notify_all()
                return
            with self._ready:
                self._holding = self._abandon = False

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                # At most PIPE_BUF at a time: a pipe takes such a write whole or not at all,
                # so _written says what the reader was given when flush() gives up.
                done = os.write(self.fd, view[:select.PIPE_BUF])
            except BlockingIOError:             # an fd left non-blocking by someone else
                select.select([], [self.fd], [])
                continue
            view = view[done:]
            with self._ready:
                if self._abandon:       # flush() gave up and counted all this as dropped
                    self._abandon = False
                    return
                self._written += done
                self._ready.notify_all()

    def flush(self, patience: float | None) -> bool:
        """Wait until everything queued is written, or (with `patience` seconds) until the
        reader has taken nothing for that long; True if all was written. What is left
        then is counted in `dropped` (the process is about to end without it)."""
        with self._ready:
            while self._queued > self._written and self.error is None:
                before = self._written
                self._ready.wait(patience)
                if patience is not None and self._written == before:
                    self.dropped += self._queued - self._written
                    self._queued = self._written
                    self._chunks.clear()
                    self._abandon = self._holding
                    return False
            return self.error is None

    def close(self) -> None:
        """End the thread once it has written what is queued (call flush() first to bound
        the wait: what flush() gave up on is no longer queued)."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()


def _blocks(fd: int) -> bool:
    """Could a write to `fd` wait for a reader: a pipe or FIFO, a socket, a terminal? (A
    regular file or a device such as /dev/null or /dev/full answers at once.)"""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


_stdout_writer: list[Writer | None] = [None]   # stdout's queue, shared by every console


def _stdout_write_function():
    """write(bytes) to stdout: through the shared Writer when stdout could block, else
    directly (a regular file; also what pytest's capture makes it)."""
    fd = sys.stdout.fileno()
    if not _blocks(fd):
        return lambda data: os.write(fd, data)
    writer = _stdout_writer[0]
    if writer is None or writer.fd != fd:
        writer = _stdout_writer[0] = Writer(fd, STDOUT_QUEUE_LIMIT)
    return writer.write


def flush_stdout() -> None:
    """Give stdout's reader the queued output, waiting only while it keeps reading; say on
    stderr how much it never got."""
    writer = _stdout_writer[0]
    if writer is None:
        return
    writer.flush(STDOUT_PATIENCE_S)
    if writer.dropped:
        dropped, writer.dropped = writer.dropped, 0
        try:
            print(f"tinyvmm: warning: {dropped} bytes of guest output were not written to "
                  "stdout: its reader did not keep up (--serial file:PATH keeps every byte)",
                  file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


class SinkSpecError(ConfigError):
    """A --serial/--debugcon value that is not stdio, none or file:PATH."""


def open_sink(spec: str, owner: str = ""):
    """Turn 'stdio', 'none' or 'file:PATH' into a write(bytes) callable (None for 'none') and a
    close(). `owner` names the console writing: when two consoles share stdout (--serial stdio
    --debugcon stdio), one's line is ended before the other's bytes follow, so that the two
    streams interleave by lines, never inside one."""
    if spec == "none":
        return None, (lambda: None)
    if spec == "stdio":
        out = _stdout_write_function()

        def write(data: bytes) -> None:
            if not data:
                return
            if _stdout_owner[0] != owner and _stdout_last[0] != b"\n":
                out(b"\n")
            out(data)
            _stdout_last[0] = data[-1:]
            _stdout_owner[0] = owner
        return write, flush_stdout
    if spec.startswith("file:") and len(spec) > 5:
        sink = FileSink(spec[5:])
        return sink, sink.close
    raise SinkSpecError(f"{spec!r}: expected stdio, none or file:PATH")


_stdout_last = [b"\n"]          # the last byte the guest's consoles wrote to stdout
_stdout_owner = [""]            # the console that wrote it


def end_stdout_line() -> None:
    """After a run that stopped mid-line on stdout (--expect), end that line for the shell."""
    if _stdout_last[0] != b"\n":
        _stdout_write_function()(b"\n")
        _stdout_last[0] = b"\n"
        flush_stdout()


def end_stdout_line_before_stderr() -> None:
    """Before tinyvmm's own end-of-run lines: when stdout and stderr are one terminal or file,
    end the guest's last line there, so that tinyvmm's does not continue it."""
    flush_stdout()                  # the guest's queued output first, as far as it goes
    if _stdout_last[0] == b"\n":
        return
    try:
        shared = os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno()))
    except (OSError, ValueError):
        return
    if shared:
        try:
            end_stdout_line()
        except OSError:
            pass                # the reader went away: nothing to end


class FileSink:
    """`--serial file:PATH`: opened (and checked) at once, emptied only when the run begins,
    so a usage error found in between leaves the previous run's output as it was. A path
    that could block (a FIFO, a terminal) is written through a Writer without a limit, and
    close() waits until its reader has taken everything: a file sink loses nothing."""

    def __init__(self, path: str):
        try:
            # Non-blocking open: a FIFO nobody reads fails here (ENXIO) instead of hanging.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            reason = "a FIFO with no reader" if exc.errno == errno.ENXIO else exc.strerror
            raise SinkSpecError(f"cannot open {path}: {reason}") from None
        try:
            os.set_blocking(fd, True)
            self.regular = stat.S_ISREG(os.fstat(fd).st_mode)
            self.file = os.fdopen(fd, "ab", buffering=0)
        except OSError as exc:          # it opens but cannot be written as a stream (/proc files)
            os.close(fd)
            raise SinkSpecError(f"cannot write {path}: {exc.strerror}") from None
        self.begun = False
        self.writer = Writer(fd, None) if _blocks(fd) else None

    def begin(self) -> None:
        if not self.begun:
            self.begun = True
            if self.regular:            # /dev/null, a FIFO or a terminal has nothing to empty
                self.file.truncate(0)

    def __call__(self, data: bytes) -> None:
        self.begin()
        if self.writer is not None:
            self.writer.write(data)
        else:
            self.file.write(data)

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.flush(None)
                self.writer.close()
        finally:
            self.file.close()


class Console:
    """A byte stream from the guest: forwarded to a sink, its tail remembered, watched for texts.

    `expect` (with `on_expect`) is the --expect watch; watch() adds more, each
    called once, the first time its text has appeared.
    """

    def __init__(self, name: str, sink=None, expect: bytes | None = None, on_expect=None):
        self.name = name
        # Someone reads this console: a sink, or an --expect watch.
        self.connected = sink is not None or bool(expect)
        self.sink = sink or (lambda data: None)
        self.tail = bytearray()
        self.total = 0
        self._watches: list[tuple[bytes, Callable[[], object]]] = []
        self.expect = expect
        self.on_expect = on_expect or (lambda: None)
        self.on_closed: Callable[[], object] = lambda: None    # the sink's reader has gone
        self.failed: str | None = None          # why the sink could not be written, if it failed
        if expect:
            self.watch(expect, lambda: self.on_expect())

    def watch(self, text: bytes, callback: "Callable[[], object]") -> None:
        if len(text) > TAIL_SIZE // 2:
            raise ValueError(f"cannot watch for more than {TAIL_SIZE // 2} bytes")
        self._watches.append((text, callback))

    def unwatch(self, callback) -> None:
        """Drop the watches that would call `callback` (those not yet seen)."""
        self._watches = [w for w in self._watches if w[1] is not callback]

    def begin(self) -> None:
        """The run starts: a file sink drops what an earlier run left in it."""
        begin = getattr(self.sink, "begin", None)
        if begin is not None:
            begin()

    def write(self, data: bytes) -> None:
        try:
            self.sink(data)
        except BrokenPipeError:
            # The reader went away (`tinyvmm boot | head`): stop forwarding, and say so once.
            self.sink = lambda data: None
            self.on_closed()
        except OSError as exc:
            # A full disk, /dev/full: the output is lost from here on; the run ends and the
            # command line says so with status 1.
            self.sink = lambda data: None
            self.failed = f"cannot write the {self.name} output: {exc.strerror or exc}"
            self.on_closed()
        self.total += len(data)
        self.tail += data
        if self._watches:
            # Only the new bytes, plus what a match could have started in before them.
            seen = [w for w in self._watches if w[0] in self.tail[-(len(data) + len(w[0]) - 1):]]
            for watch in seen:
                self._watches.remove(watch)
                watch[1]()
        if len(self.tail) > TAIL_SIZE:
            del self.tail[:-TAIL_SIZE // 2]
