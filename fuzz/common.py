"""What the fuzz targets share: a KVM-less pc platform over bytearray-backed guest memory, an
interpreter of bus accesses decoded from the fuzzer's bytes, the invariants, and main().

Guest memory is tinyvmm.memory.GuestMemory, as in a real machine, over bytearrays with guard
bytes on both sides of RAM and firmware: an access outside guest memory is either refused
(GuestMemoryError, which a device must catch) or would land in a guard, which check() finds.
"""

import os
import sys

import atheris

# The checkout this folder is in, ahead of any installed tinyvmm.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with atheris.instrument_imports():
    from tinyvmm import layout
    from tinyvmm.boot import bzimage, direct, elf, linux, payload, pvh  # noqa: F401 (instrumented)
    from tinyvmm.bus import Bus, PioBus
    from tinyvmm.devices.cmos import Cmos
    from tinyvmm.devices.i8042 import I8042
    from tinyvmm.devices.misc import Port92, PostCode
    from tinyvmm.devices.serial import Serial
    from tinyvmm.errors import ConfigError
    from tinyvmm.fw_cfg import items as fwi
    from tinyvmm.fw_cfg.device import FwCfg, FwCfgDmaPorts, FwCfgIoPorts, FwCfgMmio
    from tinyvmm.kvm import abi
    from tinyvmm.memory import GuestMemory, GuestMemoryError
    from tinyvmm.pci.host import PciBuses, PciHost, config_address
    from tinyvmm.pci.i440fx import I440fxHostBridge
    from tinyvmm.pci.pam import ShadowRam, ShadowWindow
    from tinyvmm.pci.piix import Piix3IsaBridge, Piix4PowerManagement, PlainRegisters, ResetControl
    from tinyvmm.virtio.blk import BlockBackend, BlockDevice
    from tinyvmm.virtio.pci import VirtioPciDevice

RAM_SIZE = layout.RAM_MIN_SIZE
FIRMWARE_SIZE = 64 * layout.KiB
GUARD = 4096
GUARD_BYTE = 0xA5
FW_CFG_MMIO_BASE = 0xFEF00000
DISK_SIZE = 64 * layout.KiB
MAX_OPS = 64            # bus accesses per input: bounds the work of one input
MAX_COUNT = 16          # elements of one string I/O access


class Platform:
    """The devices of tinyvmm.board's pc machine with no VM under them: the same buses, the
    same GuestMemory layout, a virtio-blk disk on a memfd, and clocks that stand still."""

    def __init__(self, virtio: bool = False):
        self.ram_backing = bytearray([GUARD_BYTE]) * (RAM_SIZE + 2 * GUARD)
        self.rom_backing = bytearray([GUARD_BYTE]) * (FIRMWARE_SIZE + 2 * GUARD)
        self.rom_backing[GUARD:GUARD + FIRMWARE_SIZE] = bytes(range(256)) * (FIRMWARE_SIZE // 256)
        self.firmware = bytes(self.rom_backing)
        ram = memoryview(self.ram_backing)[GUARD:GUARD + RAM_SIZE]
        rom = memoryview(self.rom_backing)[GUARD:GUARD + FIRMWARE_SIZE]
        self.memory = GuestMemory([
            (r.gpa, r.size, (ram if r.kind == "ram" else rom)[r.host_offset:r.host_offset + r.size],
             r.kind == "ram") for r in layout.memory_regions(RAM_SIZE, FIRMWARE_SIZE)])
        self.pio, self.mmio = PioBus(), Bus("mmio")
        self.resets = 0
        self.add_pio("com1", Serial())
        self.add_pio("i8042", I8042(on_reset=self._reset))
        self.add_pio("port92", Port92(on_reset=self._reset))
        self.add_pio("post", PostCode())
        self.add_pio("cmos", Cmos(RAM_SIZE, clock=lambda: 1.7e9))
        self.shadow = ShadowRam(self.memory, ram, rom)
        self.mmio.register(layout.SHADOW_START, layout.SHADOW_END - layout.SHADOW_START,
                           ShadowWindow(self.memory))
        self.pci = PciHost(PciBuses(self.pio, self.mmio, self.memory))
        self.pci.add(I440fxHostBridge(RAM_SIZE, self.shadow), slot=0)
        self.pci.add(Piix3IsaBridge(), slot=1)
        self.pci.add(Piix4PowerManagement(on_poweroff=self._reset, clock=lambda: 0), slot=1, number=3)
        self.pci.reset_control = ResetControl(on_reset=self._reset)
        self.add_pio("acpi_gpe0", PlainRegisters("acpi-gpe0", 4, write_one_to_clear=2))
        self.add_pio("pci_config", self.pci)
        self.add_pio("apm", PlainRegisters("apm", 2))
        items = fwi.FwCfgItems()
        items.add_u64(fwi.FW_CFG_RAM_SIZE, RAM_SIZE)
        items.add_file("etc/e820", fwi.e820_file(RAM_SIZE, amd_ht_hole=False))
        items.add_file("opt/blob", bytes(range(256)) * 12)
        items.add_file("opt/rw", bytes(64), writable=True)
        self.fw_cfg = FwCfg(items, self.memory)
        self.add_pio("fw_cfg", FwCfgIoPorts(self.fw_cfg))
        self.add_pio("fw_cfg_dma", FwCfgDmaPorts(self.fw_cfg))
        self.mmio.register(FW_CFG_MMIO_BASE, 0x18, FwCfgMmio(self.fw_cfg))
        self.virtio = None
        if virtio:
            disk = BlockBackend(_disk(), DISK_SIZE)
            self.virtio = self.pci.add(VirtioPciDevice(BlockDevice(disk, queue_size=8), self.memory),
                                       slot=layout.VIRTIO_FIRST_SLOT)

    def _reset(self) -> None:
        self.resets += 1

    def add_pio(self, name: str, device) -> None:
        base, size = layout.PORTS[name]
        self.pio.register(base, size, device)

    def check(self) -> None:
        """The invariants after an input: the guards and the firmware image are untouched."""
        for backing, size in ((self.ram_backing, RAM_SIZE), (self.rom_backing, FIRMWARE_SIZE)):
            if backing[:GUARD].count(GUARD_BYTE) != GUARD or \
                    backing[GUARD + size:].count(GUARD_BYTE) != GUARD:
                raise AssertionError("a write landed outside guest memory")
        if self.rom_backing != self.firmware:
            raise AssertionError("the firmware image was written")


_memfd: int | None = None


def _disk() -> int:
    """One memfd for every input's disk, zeroed again each time (an input sees no other's writes)."""
    global _memfd
    if _memfd is None:
        _memfd = os.memfd_create("fuzz-disk")
        os.ftruncate(_memfd, DISK_SIZE)
    os.pwrite(_memfd, bytes(DISK_SIZE), 0)
    return _memfd


class FakeVcpu:
    """A vCPU's registers as KVM's structures, at the reset vector, with no VM behind them; its
    page tables map the first 4 GiB one to one and nothing above."""

    def __init__(self) -> None:
        self.regs = abi.kvm_regs(rip=0xFFF0, rflags=2)
        self.sregs = abi.kvm_sregs()
        self.sregs.cs.selector, self.sregs.cs.base, self.sregs.cs.limit = 0xF000, 0xFFFF0000, 0xFFFF
        self.fpu = abi.kvm_fpu(fcw=0x37F)
        self.debug: list = []

    def get_regs(self):
        return abi.kvm_regs.from_buffer_copy(self.regs)

    def set_regs(self, regs) -> None:
        self.regs = abi.kvm_regs.from_buffer_copy(regs)

    def get_sregs(self):
        return abi.kvm_sregs.from_buffer_copy(self.sregs)

    def set_sregs(self, sregs) -> None:
        self.sregs = abi.kvm_sregs.from_buffer_copy(sregs)

    def get_fpu(self):
        return abi.kvm_fpu.from_buffer_copy(self.fpu)

    def set_fpu(self, fpu) -> None:
        self.fpu = abi.kvm_fpu.from_buffer_copy(fpu)

    def set_guest_debug(self, control, debugreg=None) -> None:
        self.debug.append((control, debugreg))

    def translate(self, linear: int) -> int | None:
        return linear if linear < layout.FOUR_GIB else None


def check_ram_written(platform: Platform, before: bytes, ranges, what: str) -> None:
    """RAM differs from `before` (a copy of platform.ram_backing) only inside `ranges`,
    (gpa, size) pairs: where `what` was allowed to write."""
    after = bytearray(platform.ram_backing)
    for gpa, size in ranges:
        if gpa < RAM_SIZE:
            end = GUARD + min(gpa + size, RAM_SIZE)
            after[GUARD + gpa:end] = before[GUARD + gpa:end]
    assert after == before, f"{what} wrote RAM outside the ranges it may write"


def bad_input(call, *args):
    """call(*args), where the project's documented refusal of bad input (ConfigError) is an
    answer, not a finding; None then."""
    try:
        return call(*args)
    except ConfigError:
        return None


def boot_kernel(data: bytes) -> None:
    """A kernel file through what `tinyvmm --kernel FILE` does with it: read and checked
    (tinyvmm.boot.payload.load_payload), then published in fw_cfg and filled in for a firmware
    boot, or written into RAM with the vCPU at its entry for a direct one. The first byte
    chooses the options: --boot (bits 0-1), an initrd (bits 2-4: its size in 64 KiB), --append
    (bit 5), fw_cfg DMA (bit 6). Only a ConfigError may refuse the file; anything that passes
    must load inside RAM."""
    options, kernel = (data[0], data[1:]) if data else (0, b"")
    boot = (None, "direct", "firmware", None)[options & 3]
    initrd_size = (options >> 2 & 7) * 64 * layout.KiB
    # The files stay open to the end: an ELF kernel's segments are read when they are loaded.
    with memfd_path(kernel) as kernel_path, memfd_path(bytes(initrd_size)) as initrd_path:
        loaded = bad_input(payload.load_payload, kernel_path, initrd_path if initrd_size else None,
                           "quiet" if options & 0x20 else None, bool(options & 0x40), RAM_SIZE,
                           False, boot)
        if loaded is None:
            return
        platform = Platform()
        if loaded.boot == "direct":
            loaded.fill(platform.memory)
            loaded.enter(platform.memory, FakeVcpu(), layout.e820_map(RAM_SIZE, FIRMWARE_SIZE))
        else:
            loaded.publish(fwi.FwCfgItems())
            loaded.fill(platform.memory, foreign_firmware=True)
    for gpa, size in loaded.load_ranges():
        assert platform.memory.contains(gpa, size, True), (gpa, size)
    platform.check()


class memfd_path:
    """A memfd holding `data`, as a path for the duration of a `with`."""

    def __init__(self, data: bytes) -> None:
        self.fd = os.memfd_create("fuzz-file")
        os.write(self.fd, data)

    def __enter__(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def access(platform: Platform, fdp, bus, ports=None) -> None:
    """One access decoded from `fdp`: a read or write of 1, 2, 4 (or 8 on MMIO) bytes, maybe a
    string of them, at an offset in a device the bus holds now (or at one of `ports`)."""
    write = fdp.ConsumeBool()
    size = fdp.PickValueInList([1, 2, 4, 8] if bus is platform.mmio else [1, 2, 4])
    count = fdp.ConsumeIntInRange(1, MAX_COUNT) if fdp.ConsumeIntInRange(0, 7) == 0 else 1
    if ports:
        address = fdp.PickValueInList(ports) + fdp.ConsumeIntInRange(0, 3)
    else:
        devices = bus.devices()
        if not devices or fdp.ConsumeIntInRange(0, 15) == 0:
            address = fdp.ConsumeIntInRange(0, 0xFFFF if bus is platform.pio else (1 << 32) - 1)
        else:
            base, end, _ = devices[fdp.ConsumeIntInRange(0, len(devices) - 1)]
            address = base + fdp.ConsumeIntInRange(0, end - base + 2)
    if write:
        bus.write(address, size, fdp.ConsumeBytes(size * count).ljust(size * count, b"\0"))
    else:
        data = bus.read(address, size, count)
        assert len(data) == size * count, (address, size, count)


# Edges of the memory map: the first and last bytes of RAM and ROM regions, the holes between.
EDGES = [0, layout.VGA_START, layout.SHADOW_START, layout.firmware_rom_low_start(FIRMWARE_SIZE),
         layout.HIGH_MEMORY_START, RAM_SIZE, layout.FOUR_GIB - FIRMWARE_SIZE, layout.FOUR_GIB,
         1 << 63, 1 << 64]


def guest_address(fdp) -> int:
    """A guest-physical address, usually near an edge of the memory map, any 64-bit one else."""
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return fdp.ConsumeIntInRange(0, (1 << 64) - 1)
    return max(0, min(fdp.PickValueInList(EDGES) + fdp.ConsumeIntInRange(-64, 0x1000), (1 << 64) - 1))


def store(platform: Platform, gpa: int, data: bytes) -> None:
    """Guest code's store of `data` at `gpa`, across regions if need be; nothing if any of it
    is outside writable memory (the guest would fault, not the device)."""
    try:
        views = platform.memory.views(gpa, len(data), True)
    except GuestMemoryError:
        return
    for view in views:
        view[:], data = data[:len(view)], data[len(view):]


def poke(platform: Platform, fdp) -> None:
    """Guest code storing into RAM (a descriptor, a ring): bytes at an address in RAM."""
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
    region = fdp.PickValueInList([(0, layout.VGA_START), (layout.HIGH_MEMORY_START, RAM_SIZE)])
    gpa = fdp.ConsumeIntInRange(region[0], region[1] - len(data))
    platform.memory.write(gpa, data)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        store(platform, guest_address(fdp), fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))


# Registers worth aiming at: command and status, the BARs, the ROM BAR, the capability list,
# PIIX4's PMBA and PMREGMISC, the i440FX's PAM registers, the virtio PCI_CFG window.
REGISTERS = [0x04, 0x06, 0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30, 0x34, 0x3C, 0x40, 0x44,
             0x58, 0x5C, 0x60, 0x70, 0x80, 0x84, 0x90, 0x94, 0x98, 0xFC]
VALUES = [0, 0xFFFFFFFF, 0x7, 0x600, 0x601, 0xFE000000, 0xFE00000C, 0x1, 0x33333333, 0x11111111,
          0x22222222, 0xC0000000, 0xFEE00000, 0xFEC00000, 0xE0000000]


def config(platform, fdp):
    """One configuration cycle: latch an address at 0xCF8, then a data access at 0xCFC-0xCFF."""
    slot = fdp.PickValueInList([0, 1, layout.VIRTIO_FIRST_SLOT, fdp.ConsumeIntInRange(0, 31)])
    function = fdp.PickValueInList([0, 3, fdp.ConsumeIntInRange(0, 7)])
    register = fdp.PickValueInList(REGISTERS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 0xFF)
    address = config_address(0, slot, function, register)
    if fdp.ConsumeIntInRange(0, 15) == 0:
        address ^= 1 << fdp.ConsumeIntInRange(0, 31)        # off the beaten path
    platform.pio.write(0xCF8, 4, address.to_bytes(4, "little"))
    size = fdp.PickValueInList([1, 2, 4])
    port = 0xCFC + (register & 3 & -size if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 3))
    if fdp.ConsumeBool():
        value = fdp.PickValueInList(VALUES) if fdp.ConsumeBool() else fdp.ConsumeInt(4)
        platform.pio.write(port, size, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
    else:
        platform.pio.read(port, size)


def run_ops(platform: Platform, fdp, ops) -> None:
    """Up to MAX_OPS operations, each chosen by the input from `ops`."""
    for _ in range(MAX_OPS):
        if fdp.remaining_bytes() == 0:
            break
        ops[fdp.ConsumeIntInRange(0, len(ops) - 1)](platform, fdp)
    platform.check()


def main(test_one_input, corpus: str) -> None:
    """Run the fuzzer on `test_one_input`; with no corpus folder given, use fuzz/corpus/<name>."""
    here = os.path.dirname(os.path.abspath(__file__))
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # New inputs go to the first folder, fuzz/work/<target> (ignored by git); the seeds
        # in fuzz/corpus/<target> are only read.
        work = os.path.join(here, "work", corpus)
        os.makedirs(work, exist_ok=True)
        argv += [work, os.path.join(here, "corpus", corpus)]
    if not any(arg.startswith("-timeout=") for arg in argv[1:]):
        argv.insert(1, "-timeout=10")       # a hang, as run.py counts one (libFuzzer's: 1200 s)
    if not any(arg.startswith("-artifact_prefix=") for arg in argv[1:]):
        # Crash inputs go to fuzz/artifacts/ (ignored by git), not the working directory.
        os.makedirs(os.path.join(here, "artifacts"), exist_ok=True)
        argv.insert(1, f"-artifact_prefix={os.path.join(here, 'artifacts', corpus)}-")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
