"""Typing into the guest: a terminal in raw mode with QEMU's Ctrl-A keys, or a pipe, reaches COM1."""

import os
import pty
import select
import subprocess
import termios
import time

import pytest
from command_line import start_tinyvmm, tinyvmm
from guest_build import build_guest

pytestmark = pytest.mark.kvm


def read_until(fd: int, text: bytes, timeout: float = 20) -> bytes:
    seen = b""
    end = time.monotonic() + timeout
    while text not in seen and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def on_a_terminal(guest: str, stderr=None, typed_ahead: bytes = b""):
    """tinyvmm running `guest` with a pseudo-terminal as stdin and stdout (and stderr unless
    given), `typed_ahead` already waiting on it: (process, the controller's fd, the
    terminal's fd, its attributes before)."""
    image = build_guest(guest)
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    if typed_ahead:
        os.write(controller, typed_ahead)
    proc = start_tinyvmm("run", "--bios", str(image.bin_path), "--timeout", "60", stdin=terminal,
                         stdout=terminal, stderr=terminal if stderr is None else stderr,
                         close_fds=True)
    return proc, controller, terminal, before


def test_a_terminal_types_into_the_guest_and_ctrl_a_keys_work():
    proc, controller, terminal, before = on_a_terminal("echo")
    try:
        assert b"ready" in read_until(controller, b"ready")
        os.write(controller, b"hi\x03")                          # Ctrl-C goes to the guest, raw
        assert b"hi\x03" in read_until(controller, b"hi\x03")
        os.write(controller, b"\x01h")                           # Ctrl-A h: the keys, on stderr
        assert b"C-a x    exit tinyvmm" in read_until(controller, b"exit tinyvmm")
        os.write(controller, b"\x01\x01")                        # Ctrl-A Ctrl-A: one Ctrl-A
        assert b"\x01" in read_until(controller, b"\x01")
        os.write(controller, b"\x01x")                           # Ctrl-A x: quit
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        after = termios.tcgetattr(terminal)
        os.close(controller)
        os.close(terminal)
    assert after == before, "the terminal is given back as it was"


def test_a_pipe_on_stdin_is_sent_to_the_guest():
    image = build_guest("echo")
    text = b"piped " * 40 + b"q"            # longer than the UART's 64-byte FIFO; 'q' resets
    result = tinyvmm("run", "--bios", str(image.bin_path), "--timeout", "60", input=text)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"ready\n" + text[:-1]


def test_the_terminal_is_restored_when_the_guest_crashes():
    proc, controller, terminal, before = on_a_terminal("triple_fault", stderr=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=60) == 3
    finally:
        after = termios.tcgetattr(terminal)
        os.close(controller)
        os.close(terminal)
    assert after == before


def test_ctrl_a_x_typed_ahead_quits_cleanly():
    """Keys typed before the run loop exists must not find SIGUSR1 without its handler."""
    proc, controller, terminal, before = on_a_terminal("echo", typed_ahead=b"\x01x")
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        after = termios.tcgetattr(terminal)
        os.close(controller)
        os.close(terminal)
    assert after == before
