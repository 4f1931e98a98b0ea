"""The gdb socket: listen on TCP or a unix socket, and read what gdb sends on a thread of its own.

The reader thread turns bytes into events on a queue (Connected, Packet,
Interrupt, Nack, Disconnected) and acknowledges packets. Because the vCPU
thread sits in KVM_RUN while the guest runs, the reader also calls `wake`
when gdb needs attention then (Ctrl-C, a new connection, a hang-up): the
stub kicks the vCPU out of KVM_RUN from there.
"""

import os
import queue
import socket
import stat
import threading
from dataclasses import dataclass

from ...errors import ConfigError
from . import rsp

LOCALHOST = "127.0.0.1"


class Connected:
    pass


class Disconnected:
    pass


class AddressError(ConfigError):
    pass


@dataclass(frozen=True)
class ListenAddress:
    """Where the stub listens: ('tcp', host, port) or ('unix', path)."""
    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "ListenAddress":
        """tcp::PORT (localhost), tcp:HOST:PORT, unix:PATH, or a path containing '/'."""
        if text.startswith("tcp:"):
            host, sep, port = text[4:].rpartition(":")
            if not sep or not port.isdigit() or int(port) > 65535:
                raise AddressError(f"{text!r}: expected tcp::PORT or tcp:HOST:PORT")
            return cls("tcp", host or LOCALHOST, int(port))
        if text.startswith("unix:") and len(text) > 5:
            return cls("unix", path=text[5:])
        if "/" in text:
            return cls("unix", path=text)
        raise AddressError(f"{text!r}: expected tcp::PORT, tcp:HOST:PORT, unix:PATH or a socket path")

    def describe(self) -> str:
        return f"tcp {self.host}:{self.port}" if self.kind == "tcp" else f"unix socket {self.path}"

    def gdb_target(self) -> str:
        """What follows `target remote` in gdb."""
        if self.kind == "tcp":
            return f":{self.port}" if self.host == LOCALHOST else f"{self.host}:{self.port}"
        return self.path


class GdbServer:
    """One gdb connection at a time; events for the stub on `events`."""

    def __init__(self, address: ListenAddress, wake=None):
        self.address = address
        self.wake = wake or (lambda why: None)
        self.events: queue.Queue = queue.Queue()
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._ack = True
        self._last_sent = b""
        self._closed = False
        self._thread: threading.Thread | None = None

    def open(self) -> ListenAddress:
        """Bind and start the reader thread; returns the address bound (the real TCP port)."""
        address = self.address
        if address.kind == "tcp":
            sock = socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
            address = ListenAddress("tcp", address.host, sock.getsockname()[1])
        else:
            try:
                if stat.S_ISSOCK(os.stat(address.path).st_mode):
                    os.unlink(address.path)          # left over from an earlier run
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(address.path)
        sock.listen(1)
        self._listener = sock
        self.address = address
        # The thread keeps its own reference: close() drops self._listener while it runs.
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="gdb-reader",
                                        daemon=True)
        self._thread.start()
        return address

    # --- the reader thread ----------------------------------------------------
    def _serve(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                conn, _ = listener.accept()
            except OSError:
                return                              # the listener was closed
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._send_lock:
                self._conn = conn
                self._ack = True
            self.events.put(Connected())
            self.wake("connect")
            self._read(conn)
            with self._send_lock:
                ours = self._conn is conn
                self._conn = None
            conn.close()
            if ours:                                # not dropped by the stub itself
                self.events.put(Disconnected())
                self.wake("disconnect")

    def _read(self, conn: socket.socket) -> None:
        decoder = rsp.PacketDecoder()
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            for event in decoder.feed(data):
                if self._conn is not conn:
                    return                          # dropped by the stub meanwhile
                if isinstance(event, rsp.Packet):
                    if self._ack:
                        self._send_raw(conn, b"+")
                    self.events.put(event)
                elif isinstance(event, rsp.BadPacket):
                    if self._ack:
                        self._send_raw(conn, b"-")
                elif isinstance(event, rsp.Interrupt):
                    self.events.put(event)
                    self.wake("interrupt")
                elif isinstance(event, rsp.Nack):
                    self.events.put(event)

    def _send_raw(self, conn: socket.socket, data: bytes) -> None:
        with self._send_lock:
            if self._conn is conn:
                try:
                    conn.sendall(data)
                except OSError:
                    pass                            # the reader sees the hang-up

    # --- used by the stub (vCPU thread) ---------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None

    def send(self, payload: bytes) -> None:
        packet = rsp.frame(payload)
        self._last_sent = packet
        conn = self._conn
        if conn is not None:
            self._send_raw(conn, packet)

    def resend(self) -> None:
        conn = self._conn
        if conn is not None and self._last_sent:
            self._send_raw(conn, self._last_sent)

    def stop_acks(self) -> None:
        """After gdb's QStartNoAckMode has been answered."""
        self._ack = False

    def drop(self) -> None:
        """Close the connection (detach, kill) without reporting it as a hang-up."""
        with self._send_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        while True:                                  # nothing from that gdb matters any more
            try:
                self.events.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        self._closed = True
        self.drop()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
            if self.address.kind == "unix":
                try:
                    os.unlink(self.address.path)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=2)
