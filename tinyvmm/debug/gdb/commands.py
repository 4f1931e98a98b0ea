"""gdb's requests answered against a target: one packet in, reply payloads and maybe an action out.

No sockets and no KVM here: the target is anything with KvmTarget's methods,
so every command is testable with a fake. Unknown requests get the empty
reply, which tells gdb the feature is absent.
"""

from dataclasses import dataclass, field

from . import rsp, tdesc
from .events import SIGTRAP, StopEvent, TargetError

THREAD_ID = 1
SUPPORTED = (b"PacketSize=%x;qXfer:features:read+;swbreak+;hwbreak+;QStartNoAckMode+;vContSupported+"
             % rsp.MAX_PACKET)
EIO = 5
EINVAL = 22


@dataclass(frozen=True)
class Resume:
    step: bool


class Detach:
    """gdb detached: take the breakpoints out, let the guest run on."""


class Kill:
    """gdb killed the inferior: end the run."""


@dataclass
class Response:
    replies: list[bytes] = field(default_factory=list)     # payloads, unframed
    action: object = None                                   # Resume, Detach, Kill or None


def error(errno: int) -> bytes:
    return b"E%02x" % (errno & 0xFF)


def stop_reply(event: StopEvent, reasons: set[str] | None = None, thread: int = THREAD_ID) -> bytes:
    """`T05thread:01;hwbreak:;`; a reason gdb did not announce support for is left out."""
    reply = b"T%02xthread:%02x;" % (event.signal, thread)
    if event.reason in ("watch", "rwatch", "awatch"):
        reply += b"%s:%x;" % (event.reason.encode(), event.address)
    elif event.reason and (reasons is None or event.reason in reasons):
        reply += event.reason.encode() + b":;"
    return reply


def exit_reply(status: int) -> bytes:
    return b"W%02x" % (status & 0xFF)


class CommandHandler:
    def __init__(self, target):
        self.target = target
        self.last_stop = StopEvent(SIGTRAP)
        self.gdb_reasons: set[str] = set()       # stop reasons gdb said it understands
        self.no_ack = False                      # gdb asked to stop acknowledging packets

    def reset(self) -> None:
        """A new gdb connected."""
        self.gdb_reasons = set()
        self.no_ack = False

    def handle(self, payload: bytes) -> Response:
        try:
            return self._dispatch(payload)
        except TargetError as exc:
            return Response([error(exc.errno)])
        except (rsp.ProtocolError, ValueError, IndexError, KeyError):
            return Response([error(EINVAL)])
        except OSError as exc:                  # a KVM call failed
            return Response([error(exc.errno or EIO)])

    def _dispatch(self, payload: bytes) -> Response:
        if not payload:
            return Response([b""])
        first, rest = payload[:1], payload[1:]
        simple = {b"?": self._why_stopped, b"g": self._read_registers, b"G": self._write_registers,
                  b"p": self._read_register, b"P": self._write_register, b"m": self._read_memory,
                  b"M": self._write_memory, b"X": self._write_binary, b"Z": self._insert,
                  b"z": self._remove, b"H": self._set_thread, b"T": self._thread_alive}
        if first in simple:
            return simple[first](rest)
        if first in (b"c", b"s", b"C", b"S"):
            return self._resume(first, rest)
        if first == b"D":
            return Response([b"OK"], Detach())
        if first == b"k":
            return Response([], Kill())
        if first == b"q":
            return self._query(rest)
        if first == b"Q":
            if rest == b"StartNoAckMode":
                self.no_ack = True
                return Response([b"OK"])
            return Response([b""])
        if first == b"v":
            return self._v(rest)
        return Response([b""])

    def _ok(self, rest: bytes) -> Response:
        return Response([b"OK"])

    def _threads(self) -> list[int]:
        threads = getattr(self.target, "threads", None)
        return threads() if threads is not None else [THREAD_ID]

    def _set_thread(self, rest: bytes) -> Response:
        """Hg selects whose registers g/G/p/P see; Hc names the thread to resume (all of them
        resume together here, so any is fine)."""
        kind, thread = rest[:1], rest[1:]
        if kind == b"g" and thread and thread != b"-1":
            select = getattr(self.target, "select_thread", None)
            number = rsp.hex_int(thread)
            if select is not None and not select(number):
                return Response([error(EINVAL)])
            if select is None and number not in (0, THREAD_ID):
                return Response([error(EINVAL)])
        return Response([b"OK"])

    def _thread_alive(self, rest: bytes) -> Response:
        return Response([b"OK" if rsp.hex_int(rest) in self._threads() else error(EINVAL)])

    def _why_stopped(self, rest: bytes) -> Response:
        return Response([stop_reply(self.last_stop, self.gdb_reasons)])

    # --- registers ------------------------------------------------------------
    def _read_registers(self, rest: bytes) -> Response:
        return Response([self.target.layout.pack(self.target.read_registers())])

    def _write_registers(self, rest: bytes) -> Response:
        self.target.write_registers(self.target.layout.unpack(rest))
        return Response([b"OK"])

    def _register(self, number: bytes) -> tdesc.Register:
        index = rsp.hex_int(number)
        registers = self.target.layout.registers
        if not 0 <= index < len(registers):
            raise TargetError(f"no register {index}")
        return registers[index]

    def _read_register(self, rest: bytes) -> Response:
        reg = self._register(rest)
        return Response([tdesc.encode_register(reg, self.target.read_registers().get(reg.name))])

    def _write_register(self, rest: bytes) -> Response:
        number, _, value = rest.partition(b"=")
        reg = self._register(number)
        if len(value) != reg.bits // 4:
            raise TargetError(f"{reg.name} takes {reg.bits // 8} bytes")
        self.target.write_registers({reg.name: tdesc.decode_register(value)})
        return Response([b"OK"])

    # --- memory ---------------------------------------------------------------
    @staticmethod
    def _address_length(text: bytes) -> tuple[int, int]:
        address, _, length = text.partition(b",")
        return rsp.hex_int(address), rsp.hex_int(length)

    def _read_memory(self, rest: bytes) -> Response:
        address, length = self._address_length(rest)
        length = min(length, rsp.MAX_PACKET // 2)
        return Response([self.target.read_memory(address, length).hex().encode()])

    def _write_memory(self, rest: bytes) -> Response:
        return self._store(rest, rsp.hex_bytes)

    def _write_binary(self, rest: bytes) -> Response:
        return self._store(rest, rsp.unescape)

    def _store(self, rest: bytes, decode) -> Response:
        """`ADDR,LEN:DATA` with DATA as `decode` reads it (hex for M, escaped binary for X)."""
        where, _, data = rest.partition(b":")
        address, length = self._address_length(where)
        data = decode(data)
        if len(data) != length:
            raise TargetError("length does not match the data")
        if data:
            self.target.write_memory(address, data)
        return Response([b"OK"])

    # --- breakpoints ----------------------------------------------------------
    @staticmethod
    def _breakpoint(rest: bytes) -> tuple[int, int, int]:
        fields = rest.split(b";")[0].split(b",")
        if len(fields) != 3:
            raise rsp.ProtocolError("expected type,address,kind")
        return rsp.hex_int(fields[0]), rsp.hex_int(fields[1]), rsp.hex_int(fields[2])

    def _insert(self, rest: bytes) -> Response:
        kind, address, length = self._breakpoint(rest)
        if kind > 4:
            return Response([b""])
        self.target.add_breakpoint(kind, address, length)
        return Response([b"OK"])

    def _remove(self, rest: bytes) -> Response:
        kind, address, length = self._breakpoint(rest)
        if kind > 4:
            return Response([b""])
        self.target.remove_breakpoint(kind, address, length)
        return Response([b"OK"])

    # --- execution ------------------------------------------------------------
    def _resume(self, command: bytes, rest: bytes) -> Response:
        if command in (b"C", b"S"):              # the signal to deliver means nothing here
            _, _, rest = rest.partition(b";")
        if rest:
            self.target.write_registers({self.target.layout.pc_name: rsp.hex_int(rest)})
        return Response([], Resume(step=command in (b"s", b"S")))

    def _v(self, rest: bytes) -> Response:
        if rest == b"Cont?":
            return Response([b"vCont;c;C;s;S"])
        if rest.startswith(b"Cont;"):
            # One thread: the first action is the one for it.
            action = rest[5:].split(b";")[0].split(b":")[0]
            if action[:1] in (b"c", b"C"):
                return Response([], Resume(step=False))
            if action[:1] in (b"s", b"S"):
                return Response([], Resume(step=True))
            return Response([error(EINVAL)])
        if rest.startswith(b"Kill"):
            return Response([b"OK"], Kill())
        return Response([b""])

    # --- queries --------------------------------------------------------------
    def _query(self, rest: bytes) -> Response:
        name, _, args = rest.partition(b":")
        if name == b"Supported":
            self.gdb_reasons = {feature[:-1].decode("ascii", "replace") for feature in args.split(b";")
                                if feature.endswith(b"+")} & {"swbreak", "hwbreak"}
            return Response([SUPPORTED])
        if name == b"Xfer":
            return self._xfer(args)
        if rest == b"Attached":
            return Response([b"1"])
        if rest == b"C":
            return Response([b"QC%x" % THREAD_ID])
        if rest == b"fThreadInfo":
            return Response([b"m" + b",".join(b"%x" % thread for thread in self._threads())])
        if rest.startswith(b"ThreadExtraInfo,"):
            info = getattr(self.target, "thread_info", None)
            text = info(rsp.hex_int(rest[16:])) if info is not None else "vCPU 0"
            return Response([text.encode().hex().encode()])
        if rest == b"sThreadInfo":
            return Response([b"l"])
        if rest.startswith(b"Symbol"):
            return Response([b"OK"])
        if rest.startswith(b"Rcmd,"):
            return self._monitor(rsp.hex_bytes(rest[5:]).decode("utf-8", "replace"))
        return Response([b""])

    def _xfer(self, args: bytes) -> Response:
        parts = args.split(b":")
        if len(parts) != 4 or parts[0] != b"features" or parts[1] != b"read":
            return Response([b""])
        if parts[2] != b"target.xml":
            return Response([error(EINVAL)])
        offset, length = self._address_length(parts[3])
        document = tdesc.target_xml(self.target.layout).encode()
        chunk = document[offset:offset + min(length, rsp.MAX_PACKET // 2)]
        more = offset + len(chunk) < len(document)
        return Response([(b"m" if more else b"l") + rsp.escape(chunk)])

    def _monitor(self, command: str) -> Response:
        text = self.target.monitor(command)
        replies = [b"O" + text[i:i + 512].encode().hex().encode() for i in range(0, len(text), 512)]
        return Response(replies + [b"OK"])
