"""`tinyvmm bench`: the table and JSON come from real boots; QEMU's trace parsing; the plot;
the systems `--firmware` adds and the command lines each system runs."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from command_line import start_tinyvmm, tinyvmm
from elf_files import elf64, pvh_note

from tinyvmm import bench, cli
from tinyvmm.bench import firmware, payloads, plot
from tinyvmm.bench import qemu as bench_qemu
from tinyvmm.boot import payload as bench_payload
from tinyvmm.boot.marks import EFI_STUB_LINE

PHASE_KEYS = {"vmm_startup_s", "bios_startup_s", "kernel_setup_s", "total_s"}


def run_bench(tmp_path, *extra, payload="test"):
    """The table and the JSON of one `tinyvmm bench` of `payload`, with that payload's "runs" and
    "summary" (and "files", "memcpy_s") at the top of the JSON."""
    out = tmp_path / "bench.json"
    result = tinyvmm("bench", "--runs", "1", "--no-banner", "--payload", payload, "--json", str(out),
                     "--plot", str(tmp_path / "bench.svg"), *extra, timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    data = json.loads(out.read_text())
    assert list(data["payloads"]) == [payload]
    assert {run["payload"] for run in data["runs"]} == {payload}
    return result.stdout.decode(), {**data, **data["payloads"][payload]}


@pytest.mark.kvm
@pytest.mark.kernel
def test_bench_table_and_json_from_real_boots(tmp_path):
    table, data = run_bench(tmp_path)
    for row in ("VMM startup", "BIOS startup", "kernel setup", "total"):
        assert f"| {row} " in table
    firmware_boots = ["tinyvmm-dma", "tinyvmm-legacy"]
    pvh = os.path.isfile(bench_payload.DEFAULT_VMLINUX)
    systems = firmware_boots + ["tinyvmm-direct64"] + (
        ["tinyvmm-pvh", "tinyvmm-pvh-dma", "tinyvmm-pvh-legacy"] if pvh else [])
    assert list(data["summary"]) == systems
    assert [run["system"] for run in data["runs"]] == systems
    summary = data["summary"]
    dma, legacy = summary["tinyvmm-dma"], summary["tinyvmm-legacy"]
    for system in firmware_boots + (["tinyvmm-pvh-dma", "tinyvmm-pvh-legacy"] if pvh else []):
        entry = summary[system]
        assert PHASE_KEYS <= set(entry), system
        assert entry["total_s"] == pytest.approx(
            entry["vmm_startup_s"] + entry["bios_startup_s"] + entry["kernel_setup_s"])
        assert all(entry[key] > 0 for key in PHASE_KEYS)
    assert dma["kernel_setup_s"] < legacy["kernel_setup_s"]
    # the legacy ROM moves the kernel by port I/O, the DMA ROM by DMA
    assert legacy["setup"]["pio_bytes"] > 900_000 and legacy["setup"]["dma_bytes"] == 0
    assert dma["setup"]["dma_bytes"] > 900_000 and dma["setup"]["pio_bytes"] < 4096
    # a direct boot starts in the kernel: VMM startup is all there is before it
    for system in ["tinyvmm-direct64"] + (["tinyvmm-pvh"] if pvh else []):
        entry = summary[system]
        assert entry["total_s"] == entry["vmm_startup_s"] > 0
        assert "bios_startup_s" not in entry and "setup" not in entry
    if pvh:
        image = os.path.getsize(bench_payload.DEFAULT_VMLINUX) // 2      # most of the file loads
        assert summary["tinyvmm-pvh-legacy"]["setup"]["pio_bytes"] > image
        assert summary["tinyvmm-pvh-dma"]["setup"]["dma_bytes"] > image
        assert summary["tinyvmm-pvh-dma"]["setup"]["pio_bytes"] < 4096
    assert "<svg" in (tmp_path / "bench.svg").read_text()


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.qemu
@pytest.mark.slow
def test_bench_beside_qemu(tmp_path):
    missing = bench_qemu.qemu_missing()
    if missing:
        pytest.skip(missing)
    table, data = run_bench(tmp_path, "--vs-qemu")
    pvh = os.path.isfile(bench_payload.DEFAULT_VMLINUX)
    qemu_systems = ["qemu-seabios-dma", "qemu-seabios-legacy", "qemu-qboot"]
    qemu_systems += ["qemu-qboot-pvh"] if pvh else []
    assert list(data["summary"])[-len(qemu_systems):] == qemu_systems
    for system in qemu_systems:
        assert PHASE_KEYS <= set(data["summary"][system]), system
    qemu = data["summary"]
    assert qemu["qemu-seabios-dma"]["kernel_setup_s"] < qemu["qemu-seabios-legacy"]["kernel_setup_s"]
    assert "tinyvmm DMA total / QEMU+SeaBIOS DMA total" in table


def test_qemu_trace_parsing():
    start = 1_000 * 10**9
    log = "\n".join([
        "7@1000.050000:kvm_vcpu_ioctl cpu_index 0, type 0xaea3, arg (nil)",
        "7@1000.080000:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)",
        "7@1000.090000:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)",
        "7@1000.100000:fw_cfg_select 0x1 key 0x000f 'max_cpus', ret: 1",     # the BIOS, not a loader
        "7@1000.200000:fw_cfg_select 0x1 key 0x0016 'setup_addr', ret: 1",
        "7@1000.300000:fw_cfg_select 0x1 key 0x0011 'kernel_data', ret: 1",
        "7@1000.305000:fw_cfg_select 0x1 key 0x0015 'cmdline_data', ret: 1",
        "7@1000.400000:fw_cfg_select 0x1 key 0x0019 'file_dir', ret: 1",
    ])
    phases = bench_qemu.parse_trace(log, start)
    assert phases["vmm_startup_s"] == pytest.approx(0.080)
    assert phases["bios_startup_s"] == pytest.approx(0.120)
    assert phases["kernel_setup_s"] == pytest.approx(0.105)
    assert phases["total_s"] == pytest.approx(0.305)
    with pytest.raises(RuntimeError):
        bench_qemu.parse_trace("garbage", start)


def test_phases_from_a_timeline():
    timeline = {"start_ns": 1_000, "outcome": "EXPECTED", "marks": [
        {"event": "milestone 0xf5:1", "time_ns": 2_000, "exits": 1, "pio_bytes": 1, "dma_bytes": 0},
        {"event": bench.DO_BOOT, "time_ns": 5_000_000, "exits": 400, "pio_bytes": 500, "dma_bytes": 64},
        {"event": bench.KERNEL_JUMP, "time_ns": 6_000_000, "exits": 410, "pio_bytes": 550,
         "dma_bytes": 10_064},
        {"event": "banner", "time_ns": 9_000_000, "exits": 900, "pio_bytes": 900, "dma_bytes": 10_064},
    ]}
    phases = bench.phases_from_timeline(timeline, start_ns=0)
    assert phases["vmm_startup_s"] == pytest.approx(1e-6)
    assert phases["kernel_setup_s"] == pytest.approx(0.001)
    assert phases["banner_s"] == pytest.approx(0.009)
    assert phases["setup"] == {"exits": 10, "pio_bytes": 50, "dma_bytes": 10_000}
    timeline["marks"] = timeline["marks"][:1]
    with pytest.raises(bench.BenchError, match="never reached"):
        bench.phases_from_timeline(timeline, start_ns=0)


def test_a_boot_that_did_not_load_its_payload_is_not_timed():
    marks = [
        {"event": bench.DO_BOOT, "time_ns": 5_000, "exits": 4, "pio_bytes": 500, "dma_bytes": 64},
        {"event": bench.KERNEL_JUMP, "time_ns": 6_000, "exits": 9, "pio_bytes": 550,
         "dma_bytes": 10_064, "dma_errors": 0}]
    timeline = {"start_ns": 1_000, "outcome": "STOPPED", "marks": marks, "payload_bytes": 10_050}
    assert bench.phases_from_timeline(timeline, start_ns=0)["setup"]["dma_bytes"] == 10_000
    timeline["payload_bytes"] = 10_051          # one byte of the kernel or initrd never moved
    with pytest.raises(bench.BenchError, match="moved 10050 bytes of the payload's 10051"):
        bench.phases_from_timeline(timeline, start_ns=0)
    timeline["payload_bytes"], marks[1]["dma_errors"] = 0, 1    # qboot's DMA beyond RAM, refused
    with pytest.raises(bench.BenchError, match="1 fw_cfg DMA transfers failed"):
        bench.phases_from_timeline(timeline, start_ns=0)


def test_svg_plot_has_a_bar_per_system():
    summary = {"a": {"vmm_startup_s": 0.1, "bios_startup_s": 0.2, "kernel_setup_s": 0.3, "total_s": 0.6},
               "b": {"vmm_startup_s": 0.1, "bios_startup_s": 0.1, "kernel_setup_s": 0.1, "total_s": 0.3}}
    text = plot.svg(summary)
    assert text.count("<rect") == 2 * 3 + 3         # three phases per bar, plus the legend
    assert ">a<" in text and ">b<" in text and "0.600 s" in text
    with pytest.raises(ValueError):
        plot.plot_phases(summary, "plot.gif")


def test_boots_find_this_package_first_on_pythonpath():
    """Bench starts `python -S -m tinyvmm boot`; PYTHONPATH must lead to this very package."""
    import tinyvmm
    env = bench.child_env({"PYTHONPATH": "/elsewhere", "OTHER": "kept"})
    first, *libraries, rest = env["PYTHONPATH"].split(os.pathsep)
    assert (Path(first) / "tinyvmm").resolve() == Path(tinyvmm.__file__).parent.resolve()
    assert rest == "/elsewhere" and env["OTHER"] == "kept"
    assert bench.child_env({})["PYTHONPATH"].split(os.pathsep)[0] == first
    # Crash reports inside the bench keep their disassembly: capstone is found under -S.
    check = subprocess.run([sys.executable, "-S", "-c", "import capstone, elftools"],
                           env=bench.child_env({}), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_summary_keys_counters_and_milliseconds():
    runs = [{"system": "a", "vmm_startup_s": v, "bios_startup_s": 0.01, "kernel_setup_s": 0.0012,
             "total_s": 0.2, "banner_s": None, "bios": {"exits": e, "pio_bytes": 1, "dma_bytes": 2},
             "setup": {"exits": 10, "pio_bytes": 3, "dma_bytes": 4}}
            for v, e in ((0.05, 101), (0.06, 102))]
    summary = bench.summarize(runs)["a"]
    assert {"vmm_startup_min_s", "vmm_startup_max_s", "kernel_setup_min_s"} <= set(summary)
    assert not any("_min_startup" in key or "_max_setup" in key for key in summary)
    assert summary["bios"]["exits"] == 101 and isinstance(summary["bios"]["exits"], int)
    table = bench.format_table({"a": summary}, 2)
    assert "1.2 ms (1.2-1.2)" in table and "55.0 ms (50.0-60.0)" in table


@pytest.mark.parametrize("option,value,message", [
    ("--plot", "x.txt", "must end in .svg or .png"),
    ("--json", "/nonexistent/x.json", "cannot write in /nonexistent"),
    ("--plot", "/nonexistent/p.svg", "cannot write in /nonexistent"),
    ("--initrd", "/nonexistent", "--initrd goes with --kernel"),   # not silently ignored
])
def test_bench_outputs_are_checked_before_the_first_boot(option, value, message):
    started = time.monotonic()
    result = tinyvmm("bench", option, value, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr and "[1/" not in result.stderr
    assert time.monotonic() - started < 10


def test_the_svg_has_an_axis_and_values():
    summary = {"tinyvmm-dma": {"vmm_startup_s": 0.03, "bios_startup_s": 0.012,
                               "kernel_setup_s": 0.0008, "total_s": 0.0428}}
    text = plot.svg(summary)
    assert ">seconds<" in text and ">0.01<" in text                    # axis and its ticks
    assert "42.8 ms" in text and "30.0 ms" in text                     # total, a phase on its bar


@pytest.mark.kvm
@pytest.mark.kernel
def test_bench_with_qboot_from_real_boots(tmp_path):
    missing = bench.firmware_missing(["qboot"])
    if missing:
        pytest.skip(missing)
    table, data = run_bench(tmp_path, "--firmware", "qboot")
    first = [run["system"] for run in data["runs"]][:3]
    assert first == ["tinyvmm-dma", "tinyvmm-legacy", "tinyvmm-direct64"]
    assert data["runs"][-1]["system"] == "tinyvmm-qboot"
    qboot = data["summary"]["tinyvmm-qboot"]
    assert PHASE_KEYS <= set(qboot) and all(qboot[key] > 0 for key in PHASE_KEYS)
    assert qboot["setup"]["dma_bytes"] > 900_000
    assert f"qboot columns: {firmware.QBOOT}" in table


def bench_args(*argv):
    """The BenchOptions of `tinyvmm bench ARGV` (the vmlinux as given)."""
    from tinyvmm.cli.commands import bench_options
    return bench_options(cli.build_parser("bench").parse_args(["bench", *argv]))


def test_firmware_option_is_repeatable_and_comma_separated():
    assert bench_args().firmware == ()
    assert bench_args("--firmware", "qboot").firmware == ("qboot",)
    assert bench_args("--firmware", "seabios,qboot").firmware == ("seabios", "qboot")
    assert bench_args("--firmware", "qboot", "--firmware", "seabios").firmware == ("qboot", "seabios")
    assert bench_args("--firmware", " seabios , qboot ").firmware == ("seabios", "qboot")


@pytest.mark.parametrize("value", ["uefi", "seabios,edk2", ",", ""])
def test_unknown_firmware_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exit:
        bench_args("--firmware", value)
    assert exit.value.code == cli.EXIT_USAGE
    assert "the firmware must be seabios or qboot or ovmf" in capsys.readouterr().err


def test_firmware_systems_come_in_table_order():
    assert bench.firmware_systems([]) == {}
    assert list(bench.firmware_systems(["ovmf", "qboot", "seabios", "qboot"])) == [
        "tinyvmm-seabios-dma", "tinyvmm-seabios-legacy", "tinyvmm-qboot", "tinyvmm-ovmf-dma",
        "tinyvmm-ovmf-legacy"]


def test_the_ovmf_rows_boot_a_kernel_with_an_efi_stub():
    # the test kernel has none: the test payload's OVMF rows boot the pc kernel beside it
    test = bench.efi_kernel(bench_args())
    assert test is not None
    kernel, initrd = test
    assert Path(kernel).parent.name == "pc" and Path(kernel).name == "bzImage"
    assert Path(initrd) == Path(kernel).with_name("initramfs.cpio")
    systems = bench.firmware_systems(["ovmf", "qboot"], test)
    assert systems["tinyvmm-ovmf-dma"][:4] == ["--kernel", kernel, "--initrd", initrd]
    assert systems["tinyvmm-qboot"][:1] == ["--bios"]
    assert bench.efi_kernel(bench_args("--kernel", "bz")) is None     # a given kernel's own


def test_the_ovmf_rows_end_kernel_setup_at_the_efi_stubs_first_line():
    proc = subprocess.Popen(["sh", "-c", "printf 'BdsDxe: starting\\nEFI stub: Loaded initrd\\n'; "
                             "sleep 0.3; printf 'Linux version 6.1\\n'; sleep 5"],
                            stdout=subprocess.PIPE)
    lines: dict = {}
    try:
        banner = bench_qemu._wait_for_banner(proc, time.monotonic(), 10, None, lines)
    finally:
        proc.kill()
        proc.wait()
    assert banner is not None and 0 < lines[EFI_STUB_LINE] < banner
    assert banner - lines[EFI_STUB_LINE] > 0.2


def boot_command(system):
    argv = {**bench.SYSTEMS, **bench.firmware_systems(["seabios", "qboot", "ovmf"])}[system]
    args = bench_args("--no-banner", "--mem", "128M", "--kernel", "bz", "--append", "console=ttyS0")
    command = bench.boot_command(args, argv, Path("t.json"), Path("s.txt"))
    assert command[:len(bench.TINYVMM) + 1] == bench.TINYVMM + ["boot"]
    assert command[-4:] == ["--kernel", "bz", "--append", "console=ttyS0"]
    assert command[command.index("--stop-at") + 1] == "kernel" and "--expect" not in command
    assert command[command.index("--mem") + 1] == "128"
    return command[len(bench.TINYVMM) + 1:-4]


def option(command, name):
    return command[command.index(name) + 1] if name in command else None


def test_boot_command_of_each_system():
    dma, legacy = boot_command("tinyvmm-dma"), boot_command("tinyvmm-legacy")
    assert "--bios" not in dma and "--no-fw-cfg-dma" not in dma
    assert "--bios" not in legacy and "--no-fw-cfg-dma" in legacy
    seabios_dma, seabios_legacy = boot_command("tinyvmm-seabios-dma"), boot_command("tinyvmm-seabios-legacy")
    assert option(seabios_dma, "--bios") == "/usr/share/seabios/bios.bin"
    assert option(seabios_dma, "--option-rom") == "/usr/share/qemu/linuxboot_dma.bin"
    assert "--no-fw-cfg-dma" not in seabios_dma
    assert option(seabios_legacy, "--bios") == "/usr/share/seabios/bios.bin"
    assert option(seabios_legacy, "--option-rom") == "/usr/share/qemu/linuxboot.bin"
    assert "--no-fw-cfg-dma" in seabios_legacy
    for system in ("tinyvmm-ovmf-dma", "tinyvmm-ovmf-legacy"):
        ovmf = boot_command(system)
        assert option(ovmf, "--bios") == firmware.OVMF_CODE == "/usr/share/OVMF/OVMF_CODE.fd"
        assert option(ovmf, "--software-cpu") == "auto"
        assert ("--no-fw-cfg-dma" in ovmf) == system.endswith("legacy")
    qboot = boot_command("tinyvmm-qboot")
    assert option(qboot, "--bios") == "/usr/share/qemu/qboot.rom"
    assert "--option-rom" not in qboot and "--no-fw-cfg-dma" not in qboot
    # to the banner too, a run ends by --stop-at, never by --expect, which would give the
    # firmware a debug console
    banner = bench.boot_command(bench_args(), [], Path("t.json"), Path("s.txt"))
    assert option(banner, "--stop-at") == "banner" and "--expect" not in banner
    # every command parses as `tinyvmm boot`
    for system in ("tinyvmm-dma", "tinyvmm-legacy", "tinyvmm-seabios-dma", "tinyvmm-seabios-legacy",
                   "tinyvmm-qboot"):
        cli.build_parser("boot").parse_args(["boot", *boot_command(system)])


def test_qemu_runs_the_same_firmware_files():
    args = bench_args()
    commands = {system: bench_qemu.qemu_command(system, args, "console=ttyS0", "bz", "initrd",
                                                Path("q.log"))
                for system in bench_qemu.SYSTEMS}
    assert option(commands["qemu-seabios-dma"], "-bios") == firmware.SEABIOS == "/usr/share/seabios/bios.bin"
    assert option(commands["qemu-seabios-legacy"], "-bios") == firmware.SEABIOS
    assert option(commands["qemu-seabios-legacy"], "-global") == "fw_cfg_io.dma_enabled=off"
    assert "-global" not in commands["qemu-seabios-dma"]
    assert option(commands["qemu-qboot"], "-bios") == firmware.QBOOT
    assert option(commands["qemu-ovmf-dma"], "-bios") == firmware.OVMF_CODE
    assert option(commands["qemu-ovmf-legacy"], "-global") == "fw_cfg_io.dma_enabled=off"
    for command in commands.values():
        assert option(command, "-kernel") == "bz" and option(command, "-initrd") == "initrd"
        assert command.count("-bios") == 1


def test_tinyvmm_run_passes_the_system_boot_arguments(tmp_path, monkeypatch):
    seen = []

    def run(command, **kwargs):
        seen.append(command)
        timing = Path(option(command, "--timing-json"))
        timing.write_text(json.dumps({"start_ns": 0, "outcome": "STOPPED", "marks": [
            {"event": bench.DO_BOOT, "time_ns": 10**9, "exits": 1, "pio_bytes": 0, "dma_bytes": 0},
            {"event": bench.KERNEL_JUMP, "time_ns": 2 * 10**9, "exits": 2, "pio_bytes": 0,
             "dma_bytes": 0}]}))
        return subprocess.CompletedProcess(command, 0, "", "")
    monkeypatch.setattr(bench.subprocess, "run", run)
    argv = bench.FIRMWARE["qboot"]["tinyvmm-qboot"]
    phases = bench.tinyvmm_run(bench_args("--no-banner"), "tinyvmm-qboot", argv, tmp_path, 0)
    assert phases["bios_startup_s"] == pytest.approx(1) and phases["kernel_setup_s"] == pytest.approx(1)
    assert option(seen[0], "--bios") == firmware.QBOOT
    assert "tinyvmm-qboot" in option(seen[0], "--timing-json")


def fake_phases(total):
    return {"vmm_startup_s": 0.1 * total, "bios_startup_s": 0.8 * total, "kernel_setup_s": 0.1 * total,
            "total_s": total, "banner_s": None}


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    """Bench with its boots replaced: tinyvmm runs take 1 s, QEMU runs 2 s. Returns the list
    of (system, boot arguments or None for QEMU) in the order they ran, and the vmlinux each
    qemu_runner was given."""
    order, vmlinuxes = [], []

    def tinyvmm_run(args, system, boot_args, workdir, index):
        order.append((system, boot_args))
        return fake_phases(1.0)

    def qemu_runner(args, vmlinux=None):
        vmlinuxes.append(vmlinux)
        return lambda system, workdir, index: order.append((system, None)) or fake_phases(2.0)
    monkeypatch.setattr(bench, "tinyvmm_run", tinyvmm_run)
    monkeypatch.setattr(bench, "qemu_runner", qemu_runner)
    monkeypatch.setattr(bench, "SETTLE_S", 0)
    monkeypatch.setattr(bench.compileall, "compile_dir", lambda *a, **k: True)
    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    return order, vmlinuxes


def test_bench_interleaves_the_firmware_systems(fake_runs, capsys):
    order, _ = fake_runs
    args = bench_args("--runs", "2", "--no-banner", "--vs-qemu", "--firmware", "qboot,seabios")
    assert bench.cmd_bench(args) == 0
    systems = ["tinyvmm-dma", "tinyvmm-legacy", "tinyvmm-direct64", "tinyvmm-seabios-dma",
               "tinyvmm-seabios-legacy", "tinyvmm-qboot", "qemu-seabios-dma", "qemu-seabios-legacy",
               "qemu-qboot"]
    assert [system for system, _ in order] == systems * 2
    assert dict(order)["tinyvmm-seabios-legacy"] == bench.FIRMWARE["seabios"]["tinyvmm-seabios-legacy"]
    out, err = capsys.readouterr()
    assert [cell.strip() for cell in out.splitlines()[2].split("|")[2:-1]] == systems
    assert "[18/18] qemu-qboot run 2 ... total 2.000 s" in err
    assert "tinyvmm+qboot total / QEMU+qboot total: 0.50" in out


def test_bench_without_firmware_runs_today_systems(fake_runs):
    order, _ = fake_runs
    assert bench.cmd_bench(bench_args("--runs", "1")) == 0
    assert [system for system, _ in order] == ["tinyvmm-dma", "tinyvmm-legacy", "tinyvmm-direct64"]


def test_a_vmlinux_adds_the_pvh_rows(fake_runs):
    order, vmlinuxes = fake_runs
    options = bench_args("--runs", "1", "--vs-qemu", "--initrd", "rd", "--vmlinux", "vm")
    assert bench.cmd_bench(options) == 0
    assert [system for system, _ in order] == [
        "tinyvmm-dma", "tinyvmm-legacy", "tinyvmm-direct64", "tinyvmm-pvh", "tinyvmm-pvh-dma",
        "tinyvmm-pvh-legacy", "qemu-seabios-dma", "qemu-seabios-legacy", "qemu-qboot",
        "qemu-qboot-pvh"]
    assert vmlinuxes == ["vm"]
    boot_args = dict(order)
    assert boot_args["tinyvmm-pvh"] == ["--kernel", "vm", "--initrd", "rd", "--boot", "direct"]
    assert boot_args["tinyvmm-pvh-legacy"][-1] == "--no-fw-cfg-dma"


def test_missing_firmware_is_a_usage_error_before_any_run(tmp_path, monkeypatch, capsys):
    absent = str(tmp_path / "bios.bin")
    monkeypatch.setitem(bench.FIRMWARE_FILES, "seabios", {absent: "seabios"})
    monkeypatch.setattr(bench, "cmd_bench", lambda args: pytest.fail("a run started"))
    assert cli.main(["bench", "--firmware", "seabios", "--runs", "1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--firmware seabios: {absent} not found (Debian package seabios)" in err
    assert "Traceback" not in err


def test_missing_firmware_files_are_named_with_their_package(tmp_path, monkeypatch):
    present, absent = tmp_path / "qboot.rom", str(tmp_path / "linuxboot.bin")
    present.write_bytes(bytes(65536))
    monkeypatch.setitem(bench.FIRMWARE_FILES, "qboot", {str(present): "qemu-system-data"})
    monkeypatch.setitem(bench.FIRMWARE_FILES, "seabios", {absent: "qemu-system-data"})
    assert bench.firmware_missing([]) is None
    assert bench.firmware_missing(["qboot"]) is None
    assert bench.firmware_missing(["qboot", "seabios"]) == (
        f"--firmware seabios: {absent} not found (Debian package qemu-system-data)")
    monkeypatch.setattr(bench_qemu.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert bench_qemu.qemu_missing() == f"{absent} not found (Debian package qemu-system-data)"


def test_comparisons_of_the_firmware_systems():
    summary = {"tinyvmm-dma": {"total_s": 0.05, "bios_startup_s": 0.01, "vmm_startup_s": 0.03},
               "tinyvmm-seabios-dma": {"total_s": 3.5, "bios_startup_s": 3.4, "kernel_setup_s": 0.002},
               "tinyvmm-seabios-legacy": {"total_s": 3.5, "kernel_setup_s": 0.04},
               "tinyvmm-qboot": {"total_s": 0.05},
               "qemu-seabios-dma": {"total_s": 7.0, "bios_startup_s": 6.8, "vmm_startup_s": 0.06},
               "qemu-qboot": {"total_s": 0.2, "bios_startup_s": 0.1}}
    lines = bench.comparisons(summary)
    assert "tinyvmm+SeaBIOS BIOS startup / QEMU+SeaBIOS: 0.50" in lines
    assert "tinyvmm+SeaBIOS DMA total / QEMU+SeaBIOS DMA total: 0.50" in lines
    assert "tinyvmm+qboot total / QEMU+qboot total: 0.25" in lines
    assert "tinyvmm+SeaBIOS kernel setup, legacy / DMA: 20.00" in lines
    assert "tinyvmm DMA total / QEMU+qboot total: 0.25" in lines
    # only where both sides were measured
    lines = bench.comparisons({key: summary[key] for key in ("tinyvmm-dma", "tinyvmm-seabios-dma",
                                                             "tinyvmm-qboot")})
    assert lines == []
    assert bench.firmware_notes({"tinyvmm-dma": {}}) == []
    notes = bench.firmware_notes(summary)
    assert any("/usr/share/seabios/bios.bin" in note and "linuxboot_dma.bin" in note for note in notes)
    assert any("/usr/share/qemu/qboot.rom" in note for note in notes)


@pytest.mark.kvm
@pytest.mark.kernel
def test_sigterm_stops_the_bench_its_child_and_its_files():
    import glob
    import signal
    import tempfile
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tinyvmm-bench-*")))
    proc = start_tinyvmm("bench", "--runs", "1", "--payload", "test", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    progress = ""
    while "] tinyvmm-dma run 1" not in progress:
        char = proc.stderr.read(1)
        assert char, f"the bench ended before its first run: {progress}"
        progress += char
    time.sleep(1.5)                                      # the first boot is under way
    workdirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "tinyvmm-bench-*"))) - before
    children = [p for p in os.listdir("/proc") if p.isdigit() and _mentions(p, workdirs)]
    assert children, "a tinyvmm boot child should be running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err and "bench interrupted" in err
    time.sleep(0.5)
    assert not [p for p in children if os.path.exists(f"/proc/{p}")], "the child was left running"
    assert not any(os.path.exists(d) for d in workdirs), "the bench's files were left behind"


def _mentions(pid: str, workdirs) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(d in command for d in workdirs)


def test_an_invalid_boot_is_shown_and_left_out_of_every_figure(fake_runs, monkeypatch, capsys,
                                                               tmp_path_factory):
    calls = []

    def tinyvmm_run(options, system, boot_args, workdir, index):
        calls.append(system)
        if system == "tinyvmm-legacy" and index == 0:
            raise bench.BenchError("not a valid boot: the firmware moved 10 bytes of the payload's 99")
        return fake_phases(2.0 if system == "tinyvmm-legacy" else 1.0)
    monkeypatch.setattr(bench, "tinyvmm_run", tinyvmm_run)
    out_json = tmp_path_factory.mktemp("results") / "bench.json"   # the bench removes its workdir
    assert bench.cmd_bench(bench_args("--runs", "2", "--json", str(out_json))) == 1
    out, err = capsys.readouterr()
    assert "invalid, not timed: not a valid boot" in err
    assert "1 of 6 boots were invalid" in err
    row = next(line for line in out.splitlines() if line.startswith("| invalid runs"))
    assert [cell.strip() for cell in row.split("|")[2:-1]] == ["0", "1", "0"]
    data = json.loads(out_json.read_text())
    summary = data["payloads"]["test"]["summary"]
    assert summary["tinyvmm-legacy"]["invalid"] == 1
    assert summary["tinyvmm-legacy"]["total_s"] == 2.0     # the valid run alone
    assert [run for run in data["runs"] if "invalid" in run] == [
        {"payload": "test", "system": "tinyvmm-legacy", "run": 0,
         "invalid": "not a valid boot: the firmware moved 10 bytes of the payload's 99"}]


DISTRO = None
try:
    DISTRO = payloads.find_distro()
except LookupError as exc:
    DISTRO_MISSING = str(exc)


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.skipif(DISTRO is None, reason=f"--payload distro: {DISTRO is None and DISTRO_MISSING}")
def test_bench_distro_payload_from_real_boots(tmp_path):
    table, data = run_bench(tmp_path, payload="distro")
    kernel, initrd = DISTRO
    size = os.path.getsize(kernel) + os.path.getsize(initrd)
    assert data["files"]["kernel"] == {"path": kernel, "bytes": os.path.getsize(kernel)}
    assert data["files"]["initrd"]["bytes"] == os.path.getsize(initrd)
    # the PVH rows boot the vmlinux extracted from Debian's bzImage (XZ)
    assert list(data["summary"]) == ["tinyvmm-dma", "tinyvmm-legacy", "tinyvmm-direct64",
                                     "tinyvmm-pvh", "tinyvmm-pvh-dma", "tinyvmm-pvh-legacy"]
    assert data["files"]["vmlinux"]["bytes"] > os.path.getsize(kernel) * 3
    assert data["summary"]["tinyvmm-pvh-dma"]["setup"]["dma_bytes"] > os.path.getsize(initrd)
    dma, legacy = data["summary"]["tinyvmm-dma"], data["summary"]["tinyvmm-legacy"]
    # every byte of the distribution's payload moved: by DMA with the DMA ROM, by ports without
    assert dma["setup"]["dma_bytes"] >= size and dma["setup"]["pio_bytes"] < 4096
    assert legacy["setup"]["pio_bytes"] >= size
    assert 0 < data["memcpy_s"]["tinyvmm-dma"] < dma["kernel_setup_s"] < legacy["kernel_setup_s"]
    assert table.startswith(f"payload distro: {os.path.basename(kernel)} (")
    assert "each boot to the kernel's entry" in table.splitlines()[0]
    assert f"one memcpy here of the {bench._size(dma['setup']['dma_bytes'])} it moved" in table
    assert "PVH rows: its vmlinux (" in table.splitlines()[0]
    assert "extracted from vmlinuz-" in table.splitlines()[0]
    assert data["files"]["vmlinux"]["extracted_from"] == kernel
    assert data["ends_at"] == "the kernel's entry"
    assert "| banner " not in table            # no row reached it


def test_payload_option_is_checked():
    assert payloads.parse_payloads("test, distro") == ["test", "distro"]
    with pytest.raises(ValueError, match="test or distro"):
        payloads.parse_payloads("debian")


@pytest.mark.parametrize("argv, message", [
    (["--payload", "test", "--kernel", "bzImage"], "either --payload or --kernel"),
    (["--payload", "fedora"], "the payload must be test or distro")])
def test_bad_payload_is_a_usage_error(argv, message, tmp_path):
    (tmp_path / "bzImage").write_bytes(b"x")
    result = tinyvmm("bench", *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert b"Traceback" not in result.stderr


def test_a_vmlinux_is_extracted_from_a_bzimage_with_a_standard_library_format(tmp_path):
    import gzip
    import struct
    vmlinux = elf64([(0x1000000, b"\x90" * 4096, 8192)], pvh_note(0x1000000))
    compressed = gzip.compress(vmlinux)
    setup = bytearray(2 * 512)                          # boot sector and one setup sector
    setup[0x1F1] = 1
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, payloads.PAYLOAD_FIELDS, 0x40, len(compressed))
    image = bytes(setup) + bytes(0x40) + compressed
    (tmp_path / "bzImage").write_bytes(image)
    out = payloads.extract_vmlinux(str(tmp_path / "bzImage"), str(tmp_path / "vmlinux"))
    assert (tmp_path / "vmlinux").read_bytes() == vmlinux and out == str(tmp_path / "vmlinux")
    (tmp_path / "lz4").write_bytes(bytes(setup) + bytes(0x40) + b"\x02\x21\x4c\x18" + compressed)
    with pytest.raises(LookupError, match="format Python's standard library does not read"):
        payloads.extract_vmlinux(str(tmp_path / "lz4"), str(tmp_path / "x"))
    (tmp_path / "zeros").write_bytes(bytes(4096))
    with pytest.raises(LookupError, match="not a bzImage"):
        payloads.extract_vmlinux(str(tmp_path / "zeros"), str(tmp_path / "x"))


def test_the_newest_generic_debian_kernel_is_found(tmp_path):
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-12-amd64", "vmlinuz-6.1.0-57-cloud-amd64",
                 "initrd.img-6.1.0-9-amd64", "initrd.img-6.1.0-12-amd64"):
        (tmp_path / name).write_bytes(b"x")
    pattern = str(tmp_path / "vmlinuz-*-amd64")
    assert payloads.find_distro(pattern) == (str(tmp_path / "vmlinuz-6.1.0-12-amd64"),
                                             str(tmp_path / "initrd.img-6.1.0-12-amd64"))
    for name in ("vmlinuz-6.12.38+deb13-amd64", "initrd.img-6.12.38+deb13-amd64",   # Debian 13
                 "vmlinuz-6.12.38+deb13-rt-amd64", "initrd.img-6.12.38+deb13-rt-amd64"):
        (tmp_path / name).write_bytes(b"x")
    assert payloads.find_distro(pattern)[0] == str(tmp_path / "vmlinuz-6.12.38+deb13-amd64")
    for name in ("vmlinuz-6.12.38+deb13-amd64", "vmlinuz-6.12.38+deb13-rt-amd64"):
        (tmp_path / name).unlink()
    (tmp_path / "initrd.img-6.1.0-12-amd64").unlink()
    with pytest.raises(LookupError, match="has no initramfs"):
        payloads.find_distro(pattern)
    with pytest.raises(LookupError, match="linux-image-amd64"):
        payloads.find_distro(str(tmp_path / "none-*"))
    with pytest.raises(LookupError, match="not -cloud or -rt"):
        payloads.find_distro(str(tmp_path / "vmlinuz-*-cloud-amd64"))


def test_missing_distro_payload_asked_for_is_an_error_and_left_out_by_default(monkeypatch, capsys,
                                                                            tmp_path):
    def missing():
        raise LookupError("no Debian kernel here")
    monkeypatch.setattr(payloads, "find_distro", missing)
    from tinyvmm.cli import commands
    from tinyvmm.errors import ConfigError
    args = cli.build_parser("bench").parse_args(["bench", "--payload", "distro"])
    with pytest.raises(ConfigError, match="--payload distro: no Debian kernel here"):
        commands.bench_payloads(args, commands.bench_options(args), str(tmp_path))
    args = cli.build_parser("bench").parse_args(["bench"])
    if os.path.isfile(bench_payload.DEFAULT_KERNEL):
        chosen = commands.bench_payloads(args, commands.bench_options(args), str(tmp_path))
        assert [p.name for p in chosen] == ["test"]
        assert "no distro rows: no Debian kernel here" in capsys.readouterr().err


def test_each_payload_has_its_table_and_every_boot_is_interleaved(fake_runs, capsys, tmp_path):
    order, _ = fake_runs
    test = bench.BenchPayload("test", vmlinux=None, direct64=False)
    distro = bench.BenchPayload("distro", str(tmp_path / "k"), str(tmp_path / "rd"), to_entry=True)
    (tmp_path / "k").write_bytes(bytes(3000))
    (tmp_path / "rd").write_bytes(bytes(5000))
    from tinyvmm.spec import replace
    assert bench.cmd_bench(replace(bench_args("--runs", "2"), payloads=(test, distro))) == 0
    assert [system for system, _ in order] == ["tinyvmm-dma", "tinyvmm-legacy", "tinyvmm-dma",
                                               "tinyvmm-legacy", "tinyvmm-direct64"] * 2
    out, err = capsys.readouterr()
    assert "[5/10] tinyvmm-direct64 (distro) run 1" in err
    assert ("the test rows run until the \"Linux version\" banner; the distro rows run until the "
            "kernel's entry") in err
    headings = [line for line in out.splitlines() if line.startswith("payload ")]
    assert headings[0].startswith("payload test: bzImage")
    assert headings[0].endswith('each boot to the "Linux version" banner')
    assert headings[1] == (f"payload distro: k (2.9 KiB) + rd (4.9 KiB) in {tmp_path}; "
                           "each boot to the kernel's entry")
    assert "one memcpy" not in out              # the fake boots moved nothing


def test_load_runs_busy_processes_while_the_bench_runs_and_stops_them(fake_runs, monkeypatch, capsys):
    seen = []

    def tinyvmm_run(options, system, boot_args, workdir, index):
        seen.append(sum(1 for pid in os.listdir("/proc") if pid.isdigit() and _spins(pid)))
        return fake_phases(1.0)
    monkeypatch.setattr(bench, "tinyvmm_run", tinyvmm_run)
    assert bench.cmd_bench(bench_args("--runs", "1", "--load", "2")) == 0
    assert seen == [2, 2, 2]
    assert "interleaved, 2 busy processes beside them." in capsys.readouterr().out
    time.sleep(0.2)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _spins(pid)]


def _spins(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().endswith(b"while True: pass\0")
    except OSError:
        return False


@pytest.mark.parametrize("value", ["-1", "65", "x"])
def test_bad_load_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_args("--load", value)
    assert exc.value.code == 2
    assert "busy processes must be 0 to 64" in capsys.readouterr().err


def test_systems_keeps_only_the_named_columns(fake_runs, capsys):
    order, _ = fake_runs
    assert bench.cmd_bench(bench_args("--runs", "2", "--systems", "tinyvmm-legacy,tinyvmm-dma")) == 0
    assert [system for system, _ in order] == ["tinyvmm-dma", "tinyvmm-legacy"] * 2


def test_an_unknown_system_is_a_usage_error_before_any_boot(fake_runs, capsys):
    from tinyvmm.errors import ConfigError
    order, _ = fake_runs
    with pytest.raises(ConfigError, match="--systems qemu-qboot: not in this table, whose systems are "
                                          "tinyvmm-dma, tinyvmm-legacy, tinyvmm-direct64"):
        bench.cmd_bench(bench_args("--systems", "qemu-qboot"))
    assert order == []


@pytest.mark.kvm
@pytest.mark.kernel
def test_stop_at_banner_ends_the_boot_without_a_debug_console(tmp_path):
    """The same boot to the banner: with --stop-at banner the BIOS finds no debug console and
    writes no log (as with --stop-at kernel); --expect connects one, and the BIOS writes to it."""
    counts = {}
    for how in (["--stop-at", "banner"], ["--expect", "Linux version"], ["--stop-at-kernel"]):
        timing = tmp_path / "t.json"
        result = tinyvmm("boot", "--serial", "none", "--timing-json", str(timing), "--timeout", "120",
                         *how, timeout=200)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        marks = {m["event"]: m for m in json.loads(timing.read_text())["marks"]}
        counts[how[-1]] = marks[bench.DO_BOOT]["exits"]
        if how[-1] != "--stop-at-kernel":
            assert "banner" in marks
    assert counts["banner"] == counts["--stop-at-kernel"] < counts["Linux version"]
