"""PCI configuration space, the i440FX/PIIX functions and PAM shadow RAM, without KVM."""

import pytest
from guest_memory import guest_memory

from tinyvmm import layout
from tinyvmm.bus import Bus, Device, PioBus
from tinyvmm.memory import GuestMemoryError
from tinyvmm.pci import config as cfg
from tinyvmm.pci.host import PciBuses, PciHost, config_address
from tinyvmm.pci.i440fx import I440fxHostBridge
from tinyvmm.pci.pam import (
    PAM_PCI,
    PAM_READ_ONLY,
    PAM_READ_WRITE,
    PAM_WRITE_ONLY,
    ShadowRam,
    ShadowWindow,
    segment_modes,
    window_layout,
)
from tinyvmm.pci.piix import PM_TIMER_HZ, Piix3IsaBridge, Piix4PowerManagement, PlainRegisters, ResetControl


class Recorder(Device):
    name = "recorder"

    def __init__(self):
        self.accesses = []

    def read(self, offset, size, count=1):
        self.accesses.append(("read", offset, size))
        return bytes([0x5A]) * (size * count)

    def write(self, offset, size, data):
        self.accesses.append(("write", offset, bytes(data)))


def pio_write(host: PciHost, port: int, size: int, value: int) -> None:
    host.write(port - 0xCF8, size, value.to_bytes(size, "little"))


def pio_read(host: PciHost, port: int, size: int) -> int:
    return int.from_bytes(host.read(port - 0xCF8, size), "little")


def config_read(host, slot, function, register, size=4):
    pio_write(host, 0xCF8, 4, config_address(0, slot, function, register))
    return pio_read(host, 0xCFC + (register & 3), size)


def config_write(host, slot, function, register, size, value):
    pio_write(host, 0xCF8, 4, config_address(0, slot, function, register))
    pio_write(host, 0xCFC + (register & 3), size, value)


@pytest.fixture
def pci():
    """A PCI host with the pc machine's functions, on real buses, over small guest memory."""
    pio, mmio = PioBus(), Bus("mmio")
    memory = guest_memory((0, 0xA0000), (0x100000, 0xF00000))
    host = PciHost(PciBuses(pio, mmio, memory))
    host.add(I440fxHostBridge(256 * layout.MiB), slot=0)
    isa = host.add(Piix3IsaBridge(), slot=1)
    pm = host.add(Piix4PowerManagement(), slot=1, number=3)
    pio.register(0xCF8, 8, host)
    return host, pio, mmio, isa, pm


# --- configuration mechanism #1 ---------------------------------------------------
def test_host_bridge_and_piix_identify_as_on_qemu(pci):
    host = pci[0]
    assert config_read(host, 0, 0, 0) == 0x12378086
    assert config_read(host, 0, 0, 0x2C) == 0x11001AF4            # QEMU's subsystem IDs
    assert config_read(host, 0, 0, 0x08) == 0x06000002            # host bridge, revision 2
    assert config_read(host, 1, 0, 0) == 0x70008086
    assert config_read(host, 1, 0, 0x0E, 1) & 0x80                  # multi-function
    assert config_read(host, 1, 3, 0) == 0x71138086
    assert config_read(host, 1, 3, 0x08) == 0x06800003
    assert config_read(host, 1, 3, 0x5B, 1) == 0x02                 # SMM already set up: smm=off


def test_absent_functions_and_disabled_cycles_read_all_ones(pci):
    host = pci[0]
    assert config_read(host, 5, 0, 0) == 0xFFFFFFFF
    assert config_read(host, 1, 1, 0, 2) == 0xFFFF
    assert config_read(host, 0, 0, 0x100 - 1, 1) == 0               # last byte exists
    pio_write(host, 0xCF8, 4, (1 << 16) | 0x80000000)               # bus 1: nothing there
    assert pio_read(host, 0xCFC, 4) == 0xFFFFFFFF
    pio_write(host, 0xCF8, 4, 0)                                    # enable bit clear
    assert pio_read(host, 0xCFC, 4) == 0xFFFFFFFF
    assert pio_read(host, 0xCFE, 1) == 0xFF
    pio_write(host, 0xCFC, 4, 0x12345678)                           # dropped, never raises
    config_write(host, 7, 2, 0x10, 4, 0xFFFFFFFF)


def test_address_latch_takes_only_dword_writes(pci):
    host = pci[0]
    pio_write(host, 0xCF8, 4, 0x80000000)
    assert pio_read(host, 0xCF8, 4) == 0x80000000                   # the presence test firmware runs
    pio_write(host, 0xCF8, 2, 0x1234)
    pio_write(host, 0xCFA, 1, 0x56)
    assert pio_read(host, 0xCF8, 4) == 0x80000000


def test_byte_word_and_dword_data_at_any_offset(pci):
    host = pci[0]
    assert config_read(host, 0, 0, 0x02, 2) == 0x1237
    assert config_read(host, 0, 0, 0x03, 1) == 0x12
    config_write(host, 0, 0, 0x41, 1, 0xAB)
    config_write(host, 0, 0, 0x42, 2, 0xCDEF)
    assert config_read(host, 0, 0, 0x40) == 0x00CDEFAB << 8


def test_read_only_header_bits_ignore_writes(pci):
    host = pci[0]
    config_write(host, 0, 0, 0x00, 4, 0)                            # IDs
    config_write(host, 0, 0, 0x08, 4, 0xFFFFFFFF)                   # class, revision
    assert config_read(host, 0, 0, 0) == 0x12378086
    assert config_read(host, 0, 0, 0x08) == 0x06000002
    config_write(host, 0, 0, 0x04, 2, 0xFFFF)
    assert config_read(host, 0, 0, 0x04, 2) == 0x0507               # IO|MEM|MASTER|SERR|INTX_DISABLE
    config_write(host, 1, 3, 0x3C, 1, 9)
    assert config_read(host, 1, 3, 0x3C, 2) == 0x0109               # line written, pin read-only


def test_reset_control_register_at_0xcf9():
    resets = []
    host = PciHost()
    host.reset_control = ResetControl(on_reset=lambda: resets.append(1))
    pio_write(host, 0xCF8, 4, 0x80000000)
    pio_write(host, 0xCF9, 1, 0x02)
    assert pio_read(host, 0xCF9, 1) == 0x02 and not resets
    assert pio_read(host, 0xCF8, 4) == 0x80000000                   # the latch is untouched
    pio_write(host, 0xCF9, 1, 0x06)
    assert resets == [1]


# --- BARs ------------------------------------------------------------------------------
def make_device(**bars):
    function = cfg.PciFunction(0x1AF4, 0x1042, 0x010000, interrupt_pin=1)
    devices = {}
    for name, (index, size, kind) in bars.items():
        devices[name] = Recorder()
        function.add_bar(index, size, kind, devices[name])
    return function, devices


@pytest.mark.parametrize("kind,size,readback", [
    ("io", 0x40, 0xFFFFFFC1),
    ("mem32", 0x1000, 0xFFFFF000),
    ("mem64", 0x4000, 0xFFFFC004),
])
def test_bar_sizing_returns_the_size_mask(pci, kind, size, readback):
    host, pio, mmio, *_ = pci
    function, _ = make_device(bar=(0, size, kind))
    host.add(function, slot=3)
    config_write(host, 3, 0, 0x10, 4, 0xFFFFFFFF)
    assert config_read(host, 3, 0, 0x10) == readback
    if kind == "mem64":
        config_write(host, 3, 0, 0x14, 4, 0xFFFFFFFF)
        assert config_read(host, 3, 0, 0x14) == 0xFFFFFFFF
    size_seen = (~(readback & ~(3 if kind == "io" else 0xF)) + 1) & 0xFFFFFFFF
    assert size_seen == size


def test_bar_decodes_only_while_its_command_bit_is_set(pci):
    host, pio, mmio, *_ = pci
    function, devices = make_device(regs=(0, 0x1000, "mem32"), ports=(1, 0x20, "io"))
    host.add(function, slot=3)
    config_write(host, 3, 0, 0x10, 4, 0xFEB00000)
    config_write(host, 3, 0, 0x14, 4, 0xC000)
    assert mmio.find(0xFEB00000) is None and pio.find(0xC000) is None
    config_write(host, 3, 0, 0x04, 2, cfg.PCI_COMMAND_MEMORY)
    assert mmio.read(0xFEB00010, 4) == b"\x5a" * 4
    assert devices["regs"].accesses == [("read", 0x10, 4)]           # offsets into the BAR
    assert pio.find(0xC000) is None
    config_write(host, 3, 0, 0x04, 2, cfg.PCI_COMMAND_MEMORY | cfg.PCI_COMMAND_IO)
    pio.write(0xC004, 1, b"\x01")
    assert devices["ports"].accesses == [("write", 4, b"\x01")]
    config_write(host, 3, 0, 0x10, 4, 0xFEA00000)                    # moved while decoding
    assert mmio.find(0xFEB00000) is None and mmio.find(0xFEA00000) is not None
    config_write(host, 3, 0, 0x04, 2, 0)
    assert mmio.find(0xFEA00000) is None and pio.find(0xC000) is None


def two_devices_at(host, addresses, **bars):
    """Two functions of the same `bars` in slots 3 and 4, BAR0 at addresses[0] and [1],
    memory decoding on: (a, a's devices, b, b's devices)."""
    a, devices_a = make_device(**bars)
    b, devices_b = make_device(**bars)
    host.add(a, slot=3)
    host.add(b, slot=4)
    for slot, address in zip((3, 4), addresses):
        config_write(host, slot, 0, 0x10, 4, address)
        config_write(host, slot, 0, 0x04, 2, cfg.PCI_COMMAND_MEMORY)
    return a, devices_a, b, devices_b


def test_bar_over_ram_the_apics_or_another_bar_is_refused(pci):
    host, pio, mmio, *_ = pci
    a, _, b, _ = two_devices_at(host, (0x200000, layout.IOAPIC_START),   # RAM, then the I/O APIC
                                regs=(0, 0x1000, "mem32"))
    assert not a.mapped and not b.mapped
    assert "guest memory" in host.buses.refused[0] and "I/O APIC" in host.buses.refused[1]
    config_write(host, 3, 0, 0x10, 4, 0xFEB00000)
    config_write(host, 4, 0, 0x10, 4, 0xFEB00000)                    # onto a's BAR
    assert a.mapped and not b.mapped
    assert "overlaps" in host.buses.refused[-1]
    config_write(host, 4, 0, 0x10, 4, 0xFEB01000)                    # the guest can move it away
    assert b.mapped


def test_a_bar_refused_for_a_conflict_is_mapped_once_the_other_moves_away(pci):
    # Issue 24: firmware moving BARs one write at a time puts two at one address for a while;
    # the refused one stayed dead (all-ones) after they were apart again.
    host, pio, mmio, *_ = pci
    a, _, b, devices_b = two_devices_at(host, (0xFEB00000, 0xFEB00000), regs=(0, 0x1000, "mem32"))
    assert a.mapped and not b.mapped
    config_write(host, 3, 0, 0x10, 4, 0xFEA00000)                    # a moves: b's turn
    assert a.mapped[0] == ("mmio", 0xFEA00000) and b.mapped[0] == ("mmio", 0xFEB00000)
    mmio.read(0xFEB00010, 4)
    assert devices_b["regs"].accesses == [("read", 0x10, 4)]
    assert host.buses.waiting == set()


def test_a_refused_bar_is_mapped_when_the_other_stops_decoding(pci):
    # The sibling: the conflict ends by a command write (memory decode off), not a move; and
    # an I/O BAR refused the same way comes back too.
    host, pio, mmio, *_ = pci
    a, _, b, devices_b = two_devices_at(host, (0xFEB00000, 0xFEB00000),
                                        regs=(0, 0x1000, "mem32"), ports=(1, 0x20, "io"))
    for slot in (3, 4):
        config_write(host, slot, 0, 0x14, 4, 0xC000)
        config_write(host, slot, 0, 0x04, 2, cfg.PCI_COMMAND_MEMORY | cfg.PCI_COMMAND_IO)
    assert set(a.mapped) == {0, 1} and not b.mapped
    config_write(host, 3, 0, 0x04, 2, cfg.PCI_COMMAND_IO)             # a's memory BAR off
    assert b.mapped == {0: ("mmio", 0xFEB00000)}
    a.reset()                                                         # a's I/O BAR off too
    assert b.mapped == {0: ("mmio", 0xFEB00000), 1: ("pio", 0xC000)}
    pio.read(0xC001, 1)
    assert devices_b["ports"].accesses == [("read", 1, 1)]


def test_bar_reset_restores_type_bits_and_unmaps(pci):
    host, pio, mmio, *_ = pci
    function, _ = make_device(regs=(0, 0x1000, "mem64"))
    host.add(function, slot=3)
    config_write(host, 3, 0, 0x10, 4, 0xFEB00000)
    config_write(host, 3, 0, 0x04, 2, cfg.PCI_COMMAND_MEMORY)
    assert function.mapped
    function.reset()
    assert config_read(host, 3, 0, 0x10) == 0x4 and not function.mapped


def test_bad_bar_declarations_are_refused():
    function = cfg.PciFunction(0x1AF4, 0x1000, 0)
    with pytest.raises(cfg.PciConfigError):
        function.add_bar(0, 0x1800, "mem32", Recorder())           # not a power of two
    with pytest.raises(cfg.PciConfigError):
        function.add_bar(5, 0x1000, "mem64", Recorder())           # needs two slots
    function.add_bar(0, 0x1000, "mem64", Recorder())
    with pytest.raises(cfg.PciConfigError):
        function.add_bar(1, 0x100, "io", Recorder())                # the 64-bit BAR's upper half


def test_capability_list(pci):
    host = pci[0]
    function = cfg.PciFunction(0x1AF4, 0x1041, 0x020000)
    first = function.add_capability(0x09, bytes(14))
    second = function.add_capability(0x11, bytes(10), writable=b"\xff\xff")
    host.add(function, slot=2)
    assert config_read(host, 2, 0, 0x06, 2) & cfg.PCI_STATUS_CAP_LIST
    assert config_read(host, 2, 0, 0x34, 1) == first
    assert config_read(host, 2, 0, first, 2) == (second << 8) | 0x09
    assert config_read(host, 2, 0, second + 1, 1) == 0              # end of the list
    config_write(host, 2, 0, first + 2, 4, 0xFFFFFFFF)              # read-only body
    config_write(host, 2, 0, second + 2, 4, 0xFFFFFFFF)             # two writable bytes
    assert config_read(host, 2, 0, first + 2) == 0
    assert config_read(host, 2, 0, second + 2) == 0xFFFF


def test_status_error_bits_are_write_one_to_clear():
    function = cfg.PciFunction(0x8086, 0x1237, 0)
    function.set_word(cfg.PCI_STATUS, 0x8000 | cfg.PCI_STATUS_CAP_LIST)
    function.write_config(cfg.PCI_STATUS, 2, 0x8010)
    assert function.get(cfg.PCI_STATUS, 2) == cfg.PCI_STATUS_CAP_LIST


# --- PIIX ----------------------------------------------------------------------------------
def test_pirq_routing_registers(pci):
    host, _, _, isa, _ = pci
    assert [config_read(host, 1, 0, 0x60 + i, 1) for i in range(4)] == [0x80] * 4
    assert isa.irq_for(slot=3, pin=1) is None
    config_write(host, 1, 0, 0x60, 4, 0x0B0B0A0A)                    # SeaBIOS's routing
    assert [isa.pirq_irq(i) for i in range(4)] == [10, 10, 11, 11]
    assert isa.irq_for(slot=3, pin=1) == 11                          # (1 - 1 + 3 - 1) & 3 = PIRQC
    assert isa.irq_for(slot=1, pin=1) == 10


def test_pm_block_decodes_where_firmware_puts_it(pci):
    host, pio, _, _, pm = pci
    config_write(host, 1, 3, 0x40, 4, 0xB000)
    assert config_read(host, 1, 3, 0x40) == 0xB001                  # bit 0: an I/O address
    assert pio.find(0xB008) is None                                  # not enabled yet
    config_write(host, 1, 3, 0x80, 1, 0x01)
    assert pio.find(0xB008) is not None
    config_write(host, 1, 3, 0x40, 4, 0x601)                         # qboot's base
    assert pio.find(0xB008) is None and pio.find(0x608) is not None
    config_write(host, 1, 3, 0x80, 1, 0x00)
    assert pio.find(0x608) is None


def test_pm_timer_counts_at_3_58_mhz_in_24_bits():
    now = [0]
    pm = Piix4PowerManagement(clock=lambda: now[0])
    regs = pm.registers
    now[0] = 1_000_000_000
    assert int.from_bytes(regs.read(8, 4), "little") == PM_TIMER_HZ
    now[0] = 10_000_000_000                                           # wraps at 2**24
    assert int.from_bytes(regs.read(8, 4), "little") == (10 * PM_TIMER_HZ) & 0xFFFFFF
    assert regs.read(8, 1) == bytes([(10 * PM_TIMER_HZ) & 0xFF])
    regs.write(8, 4, b"\0\0\0\0")                                     # read-only
    assert int.from_bytes(regs.read(8, 4), "little") == (10 * PM_TIMER_HZ) & 0xFFFFFF


def test_pm1_status_enable_sci_and_soft_off():
    events, sci = [], []
    now = [0]
    pm = Piix4PowerManagement(on_poweroff=lambda: events.append("off"), set_sci=sci.append,
                              clock=lambda: now[0])
    regs = pm.registers
    assert int.from_bytes(regs.read(4, 2), "little") & 1              # SCI_EN from reset
    now[0] = (1 << 23) * 1_000_000_000 // PM_TIMER_HZ + 1000          # timer bit 23 toggled
    assert int.from_bytes(regs.read(0, 2), "little") & 1              # TMR_STS
    regs.write(2, 2, (1).to_bytes(2, "little"))                       # TMR_EN
    assert sci == [True]
    regs.write(0, 2, (1).to_bytes(2, "little"))                       # write 1 to clear
    assert not int.from_bytes(regs.read(0, 2), "little") & 1 and sci == [True, False]
    regs.write(4, 2, ((5 << 10) | 0x2000 | 1).to_bytes(2, "little"))  # S5 type 5: not this DSDT's
    assert not events
    regs.write(4, 2, ((0 << 10) | 0x2000 | 1).to_bytes(2, "little"))  # SLP_TYP 0 + SLP_EN
    assert events == ["off"]
    assert not int.from_bytes(regs.read(4, 2), "little") & 0x2000     # SLP_EN reads 0


def test_gpe0_and_apm_registers():
    gpe = PlainRegisters("acpi-gpe0", 4, write_one_to_clear=2)
    gpe.bytes[0] = 0x0F
    gpe.write(0, 1, b"\x05")
    gpe.write(2, 1, b"\x33")
    assert gpe.read(0, 4) == b"\x0a\x00\x33\x00"
    apm = PlainRegisters("apm", 2)
    apm.write(1, 1, b"\x01")
    assert apm.read(1, 1) == b"\x01"


# --- PAM -----------------------------------------------------------------------------------------
class FakeSlots:
    """KVM's memory slots as SlotMap leaves them: gpa -> (size, host address, read-only)."""

    def __init__(self):
        self.slots = {}

    def sync(self, start, end, regions):
        self.slots = {gpa: (size, host, readonly) for gpa, size, host, readonly in regions}


class ShadowRig:
    """RAM and a 128 KiB firmware image behind the shadow window, with a guest's view of it:
    an access goes to a KVM slot when one covers it, else it exits to ShadowWindow."""

    def __init__(self, firmware_size=128 * 1024, strict=True):
        from tinyvmm.memory import buffer_address
        self.ram = bytearray(2 * layout.MiB)
        self.rom = bytearray(bytes([0xEE]) * firmware_size)
        self.memory = guest_memory((0, memoryview(self.ram)[:0xA0000]),
                                   (0x100000, memoryview(self.ram)[0x100000:]))
        low = layout.firmware_rom_low_start(firmware_size)
        self.memory.replace(layout.SHADOW_START, layout.SHADOW_END,
                            [(low, layout.SHADOW_END - low,
                              memoryview(self.rom)[firmware_size - (layout.SHADOW_END - low):], None)])
        self.slots = FakeSlots()
        self.shadow = ShadowRam(self.memory, self.ram, self.rom, self.slots, strict_read_only=strict)
        self.exits = ShadowWindow(self.memory)
        self.ram_base = buffer_address(self.ram)
        self.rom_base = buffer_address(self.rom)

    def _slot(self, gpa):
        for start, (size, host, readonly) in self.slots.slots.items():
            if start <= gpa < start + size:
                return host + gpa - start, readonly
        return None

    def _host_buffer(self, host):
        if self.ram_base <= host < self.ram_base + len(self.ram):
            return self.ram, host - self.ram_base
        return self.rom, host - self.rom_base

    def guest_read(self, gpa):
        slot = self._slot(gpa)
        if slot is None:
            return self.exits.read(gpa - layout.SHADOW_START, 1)[0]
        buffer, offset = self._host_buffer(slot[0])
        return buffer[offset]

    def guest_write(self, gpa, value):
        slot = self._slot(gpa)
        if slot is None or slot[1]:
            self.exits.write(gpa - layout.SHADOW_START, 1, bytes([value]))
        else:
            buffer, offset = self._host_buffer(slot[0])
            buffer[offset] = value


def registers_for(segment_index: int, mode: int) -> bytes:
    """PAM registers 0x59-0x5F with one segment in `mode` and the others 0."""
    registers = bytearray(7)
    _, _, register, shift = layout.SHADOW_SEGMENTS[segment_index]
    registers[register - 0x59] = mode << shift
    return bytes(registers)


def test_segment_modes_follow_the_register_nibbles():
    assert segment_modes(bytes(7)) == (PAM_PCI,) * 13
    assert segment_modes(bytes([0x30] + [0x33] * 6)) == (PAM_READ_WRITE,) * 13
    modes = segment_modes(bytes([0x10, 0x21, 0, 0, 0, 0, 0]))
    assert modes[:2] == (PAM_READ_ONLY, PAM_WRITE_ONLY) and modes[12] == PAM_READ_ONLY
    assert window_layout((PAM_READ_WRITE,) * 13, 64 * 1024) == [(0xC0000, 0x40000, "ram", "ram")]


@pytest.mark.parametrize("segment", range(13))
@pytest.mark.parametrize("mode", [PAM_PCI, PAM_READ_ONLY, PAM_WRITE_ONLY, PAM_READ_WRITE])
def test_every_mode_on_every_segment(segment, mode):
    rig = ShadowRig(firmware_size=128 * 1024)
    gpa, size, _, _ = layout.SHADOW_SEGMENTS[segment]
    behind_rom = gpa >= 0xE0000                    # the 128 KiB image's low alias
    rig.ram[gpa:gpa + size] = bytes([0x11]) * size
    rig.shadow.set_modes(segment_modes(registers_for(segment, mode)))
    pci_byte = 0xEE if behind_rom else 0xFF
    for probe in (gpa, gpa + size - 1):
        assert rig.guest_read(probe) == (0x11 if mode & 1 else pci_byte)
        rig.guest_write(probe, 0x22)
        assert rig.ram[probe] == (0x22 if mode & 2 else 0x11), "write reaches RAM only with WE"
        assert rig.guest_read(probe) == {PAM_PCI: pci_byte, PAM_READ_ONLY: 0x11,
                                         PAM_WRITE_ONLY: pci_byte, PAM_READ_WRITE: 0x22}[mode]
        rig.ram[probe] = 0x11
    assert rig.rom == bytes([0xEE]) * len(rig.rom), "the firmware image is never written"
    # The host side (fw_cfg DMA, gdb) sees the same thing through GuestMemory.
    if mode & 1 or behind_rom:
        assert rig.memory.read(gpa, 1)[0] == (0x11 if mode & 1 else 0xEE)
    else:
        with pytest.raises(GuestMemoryError):
            rig.memory.read(gpa, 1)
    assert rig.memory.contains(gpa, size, writable=True) == bool(mode & 2)


def test_switching_modes_keeps_ram_contents():
    rig = ShadowRig()
    rig.shadow.set_modes((PAM_READ_WRITE,) * 13)
    for gpa, _size, _, _ in layout.SHADOW_SEGMENTS:
        rig.guest_write(gpa + 5, gpa >> 12)
    for modes in ((PAM_PCI,) * 13, (PAM_WRITE_ONLY,) * 13, (PAM_READ_ONLY,) * 13,
                  (PAM_READ_WRITE,) * 13):
        rig.shadow.set_modes(modes)
    for gpa, _size, _, _ in layout.SHADOW_SEGMENTS:
        assert rig.guest_read(gpa + 5) == (gpa >> 12) & 0xFF


def test_slots_merge_adjacent_segments_and_keep_read_only():
    rig = ShadowRig(firmware_size=64 * 1024)
    rig.shadow.set_modes(segment_modes(bytes([0x10] + [0x33] * 6)))
    assert rig.slots.slots == {0xC0000: (0x30000, rig.ram_base + 0xC0000, False),
                               0xF0000: (0x10000, rig.ram_base + 0xF0000, True)}
    rig.shadow.set_modes((PAM_PCI,) * 13)
    assert rig.slots.slots == {0xF0000: (0x10000, rig.rom_base, True)}    # only the ROM alias


def test_read_only_segments_map_writable_where_kvm_cannot_take_them():
    rig = ShadowRig(strict=False)
    rig.shadow.set_modes((PAM_READ_ONLY,) * 13)
    assert all(not readonly for _, _, readonly in rig.slots.slots.values())
    rig.shadow.set_modes((PAM_PCI,) * 13)
    assert all(readonly for _, _, readonly in rig.slots.slots.values())  # the image stays read-only


def test_host_bridge_remaps_on_pam_writes(pci):
    host = pci[0]
    calls = []

    class Shadow:
        def set_modes(self, modes):
            calls.append(modes)
    host.functions[(0, 0)].shadow = Shadow()
    config_write(host, 0, 0, 0x58, 4, 0x33333000)                    # as SeaBIOS unlocks
    config_write(host, 0, 0, 0x5C, 4, 0x33333333)
    config_write(host, 0, 0, 0x50, 4, 0x12345678)                    # not PAM: no remap
    config_write(host, 0, 0, 0x5C, 4, 0x33333333)                    # unchanged: no remap
    assert len(calls) == 2 and calls[-1] == (PAM_READ_WRITE,) * 13
    assert config_read(host, 0, 0, 0x57, 1) == 256 // 8              # RAM in 8 MiB units
    assert config_read(host, 0, 0, 0x72, 1) == 0x02                  # SMRAM closed at 0xA0000
