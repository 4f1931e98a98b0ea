"""Command-line errors: each is caught before the guest starts, with a message and status 2."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from command_line import TINYVMM, start_tinyvmm, tinyvmm

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
    # paths that open but cannot be written as a stream: one line, status 2, not a traceback
    (["run", "--bios", "{ok}", "--serial", "file:/proc/self/mem"], "cannot write /proc/self/mem"),
    (["run", "--bios", "{ok}", "--serial", "none", "--debugcon", "file:/proc/version"],
     "cannot write /proc/version"),
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
    result = tinyvmm("run", "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for line in ("0    the guest reset", "3    the guest crashed", "4    --timeout", "130  interrupted"):
        assert line in text


def test_full_help_lists_every_command():
    for argv in (["--help"], ["-h", "boot"]):
        result = tinyvmm(*argv)
        assert result.returncode == 0
        text = result.stdout.decode()
        for command in cli.COMMANDS:
            assert f"    {command} " in text, (argv, command)
    result = tinyvmm("bogus")
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
                  "tinyvmm.debug.symbols", "tinyvmm.debug.gdb.server", "tinyvmm.debug.report",
                  "tinyvmm.debug.trace", "tinyvmm.bench")


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


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b""), "this one is 0 bytes"),
    (lambda p: p.write_bytes(bytes(100000)), "this one is 100000 bytes"),
    (lambda p: (p.touch(), __import__("os").truncate(p, 17 << 20)), "this one is 17825792 bytes"),
    (lambda p: (p.touch(), __import__("os").truncate(p, 64 << 30)), "this one is 68719476736 bytes"),
])
def test_firmware_size_rule(tmp_path, capsys, make, message):
    image = tmp_path / "fw.bin"
    make(image)
    assert cli.main(["run", "--bios", str(image)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "a multiple of 64 KiB from 64 KiB to 16 MiB" in err


def test_firmware_that_is_not_a_file_is_read_through_a_bound(capsys):
    assert cli.main(["run", "--bios", "/dev/zero"]) == cli.EXIT_USAGE
    assert "more than 16 MiB" in capsys.readouterr().err


def rom_image(size_blocks=2, signature=b"\x55\xaa", file_size=None, fix_checksum=True) -> bytes:
    image = bytearray(size_blocks * 512 if file_size is None else file_size)
    image[0:2] = signature
    image[2] = size_blocks
    if fix_checksum and size_blocks:
        image[size_blocks * 512 - 1] = -sum(image[:size_blocks * 512]) & 0xFF
    return bytes(image)


@pytest.mark.parametrize("image,message", [
    (rom_image(signature=b"MZ"), "no 55 AA signature"),
    (rom_image(size_blocks=0, file_size=1024), "its size byte (offset 2) is 0"),
    (rom_image(size_blocks=4, file_size=1024, fix_checksum=False), "size byte says 2048 bytes"),
    (b"\x55", "no 55 AA signature"),
    (rom_image(size_blocks=2, file_size=200 * 1024), "at most 192 KiB"),
])
def test_bad_option_roms_are_refused_before_the_guest_starts(tmp_path, capsys, image, message):
    rom = tmp_path / "bad.rom"
    rom.write_bytes(image)
    assert cli.main(["fw-cfg", "list", "--option-rom", str(rom)]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_option_rom_with_a_bad_checksum_is_a_warning(tmp_path, capsys):
    rom = tmp_path / "sloppy.rom"
    rom.write_bytes(rom_image(fix_checksum=False)[:-1] + b"\x01")
    assert cli.main(["fw-cfg", "list", "--option-rom", str(rom)]) == 0
    out, err = capsys.readouterr()
    assert "genroms/sloppy.rom" in out and "warning" in err and "checksum" in err
    twice = ["fw-cfg", "list", "--option-rom", str(rom), "--option-rom", str(rom)]
    assert cli.main(twice) == cli.EXIT_USAGE
    assert "two option ROMs are named" in capsys.readouterr().err


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, capsys):
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cli.main(["run", "--bios", str(fifo)]) == cli.EXIT_USAGE
    assert "is a FIFO" in capsys.readouterr().err
    assert cli.main(["fw-cfg", "list", "--option-rom", str(fifo)]) == cli.EXIT_USAGE
    assert "is a FIFO" in capsys.readouterr().err


# An --initrd alone boots the default kernel: where it is absent, that is what gets refused.
@pytest.mark.parametrize("option,make,message", [
    ("--kernel", lambda d: "/dev/zero", "kernel /dev/zero holds more than the guest's 64 MiB"),
    pytest.param("--initrd", lambda d: "/dev/zero",
                 "initrd /dev/zero holds more than the guest's 64 MiB", marks=pytest.mark.kernel),
    pytest.param("--initrd",
                 lambda d: (__import__("os").truncate(d / "big", 64 << 30), d / "big")[1],
                 "is 68719476736 bytes, more than the guest's 64 MiB", marks=pytest.mark.kernel),
    ("--kernel", lambda d: (__import__("os").truncate(d / "big", 6 << 30), d / "big")[1],
     "is 6442450944 bytes, more than the guest's 64 MiB"),
    pytest.param("--initrd", lambda d: (__import__("os").mkfifo(d / "fifo"), d / "fifo")[1],
                 "is a FIFO", marks=pytest.mark.kernel),
])
def test_kernel_and_initrd_are_bounded_before_they_are_read(tmp_path, capsys, option, make, message):
    """Each case finishes at once: sizes come from stat, other files are read through a bound."""
    (tmp_path / "big").touch()
    argv = ["boot", option, str(make(tmp_path)), "--mem", "64M"]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("source", ["/dev/zero", "{big}"])
def test_fw_cfg_files_are_bounded_by_guest_ram(tmp_path, capsys, source):
    big = tmp_path / "big"
    big.touch()
    __import__("os").truncate(big, 64 << 30)
    spec = f"name=opt/x,file={source.format(big=big)}"
    assert cli.main(["fw-cfg", "list", "--mem", "64M", "--fw-cfg", spec]) == cli.EXIT_USAGE
    assert "at most 67108864 bytes fit" in capsys.readouterr().err


@pytest.mark.kvm
def test_guest_ram_the_host_cannot_provide_is_one_line_and_status_1(tmp_path):
    """More RAM than the host can map: a host error, not a traceback."""
    with open("/proc/meminfo") as meminfo:
        host_kib = int(meminfo.readline().split()[1])
    size_gib = min(64, host_kib // (1 << 20) * 2 + 8)
    if size_gib * (1 << 20) <= host_kib * 1.5:
        pytest.skip("this host has too much memory to be refused 64 GiB of guest RAM")
    with open("/proc/sys/vm/overcommit_memory") as policy:
        if policy.read().strip() == "1":
            pytest.skip("vm.overcommit_memory is 1: the host promises any amount of memory")
    bios = tmp_path / "bios.bin"
    bios.write_bytes(b"\xf4" * 65536)
    result = tinyvmm("run", "--bios", str(bios), "--mem", f"{size_gib}G", "--timeout", "5",
                     text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("tinyvmm: the host could not provide") and \
        "Traceback" not in result.stderr


def run_into_closed_pipe(*argv):
    """Run tinyvmm with stdout into a pipe whose reader takes one line and leaves."""
    proc = start_tinyvmm(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def test_a_closed_stdout_ends_listing_quietly(monkeypatch, capsys):
    import os
    read_end, write_end = os.pipe()
    os.close(read_end)                          # nobody will ever read: every write is EPIPE
    with capsys.disabled():
        stdout = os.fdopen(write_end, "w")
        monkeypatch.setattr(sys, "stdout", stdout)
        assert cli.main(["fw-cfg", "list", "--json"]) == 0
        stdout.write("more")                    # stdout now leads to /dev/null
        stdout.flush()
        stdout.close()


@pytest.mark.kvm
def test_a_closed_stdout_ends_the_run_quietly(tmp_path):
    import os
    seabios = "/usr/share/seabios/bios.bin"
    if not os.path.exists(seabios):
        pytest.skip(f"needs {seabios} (Debian package seabios)")
    status, err = run_into_closed_pipe("run", "--bios", seabios, "--debugcon", "stdio",
                                       "--timeout", "60")
    assert status == 0 and "Traceback" not in err and "BufferError" not in err, err


def test_version_says_where_the_shipped_firmware_and_kernel_are():
    result = tinyvmm("--version", text=True)
    from tinyvmm import __version__, firmware
    assert result.returncode == 0 and result.stdout.startswith(f"tinyvmm {__version__}\n")
    assert firmware.DIRECTORY in result.stdout and "TINYVMM_KERNELS" in result.stdout


def test_a_bare_name_finds_the_shipped_image(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                      # no bios.bin here
    from tinyvmm import firmware
    assert firmware.resolve("bios.bin") == firmware.image_path("bios.bin")
    assert firmware.resolve("./bios.bin") == "./bios.bin"
    (tmp_path / "bios.bin").write_bytes(b"mine")
    assert firmware.resolve("bios.bin") == "bios.bin"    # a file here wins, as with QEMU
    (tmp_path / "bios.bin").unlink()
    assert cli.main(["fw-cfg", "list", "--option-rom", "linuxboot_dma.bin"]) == 0
    assert "genroms/linuxboot_dma.bin" in capsys.readouterr().out


def test_layout_prints_the_io_map():
    result = subprocess.run([sys.executable, "-m", "tinyvmm.layout"], capture_output=True, text=True)
    assert "I/O ports:" in result.stdout and "0x0cf8  0x0cff  pci_config" in result.stdout


def test_too_many_fw_cfg_files_say_how_many_fit(capsys):
    argv = ["fw-cfg", "list"] + [f"--fw-cfg=name=opt/x{i},string=y" for i in range(40)]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "40 --fw-cfg files and 0 option ROMs were given, but only 24 fit" in err


def test_an_installed_package_says_how_to_get_a_kernel(monkeypatch, tmp_path):
    from tinyvmm.boot import payload
    monkeypatch.delenv(payload.KERNELS_VARIABLE, raising=False)        # it would be named instead
    monkeypatch.setattr(payload, "REPO_ROOT", str(tmp_path))          # no kernels/ to build in
    monkeypatch.setattr(payload, "DEFAULT_KERNEL", str(tmp_path / "bzImage"))
    with pytest.raises(payload.PayloadError, match="give --kernel BZIMAGE, or set TINYVMM_KERNELS"):
        payload.load_payload(None, None, None, True, 64 << 20)


@pytest.mark.kvm
def test_a_usage_error_leaves_the_serial_file_alone_and_expect_ends_its_line(tmp_path):
    import socket

    from tinyvmm import firmware
    serial = tmp_path / "serial.txt"
    serial.write_text("the previous run\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = tinyvmm("run", "--bios", "bios.bin", "--serial", f"file:{serial}", "--gdb",
                         f"tcp::{busy.getsockname()[1]}", text=True)
    assert result.returncode == 2 and serial.read_text() == "the previous run\n"
    result = tinyvmm("run", "--bios", firmware.image_path("bios.bin"), "--debugcon", "stdio",
                     "--expect", "fw_cfg: DMA", "--timeout", "30")
    assert result.returncode == 0 and result.stdout.endswith(b"fw_cfg: DMA\n")


@pytest.mark.parametrize("argv,message", [
    (["run", "--bios", "bios.bin", "--expect", "a" * 2049], "the text to wait for must be 1 to 2048 bytes"),
    (["run", "--bios", "bios.bin", "--expect", ""], "the text to wait for must be 1 to 2048 bytes"),
    (["bench", "--json", "/sys/kernel/x.json"], "--json /sys/kernel/x.json:"),
    (["fw-cfg", "list", "--fw-cfg-mmio", "0x1000"], "outside the hole below 4 GiB (0x100000-"),
])
def test_more_usage_errors(capsys, argv, message):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "MiB of RAM" not in err


def test_bytes_that_are_not_utf8_reach_the_kernel_command_line(payload):
    from tinyvmm.boot import payload as loader
    odd = os.fsdecode(b"console=ttyS0 name=\xff")
    plan = loader.load_payload(str(payload), None, odd, True, 64 << 20, append_as_is=True).plan
    assert plan.cmdline == b"console=ttyS0 name=\xff\0"


@pytest.mark.kvm
def test_console_files_that_are_not_regular_files(tmp_path):
    import os

    from tinyvmm import firmware
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    bios = firmware.image_path("bios.bin")
    result = tinyvmm("run", "--bios", bios, "--serial", f"file:{fifo}", text=True, timeout=30)
    assert result.returncode == 2 and "a FIFO with no reader" in result.stderr
    result = tinyvmm("run", "--bios", bios, "--debugcon", "file:/dev/null", "--timeout", "30",
                     text=True, timeout=60)
    assert result.returncode == 5 and "Traceback" not in result.stderr


def test_a_closed_stdout_ends_version_quietly():
    proc = start_tinyvmm("--version", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                         # gone before tinyvmm writes
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err, err


@pytest.mark.parametrize("argv,what", [
    (["--serial", "file:/dev/full"], "serial"),
    (["--debugcon", "file:/dev/full"], "debugcon"),
])
@pytest.mark.kvm
def test_a_console_that_cannot_be_written_is_one_line_and_status_1(argv, what):
    from guest_build import build_guest
    hello = build_guest("hello").bin_path                  # prints on COM1 and port 0x402
    result = tinyvmm("run", "--bios", str(hello), "--timeout", "30", *argv, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"tinyvmm: cannot write the {what} output: No space left on device\n"


@pytest.mark.kvm
def test_a_usage_error_leaves_the_trace_file_as_it_was(tmp_path):
    trace = tmp_path / "trace.txt"
    trace.write_text("the previous run\n")
    result = tinyvmm("boot", "--kernel", "/nonexistent", "--trace", "io",
                     "--trace-file", str(trace))
    assert result.returncode == 2 and trace.read_text() == "the previous run\n"
    result = tinyvmm("run", "--bios", "bios.bin", "--trace", "exits,milestones", "--trace-file",
                     str(trace))
    assert result.returncode == 5, result.stderr
    lines = trace.read_text().splitlines()
    assert "the previous run" not in lines and "firmware start" in lines[0]
    assert any(line.endswith(" INTR") for line in lines)   # the halt check's signal, an exit


def test_fw_cfg_list_refuses_boot_options_without_a_kernel(capsys):
    assert cli.main(["fw-cfg", "list", "--initrd", "/tmp"]) == cli.EXIT_USAGE
    assert "--initrd without --kernel" in capsys.readouterr().err


def test_trace_given_twice_adds_up():
    args = cli.build_parser("run").parse_args(["run", "--bios", "x", "--trace", "milestones",
                                               "--trace", "fw_cfg,steps=5"])
    assert args.trace.categories == {"milestones", "fw_cfg"} and args.trace.steps.limit == 5
    with pytest.raises(SystemExit):
        cli.build_parser("run").parse_args(["run", "--bios", "x", "--trace", "steps",
                                            "--trace", "steps=5"])


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("command", ["script", "module"])
def test_an_early_interrupt_ends_with_status_130_and_no_traceback(tmp_path, command, signum):
    """From the moment tinyvmm's own code runs: while Python loads it, while it reads files,
    in the run loop."""
    script = Path(sys.executable).parent / "tinyvmm"
    argv = [str(script)] if command == "script" else TINYVMM
    if command == "script" and not script.exists():
        pytest.fail(f"{script} is missing: make setup installs the console script")
    for delay in (0.12, 0.25, 0.6):
        proc = subprocess.Popen(argv + ["boot", "--serial", "none", "--timeout", "60"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and b"Traceback" not in err, (delay, proc.returncode, err[-2000:])
