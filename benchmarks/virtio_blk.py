"""virtio-blk sequential reads under unmodified SeaBIOS: requests served on the vCPU thread
against an I/O thread (ioeventfd and irqfd), beside QEMU.

The boot sector of tests/guests/disk_read.S reads READS chunks of CHUNK sectors in turn
through INT 13h AH=42h; SeaBIOS's virtio-blk driver makes one request of each and polls the
used ring for its completion. Both chunk sizes run under each system, interleaved (the
systems take turns going first), RUNS times.

tinyvmm is timed by the guest's milestones 16 and 17 on port 0xf4, written just before the
first read and just after the last. QEMU timestamps nothing on that port, so the "serial"
rows time every system by when the markers "disk-read: start" and "disk-read: ok" reach the
host: read from QEMU's `-serial stdio` pipe, and from tinyvmm's serial sink (no pipe).
Requests per second are chunks read per second; MB/s means 10**6 bytes per second.
From the repository root:

    python3 -m benchmarks.virtio_blk [--runs N] [--reads-4k N] [--reads-64k N] [--no-qemu]
"""

import argparse
import os
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.guest_build import GUESTS, assemble

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
SECTOR = 512
DISK_SECTORS = 32768                    # 16 MiB: the 64 KiB reads wrap every 256 chunks
START, OK = b"disk-read: start", b"disk-read: ok"
DESIGNS = {"vcpu": "tinyvmm, vCPU thread", "iothread": "tinyvmm, I/O thread"}
PAUSE_S = 0.5                           # lets the host free the previous VM's memory first


def disk_image(workdir: Path, chunk: int, reads: int) -> Path:
    """The disk_read boot sector, then sectors whose first 4 bytes are their LBA."""
    boot = assemble(GUESTS / "disk_read.S", workdir / f"disk_read-{chunk}-{reads}",
                    {"CHUNK_SECTORS": chunk, "DISK_READS": reads, "DISK_SECTORS": DISK_SECTORS},
                    linker_script=GUESTS / "bootsector.ld").bin_path.read_bytes()
    path = workdir / f"disk-{chunk}-{reads}.img"
    with open(path, "wb") as f:
        f.write(boot)
        f.writelines(struct.pack("<I", lba) + bytes(SECTOR - 4) for lba in range(1, DISK_SECTORS))
    return path


class SerialClock:
    """A serial sink that notes when each marker is complete."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.text = bytearray()
        self.seen: dict[bytes, float] = {}

    def __call__(self, data: bytes) -> None:
        now = self.clock()
        self.text += data
        for marker in (START, OK):
            if marker not in self.seen and marker in self.text:
                self.seen[marker] = now

    def interval(self, who: str) -> float:
        if b"disk-read: error" in self.text or OK not in self.seen:
            raise RuntimeError(f"{who}: the guest did not read its disk: {bytes(self.text)!r}")
        return self.seen[OK] - self.seen[START]


def run_tinyvmm(bios: bytes, disk: Path, iothread: bool) -> tuple[float, float]:
    """One boot; (seconds between milestones 16 and 17, seconds between the serial markers)."""
    from tinyvmm.board import Board, BoardConfig
    from tinyvmm.console import Console
    from tinyvmm.runner import Outcome, Runner
    from tinyvmm.virtio.blk import BlockBackend, BlockDevice

    serial = SerialClock()
    with open(disk, "rb") as image:
        board = Board(BoardConfig(bios, serial=Console("serial", serial),
                                  virtio_devices=[BlockDevice(BlockBackend(image, read_only=True))],
                                  virtio_iothread=iothread))
        try:
            board.runner = runner = Runner(board, timeout=120)
            result = runner.run()
        finally:
            board.close()
    if result.outcome is not Outcome.RESET:
        raise RuntimeError(f"tinyvmm: {result.outcome.description}: {result.message}\n{result.report or ''}")
    marks = {m.value: m.time_ns for m in board.milestones if m.port == 0xF4}
    return (marks[17] - marks[16]) / 1e9, serial.interval("tinyvmm")


def qemu_command(disk: Path) -> list[str]:
    return ["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-bios", str(SEABIOS),
            "-drive", f"file={disk},if=none,id=d0,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
            "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio"]


def run_qemu(disk: Path) -> float:
    """Seconds between the serial markers, as they come out of QEMU's pipe."""
    serial = SerialClock()
    process = subprocess.Popen(qemu_command(disk), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                serial(chunk)
            elif process.poll() is not None:
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    return serial.interval("QEMU")


def spread(values: list[float], digits: int) -> str:
    """'median (min-max)' of `values`, with `digits` decimals."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="boots per system and chunk size")
    parser.add_argument("--reads-4k", type=int, default=2048, help="4 KiB reads per boot")
    parser.add_argument("--reads-64k", type=int, default=1024, help="64 KiB reads per boot")
    parser.add_argument("--no-qemu", action="store_true", help="skip the QEMU column")
    args = parser.parse_args(argv)
    if not SEABIOS.exists():
        parser.error(f"{SEABIOS} is not installed (Debian package seabios)")
    from tinyvmm.kvm.system import kvm_status
    reason = kvm_status()
    if reason:
        parser.error(f"/dev/kvm is not usable: {reason}")
    with_qemu = not args.no_qemu and shutil.which("qemu-system-x86_64") is not None
    sizes = [(8, args.reads_4k), (128, args.reads_64k)]
    systems = [*DESIGNS, *(["qemu"] if with_qemu else [])]
    bios = SEABIOS.read_bytes()
    # (chunk, system) -> {"milestones": [s], "serial": [s]}
    times = {(chunk, system): {"milestones": [], "serial": []} for chunk, _ in sizes for system in systems}
    with tempfile.TemporaryDirectory() as tmp:
        disks = {chunk: disk_image(Path(tmp), chunk, reads) for chunk, reads in sizes}
        for run in range(args.runs):
            for chunk, reads in sizes:
                # Each system goes first in turn, so that none always follows the same one.
                for system in systems[run % len(systems):] + systems[:run % len(systems)]:
                    print(f"run {run + 1}/{args.runs}: {chunk * SECTOR // 1024} KiB x {reads}, {system}",
                          file=sys.stderr, flush=True)
                    time.sleep(PAUSE_S)
                    entry = times[(chunk, system)]
                    if system == "qemu":
                        entry["serial"].append(run_qemu(disks[chunk]))
                    else:
                        by_milestones, by_serial = run_tinyvmm(bios, disks[chunk], system == "iothread")
                        entry["milestones"].append(by_milestones)
                        entry["serial"].append(by_serial)
    sys.stdout.write(report(args.runs, sizes, systems, times))
    return 0


def report(runs: int, sizes, systems, times) -> str:
    names = {**DESIGNS, "qemu": "QEMU (kvm)"}
    rows = [["reads", "timed by", *(names[s] for s in systems)]]
    for chunk, reads in sizes:
        size = chunk * SECTOR
        for clock in ("milestones", "serial"):
            for unit, per_second, digits in (("req/s", reads, 0), ("MB/s", reads * size / 1e6, 1)):
                cells = [spread([per_second / s for s in times[(chunk, system)][clock]], digits)
                         if times[(chunk, system)][clock] else "-" for system in systems]
                rows.append([f"{size // 1024} KiB x {reads}", f"{clock}, {unit}", *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    table.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    lines = [f"virtio-blk sequential reads under SeaBIOS, median (min-max) of {runs} interleaved runs",
             "", *table, ""]
    # Ratios of runs made back to back, so that both sides saw the same host load.
    for chunk, _ in sizes:
        label = f"{chunk * SECTOR // 1024} KiB"
        vcpu, iothread = (times[(chunk, design)]["milestones"] for design in DESIGNS)
        lines.append(f"{label}: I/O thread / vCPU thread, requests per second: "
                     f"{statistics.median(v / i for v, i in zip(vcpu, iothread)):.3f}")
        if "qemu" in systems:
            qemu = times[(chunk, "qemu")]["serial"]
            for design, name in DESIGNS.items():
                ratio = statistics.median(q / t for q, t in zip(qemu, times[(chunk, design)]["serial"]))
                lines.append(f"{label}: {name} / QEMU, requests per second (serial timing): {ratio:.3f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
