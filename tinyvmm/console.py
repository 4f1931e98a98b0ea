"""Where guest text goes: stdout, a file, or nowhere; with a tail kept for reports and watchers
for texts (--expect, until_console)."""

import errno
import os
import stat
import sys

from .errors import ConfigError

TYPE_CHECKING = False           # True for type checkers only
if TYPE_CHECKING:
    from collections.abc import Callable

TAIL_SIZE = 4096


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
        fd = sys.stdout.fileno()

        def write(data: bytes) -> None:
            if not data:
                return
            if _stdout_owner[0] != owner and _stdout_last[0] != b"\n":
                os.write(fd, b"\n")
            os.write(fd, data)
            _stdout_last[0] = data[-1:]
            _stdout_owner[0] = owner
        return write, (lambda: None)
    if spec.startswith("file:") and len(spec) > 5:
        sink = FileSink(spec[5:])
        return sink, sink.close
    raise SinkSpecError(f"{spec!r}: expected stdio, none or file:PATH")


_stdout_last = [b"\n"]          # the last byte the guest's consoles wrote to stdout
_stdout_owner = [""]            # the console that wrote it


def end_stdout_line() -> None:
    """After a run that stopped mid-line on stdout (--expect), end that line for the shell."""
    if _stdout_last[0] != b"\n":
        os.write(sys.stdout.fileno(), b"\n")
        _stdout_last[0] = b"\n"


def end_stdout_line_before_stderr() -> None:
    """Before tinyvmm's own end-of-run lines: when stdout and stderr are one terminal or file,
    end the guest's last line there, so that tinyvmm's does not continue it."""
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
    so a usage error found in between leaves the previous run's output as it was."""

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

    def begin(self) -> None:
        if not self.begun:
            self.begun = True
            if self.regular:            # /dev/null, a FIFO or a terminal has nothing to empty
                self.file.truncate(0)

    def __call__(self, data: bytes) -> None:
        self.begin()
        self.file.write(data)

    def close(self) -> None:
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
