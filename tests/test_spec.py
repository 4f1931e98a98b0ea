"""MachineSpec: one typed description from the command line and the API, with one message a rule."""

import dataclasses
import os

import pytest

from tinyvmm import cli, layout
from tinyvmm.cli.arguments import machine_spec
from tinyvmm.errors import ConfigError, TinyvmmError
from tinyvmm.record import replace
from tinyvmm.spec import DebugSpec, DriveSpec, FwCfgSpec, KernelSpec, MachineSpec


def spec_of(*argv: str) -> MachineSpec:
    """The MachineSpec `tinyvmm ARGV` runs (boot: with a kernel)."""
    args = cli.build_parser(argv[0]).parse_args(list(argv))
    return machine_spec(args, boot_linux=argv[0] == "boot")


def test_a_record_is_frozen_compared_by_value_and_replaced_by_copy():
    spec = MachineSpec(mem=64 * layout.MiB)
    with pytest.raises(AttributeError, match="frozen"):
        spec.mem = 1        # type: ignore[misc]
    assert spec == MachineSpec(mem=64 * layout.MiB) and spec != MachineSpec()
    assert hash(spec) == hash(MachineSpec(mem=64 * layout.MiB))
    bigger = replace(spec, mem=128 * layout.MiB)
    assert (spec.mem, bigger.mem) == (64 * layout.MiB, 128 * layout.MiB)
    assert "mem=67108864" in repr(spec)
    with pytest.raises(TypeError, match="no field 'memory'"):
        MachineSpec(memory=1)   # type: ignore[call-arg]
    with pytest.raises(TypeError, match="needs 'path'"):
        DriveSpec()             # type: ignore[call-arg]


def test_the_records_have_the_fields_a_dataclass_would():
    """Type checkers see frozen dataclasses: the runtime records must have the same fields."""
    for record in (MachineSpec, KernelSpec, FwCfgSpec, DriveSpec, DebugSpec):
        checked = dataclasses.dataclass(frozen=True)(type(record.__name__, (), {
            "__annotations__": dict(record.__annotations__),
            **{name: value for name, value in record._defaults.items()}}))
        assert [f.name for f in dataclasses.fields(checked)] == list(record._fields)


def test_the_command_line_and_the_api_make_the_same_spec(tmp_path):
    rom = tmp_path / "boot.bin"
    from_cli = spec_of("boot", "--kernel", "bz", "--initrd", "rd", "--append", "quiet",
                       "--mem", "64M", "--option-rom", str(rom), "--no-fw-cfg-dma",
                       "--fw-cfg", "name=opt/a,string=x", "--drive",
                       "file=d.img,if=virtio,format=raw,readonly=on,bootindex=1",
                       "--serial", "none", "--debugcon", "none")
    from_api = MachineSpec.from_api(
        kernel="bz", initrd="rd", append="quiet", mem=64 * layout.MiB, option_roms=[rom],
        fw_cfg_dma=False, fw_cfg={"opt/a": "x"}, serial="none", debugcon="none",
        drives=["file=d.img,if=virtio,format=raw,readonly=on,bootindex=1"])
    assert from_cli == from_api
    assert from_cli.drives == (DriveSpec("d.img", read_only=True, bootindex=1),)
    assert from_cli.kernel == KernelSpec("bz", "rd", "quiet")


@pytest.mark.parametrize("argv, api, rule", [
    (["--mem", "1M"], dict(mem=1 << 20), "RAM must be between 2 MiB and 64 GiB"),
    (["--mem", "4097K"], dict(mem=4097 << 10), "RAM must be a multiple of 4 KiB"),
    (["--serial", "tty"], dict(serial="tty"), "expected stdio, none or file:PATH"),
    (["--fw-cfg-mmio", "0xfef00004"], dict(fw_cfg_mmio=0xFEF00004), "is not aligned to 8 bytes"),
    (["--trace", "bogus"], dict(trace="bogus"), "bogus"),
    (["--drive", "file=x,format=qcow2"], dict(drives=["file=x,format=qcow2"]),
     "only format=raw images are supported"),
])
def test_a_rule_has_one_message_from_either_side(capsys, argv, api, rule):
    with pytest.raises(SystemExit) as usage:        # argparse's exit, naming the option
        cli.main(["run", "--bios", "bios.bin", *argv])
    assert usage.value.code == cli.EXIT_USAGE
    assert rule in capsys.readouterr().err
    with pytest.raises(ConfigError, match=rule):
        MachineSpec.from_api("bios.bin", **api)


def test_every_input_error_is_a_config_error_and_a_tinyvmm_error():
    from tinyvmm.boot.payload import PayloadError
    from tinyvmm.console import SinkSpecError
    from tinyvmm.debug.trace import TraceSpecError
    from tinyvmm.fw_cfg.items import FwCfgConfigError
    from tinyvmm.virtio.drive import DriveError
    for error in (PayloadError, SinkSpecError, TraceSpecError, FwCfgConfigError, DriveError):
        assert issubclass(error, ConfigError) and issubclass(error, TinyvmmError)


def test_parts_check_themselves():
    with pytest.raises(ConfigError, match="expected 'firmware' or 'direct'"):
        KernelSpec(boot="bios")
    with pytest.raises(ConfigError, match="--gdb-wait needs --gdb"):
        DebugSpec(gdb_wait=True)
    with pytest.raises(ConfigError, match="--boot direct runs no firmware: drop --bios"):
        MachineSpec(firmware="bios.bin", kernel=KernelSpec(boot="direct"))
    with pytest.raises(ConfigError, match="the text to wait for must be 1 to 2048 bytes"):
        MachineSpec(expect=b"")
    with pytest.raises(ConfigError, match="multiple of 64 KiB"):
        MachineSpec(firmware=bytes(1000))


def test_run_needs_no_kernel_and_boot_has_the_default_one():
    assert spec_of("run", "--bios", "bios.bin").kernel is None
    assert spec_of("boot").kernel == KernelSpec()
    assert spec_of("run", "--bios", "bios.bin", "--expect", "hi").expect == os.fsencode("hi")


@pytest.mark.kvm
def test_a_machine_is_built_from_a_spec_and_traces_to_a_file(tmp_path):
    from tinyvmm import Machine, Outcome
    trace = tmp_path / "trace.txt"
    with Machine("bios.bin", mem=32 * layout.MiB, trace="milestones", trace_file=trace) as guest:
        assert guest.spec.debug.trace.categories == {"milestones"}
        assert guest.run(timeout=30, until_milestone=0x01).outcome is Outcome.EXPECTED
    assert "milestone" in trace.read_text()
    with Machine(MachineSpec(mem=32 * layout.MiB)) as guest:
        assert guest.boot is None and guest.spec.firmware is None
        assert guest.run(timeout=30, until_milestone=0x01).outcome is Outcome.EXPECTED


@pytest.mark.slow
def test_a_type_checker_sees_the_public_api(tmp_path):
    """The typed facade: a misspelt method is an error before anything runs. (The editable
    install hides the package from mypy's search, so it is named by MYPYPATH here; an
    installed wheel carries py.typed.)"""
    import shutil
    import subprocess
    import sys
    mypy = shutil.which("mypy", path=os.path.dirname(sys.executable))
    assert mypy, "mypy is installed by make setup (the lint extra)"
    script = tmp_path / "script.py"
    script.write_text("from tinyvmm import Machine, MachineSpec\n"
                      "Machine(MachineSpec(mem=64 << 20)).run(timeout=1.5)\n"
                      "Machine('bios.bin').rnu()\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([mypy, "--no-incremental", "--config-file", os.path.join(root, "pyproject.toml"),
                             str(script)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600, env={**os.environ, "MYPYPATH": root})
    assert result.returncode == 1, result.stdout
    assert [line.split(": error: ")[1] for line in result.stdout.splitlines() if ": error: " in line] \
        == ['"Machine" has no attribute "rnu"  [attr-defined]']


@pytest.mark.parametrize("make, error, message", [
    (lambda: MachineSpec(mem="1G"), TypeError, "mem: expected int"),
    (lambda: MachineSpec(firmware=""), ConfigError, "firmware: '' is not a file name"),
    (lambda: MachineSpec(fw_cfg=None), TypeError, "fw_cfg: expected FwCfgSpec"),
    (lambda: MachineSpec(drives=["d.img"]), TypeError, "drives: expected a tuple"),
    (lambda: MachineSpec(expect="login:"), TypeError, "expect: expected bytes"),
    (lambda: KernelSpec(3), TypeError, "kernel: expected a path as str"),
    (lambda: FwCfgSpec(mmio=-1), ConfigError, "outside the hole below 4 GiB"),
    (lambda: FwCfgSpec(option_roms="rom.bin"), TypeError, "option_roms: expected a tuple"),
    (lambda: DriveSpec("d.img", serial="x" * 21), ConfigError, "at most 20 printable ASCII"),
    (lambda: DriveSpec("d.img", bootindex=-1), ConfigError, "expected a number from 0 to"),
    (lambda: DriveSpec("d.img", read_only="no"), TypeError, "readonly: expected bool"),
    (lambda: DebugSpec(trace="io"), TypeError, "trace: expected TraceSpec"),
])
def test_each_part_checks_its_fields(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_specs_copy_pickle_and_hash_with_their_checks():
    import copy
    import pickle
    spec = MachineSpec.from_api(kernel="bz", trace="io,fw_cfg", drives=["file=d.img,serial=s1"])
    assert copy.deepcopy(spec) == spec == pickle.loads(pickle.dumps(spec))
    assert hash(spec) == hash(copy.copy(spec))
    with pytest.raises(AttributeError):
        spec.debug.trace.categories.add("pci")      # type: ignore[attr-defined]


def test_an_empty_firmware_path_is_one_usage_line(capsys):
    assert cli.main(["run", "--bios", "", "--timeout", "1"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "tinyvmm: firmware: '' is not a file name\n"


def test_firmware_given_as_bytes_boots_the_kernel_through_it():
    spec = MachineSpec.from_api(bytes(64 * 1024), kernel="vmlinux")
    assert spec.runs_firmware
    with pytest.raises(ConfigError, match="--boot direct runs no firmware"):
        MachineSpec.from_api(bytes(64 * 1024), kernel="vmlinux", boot="direct")


@pytest.mark.kvm
def test_the_api_runs_the_debug_specs_aids(tmp_path, capsys):
    from tinyvmm import Machine, Outcome
    trace = tmp_path / "steps.txt"
    spec = MachineSpec.from_api("bios.bin", mem=32 * layout.MiB, trace="steps=3", trace_file=trace)
    with Machine(replace(spec, debug=replace(spec.debug, stats=True))) as guest:
        assert guest.run(timeout=30, until_milestone=0x01).outcome is Outcome.EXPECTED
    assert len([line for line in trace.read_text().splitlines() if " real f000:" in line]) == 3
    assert "exit reason" in capsys.readouterr().err        # the --stats table
    with pytest.raises(ConfigError, match="no symbol file names nosuch"):
        Machine("bios.bin", mem=32 * layout.MiB, trace="steps@nosuch")
