"""fw_cfg throughput: DMA into guest RAM against a host memcpy, and a legacy `rep insb` load
through a real guest on /dev/kvm, beside QEMU's on the same machine.

    python3 -m benchmarks.fw_cfg_bench [--size-mib 16] [--repeat 5] [--guest-repeat 3]
                                       [--no-qemu] [--json FILE]      (from the repository root)

1. host:  FwCfg.dma_transfer() of SIZE bytes into an mmap-backed GuestMemory, against
          ctypes.memmove of the same bytes to the same place (pages touched beforehand).
2. guest: tests/guests/fwcfg_bench.S loads the file "opt/bench/blob" (SIZE random bytes) to
          1 MiB with one `addr32 rep insb`, then with one DMA read. tinyvmm is timed by the
          guest's milestone writes (port 0xf4); QEMU (`-bios`, same image, same -fw_cfg item)
          by when the guest's debug-console markers reach the host. The two VMMs run
          alternately, and the speed-up is the median over back-to-back pairs.
MB/s here means 10**6 bytes per second. Best and median of the repeats are reported.
"""

import argparse
import ctypes
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.guest_build import GUESTS, assemble
from tinyvmm import layout
from tinyvmm.fw_cfg.device import DMA_DESCRIPTOR, FW_CFG_DMA_CTL_READ, FwCfg
from tinyvmm.fw_cfg.items import FwCfgItems
from tinyvmm.memory import GuestMemory

LOAD_ADDRESS = 0x100000
MARKERS = {"legacy": (b"A\n", b"B\n"), "dma": (b"C\n", b"D\n")}
MILESTONES = {"legacy": (8, 9), "dma": (10, 11)}


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def summary(size: int, seconds: list[float]) -> dict:
    return {"best_s": min(seconds), "median_s": statistics.median(seconds),
            "best_mb_s": mb_per_s(size, min(seconds)),
            "median_mb_s": mb_per_s(size, statistics.median(seconds)), "runs": len(seconds)}


# --- 1. host-side DMA against memcpy ---------------------------------------------------------
def bench_host_dma(size: int, repeat: int) -> dict:
    payload = os.urandom(size)
    items = FwCfgItems()
    items.add_file("opt/bench/blob", payload)
    ram = 2 * size + 16 * layout.MiB
    memory = GuestMemory.for_layout(ram, bytes(64 * layout.KiB))
    fw_cfg = FwCfg(items, memory)
    key = items.file_key("opt/bench/blob")
    descriptor = 0x1000
    memory.fill(LOAD_ADDRESS, size, 1)                 # fault the pages in before timing

    dma_times = []
    for _ in range(repeat):
        fw_cfg.select(key)
        memory.write(descriptor, DMA_DESCRIPTOR.pack(FW_CFG_DMA_CTL_READ, size, LOAD_ADDRESS))
        start = time.perf_counter()
        status = fw_cfg.dma_transfer(descriptor)
        dma_times.append(time.perf_counter() - start)
        assert status == 0
    assert memory.read(LOAD_ADDRESS, size) == payload

    source = ctypes.c_char_p(payload)
    destination = ctypes.addressof(ctypes.c_char.from_buffer(memory.view(LOAD_ADDRESS, size, True)))
    copy_times = []
    for _ in range(repeat):
        start = time.perf_counter()
        ctypes.memmove(destination, source, size)
        copy_times.append(time.perf_counter() - start)
    dma, memcpy = summary(size, dma_times), summary(size, copy_times)
    return {"dma": dma, "memcpy": memcpy,
            "ratio_best": dma["best_mb_s"] / memcpy["best_mb_s"],
            "ratio_median": dma["median_mb_s"] / memcpy["median_mb_s"]}


# --- 2. guests -----------------------------------------------------------------------------------
def check_ends(console: bytes, payload: bytes, phase: str) -> None:
    """The guest prints the first and last dword it loaded after each phase."""
    expected = f"{int.from_bytes(payload[:4], 'little'):08x} {int.from_bytes(payload[-4:], 'little'):08x}"
    end_marker = MARKERS[phase][1]
    after = console.split(end_marker, 1)[1].decode().split("\n", 1)[0].split()
    if " ".join(after) != expected:
        raise RuntimeError(f"{phase}: guest loaded {after}, expected {expected}")


def run_tinyvmm(image: Path, blob: Path, payload: bytes) -> dict[str, float]:
    from tinyvmm.board import Board, BoardConfig
    from tinyvmm.console import Console
    from tinyvmm.fw_cfg.attach import attach_fw_cfg
    from tinyvmm.fw_cfg.items import UserItemSpec
    from tinyvmm.runner import Outcome, Runner
    from tinyvmm.spec import FwCfgSpec

    spec = FwCfgSpec(files=(UserItemSpec("opt/bench/blob", file=str(blob)),))
    console = bytearray()
    board = Board(BoardConfig(image.read_bytes(), 256 * layout.MiB,
                              debugcon=Console("debugcon", sink=console.extend)))
    try:
        attach_fw_cfg(board, spec)
        result = Runner(board, timeout=600).run()
    finally:
        board.close()
    if result.outcome is not Outcome.RESET:
        raise RuntimeError(f"tinyvmm guest: {result.outcome.description}: {result.message}")
    stamps = {m.value: m.time_ns for m in board.milestones if m.port == 0xF4}
    times = {}
    for phase, (begin, end) in MILESTONES.items():
        if begin in stamps and end in stamps:
            times[phase] = (stamps[end] - stamps[begin]) / 1e9
            check_ends(bytes(console), payload, phase)
    return times


def qemu_command(image: Path, blob: Path, accel: str) -> list[str]:
    return ["qemu-system-x86_64", "-accel", accel, "-m", "256", "-bios", str(image),
            "-display", "none", "-nodefaults", "-no-reboot",
            "-chardev", "stdio,id=dbg", "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
            "-fw_cfg", f"name=opt/bench/blob,file={blob}"]


def run_qemu(image: Path, blob: Path, payload: bytes, accel: str) -> dict[str, float]:
    """Time each phase by when its debug-console markers reach us (no buffering in between)."""
    process = subprocess.Popen(qemu_command(image, blob, accel), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    console, seen = bytearray(), {}
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            now = time.perf_counter()
            if not chunk:
                break
            console += chunk
            for marks in MARKERS.values():
                for mark in marks:
                    if mark not in seen and mark in console:
                        seen[mark] = now
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if b"Z\n" not in console:
        raise RuntimeError(f"QEMU guest did not finish: {bytes(console)!r} "
                           f"{process.stderr.read().decode(errors='replace')}")
    times = {}
    for phase, (begin, end) in MARKERS.items():
        if begin in seen and end in seen:
            times[phase] = seen[end] - seen[begin]
            check_ends(bytes(console), payload, phase)
    return times


def qemu_accel() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return None
    return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


def bench_guests(size: int, repeat: int, with_qemu: bool) -> dict:
    from tinyvmm.kvm.system import kvm_status
    reason = kvm_status()
    if reason:
        return {"skipped": f"/dev/kvm is not usable: {reason}"}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        image = assemble(GUESTS / "fwcfg_bench.S", workdir / "guest").bin_path
        payload = os.urandom(size)
        blob = workdir / "blob.bin"
        blob.write_bytes(payload)
        accel = qemu_accel() if with_qemu else None
        results = {"tinyvmm": []}
        if accel:
            results.update(qemu=[], qemu_accel=accel)
        # Alternate the two VMMs so both see the same background load.
        for _ in range(repeat):
            results["tinyvmm"].append(run_tinyvmm(image, blob, payload))
            if accel:
                results["qemu"].append(run_qemu(image, blob, payload, accel))
    out = {}
    for vmm in ("tinyvmm", "qemu"):
        if vmm in results:
            out[vmm] = {phase: summary(size, [run[phase] for run in results[vmm]])
                        for phase in MILESTONES if all(phase in run for run in results[vmm])}
    if "qemu_accel" in results:
        out["qemu_accel"] = results["qemu_accel"]
        out["legacy_speedup_vs_qemu"] = statistics.median(
            q["legacy"] / t["legacy"] for t, q in zip(results["tinyvmm"], results["qemu"]))
    return out


def report(size: int, host: dict, guests: dict) -> str:
    lines = [f"fw_cfg throughput, {size / 2**20:g} MiB payload (MB/s = 10^6 bytes/s; best / median)"]
    lines.append(f"  host DMA into guest RAM   {host['dma']['best_mb_s']:9.0f} / "
                 f"{host['dma']['median_mb_s']:.0f} MB/s")
    lines.append(f"  host memcpy (memmove)     {host['memcpy']['best_mb_s']:9.0f} / "
                 f"{host['memcpy']['median_mb_s']:.0f} MB/s")
    lines.append(f"  DMA / memcpy              {host['ratio_best']:9.2f} / {host['ratio_median']:.2f}"
                 "   (target >= 0.5)")
    if "skipped" in guests:
        lines.append(f"  guest runs skipped: {guests['skipped']}")
        return "\n".join(lines) + "\n"
    for vmm in ("tinyvmm", "qemu"):
        label = vmm if vmm == "tinyvmm" else f"qemu ({guests.get('qemu_accel')})"
        for phase, stats in guests.get(vmm, {}).items():
            what = "legacy rep insb" if phase == "legacy" else "guest DMA read"
            lines.append(f"  {label:<10} {what:<15} {stats['best_mb_s']:9.1f} / "
                         f"{stats['median_mb_s']:.1f} MB/s  ({stats['median_s']:.3f} s)")
    if "legacy_speedup_vs_qemu" in guests:
        lines.append(f"  legacy: tinyvmm / QEMU    {guests['legacy_speedup_vs_qemu']:9.2f}x"
                     "   (median of back-to-back pairs; target >= 2)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5, help="host DMA/memcpy repeats")
    parser.add_argument("--guest-repeat", type=int, default=3, help="guest runs per VMM")
    parser.add_argument("--no-qemu", action="store_true", help="skip the QEMU comparison")
    parser.add_argument("--no-guest", action="store_true", help="host-side DMA only")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    size = args.size_mib * 2**20
    host = bench_host_dma(size, args.repeat)
    guests = ({"skipped": "--no-guest"} if args.no_guest
              else bench_guests(size, args.guest_repeat, not args.no_qemu))
    sys.stdout.write(report(size, host, guests))
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size, "host": host, "guests": guests},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
