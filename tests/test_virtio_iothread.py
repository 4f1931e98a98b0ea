"""The virtio I/O thread: ioeventfds that follow BAR4, the irqfd that follows the PIRQ route,
resampling, reset under load, shutdown and crashes; and SeaBIOS reading a disk through it."""

import os
import struct
import threading
import time
from pathlib import Path

import guest_build
import pytest
from guest_memory import guest_memory

from tinyvmm.bus import Bus, Device, PioBus
from tinyvmm.pci.config import PCI_COMMAND
from tinyvmm.pci.host import PciBuses, PciHost, config_address
from tinyvmm.virtio import pci as vp
from tinyvmm.virtio.blk import BlockBackend, BlockDevice
from tinyvmm.virtio.iothread import IoThread

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
MEM = 1 << 20
DISK_SECTORS = 2048
TEST_PORT = 0x700


class FakeVm:
    """Records the ioeventfd and irqfd calls an IoThread makes."""

    def __init__(self):
        self.calls = []

    def ioeventfd(self, fd, address, length, datamatch=None, pio=False, deassign=False):
        self.calls.append(("ioeventfd", "deassign" if deassign else "assign", address, length, datamatch))

    def irqfd(self, fd, gsi, resample_fd=None, deassign=False):
        self.calls.append(("irqfd", "deassign" if deassign else "assign", gsi, resample_fd is not None))

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sectors(first: int = 0) -> bytes:
    """Sectors `first` to DISK_SECTORS - 1, each starting with its LBA."""
    return b"".join(struct.pack("<I", lba) + bytes(508) for lba in range(first, DISK_SECTORS))


def pattern_disk(path: Path) -> Path:
    path.write_bytes(sectors())
    return path


# Where driver_setup puts the rings and the request.
DESC, AVAIL, USED = 0x10000, 0x11000, 0x12000
HEADER, DATA, STATUS = 0x20000, 0x21000, 0x22000
QUEUE_SIZE = 8


class Rig:
    """A virtio-blk device on bus 0 slot 2 of a bare PCI host, and its IoThread (not started)
    on a FakeVm; `route` is the IRQ its INTA# is routed to."""

    BASE = 0xFE000000

    def __init__(self, image):
        self.memory = guest_memory((0, MEM))
        self.mmio = Bus("mmio")
        self.host = PciHost(PciBuses(PioBus(), self.mmio, self.memory))
        self.device = self.host.add(vp.VirtioPciDevice(
            BlockDevice(BlockBackend(image, read_only=True), queue_size=QUEUE_SIZE), self.memory,
            name="blk0"), slot=2)
        self.vm = FakeVm()
        self.crashes = []
        self.route = 11
        self.thread = IoThread(self.device, self.vm, lambda: self.route, self.crashes.append)

    def cfg_write(self, register, value, size=4):
        self.host.write(0, 4, config_address(0, 2, 0, register).to_bytes(4, "little"))
        self.host.write(4 + (register & 3), size, value.to_bytes(size, "little"))

    def map_bar(self):
        self.cfg_write(0x20, self.BASE)
        self.cfg_write(0x24, 0)
        self.cfg_write(PCI_COMMAND, 0x6, size=2)                        # memory + bus master

    def bar_write(self, offset, size, value):
        self.mmio.write(self.BASE + offset, size, value.to_bytes(size, "little"))

    def used_index(self) -> int:
        return struct.unpack("<H", self.memory.read(USED + 2, 2))[0]

    def driver_setup(self):
        """Reset the device, lay out one read request (sector 3) in fresh rings, enable queue 0."""
        common = vp.COMMON.offset
        self.bar_write(common + vp.DEVICE_STATUS, 1, 0)
        self.memory.write(AVAIL, bytes(0x2000))
        self.memory.write(DESC, struct.pack("<QIHH", HEADER, 16, 1, 1) + struct.pack("<QIHH", DATA, 512, 3, 2)
                          + struct.pack("<QIHH", STATUS, 1, 2, 0))
        self.memory.write(HEADER, struct.pack("<IIQ", 0, 0, 3))
        self.bar_write(common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER)
        self.bar_write(common + vp.DRIVER_FEATURE_SELECT, 4, 1)
        self.bar_write(common + vp.DRIVER_FEATURE, 4, 1)
        self.bar_write(common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK)
        self.bar_write(common + vp.QUEUE_SIZE, 2, QUEUE_SIZE)
        for field, address in ((vp.QUEUE_DESC, DESC), (vp.QUEUE_DRIVER, AVAIL), (vp.QUEUE_DEVICE, USED)):
            self.bar_write(common + field, 4, address)
        self.bar_write(common + vp.QUEUE_ENABLE, 2, 1)
        self.bar_write(common + vp.DEVICE_STATUS, 1,
                       vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK | vp.DRIVER_OK)


@pytest.fixture
def rig(tmp_path):
    with open(pattern_disk(tmp_path / "disk.img"), "rb") as image:
        rig = Rig(image)
        try:
            yield rig
        finally:
            rig.thread.close()


def test_ioeventfds_follow_bar4(rig):
    rig.cfg_write(0x20, 0xFE000000)
    rig.cfg_write(0x24, 0)
    assert rig.vm.take() == []                                          # decoding is off
    rig.cfg_write(PCI_COMMAND, 0x6, size=2)
    assert rig.vm.take() == [("ioeventfd", "assign", 0xFE003000, 2, 0)]
    rig.cfg_write(0x20, 0xFD000000)                                     # firmware moves it
    assert rig.vm.take() == [("ioeventfd", "deassign", 0xFE003000, 2, 0),
                             ("ioeventfd", "assign", 0xFD003000, 2, 0)]
    rig.cfg_write(0x24, 1)                                              # above 4 GiB
    assert rig.vm.take() == [("ioeventfd", "deassign", 0xFD003000, 2, 0),
                             ("ioeventfd", "assign", 0x1_FD003000, 2, 0)]
    rig.cfg_write(PCI_COMMAND, 0x4, size=2)                             # memory decode off
    assert rig.vm.take() == [("ioeventfd", "deassign", 0x1_FD003000, 2, 0)]
    rig.cfg_write(PCI_COMMAND, 0x6, size=2)
    rig.vm.take()
    rig.thread.close()                                                  # the board goes
    assert rig.vm.take() == [("ioeventfd", "deassign", 0x1_FD003000, 2, 0)]
    assert rig.device.notifier is None


def test_the_irqfd_follows_the_pirq_route(rig):
    device, vm, irq_fd = rig.device, rig.vm, rig.thread.irq_fd
    rig.route = None
    device.interrupt(vp.ISR_CONFIG)                                     # not routed yet: nothing
    assert vm.take() == []
    rig.route = 10
    device.interrupt(vp.ISR_CONFIG)
    assert vm.take() == [("irqfd", "assign", 10, True)]
    assert os.eventfd_read(irq_fd) == 1
    assert device.read_bar(vp.ISR.offset, 1) == vp.ISR_CONFIG           # lowering is KVM's, at EOI
    assert vm.take() == []
    rig.route = 11                                                      # firmware re-routes PIRQB
    device.interrupt(vp.ISR_QUEUE)
    assert vm.take() == [("irqfd", "deassign", 10, False), ("irqfd", "assign", 11, True)]
    assert os.eventfd_read(irq_fd) == 1
    rig.route = None
    device.interrupt(vp.ISR_QUEUE)
    assert vm.take() == [("irqfd", "deassign", 11, False)]
    with pytest.raises(BlockingIOError):
        os.eventfd_read(irq_fd)                                         # nothing raised unrouted


def wait_for_irq(irq_fd, seconds=5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return os.eventfd_read(irq_fd) > 0
        except BlockingIOError:
            time.sleep(0.001)
    return False


def test_a_resample_raises_the_line_again_while_isr_holds_a_cause(rig):
    thread = rig.thread
    thread.start()
    rig.device.interrupt(vp.ISR_QUEUE)
    assert os.eventfd_read(thread.irq_fd) == 1
    os.eventfd_write(thread.resample_fd, 1)                             # the guest's EOI
    assert wait_for_irq(thread.irq_fd)
    rig.device.read_bar(vp.ISR.offset, 1)
    os.eventfd_write(thread.resample_fd, 1)
    assert not wait_for_irq(thread.irq_fd, 0.05)
    assert rig.crashes == []


def test_resets_while_requests_are_served_do_not_crash(rig):
    rig.map_bar()
    rig.thread.start()
    served = 0
    for _ in range(20):
        rig.driver_setup()
        for index in range(1, 200):
            deadline = time.monotonic() + 5
            while index - rig.used_index() > QUEUE_SIZE:                # the ring is full
                assert time.monotonic() < deadline, "the device stopped serving"
                time.sleep(0.0002)
            rig.memory.write(AVAIL + 4 + 2 * ((index - 1) % QUEUE_SIZE), b"\0\0")
            rig.memory.write(AVAIL + 2, struct.pack("<H", index))
            # Trapped notifications go to the thread too (the ioeventfds are KVM's, absent here).
            rig.bar_write(vp.NOTIFY.offset, 2, 0)
        served += rig.used_index()
    time.sleep(0.05)
    assert rig.crashes == [] and rig.thread.alive
    assert served > 0 and rig.memory.read(DATA, 4) == struct.pack("<I", 3)
    rig.thread.close()
    assert not rig.thread.alive


def test_a_crash_in_the_thread_is_reported_with_its_traceback(rig):
    rig.device.model.serve = lambda queue: 1 / 0
    rig.map_bar()
    rig.thread.start()
    rig.driver_setup()
    rig.bar_write(vp.NOTIFY.offset, 2, 0)
    deadline = time.monotonic() + 5
    while rig.thread.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not rig.thread.alive and len(rig.crashes) == 1
    assert rig.crashes[0].startswith("virtio I/O thread of blk0 failed:\nTraceback")
    assert "ZeroDivisionError" in rig.crashes[0]


# --- on /dev/kvm -------------------------------------------------------------------------------
def seabios_missing():
    return None if SEABIOS.exists() else f"{SEABIOS} is not installed (Debian package seabios)"


def boot_disk(path: Path, chunk_sectors: int, reads: int) -> Path:
    """tests/guests/disk_read.S as the boot sector, then sectors holding their LBA."""
    boot = guest_build.assemble(guest_build.GUESTS / "disk_read.S", path.parent / f"boot-{chunk_sectors}",
                                {"CHUNK_SECTORS": chunk_sectors, "DISK_READS": reads,
                                 "DISK_SECTORS": DISK_SECTORS},
                                linker_script=guest_build.GUESTS / "bootsector.ld").bin_path.read_bytes()
    path.write_bytes(boot + sectors(1))
    return path


def run_seabios(disk: Path, model_class=BlockDevice, timeout=60):
    """Boot SeaBIOS from `disk` with the I/O thread on; (result, board, serial text)."""
    from tinyvmm.board import Board, BoardConfig
    from tinyvmm.console import Console
    from tinyvmm.runner import Runner
    serial = bytearray()
    with open(disk, "rb") as image:
        board = Board(BoardConfig(SEABIOS.read_bytes(), serial=Console("serial", serial.extend),
                                  virtio_devices=[model_class(BlockBackend(image, read_only=True))],
                                  virtio_iothread=True))
        try:
            board.runner = Runner(board, timeout=timeout)
            result = board.runner.run()
        finally:
            board.close()
    return result, board, serial.decode(errors="replace")


@pytest.mark.kvm
def test_vm_ioeventfd_and_irqfd_assign_and_deassign():
    from tinyvmm.kvm import Kvm, KvmError
    kvm = Kvm()
    vm = kvm.create_vm()
    notify, irq, resample = (os.eventfd(0, os.EFD_CLOEXEC) for _ in range(3))
    try:
        vm.create_irqchip()
        vm.ioeventfd(notify, 0xFE003000, 2, datamatch=0)
        with pytest.raises(KvmError, match="File exists"):
            vm.ioeventfd(notify, 0xFE003000, 2, datamatch=0)
        vm.ioeventfd(notify, 0xFE003004, 2, datamatch=1)               # another queue
        vm.ioeventfd(notify, 0xFE003000, 2, datamatch=0, deassign=True)
        with pytest.raises(KvmError, match="No such file"):
            vm.ioeventfd(notify, 0xFE003000, 2, datamatch=0, deassign=True)
        vm.irqfd(irq, 10, resample_fd=resample)
        with pytest.raises(KvmError):
            vm.irqfd(irq, 11, resample_fd=resample)                     # one GSI per irqfd
        vm.irqfd(irq, 10, deassign=True)
        vm.irqfd(irq, 11, resample_fd=resample)
    finally:
        vm.close()
        kvm.close()
        for fd in (notify, irq, resample):
            os.close(fd)


@pytest.mark.kvm
@pytest.mark.parametrize("chunk", [8, 128], ids=["4KiB", "64KiB"])
def test_seabios_reads_the_disk_through_the_io_thread(tmp_path, monkeypatch, chunk):
    if seabios_missing():
        pytest.skip(seabios_missing())
    from tinyvmm.runner import Outcome
    disk = boot_disk(tmp_path / "disk.img", chunk, reads=32)
    trapped = []
    kick = IoThread.kick
    monkeypatch.setattr(IoThread, "kick", lambda self, index: (trapped.append(index), kick(self, index)))
    fds = open_fds()
    result, board, serial = run_seabios(disk)
    assert result.outcome is Outcome.RESET, f"{result.message}\n{result.report}\n{serial}"
    assert "disk-read: ok" in serial and "error" not in serial
    assert {16, 17} <= {m.value for m in board.milestones if m.port == 0xF4}
    assert trapped == []                        # every notification came through an ioeventfd
    thread = board.iothreads[0]
    assert thread.notify_area is None and thread.gsi is None     # deregistered at close
    assert not thread.alive and not [t for t in threading.enumerate() if t.name.startswith("virtio-io")]
    assert open_fds() == fds


@pytest.mark.kvm
def test_a_board_that_never_runs_closes_its_thread_and_fds(tmp_path):
    from tinyvmm.board import Board, BoardConfig
    disk = pattern_disk(tmp_path / "disk.img")
    fds = open_fds()
    with open(disk, "rb") as image:
        board = Board(BoardConfig(bytes(64 * 1024), virtio_iothread=True,
                                  virtio_devices=[BlockDevice(BlockBackend(image))]))
        assert board.iothreads[0].alive
        board.close()
        board.close()
    assert not board.iothreads[0].alive
    assert open_fds() == fds


class ExplodingDevice(BlockDevice):
    def serve(self, queue):
        raise RuntimeError("a bug in the device model")


@pytest.mark.kvm
def test_a_thread_crash_ends_the_run_as_a_crash(tmp_path):
    if seabios_missing():
        pytest.skip(seabios_missing())
    from tinyvmm.runner import Outcome
    disk = boot_disk(tmp_path / "disk.img", 8, reads=1)
    started = time.monotonic()
    result, _, _ = run_seabios(disk, ExplodingDevice, timeout=120)
    assert time.monotonic() - started < 60                       # not the timeout
    assert result.outcome is Outcome.CRASH
    assert result.message.startswith("virtio I/O thread of virtio-blk0 failed:")
    assert "RuntimeError: a bug in the device model" in result.report
    assert "Traceback" in result.report


INTERRUPT_GUEST = """
#include "common.inc"
    RESET_VECTOR start
start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7000, %sp
    movw $handler, 4 * 0x72             /* IRQ 10: the slave PIC's third vector */
    movw $0xf000, 4 * 0x72 + 2
    mov $0xcf8, %dx                     /* PIIX3 0x61: PIRQB (INTA# of slot 2) to IRQ 10 */
    mov $0x80000860, %eax
    outl %eax, %dx
    mov $0xcfd, %dx
    mov $10, %al
    outb %al, %dx
    mov $0x11, %al                      /* both PICs: vectors 0x08 and 0x70, cascade on IRQ 2 */
    outb %al, $0x20
    outb %al, $0xa0
    mov $0x08, %al
    outb %al, $0x21
    mov $0x70, %al
    outb %al, $0xa1
    mov $0x04, %al
    outb %al, $0x21
    mov $0x02, %al
    outb %al, $0xa1
    mov $0x01, %al
    outb %al, $0x21
    outb %al, $0xa1
    mov $0xfb, %al                      /* unmasked: the cascade, and IRQ 10 */
    outb %al, $0x21
    outb %al, $0xa1
    mov $TEST_PORT, %dx
    mov $'R', %al
    outb %al, %dx
1:  sti
    hlt
    jmp 1b
handler:
    push %ax
    push %dx
    mov $TEST_PORT, %dx
    mov $'I', %al
    outb %al, %dx
    mov $0x20, %al                      /* EOI, slave then master */
    outb %al, $0xa0
    outb %al, $0x20
    pop %dx
    pop %ax
    iret
"""


@pytest.mark.kvm
def test_intx_through_the_irqfd_is_raised_again_until_isr_is_read(tmp_path):
    """The guest takes IRQ 10 and EOIs it; KVM lowers the line and signals the resample
    eventfd, and the I/O thread raises it again while ISR holds a cause: three interrupts
    when the third handler's exit reads ISR, and no more."""
    from tinyvmm.board import Board, BoardConfig
    from tinyvmm.runner import Outcome, Runner
    source = tmp_path / "interrupts.S"
    source.write_text(INTERRUPT_GUEST)
    firmware = guest_build.assemble(source, tmp_path / "interrupts", {"TEST_PORT": TEST_PORT}).bin_path
    disk = pattern_disk(tmp_path / "disk.img")
    taken = []
    with open(disk, "rb") as image:
        board = Board(BoardConfig(firmware.read_bytes(), virtio_iothread=True,
                                  virtio_devices=[BlockDevice(BlockBackend(image))]))
        device = board.virtio[0]

        class TestPort(Device):
            name = "test-port"

            def read(self, offset, size, count=1):
                return bytes(size * count)

            def write(self, offset, size, data):
                if data == b"R":
                    device.interrupt(vp.ISR_QUEUE)
                    # Interrupts take microseconds here: a second is plenty to see them all.
                    threading.Timer(1.0, board.stop_from_thread, (Outcome.EXPECTED, "done")).start()
                elif data == b"I":
                    taken.append(time.monotonic())
                    if len(taken) == 3:
                        device.read_bar(vp.ISR.offset, 1)       # the driver's ISR read
        board.pio.register(TEST_PORT, 1, TestPort())
        try:
            board.runner = Runner(board, timeout=20)
            result = board.runner.run()
            gsi = board.iothreads[0].gsi
        finally:
            board.close()
    assert result.outcome is Outcome.EXPECTED, result.message
    assert len(taken) == 3 and gsi == 10
