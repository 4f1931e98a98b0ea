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


# --- back-pressure: a reader that stops reading (issue 24) ------------------------------

SMALL_PIPE = 4096           # this host's KVM emulates: the guest prints about 20 KB/s


def small_pipe(fd: int) -> None:
    import fcntl
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, SMALL_PIPE)


def start_chatter(*options):
    """`tinyvmm run` of a guest printing for ever on COM1 and the debug console, its stdout
    a small pipe nobody reads: (the process, its start time, the pipe's read end)."""
    import os
    import subprocess
    import time

    from command_line import start_tinyvmm
    from guest_build import build_guest
    chatter = build_guest("chatter").bin_path
    read_end, write_end = os.pipe()
    small_pipe(write_end)
    start = time.monotonic()
    proc = start_tinyvmm("run", "--bios", str(chatter), *options, stdin=subprocess.DEVNULL,
                         stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    return proc, start, read_end


@pytest.mark.kvm
def test_the_timeout_fires_while_stdouts_reader_is_stalled():
    # The instance: `tinyvmm boot | (sleep 60; cat)` ran 40 s past --timeout 5.
    import os
    import time
    proc, start, stdout = start_chatter("--timeout", "2", "--serial", "stdio")
    status = proc.wait(timeout=30)
    elapsed = time.monotonic() - start
    err = proc.stderr.read().decode()
    assert status == 4 and "still running after 2 s" in err, err
    assert elapsed < 6                          # 2 s, start-up, and the 0.5 s wait for the reader
    assert "bytes of guest output were not written to stdout" in err
    assert "Traceback" not in err
    os.close(stdout)
    proc.stderr.close()


@pytest.mark.kvm
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_signals_end_the_run_at_once_while_stdouts_reader_is_stalled(signum):
    import os
    import signal
    import time
    proc, _, stdout = start_chatter("--timeout", "60", "--serial", "stdio", "--debugcon", "stdio")
    time.sleep(2)                               # long enough to fill the pipe many times over
    sent = time.monotonic()
    proc.send_signal(getattr(signal, signum))
    status = proc.wait(timeout=30)
    err = proc.stderr.read().decode()
    assert time.monotonic() - sent < 3, err
    assert status == 130 and "interrupted" in err and "Traceback" not in err, err
    os.close(stdout)
    proc.stderr.close()


@pytest.mark.kvm
def test_a_fifo_file_sink_loses_nothing_to_a_slow_reader(tmp_path):
    # The sibling: --serial file:FIFO whose reader waits, then reads: the timeout still fires
    # on time, and every byte reaches the reader (the debug console's copy in a regular file
    # shows what the guest wrote).
    import os
    import threading
    import time
    fifo, debug = tmp_path / "serial.fifo", tmp_path / "debug.txt"
    os.mkfifo(fifo)
    received = bytearray()

    def slow_reader():
        with open(fifo, "rb") as f:
            small_pipe(f.fileno())
            time.sleep(3)
            while chunk := f.read(1 << 16):
                received.extend(chunk)
    reader = threading.Thread(target=slow_reader)
    reader.start()
    time.sleep(0.2)                             # the FIFO has its reader before tinyvmm opens it
    proc, start, stdout = start_chatter("--timeout", "1", "--serial", f"file:{fifo}",
                                        "--debugcon", f"file:{debug}")
    proc.wait(timeout=30)
    reader.join(30)
    err = proc.stderr.read().decode()
    assert "still running after 1 s" in err, err
    line = b"chatter: the guest talks and nobody listens .......................\n"
    written = debug.read_bytes()
    assert len(written) > SMALL_PIPE            # more than the FIFO holds: the reader was behind
    # COM1 is written first in each round: it holds the debug console's bytes, or a line more.
    assert received.startswith(written[:len(written) - len(written) % len(line)])
    assert len(received) - len(written) <= len(line)
    assert time.monotonic() - start > 3         # the end waited for the reader
    os.close(stdout)
    proc.stderr.close()


def test_a_writer_never_blocks_its_caller_and_counts_what_it_drops():
    import contextlib
    import os
    import time

    from tinyvmm.console import Writer
    read_end, write_end = os.pipe()
    small_pipe(write_end)
    writer = Writer(write_end, limit=10_000)
    start = time.monotonic()
    for _ in range(100):
        writer.write(b"x" * 1000)               # 100 KB into a 4 KiB pipe nobody reads
    assert time.monotonic() - start < 1
    assert writer.flush(0.2) is False           # no progress for 0.2 s: given up, counted
    assert writer.dropped == 100_000 - SMALL_PIPE
    assert len(os.read(read_end, 1 << 20)) == SMALL_PIPE
    os.close(read_end)                          # the reader is gone: EPIPE on the thread ...
    with contextlib.suppress(BrokenPipeError):
        writer.write(b"y")
    writer.flush(None)
    with pytest.raises(BrokenPipeError):
        writer.write(b"z")                      # ... raised in the caller's thread next time
    writer.close()
    os.close(write_end)


def test_a_writer_without_a_limit_gives_a_slow_reader_everything():
    import os
    import threading
    import time

    from tinyvmm.console import Writer
    read_end, write_end = os.pipe()
    small_pipe(write_end)
    writer = Writer(write_end, limit=None)
    data = bytes(range(256)) * 400
    for i in range(0, len(data), 777):
        writer.write(data[i:i + 777])
    received = bytearray()

    def reader():
        time.sleep(0.3)
        while chunk := os.read(read_end, 1000):
            received.extend(chunk)
    thread = threading.Thread(target=reader)
    thread.start()
    assert writer.flush(None) and writer.dropped == 0
    writer.close()
    os.close(write_end)
    thread.join(10)
    os.close(read_end)
    assert received == data
