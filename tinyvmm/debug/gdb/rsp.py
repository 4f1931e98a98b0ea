"""The gdb remote serial protocol on the wire: packet framing, checksums, escaping, run lengths.

Pure functions and a stream decoder; nothing here touches sockets or the VM.
A packet is `$payload#cc`, cc being the modulo-256 sum of the payload bytes
in two hex digits. Inside binary payloads the bytes `$ # } *` travel as `}`
followed by the byte XOR 0x20; `X*N` repeats X (ord(N) - 29) more times.
"""

from dataclasses import dataclass

PACKET_START = ord("$")
PACKET_END = ord("#")
ESCAPE = ord("}")
RUN_LENGTH = ord("*")
ESCAPE_XOR = 0x20
RUN_LENGTH_BIAS = 29
INTERRUPT = 0x03                 # Ctrl-C sent by gdb while the target runs
ACK = ord("+")
NACK = ord("-")
MAX_PACKET = 0x4000              # what we advertise as PacketSize
_MUST_ESCAPE = frozenset(b"$#}*")


class ProtocolError(ValueError):
    """A payload that cannot be decoded (bad escape, bad run length, bad hex)."""


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFF


def frame(payload: bytes) -> bytes:
    """`$payload#cc`; the payload must already be escaped if it carries binary data."""
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


def escape(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        if byte in _MUST_ESCAPE:
            out += bytes((ESCAPE, byte ^ ESCAPE_XOR))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == ESCAPE:
            try:
                out.append(next(it) ^ ESCAPE_XOR)
            except StopIteration:
                raise ProtocolError("escape character at the end of the data") from None
        else:
            out.append(byte)
    return bytes(out)


def expand_runs(data: bytes) -> bytes:
    """Undo run-length encoding; escaped bytes are copied through untouched."""
    if RUN_LENGTH not in data:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == ESCAPE and i + 1 < len(data):
            out += data[i:i + 2]
            i += 2
            continue
        if byte == RUN_LENGTH:
            if not out or i + 1 >= len(data):
                raise ProtocolError("run length without a byte to repeat")
            repeat = data[i + 1] - RUN_LENGTH_BIAS
            if repeat < 0:
                raise ProtocolError(f"bad run length character {data[i + 1]:#x}")
            out += bytes((out[-1],)) * repeat
            i += 2
            continue
        out.append(byte)
        i += 1
    return bytes(out)


def hex_bytes(text: bytes) -> bytes:
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"not hex: {text[:40]!r}") from None


def hex_int(text: bytes) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise ProtocolError(f"not a hex number: {text[:40]!r}") from None


@dataclass(frozen=True)
class Packet:
    payload: bytes          # run lengths expanded, still escaped (X packets unescape their data)


@dataclass(frozen=True)
class BadPacket:
    """A packet whose checksum did not match: gdb must be asked to send it again."""
    raw: bytes


class Interrupt:
    pass


class Ack:
    pass


class Nack:
    pass


Event = Packet | BadPacket | Interrupt | Ack | Nack


class PacketDecoder:
    """Turns a byte stream from gdb into events: Packet, BadPacket, Interrupt, Ack, Nack.

    Bytes may arrive split anywhere; incomplete packets wait for more input.
    Garbage outside packets is dropped, as gdb itself does.
    """

    def __init__(self, max_packet: int = MAX_PACKET * 2):
        self._buffer = bytearray()
        self._max = max_packet

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        buf = self._buffer
        while buf:
            first = buf[0]
            if first == PACKET_START:
                end = self._find_end(buf)
                if end is None:
                    if len(buf) > self._max:     # a runaway packet: resynchronise
                        del buf[:1]
                        continue
                    break
                if end + 3 > len(buf):
                    break
                body = bytes(buf[1:end])
                given = bytes(buf[end + 1:end + 3])
                raw = bytes(buf[:end + 3])
                del buf[:end + 3]
                try:
                    ok = int(given, 16) == checksum(body)
                except ValueError:
                    ok = False
                if not ok:
                    events.append(BadPacket(raw))
                    continue
                try:
                    events.append(Packet(expand_runs(body)))
                except ProtocolError:
                    events.append(BadPacket(raw))
            else:
                del buf[:1]
                if first == INTERRUPT:
                    events.append(Interrupt())
                elif first == ACK:
                    events.append(Ack())
                elif first == NACK:
                    events.append(Nack())
        return events

    @staticmethod
    def _find_end(buf: bytearray) -> int | None:
        i = 1
        while i < len(buf):
            byte = buf[i]
            if byte == PACKET_END:
                return i
            i += 2 if byte == ESCAPE else 1
        return None
