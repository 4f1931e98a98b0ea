"""Fuzz target: virtio-pci with a virtio-blk disk: the common configuration (feature and status
handshake, queue setup), notifications, ISR and device configuration reads, the PCI_CFG
window, and virtqueues whose descriptors, rings and requests the input writes into guest
memory (tinyvmm.virtio)."""

import struct

import atheris
from common import (
    RAM_SIZE,
    GuestMemoryError,
    Platform,
    access,
    check_ram_written,
    config,
    guest_address,
    main,
    poke,
    run_ops,
    store,
)

with atheris.instrument_imports():
    from tinyvmm import layout
    from tinyvmm.pci.host import config_address
    from tinyvmm.virtio import pci as vp

BAR = 0xFE000000
# The driver's rings and buffers, where a well-behaved driver would put them.
DESC, AVAIL, USED, BUFFERS = 0x10000, 0x10800, 0x11000, 0x12000
COMMON_OFFSETS = [vp.DEVICE_FEATURE_SELECT, vp.DEVICE_FEATURE, vp.DRIVER_FEATURE_SELECT,
                  vp.DRIVER_FEATURE, vp.NUM_QUEUES, vp.DEVICE_STATUS, vp.QUEUE_SELECT, vp.QUEUE_SIZE,
                  vp.QUEUE_ENABLE, vp.QUEUE_DESC, vp.QUEUE_DESC + 4, vp.QUEUE_DRIVER, vp.QUEUE_DEVICE]


def config_write(platform, register: int, size: int, value: int) -> None:
    address = config_address(0, layout.VIRTIO_FIRST_SLOT, 0, register)
    platform.pio.write(0xCF8, 4, address.to_bytes(4, "little"))
    platform.pio.write(0xCFC + (register & 3), size, value.to_bytes(size, "little"))


def bar_write(platform, offset: int, size: int, value: int) -> None:
    platform.mmio.write(BAR + offset, size, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))


def common(platform, fdp):
    """One access to the common configuration, at a field or anywhere in it."""
    offset = fdp.PickValueInList(COMMON_OFFSETS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 0x3F)
    size = fdp.PickValueInList([1, 2, 4])
    if fdp.ConsumeBool():
        bar_write(platform, offset, size, fdp.ConsumeInt(4))
    else:
        platform.mmio.read(BAR + offset, size)


def handshake(platform, fdp):
    """A driver's setup of queue 0: status, features, size, ring addresses (usually sane), enable."""
    bar_write(platform, vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER)
    features = platform.virtio.model.features if fdp.ConsumeBool() else fdp.ConsumeInt(8)
    for half in (0, 1):
        bar_write(platform, vp.DRIVER_FEATURE_SELECT, 4, half)
        bar_write(platform, vp.DRIVER_FEATURE, 4, features >> 32 * half)
    bar_write(platform, vp.DEVICE_STATUS, 1, vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK)
    bar_write(platform, vp.QUEUE_SELECT, 2, 0 if fdp.ConsumeBool() else fdp.ConsumeInt(2))
    bar_write(platform, vp.QUEUE_SIZE, 2, fdp.PickValueInList([8, 4, 1, 0, 3, 16, fdp.ConsumeInt(2)]))
    for offset, default in ((vp.QUEUE_DESC, DESC), (vp.QUEUE_DRIVER, AVAIL), (vp.QUEUE_DEVICE, USED)):
        address = default if fdp.ConsumeIntInRange(0, 3) else guest_address(fdp)
        bar_write(platform, offset, 4, address)
        bar_write(platform, offset + 4, 4, address >> 32)
    bar_write(platform, vp.QUEUE_ENABLE, 2, 1)
    bar_write(platform, vp.DEVICE_STATUS, 1, fdp.PickValueInList(
        [vp.ACKNOWLEDGE | vp.DRIVER | vp.FEATURES_OK | vp.DRIVER_OK, fdp.ConsumeInt(1)]))


def request(platform, fdp):
    """A chain of descriptors in the table at DESC (maybe a virtio-blk request: header, data,
    status), made available in the ring at AVAIL, then a notification."""
    size = 8
    count = fdp.ConsumeIntInRange(1, 4)
    head = fdp.ConsumeIntInRange(0, size - 1)
    index = head
    for i in range(count):
        address = BUFFERS + 0x1000 * i if fdp.ConsumeIntInRange(0, 3) else guest_address(fdp)
        length = fdp.PickValueInList([16, 512, 1, 0x1000, fdp.ConsumeInt(4) & 0xFFFFFFFF])
        flags = fdp.ConsumeIntInRange(0, 7)
        following = (index + 1) % size if fdp.ConsumeIntInRange(0, 3) else fdp.ConsumeInt(2) & 0xFFFF
        if i < count - 1:
            flags |= 1                                  # VIRTQ_DESC_F_NEXT
        store(platform, DESC + 16 * index, struct.pack("<QIHH", address, length, flags, following))
        if i == 0 and fdp.ConsumeBool():                # a virtio-blk header: type, sector
            kind = fdp.PickValueInList([0, 1, 4, 8, fdp.ConsumeInt(4) & 0xFFFFFFFF])
            store(platform, address, struct.pack("<IIQ", kind, 0, fdp.ConsumeIntInRange(0, 200)))
        index = following % size
    idx = int.from_bytes(platform.memory.read(AVAIL + 2, 2), "little")
    slot = idx % size
    store(platform, AVAIL + 4 + 2 * slot, head.to_bytes(2, "little"))
    advance = 1 if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeInt(2)
    store(platform, AVAIL + 2, ((idx + advance) & 0xFFFF).to_bytes(2, "little"))
    queue = 0 if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 4)
    allowed, ram = device_writable(platform), bytes(platform.ram_backing)
    bar_write(platform, vp.NOTIFY.offset + vp.NOTIFY_OFF_MULTIPLIER * queue, 2, 0)
    # Serving the queue wrote RAM only where the driver let the device write.
    check_ram_written(platform, ram, allowed, "serving the queue")


def device_writable(platform) -> list[tuple[int, int]]:
    """Where the device may write now: the used rings of the enabled queues, and every buffer
    marked device-writable in their descriptor tables and the indirect tables these name."""
    ranges = []
    for state in platform.virtio.queues:
        ring = state.ring
        if ring is None:
            continue
        ranges.append((ring.device_addr, 6 + 8 * ring.size))
        tables = [(ring.desc_addr, ring.size)]
        # Each indirect table once: ring entries naming the same tables again and again (up to
        # 32,768 of them, of up to 32,768 entries each) hung this check, not the device, which
        # walks only the chains it is given.
        seen = set(tables)
        while tables:
            address, count = tables.pop()
            try:
                table = b"".join(platform.memory.views(address, 16 * count))
            except GuestMemoryError:
                continue
            for entry in range(count):
                buffer, length, flags, _ = struct.unpack_from("<QIHH", table, 16 * entry)
                if flags & 4 and address == ring.desc_addr and length % 16 == 0:    # INDIRECT
                    table_at = (buffer, min(length // 16, 1 << 15))
                    if table_at not in seen:
                        seen.add(table_at)
                        tables.append(table_at)
                elif flags & 2:                                                     # WRITE
                    ranges.append((buffer, length))
    return ranges


def bar(platform, fdp):
    access(platform, fdp, platform.mmio)


OPS = [common, handshake, request, request, bar, config, poke]


def firmware_setup(platform) -> None:
    """The firmware's part: BAR4 at BAR, memory decoding and bus mastering on."""
    config_write(platform, 0x20, 4, BAR)
    config_write(platform, 0x24, 4, 0)
    config_write(platform, 0x04, 2, 0x6)
    assert platform.mmio.find(BAR) is not None and RAM_SIZE > BUFFERS + 0x4000


def test_one_input(data: bytes) -> None:
    platform = Platform(virtio=True)
    firmware_setup(platform)
    run_ops(platform, atheris.FuzzedDataProvider(data), OPS)


if __name__ == "__main__":
    main(test_one_input, "virtio")
