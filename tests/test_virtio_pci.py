"""The virtio-pci transport (modern layout): identity, capabilities, BAR registers, status and
feature handshake, queue setup, notifications and INTx, the PCI_CFG window; no KVM needed."""

import struct

import pytest
from guest_memory import guest_memory

from tinyvmm.bus import Bus, PioBus
from tinyvmm.pci.config import PCI_COMMAND, PCI_STATUS
from tinyvmm.pci.host import PciBuses, PciHost, config_address
from tinyvmm.virtio import pci as vp

MEM = 1 << 20


class FakeModel:
    """A virtio device model that records what the transport asks of it."""
    name = "fake"
    device_type = 2
    class_code = 0x010000

    def __init__(self, interrupt=True):
        self.features = 1 << vp.VIRTIO_F_VERSION_1 | (1 << 6)
        self.queue_sizes = [256]
        self.served = []
        self.resets = 0
        self.interrupt = interrupt
        self.fail = None

    def config_bytes(self):
        return struct.pack("<QII", 0x1234, 0x10000, 126) + bytes(4) + struct.pack("<I", 512)

    def serve(self, ring):
        if self.fail:
            raise self.fail
        self.served.append(ring)
        return self.interrupt

    def reset(self):
        self.resets += 1


def pci_with_virtio(model=None):
    """A virtio-pci function of `model` (a FakeModel by default) in slot 2 of a bare PCI host:
    (host, function, mmio bus, the INTx levels it has set)."""
    memory = guest_memory((0, MEM))
    pio, mmio = PioBus(), Bus("mmio")
    host = PciHost(PciBuses(pio, mmio, memory))
    levels = []
    function = host.add(vp.VirtioPciDevice(model or FakeModel(), memory, set_irq=levels.append), slot=2)
    return host, function, mmio, levels


def cfg_read(host, register, size=4):
    host.write(0, 4, config_address(0, 2, 0, register).to_bytes(4, "little"))
    return int.from_bytes(host.read(4 + (register & 3), size), "little")


def cfg_write(host, register, value, size=4):
    host.write(0, 4, config_address(0, 2, 0, register).to_bytes(4, "little"))
    host.write(4 + (register & 3), size, value.to_bytes(size, "little"))


def capabilities(host):
    caps, pointer = [], cfg_read(host, 0x34, 1)
    while pointer:
        raw = b"".join(cfg_read(host, pointer + i, 1).to_bytes(1, "little") for i in range(24))
        caps.append((pointer, raw))
        pointer = raw[1]
    return caps


def test_identity_is_a_modern_only_device():
    host, *_ = pci_with_virtio()
    assert cfg_read(host, 0x00) == 0x1042_1AF4            # vendor 1AF4, device 0x1040 + 2
    assert cfg_read(host, 0x08) & 0xFF == 1               # revision 1: modern
    assert cfg_read(host, 0x08) >> 8 == 0x010000          # mass storage
    assert cfg_read(host, 0x3D, 1) == 1                   # INTA#
    assert cfg_read(host, PCI_STATUS, 2) & 0x10           # a capability list


def test_capabilities_describe_the_bar_layout():
    host, *_ = pci_with_virtio()
    caps = capabilities(host)
    by_type = {}
    for _offset, raw in caps:
        assert raw[0] == 0x09                             # vendor-specific
        cap_len, cfg_type, bar = raw[2], raw[3], raw[4]
        by_type[cfg_type] = (cap_len, bar, *struct.unpack_from("<II", raw, 8), raw)
    assert sorted(by_type) == [1, 2, 3, 4, 5]
    for structure in vp.BAR_LAYOUT:
        cap_len, bar, offset, length, raw = by_type[structure.cfg_type]
        assert (bar, offset, length) == (vp.VIRTIO_BAR, structure.offset, structure.length)
        assert cap_len == (20 if structure is vp.NOTIFY else 16)
    assert struct.unpack_from("<I", by_type[2][4], 16)[0] == vp.NOTIFY_OFF_MULTIPLIER
    assert by_type[5][0] == 20
    for structure in vp.BAR_LAYOUT:                       # each inside the BAR, none overlapping
        assert structure.end <= vp.BAR_SIZE
    ends = sorted((s.offset, s.end) for s in vp.BAR_LAYOUT)
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))


def test_bar4_is_a_64_bit_prefetchable_memory_bar_of_16_kib():
    host, function, mmio, _ = pci_with_virtio()
    cfg_write(host, 0x20, 0xFFFFFFFF)
    cfg_write(host, 0x24, 0xFFFFFFFF)
    assert cfg_read(host, 0x20) == (~(vp.BAR_SIZE - 1) & 0xFFFFFFFF) | 0xC
    assert cfg_read(host, 0x24) == 0xFFFFFFFF


def mapped(address=0xFE000000):
    host, function, mmio, levels = pci_with_virtio()
    cfg_write(host, 0x20, address)
    cfg_write(host, 0x24, 0)
    cfg_write(host, PCI_COMMAND, 0x6, size=2)              # memory + bus master
    return host, function, mmio, levels, address


def bar_read(mmio, address, size):
    return int.from_bytes(mmio.read(address, size), "little")


def bar_write(mmio, address, size, value):
    mmio.write(address, size, value.to_bytes(size, "little"))


def test_feature_handshake_needs_version_1():
    host, function, mmio, _, base = mapped()
    common = base + vp.COMMON.offset
    bar_write(mmio, common + vp.DEVICE_FEATURE_SELECT, 4, 1)
    assert bar_read(mmio, common + vp.DEVICE_FEATURE, 4) == 1          # VERSION_1 is bit 32
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER)
    bar_write(mmio, common + vp.DRIVER_FEATURE_SELECT, 4, 0)
    bar_write(mmio, common + vp.DRIVER_FEATURE, 4, 1 << 6)
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK)
    assert not bar_read(mmio, common + vp.DEVICE_STATUS, 1) & vp.FEATURES_OK     # no VERSION_1
    bar_write(mmio, common + vp.DRIVER_FEATURE_SELECT, 4, 1)
    bar_write(mmio, common + vp.DRIVER_FEATURE, 4, 1 | 2)                       # and one not offered
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK)
    assert not bar_read(mmio, common + vp.DEVICE_STATUS, 1) & vp.FEATURES_OK
    bar_write(mmio, common + vp.DRIVER_FEATURE, 4, 1)
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK)
    assert bar_read(mmio, common + vp.DEVICE_STATUS, 1) & vp.FEATURES_OK
    assert function.driver_features == 1 << vp.VIRTIO_F_VERSION_1 | (1 << 6)


def setup_queue(mmio, base, size=8):
    common = base + vp.COMMON.offset
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER)
    bar_write(mmio, common + vp.DRIVER_FEATURE_SELECT, 4, 1)
    bar_write(mmio, common + vp.DRIVER_FEATURE, 4, 1)
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK)
    bar_write(mmio, common + vp.QUEUE_SELECT, 2, 0)
    assert bar_read(mmio, common + vp.QUEUE_SIZE, 2) == 256
    bar_write(mmio, common + vp.QUEUE_SIZE, 2, size)
    for field, address in ((vp.QUEUE_DESC, 0x10000), (vp.QUEUE_DRIVER, 0x11000), (vp.QUEUE_DEVICE, 0x12000)):
        bar_write(mmio, common + field, 4, address)
        bar_write(mmio, common + field + 4, 4, 0)
    bar_write(mmio, common + vp.QUEUE_ENABLE, 2, 1)
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK | vp.DRIVER_OK)


def test_queue_setup_notify_and_intx():
    host, function, mmio, levels, base = mapped()
    setup_queue(mmio, base)
    common = base + vp.COMMON.offset
    assert bar_read(mmio, common + vp.QUEUE_ENABLE, 2) == 1
    assert bar_read(mmio, common + vp.QUEUE_DESC, 4) == 0x10000
    assert bar_read(mmio, common + vp.QUEUE_NOTIFY_OFF, 2) == 0
    bar_write(mmio, common + vp.QUEUE_SIZE, 2, 4)                      # frozen once enabled
    assert bar_read(mmio, common + vp.QUEUE_SIZE, 2) == 8
    bar_write(mmio, base + vp.NOTIFY.offset, 2, 0)
    assert len(function.model.served) == 1 and function.model.served[0].size == 8
    assert levels[-1] is True and cfg_read(host, PCI_STATUS, 2) & 0x08
    assert bar_read(mmio, base + vp.ISR.offset, 1) == vp.ISR_QUEUE     # read clears, lowers INTx
    assert levels[-1] is False and bar_read(mmio, base + vp.ISR.offset, 1) == 0
    assert not cfg_read(host, PCI_STATUS, 2) & 0x08


def test_intx_disable_masks_the_line():
    host, function, mmio, levels, base = mapped()
    setup_queue(mmio, base)
    cfg_write(host, PCI_COMMAND, 0x406, size=2)
    bar_write(mmio, base + vp.NOTIFY.offset, 2, 0)
    assert levels[-1] is False and function.isr == vp.ISR_QUEUE
    cfg_write(host, PCI_COMMAND, 0x006, size=2)
    assert levels[-1] is True


def test_bad_queue_addresses_and_chains_ask_for_a_reset():
    from tinyvmm.virtio.queue import VirtqueueError
    host, function, mmio, levels, base = mapped()
    common = base + vp.COMMON.offset
    setup_queue(mmio, base)
    function.model.fail = VirtqueueError("a loop")
    bar_write(mmio, base + vp.NOTIFY.offset, 2, 0)
    assert bar_read(mmio, common + vp.DEVICE_STATUS, 1) & vp.DEVICE_NEEDS_RESET
    assert bar_read(mmio, base + vp.ISR.offset, 1) == vp.ISR_CONFIG
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, 0)                   # the driver resets
    assert bar_read(mmio, common + vp.DEVICE_STATUS, 1) == 0
    assert bar_read(mmio, common + vp.QUEUE_ENABLE, 2) == 0 and function.model.resets >= 2
    # a ring outside guest memory: the queue is not enabled, the device needs a reset
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER)
    bar_write(mmio, common + vp.QUEUE_DESC, 4, MEM + 0x1000)
    bar_write(mmio, common + vp.QUEUE_ENABLE, 2, 1)
    assert bar_read(mmio, common + vp.QUEUE_ENABLE, 2) == 0
    assert bar_read(mmio, common + vp.DEVICE_STATUS, 1) & vp.DEVICE_NEEDS_RESET


def test_absent_queue_and_feature_words_read_zero():
    host, function, mmio, levels, base = mapped()
    common = base + vp.COMMON.offset
    bar_write(mmio, common + vp.QUEUE_SELECT, 2, 5)
    assert bar_read(mmio, common + vp.QUEUE_SIZE, 2) == 0
    bar_write(mmio, common + vp.QUEUE_ENABLE, 2, 1)                    # ignored
    bar_write(mmio, common + vp.DEVICE_FEATURE_SELECT, 4, 7)
    assert bar_read(mmio, common + vp.DEVICE_FEATURE, 4) == 0
    bar_write(mmio, base + vp.NOTIFY.offset + 4 * 9, 2, 9)             # no such queue: nothing
    assert bar_read(mmio, common + vp.NUM_QUEUES, 2) == 1


def test_device_config_reads_the_model_config():
    host, function, mmio, levels, base = mapped()
    device = base + vp.DEVICE.offset
    assert bar_read(mmio, device, 4) == 0x1234 and bar_read(mmio, device + 4, 4) == 0
    assert bar_read(mmio, device + 20, 4) == 512
    assert bar_read(mmio, device + 0x800, 4) == 0                      # past the model's bytes


def test_pci_cfg_window_reaches_the_bar_through_config_space():
    host, function, mmio, levels = pci_with_virtio()
    window = [offset for offset, raw in capabilities(host) if raw[3] == 5][0]
    cfg_write(host, window + 4, vp.VIRTIO_BAR, size=1)
    cfg_write(host, window + 8, vp.DEVICE.offset + 20)
    cfg_write(host, window + 12, 4)
    assert cfg_read(host, window + 16) == 512                          # blk_size, BAR unmapped
    cfg_write(host, window + 8, vp.COMMON.offset + vp.DEVICE_STATUS)
    cfg_write(host, window + 12, 1)
    cfg_write(host, window + 16, vp.ACKNOWLEDGE, size=1)
    assert function.status == vp.ACKNOWLEDGE
    cfg_write(host, window + 8, 3)                                    # misaligned for 4 bytes
    cfg_write(host, window + 12, 4)
    cfg_write(host, window + 16, 0xFFFFFFFF)                           # dropped
    assert function.status == vp.ACKNOWLEDGE


def test_a_read_narrower_than_its_field_gets_the_low_bytes():
    # Found by fuzz/virtio.py: a 1-byte read of device_feature (0x39000ee6 for a blk) was
    # not cut to one byte and raised OverflowError out of the bus, from the BAR and the window.
    host, function, mmio, _, base = mapped()
    common = base + vp.COMMON.offset
    function.model.features = 0x39000EE6
    assert bar_read(mmio, common + vp.DEVICE_FEATURE, 1) == 0xE6
    assert bar_read(mmio, common + vp.DEVICE_FEATURE, 2) == 0x0EE6
    bar_write(mmio, common + vp.QUEUE_DESC, 4, 0x12345678)
    assert bar_read(mmio, common + vp.QUEUE_DESC, 2) == 0x5678
    window = [offset for offset, raw in capabilities(host) if raw[3] == 5][0]
    cfg_write(host, window + 4, vp.VIRTIO_BAR, size=1)
    cfg_write(host, window + 8, vp.COMMON.offset + vp.DEVICE_FEATURE)
    cfg_write(host, window + 12, 1)
    assert cfg_read(host, window + 16, size=1) == 0xE6


# --- bus mastering and queue_size (issue 24) ---------------------------------

def test_no_ring_is_served_while_bus_mastering_is_off():
    # The instance: MASTER cleared on a live device, a request was still served.
    host, function, mmio, levels, base = mapped()
    setup_queue(mmio, base)
    cfg_write(host, PCI_COMMAND, 0x2, size=2)                          # memory only
    bar_write(mmio, base + vp.NOTIFY.offset, 2, 0)
    assert function.model.served == [] and function.isr == 0
    cfg_write(host, PCI_COMMAND, 0x6, size=2)                          # MASTER again
    assert len(function.model.served) == 1 and function.isr == vp.ISR_QUEUE


def test_notifications_held_without_bus_mastering_are_kept_once_and_dropped_by_reset():
    # The sibling: several notifications while off are served once each queue, through the
    # PCI_CFG window too; a device reset (or a PCI reset) forgets them.
    model = FakeModel()
    model.queue_sizes = [256, 256]
    host, function, mmio, levels = pci_with_virtio(model)
    cfg_write(host, 0x20, 0xFE000000)
    cfg_write(host, 0x24, 0)
    cfg_write(host, PCI_COMMAND, 0x6, size=2)
    base = 0xFE000000
    setup_queue(mmio, base)
    function.reset()                                                   # PCI reset: MASTER off
    cfg_write(host, 0x20, base)
    cfg_write(host, PCI_COMMAND, 0x2, size=2)
    for _ in range(3):
        bar_write(mmio, base + vp.NOTIFY.offset, 2, 0)
    assert function.held == {0} and model.served == []
    cfg_write(host, PCI_COMMAND, 0x6, size=2)
    assert len(model.served) == 1 and function.held == set()
    cfg_write(host, PCI_COMMAND, 0x2, size=2)
    bar_write(mmio, base + vp.NOTIFY.offset, 2, 0)
    bar_write(mmio, base + vp.COMMON.offset + vp.DEVICE_STATUS, 1, 0)  # driver resets
    cfg_write(host, PCI_COMMAND, 0x6, size=2)
    assert len(model.served) == 1


def test_a_queue_size_not_a_power_of_two_is_refused_visibly():
    # The instance: 100 was ignored silently (read back 256) and the ring then walked with 256.
    host, function, mmio, levels, base = mapped()
    traced = []
    host.buses.trace = traced.append
    common = base + vp.COMMON.offset
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER)
    bar_write(mmio, common + vp.QUEUE_SIZE, 2, 100)
    assert bar_read(mmio, common + vp.QUEUE_SIZE, 2) == 256            # the old value stays
    assert traced and "size 100 refused" in traced[-1] and "stays 256" in traced[-1]
    for field, address in ((vp.QUEUE_DESC, 0x10000), (vp.QUEUE_DRIVER, 0x11000), (vp.QUEUE_DEVICE, 0x12000)):
        bar_write(mmio, common + field, 4, address)
    bar_write(mmio, common + vp.QUEUE_ENABLE, 2, 1)
    assert bar_read(mmio, common + vp.QUEUE_ENABLE, 2) == 0            # never a ring of 256
    assert bar_read(mmio, common + vp.DEVICE_STATUS, 1) & vp.DEVICE_NEEDS_RESET


@pytest.mark.parametrize("size", [0, 512, 0xFFFF, 3])
def test_other_sizes_the_queue_cannot_take_are_refused_and_a_good_one_clears_it(size):
    # The sibling: 0, above the maximum, odd sizes; a valid size written after clears the refusal.
    host, function, mmio, levels, base = mapped()
    common = base + vp.COMMON.offset
    bar_write(mmio, common + vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER)
    bar_write(mmio, common + vp.QUEUE_SIZE, 2, size)
    assert bar_read(mmio, common + vp.QUEUE_SIZE, 2) == 256
    assert function.queues[0].refused_size == size
    setup_queue(mmio, base, size=64)
    assert bar_read(mmio, common + vp.QUEUE_ENABLE, 2) == 1 and function.queues[0].ring.size == 64
    assert not bar_read(mmio, common + vp.DEVICE_STATUS, 1) & vp.DEVICE_NEEDS_RESET
