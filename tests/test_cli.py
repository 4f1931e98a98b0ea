"""Command-line errors: each is caught before the guest starts, with a message and status 2."""

import subprocess
import sys

import pytest

from tinyvmm import cli


@pytest.mark.parametrize("argv,message", [
    (["run", "--bios", "/nonexistent/bios.bin"], "cannot read firmware"),
    (["run", "--bios", "{small}"], "must be 64, 128, 192 or 256 KiB"),
    (["run", "--bios", "{ok}", "--mem", "1M"], "RAM must be between"),
    (["run", "--bios", "{ok}", "--mem", "100T"], "RAM must be between"),
    (["run", "--bios", "{ok}", "--mem", "lots"], "is not a size"),
    (["run", "--bios", "{ok}", "--timeout", "-1"], "timeout must be above 0"),
    (["run", "--bios", "{ok}", "--serial", "tty"], "expected stdio, none or file:PATH"),
    (["run", "--bios", "{ok}", "--trace", "io,bogus"], "unknown trace categories"),
    (["run", "--bios", "{ok}", "--serial", "file:/nonexistent/dir/x"], "cannot open"),
])
def test_usage_errors(tmp_path, capsys, argv, message):
    small = tmp_path / "small.bin"
    small.write_bytes(b"\x00" * 1000)
    ok = tmp_path / "ok.bin"
    ok.write_bytes(b"\xf4" * 65536)
    argv = [a.format(small=small, ok=ok) for a in argv]
    try:
        status = cli.main(argv)
    except SystemExit as exc:       # argparse reports type errors itself, with status 2
        status = exc.code
    assert status == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_sizes():
    assert cli.parse_size("64M") == 64 << 20
    assert cli.parse_size("1G") == 1 << 30
    assert cli.parse_size("512") == 512 << 20
    assert cli.parse_size("65536K") == 64 << 20


def test_help_documents_exit_statuses():
    result = subprocess.run([sys.executable, "-m", "tinyvmm", "run", "--help"], capture_output=True)
    assert result.returncode == 0
    text = result.stdout.decode()
    for line in ("0    the guest reset", "3    the guest crashed", "4    --timeout", "130  interrupted"):
        assert line in text
