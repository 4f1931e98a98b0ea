"""Where guest text goes: stdout, a file, or nowhere; with a tail kept for reports and a watcher for --expect."""

import os
import sys

TAIL_SIZE = 4096


class SinkSpecError(ValueError):
    """A --serial/--debugcon value that is not stdio, none or file:PATH."""


def open_sink(spec: str):
    """Turn 'stdio', 'none' or 'file:PATH' into a write(bytes) callable (None for 'none') and a close()."""
    if spec == "none":
        return None, (lambda: None)
    if spec == "stdio":
        fd = sys.stdout.fileno()
        return (lambda data: os.write(fd, data)), (lambda: None)
    if spec.startswith("file:") and len(spec) > 5:
        path = spec[5:]
        try:
            f = open(path, "wb", buffering=0)
        except OSError as exc:
            raise SinkSpecError(f"cannot open {path}: {exc.strerror}") from None
        return f.write, f.close
    raise SinkSpecError(f"{spec!r}: expected stdio, none or file:PATH")


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
        self._watches: list[tuple[bytes, object]] = []
        self.expect = expect
        self.on_expect = on_expect or (lambda: None)
        self.on_closed = lambda: None           # called when the sink's reader has gone
        if expect:
            self.watch(expect, lambda: self.on_expect())

    def watch(self, text: bytes, callback) -> None:
        if len(text) > TAIL_SIZE // 2:
            raise ValueError(f"cannot watch for more than {TAIL_SIZE // 2} bytes")
        self._watches.append((text, callback))

    def write(self, data: bytes) -> None:
        try:
            self.sink(data)
        except BrokenPipeError:
            # The reader went away (`tinyvmm boot | head`): stop forwarding, and say so once.
            self.sink = lambda data: None
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
