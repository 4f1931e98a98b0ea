"""Guest text streams: sinks, the remembered tail, and watches for --expect and the banner."""

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
