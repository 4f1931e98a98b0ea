"""Guest text streams: sinks, the remembered tail, and watches for --expect and the banner."""

import pytest

from tinyvmm.console import TAIL_SIZE, Console


def test_watch_fires_once_across_writes_of_any_size():
    hits = []
    console = Console("serial")
    console.watch(b"Linux version", lambda: hits.append("banner"))
    for byte in b"boot... Linux vers":
        console.write(bytes([byte]))
    assert hits == []
    console.write(b"ion 6.1")
    console.write(b" Linux version again")
    assert hits == ["banner"]


def test_expect_and_sink_and_bounded_tail():
    out, hits = bytearray(), []
    console = Console("serial", out.extend, expect=b"done", on_expect=lambda: hits.append(1))
    console.write(b"x" * (TAIL_SIZE * 2))
    console.write(b"..do")
    console.write(b"ne")
    assert hits == [1] and len(out) == TAIL_SIZE * 2 + 6
    assert len(console.tail) <= TAIL_SIZE and console.tail.endswith(b"done")


def _outs(port: int, text: bytes) -> bytes:
    """Real-mode code writing `text` to `port` a byte at a time (mov dx; mov al; out dx, al)."""
    return bytes([0xBA]) + port.to_bytes(2, "little") + b"".join(bytes([0xB0, c, 0xEE]) for c in text)


@pytest.mark.kvm
def test_two_consoles_on_stdout_interleave_by_lines(capfd):
    """COM1 and the debug console both on stdio: a line one of them left open is ended before
    the other writes, as no reader can untangle letters of two streams."""
    from tinyvmm import Machine, Outcome
    from tinyvmm.firmware import real_mode_image
    code = _outs(0x3F8, b"ab") + _outs(0x402, b"X\n") + _outs(0x3F8, b"c\n") + bytes.fromhex("fa f4")
    with Machine(real_mode_image(code), mem=16 << 20, serial="stdio", debugcon="stdio") as guest:
        assert guest.run(timeout=10).outcome is Outcome.HALTED
    assert capfd.readouterr().out == "ab\nX\nc\n"
