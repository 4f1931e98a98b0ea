"""`tinyvmm bench`: the table and JSON come from real boots; QEMU's trace parsing; the plot."""

import json
import subprocess
import sys

import pytest

from tinyvmm import bench, bench_qemu, plot

PHASE_KEYS = {"vmm_startup_s", "bios_startup_s", "kernel_setup_s", "total_s"}


def run_bench(tmp_path, *extra):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tinyvmm", "bench", "--runs", "1", "--no-banner",
                             "--json", str(out), "--plot", str(tmp_path / "bench.svg"), *extra],
                            capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result.stdout.decode(), json.loads(out.read_text())


@pytest.mark.kvm
@pytest.mark.kernel
def test_bench_table_and_json_from_real_boots(tmp_path):
    table, data = run_bench(tmp_path)
    for row in ("VMM startup", "BIOS startup", "kernel setup", "total"):
        assert f"| {row} " in table
    assert set(data["summary"]) == {"tinyvmm-dma", "tinyvmm-legacy"}
    assert [run["system"] for run in data["runs"]] == ["tinyvmm-dma", "tinyvmm-legacy"]
    dma, legacy = data["summary"]["tinyvmm-dma"], data["summary"]["tinyvmm-legacy"]
    assert PHASE_KEYS <= set(dma) and PHASE_KEYS <= set(legacy)
    for entry in (dma, legacy):
        assert entry["total_s"] == pytest.approx(
            entry["vmm_startup_s"] + entry["bios_startup_s"] + entry["kernel_setup_s"])
        assert all(entry[key] > 0 for key in PHASE_KEYS)
    assert dma["kernel_setup_s"] < legacy["kernel_setup_s"]
    # the legacy ROM moves the kernel by port I/O, the DMA ROM by DMA
    assert legacy["setup"]["pio_bytes"] > 900_000 and legacy["setup"]["dma_bytes"] == 0
    assert dma["setup"]["dma_bytes"] > 900_000 and dma["setup"]["pio_bytes"] < 4096
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
    assert set(data["summary"]) == {"tinyvmm-dma", "tinyvmm-legacy", "qemu-seabios-dma",
                                    "qemu-seabios-legacy", "qemu-qboot"}
    for system, entry in data["summary"].items():
        assert PHASE_KEYS <= set(entry), system
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
    import os
    from pathlib import Path

    import tinyvmm
    env = bench.child_env({"PYTHONPATH": "/elsewhere", "OTHER": "kept"})
    first, rest = env["PYTHONPATH"].split(os.pathsep)
    assert (Path(first) / "tinyvmm").resolve() == Path(tinyvmm.__file__).parent.resolve()
    assert rest == "/elsewhere" and env["OTHER"] == "kept"
    assert bench.child_env({})["PYTHONPATH"] == first
