"""The input side of `--serial stdio`: what a person types, or a pipe, reaches COM1.

On a terminal, stdin goes into raw mode for the run (output keeps its newline
translation, as QEMU's stdio does), and is restored on every way out: a normal
end, a crash report, a signal, an exception. Keys go to the guest as typed,
Ctrl-C included; QEMU's escape key works here: Ctrl-A x quits, Ctrl-A h prints
the keys, Ctrl-A Ctrl-A sends one Ctrl-A. Anything else after Ctrl-A is
dropped. When stdin is not a terminal (a pipe, a file), its bytes are sent as
they are, with no escapes, until its end.

A thread reads stdin and hands bytes to `deliver(data) -> accepted`, the
UART's receiver, waiting while its FIFO is full, so nothing typed or piped is
lost.
"""

import os
import select
import sys
import termios
import threading
import tty

ESCAPE = 0x01                   # Ctrl-A
QUIT, HELP = ord("x"), ord("h")
HELP_TEXT = ("\r\nC-a h    print this help\r\nC-a x    exit tinyvmm\r\n"
             "C-a C-a  send C-a to the guest\r\n")
POLL_S = 0.1                    # how often the reader looks whether the run has ended
RETRY_S = 0.005                 # how long it waits for room in the guest's receive FIFO


class ConsoleInput:
    """Pumps `fd` into the guest while a run lasts; start() before the run, close() after."""

    def __init__(self, fd: int, deliver, on_quit, err=None):
        self.fd = fd
        self.deliver = deliver
        self.on_quit = on_quit
        self.err = err if err is not None else sys.stderr
        self.is_terminal = os.isatty(fd)
        self._saved: list | None = None         # termios attributes to restore, when changed
        self._escape = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-input", daemon=True)

    def start(self) -> None:
        if self.is_terminal:
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
            attributes = termios.tcgetattr(self.fd)
            attributes[1] |= termios.OPOST | termios.ONLCR      # "\n" still starts a new line
            termios.tcsetattr(self.fd, termios.TCSANOW, attributes)
        self._thread.start()

    def close(self) -> None:
        """Stop reading and give the terminal back as it was; safe to call more than once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], POLL_S)
                data = os.read(self.fd, 4096) if ready else None
            except OSError:
                return
            if data is None:
                continue
            if not data:
                return                              # end of the pipe or file
            self._send(self._keys(data) if self.is_terminal else data)

    def _keys(self, data: bytes) -> bytes:
        """Typed bytes without the escape sequences, which act here instead."""
        out = bytearray()
        for byte in data:
            if self._escape:
                self._escape = False
                if byte == QUIT:
                    self._stop.set()
                    self.on_quit()
                    break
                if byte == HELP:
                    self.err.write(HELP_TEXT)
                    self.err.flush()
                elif byte == ESCAPE:
                    out.append(ESCAPE)
            elif byte == ESCAPE:
                self._escape = True
            else:
                out.append(byte)
        return bytes(out)

    def _send(self, data: bytes) -> None:
        while data and not self._stop.is_set():
            data = data[self.deliver(data):]
            if data:
                self._stop.wait(RETRY_S)
