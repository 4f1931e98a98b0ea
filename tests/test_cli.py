"""Command-line errors: each is caught before the guest starts, with a message and status 2."""

import argparse
import subprocess
import sys

import pytest

from tinyvmm import cli


@pytest.mark.parametrize("argv,message", [
    (["run", "--bios", "/nonexistent/bios.bin"], "cannot read firmware"),
    (["run", "--bios", "{small}"], "a multiple of 64 KiB from 64 KiB to 16 MiB"),
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


def test_full_help_lists_every_command():
    for argv in (["--help"], ["-h", "boot"]):
        result = subprocess.run([sys.executable, "-m", "tinyvmm", *argv], capture_output=True)
        assert result.returncode == 0
        text = result.stdout.decode()
        for command in cli.COMMANDS:
            assert f"    {command} " in text, (argv, command)
    result = subprocess.run([sys.executable, "-m", "tinyvmm", "bogus"], capture_output=True)
    assert result.returncode == 2
    assert ("invalid choice: 'bogus' (choose from 'run', 'boot', 'bench', 'fw-cfg')"
            in result.stderr.decode())


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_one_commands_parser_parses_as_the_full_one(command):
    argv = {"run": ["run", "--bios", "x.bin", "--mem", "64M", "--trace", "io"],
            "boot": ["boot", "--stop-at-kernel", "--fw-cfg", "name=opt/a,string=b", "--stats"],
            "bench": ["bench", "--runs", "3", "--no-banner"],
            "fw-cfg": ["fw-cfg", "list", "--json", "--no-fw-cfg-dma"]}[command]
    alone, full = cli.build_parser(command).parse_args(argv), cli.build_parser().parse_args(argv)
    assert vars(alone) == vars(full)


@pytest.mark.parametrize("columns", [None, "50", "200", "0", "junk"])
@pytest.mark.parametrize("formatter", [argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter])
def test_help_is_wrapped_as_argparse_wraps_it(monkeypatch, columns, formatter):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)

    def help_text(parser_class):
        parser = parser_class(prog="x", description="word " * 60, formatter_class=formatter)
        parser.add_argument("--option", metavar="VALUE", help="word " * 40)
        parser.add_argument("file", nargs="+", help="word " * 10)
        return parser.format_help()
    assert help_text(cli.Parser) == help_text(argparse.ArgumentParser)


def test_boot_runs_under_python_S_as_bench_starts_it(tmp_path):
    """-S: no site-packages; the package is found through the PYTHONPATH bench sets."""
    from tinyvmm import bench
    result = subprocess.run(bench.TINYVMM + ["boot", "--help"],
                            capture_output=True, cwd=tmp_path, env=bench.child_env())
    assert result.returncode == 0, result.stderr.decode()
    assert "--stop-at-kernel" in result.stdout.decode()


# Modules a boot has no use for: heavy standard library ones, and those of site-packages
# (absent under -S) that only --symbols, gdb and crash reports use.
NOT_FOR_A_BOOT = ("dataclasses", "inspect", "typing", "pathlib", "runpy", "elftools", "capstone",
                  "tinyvmm.symbols", "tinyvmm.gdb.server", "tinyvmm.report", "tinyvmm.trace",
                  "tinyvmm.bench")


@pytest.mark.kvm
def test_boot_imports_only_what_it_uses(payload, initrd, tmp_path):
    from tinyvmm import bench
    timing = tmp_path / "timing.json"
    command = bench.TINYVMM[:1] + ["-X", "importtime"] + bench.TINYVMM[1:]
    result = subprocess.run(command + ["boot", "--kernel", str(payload), "--initrd", str(initrd),
                                       "--mem", "64M", "--serial", "none", "--stop-at-kernel",
                                       "--timing-json", str(timing)],
                            capture_output=True, cwd=tmp_path, env=bench.child_env(), timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert timing.exists()
    # -X importtime names every module the process imports, one per line
    imported = [line.rsplit("|", 1)[1].strip() for line in result.stderr.decode().splitlines()
                if line.startswith("import time:") and "|" in line]
    assert "tinyvmm.machine" in imported
    unwanted = [name for name in imported
                if any(name == m or name.startswith(m + ".") for m in NOT_FOR_A_BOOT)]
    assert not unwanted, f"a boot imported {unwanted}"
