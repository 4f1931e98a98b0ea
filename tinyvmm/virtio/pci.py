"""The virtio-pci transport, modern layout (virtio 1.x, "Virtio Over PCI Bus").

A modern-only device: vendor 0x1AF4, device 0x1040 + the virtio device type,
revision 1. One 64-bit prefetchable memory BAR (BAR4, as QEMU places it) holds
the four register structures at the offsets BAR_LAYOUT declares; a vendor
capability (cfg_type 1-4) names each one's BAR, offset and length, and the PCI
configuration access capability (cfg_type 5) reaches them through
configuration space for firmware that cannot address the BAR.

    BAR4 offset  length  structure
    0x0000       0x38    common configuration (virtio_pci_common_cfg)
    0x1000       0x1     ISR status (reading clears it and lowers INTx)
    0x2000       0x1000  device-specific configuration
    0x3000       0x1000  notifications: queue q at 0x3000 + 4 * q (16-bit writes)

Interrupts are INTx (pin A, routed by the PIIX3's PIRQ registers); MSI-X is not
offered. Notifications are served on the vCPU thread that trapped the write, or,
with a `notifier` attached (tinyvmm.virtio.iothread), on that notifier's thread;
`lock` keeps that thread and the vCPU's from interleaving. Every guest mistake
(bad queue addresses, a malformed chain) sets DEVICE_NEEDS_RESET with a
configuration-change interrupt; nothing a guest writes can raise out of the device.

The rings are in guest memory, so the device reaches them only as a bus master:
while the PCI command register's MASTER bit is clear, notifications are held
(not served, not lost) and served once the bit is set again; QEMU likewise
stops processing the rings while the bit is clear.

queue_size: tinyvmm's virtqueues are split virtqueues, whose size the virtio 1.x
specification ("Split Virtqueues") requires to be a power of 2 (packed ones may
have any size). A write of any other size, of 0, or above the maximum is refused
visibly rather than silently: queue_size keeps its old value (the driver can
read it back), a 'pci' trace line names the write, and enabling the queue then
sets DEVICE_NEEDS_RESET instead of walking a ring of a size the driver did not
choose. (QEMU honours such a size, and its split ring then misplaces entries
once the 16-bit indexes wrap; refusing keeps to the specification.)
"""

import struct
import threading
from collections import namedtuple

from ..bus import RegisterDevice
from ..pci.config import PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_STATUS, PCI_STATUS_INTERRUPT, PciFunction
from .queue import VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, SplitQueue, VirtqueueError

TYPE_CHECKING = False           # True for type checkers only: typing stays unimported
if TYPE_CHECKING:
    from .iothread import IoThread
    from .model import VirtioModel

VIRTIO_VENDOR = 0x1AF4
MODERN_DEVICE_BASE = 0x1040
MODERN_REVISION = 1
VIRTIO_BAR = 4
PCI_CAP_ID_VNDR = 0x09
PIN_INTA = 1

# cfg_type of the vendor capabilities
VIRTIO_PCI_CAP_COMMON_CFG = 1
VIRTIO_PCI_CAP_NOTIFY_CFG = 2
VIRTIO_PCI_CAP_ISR_CFG = 3
VIRTIO_PCI_CAP_DEVICE_CFG = 4
VIRTIO_PCI_CAP_PCI_CFG = 5


class Structure(namedtuple("Structure", "name cfg_type offset length")):
    """One register structure inside the BAR."""
    __slots__ = ()

    @property
    def end(self) -> int:
        return self.offset + self.length


NOTIFY_OFF_MULTIPLIER = 4
COMMON = Structure("common", VIRTIO_PCI_CAP_COMMON_CFG, 0x0000, 0x38)
ISR = Structure("isr", VIRTIO_PCI_CAP_ISR_CFG, 0x1000, 0x1)
DEVICE = Structure("device", VIRTIO_PCI_CAP_DEVICE_CFG, 0x2000, 0x1000)
NOTIFY = Structure("notify", VIRTIO_PCI_CAP_NOTIFY_CFG, 0x3000, 0x1000)
BAR_LAYOUT = (COMMON, ISR, DEVICE, NOTIFY)
BAR_SIZE = 0x4000

# virtio_pci_common_cfg offsets
DEVICE_FEATURE_SELECT = 0x00
DEVICE_FEATURE = 0x04
DRIVER_FEATURE_SELECT = 0x08
DRIVER_FEATURE = 0x0C
CONFIG_MSIX_VECTOR = 0x10
NUM_QUEUES = 0x12
DEVICE_STATUS = 0x14
CONFIG_GENERATION = 0x15
QUEUE_SELECT = 0x16
QUEUE_SIZE = 0x18
QUEUE_MSIX_VECTOR = 0x1A
QUEUE_ENABLE = 0x1C
QUEUE_NOTIFY_OFF = 0x1E
QUEUE_DESC = 0x20
QUEUE_DRIVER = 0x28
QUEUE_DEVICE = 0x30
# The three 64-bit ring addresses: their common-configuration offset and QueueState field.
QUEUE_ADDRESSES = ((QUEUE_DESC, "desc"), (QUEUE_DRIVER, "driver"), (QUEUE_DEVICE, "device"))
NO_VECTOR = 0xFFFF

# device_status bits
ACKNOWLEDGE = 1
DRIVER = 2
DRIVER_OK = 4
FEATURES_OK = 8
DEVICE_NEEDS_RESET = 64
FAILED = 128

ISR_QUEUE = 1
ISR_CONFIG = 2

# The PCI_CFG capability's fields, from the capability's start.
PCI_CFG_BAR = 4
PCI_CFG_OFFSET = 8
PCI_CFG_LENGTH = 12
PCI_CFG_DATA = 16


class QueueState:
    """What the driver programmed for one virtqueue, and the queue once enabled."""
    __slots__ = ("max_size", "size", "refused_size", "enabled", "desc", "driver", "device", "ring")

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.size = max_size
        self.refused_size: int | None = None    # the last size written and not taken
        self.enabled = False
        self.desc = self.driver = self.device = 0
        self.ring: SplitQueue | None = None


class VirtioPciDevice(PciFunction):
    """A virtio device model (`model`, a tinyvmm.virtio.model.VirtioModel) behind the modern
    virtio-pci transport. `memory` is the guest memory the rings live in; `set_irq(level)`
    drives the INTx line the platform routes pin A to.

    `lock` (reentrant) is held by every register access and notification; a thread
    other than the vCPU's takes it to call notify() or resample(). `notifier`, when
    set, is told where the notification area is (`notify_area_moved(address or None)`)
    and gets each trapped notification (`kick(queue)`) instead of notify() running here.
    """

    def __init__(self, model: "VirtioModel", memory, set_irq=None, name: str = "virtio"):
        super().__init__(VIRTIO_VENDOR, MODERN_DEVICE_BASE + model.device_type, model.class_code,
                         revision=MODERN_REVISION, interrupt_pin=PIN_INTA)
        self.name = name
        self.model: VirtioModel = model
        self.memory = memory
        self.set_irq = set_irq or (lambda level: None)
        self.lock = threading.RLock()
        self.notifier: IoThread | None = None
        self.add_bar(VIRTIO_BAR, BAR_SIZE, "mem64", VirtioBar(self), prefetchable=True)
        # struct virtio_pci_cap after cap_vndr and cap_next: cap_len, cfg_type, bar, id,
        # padding, offset, length (and the notify capability's multiplier).
        for structure in BAR_LAYOUT:
            extra = struct.pack("<I", NOTIFY_OFF_MULTIPLIER) if structure is NOTIFY else b""
            self.add_capability(PCI_CAP_ID_VNDR, struct.pack(
                "<BBBBxxII", 16 + len(extra), structure.cfg_type, VIRTIO_BAR, 0, structure.offset,
                structure.length) + extra)
        # The PCI_CFG window: bar, offset, length and pci_cfg_data are the driver's to write.
        self.pci_cfg = self.add_capability(
            PCI_CAP_ID_VNDR, struct.pack("<BBBBxxIII", 20, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0, 0, 0),
            writable=bytes([0, 0, 0xFF, 0, 0, 0]) + b"\xff" * 12)
        self.reset_device()

    # --- state -------------------------------------------------------------------
    def reset_device(self) -> None:
        """The state after reset: status 0, no features accepted, queues unprogrammed."""
        self.status = 0
        self.isr = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.queue_select = 0
        self.queues = [QueueState(size) for size in self.model.queue_sizes]
        self.held: set[int] = set()             # queues notified while bus mastering was off
        self._update_irq()
        self.model.reset()

    def _selected(self) -> QueueState | None:
        return self.queues[self.queue_select] if self.queue_select < len(self.queues) else None

    def _update_irq(self) -> None:
        asserted = bool(self.isr)
        status = self.config[PCI_STATUS]
        self.config[PCI_STATUS] = (status | PCI_STATUS_INTERRUPT) if asserted else \
            (status & ~PCI_STATUS_INTERRUPT)
        masked = self.get(PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE
        self.set_irq(asserted and not masked)

    def resample(self) -> None:
        """The guest acknowledged the interrupt and the line was lowered: raise it again
        if a cause is still pending in ISR."""
        with self.lock:
            self._update_irq()

    def interrupt(self, cause: int) -> None:
        self.isr |= cause
        self._update_irq()

    def needs_reset(self) -> None:
        """A guest error: the driver must reset the device (virtio 1.x "Device Status Field")."""
        self.status |= DEVICE_NEEDS_RESET
        if self.status & DRIVER_OK:
            self.interrupt(ISR_CONFIG)

    # --- common configuration ---------------------------------------------------
    def read_common(self, offset: int, size: int) -> int:
        queue = self._selected()
        if offset == DEVICE_FEATURE:
            return (self.model.features >> (32 * self.device_feature_select)) & 0xFFFFFFFF \
                if self.device_feature_select < 2 else 0
        if offset == DRIVER_FEATURE:
            return (self.driver_features >> (32 * self.driver_feature_select)) & 0xFFFFFFFF \
                if self.driver_feature_select < 2 else 0
        values = {
            DEVICE_FEATURE_SELECT: self.device_feature_select,
            DRIVER_FEATURE_SELECT: self.driver_feature_select,
            CONFIG_MSIX_VECTOR: NO_VECTOR,
            NUM_QUEUES: len(self.queues),
            DEVICE_STATUS: self.status,
            CONFIG_GENERATION: 0,
            QUEUE_SELECT: self.queue_select,
        }
        if offset in values:
            return values[offset]
        if queue is None:
            return 0                            # the fields of an absent queue read as 0
        if offset == QUEUE_SIZE:
            return queue.size
        if offset == QUEUE_MSIX_VECTOR:
            return NO_VECTOR
        if offset == QUEUE_ENABLE:
            return int(queue.enabled)
        if offset == QUEUE_NOTIFY_OFF:
            return self.queue_select
        for base, field in QUEUE_ADDRESSES:
            if base <= offset < base + 8:
                return (getattr(queue, field) >> (8 * (offset - base))) & ((1 << (8 * size)) - 1)
        return 0

    def write_common(self, offset: int, size: int, value: int) -> None:
        queue = self._selected()
        if offset == DEVICE_FEATURE_SELECT:
            self.device_feature_select = value
        elif offset == DRIVER_FEATURE_SELECT:
            self.driver_feature_select = value
        elif offset == DRIVER_FEATURE:
            if self.driver_feature_select < 2 and not self.status & FEATURES_OK:
                shift = 32 * self.driver_feature_select
                self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | (value << shift)
        elif offset == DEVICE_STATUS:
            self.write_status(value & 0xFF)
        elif offset == QUEUE_SELECT:
            self.queue_select = value
        elif queue is None or queue.enabled:
            return                              # an enabled queue's fields are frozen
        elif offset == QUEUE_SIZE:
            if value and not value & (value - 1) and value <= queue.max_size:
                queue.size, queue.refused_size = value, None
            else:
                queue.refused_size = value
                self.trace(f"queue {self.queue_select}: size {value} refused (a power of 2 "
                           f"from 1 to {queue.max_size}); it stays {queue.size}")
        elif offset == QUEUE_ENABLE:
            if value == 1:
                self.enable_queue(queue)
        else:
            for base, field in QUEUE_ADDRESSES:
                if base <= offset < base + 8:
                    shift = 8 * (offset - base)
                    mask = ((1 << (8 * size)) - 1) << shift
                    setattr(queue, field, (getattr(queue, field) & ~mask) | (value << shift))

    def write_status(self, value: int) -> None:
        if value == 0:
            self.reset_device()
            return
        if value & FEATURES_OK and not self.status & FEATURES_OK:
            # The driver must take VERSION_1 and nothing the device did not offer.
            driver = self.driver_features
            if not driver >> VIRTIO_F_VERSION_1 & 1 or driver & ~self.model.features:
                value &= ~FEATURES_OK
        self.status = (self.status & DEVICE_NEEDS_RESET) | value

    def enable_queue(self, queue: QueueState) -> None:
        if queue.refused_size is not None:
            # The driver lays its ring out for the size it wrote, not for queue.size.
            self.needs_reset()
            return
        try:
            queue.ring = SplitQueue(self.memory, queue.size, queue.desc, queue.driver, queue.device,
                                    event_idx=bool(self.driver_features >> VIRTIO_F_EVENT_IDX & 1),
                                    indirect=bool(self.driver_features >> VIRTIO_F_INDIRECT_DESC & 1))
        except VirtqueueError:
            self.needs_reset()
            return
        queue.enabled = True

    # --- notifications ----------------------------------------------------------
    def notify(self, index: int) -> None:
        """The driver made buffers available in queue `index`: serve them."""
        with self.lock:
            self._serve(index)

    def _serve(self, index: int) -> None:
        if index >= len(self.queues) or not self.status & DRIVER_OK or self.status & DEVICE_NEEDS_RESET:
            return
        if not self.bus_master_enabled():
            self.held.add(index)                # no DMA now: served when MASTER is set
            return
        queue = self.queues[index]
        ring = queue.ring
        if not queue.enabled or ring is None:   # an enabled queue always has its ring
            return
        try:
            wanted = self.model.serve(ring)
        except VirtqueueError:
            # Chains served before the fault are in the used ring already: let the driver
            # see them, then ask it to reset.
            if ring.needs_interrupt():
                self.isr |= ISR_QUEUE
            self.needs_reset()
            return
        if wanted:
            self.interrupt(ISR_QUEUE)

    # --- the BAR ----------------------------------------------------------------
    def read_bar(self, offset: int, size: int) -> int:
        """A `size`-byte read: a narrower access than the field's gets the field's low bytes."""
        with self.lock:
            return self._read_bar(offset, size) & ((1 << (8 * size)) - 1)

    def _read_bar(self, offset: int, size: int) -> int:
        if COMMON.offset <= offset < COMMON.end:
            return self.read_common(offset - COMMON.offset, size)
        if ISR.offset <= offset < ISR.end:
            value, self.isr = self.isr, 0
            self._update_irq()
            return value
        if DEVICE.offset <= offset < DEVICE.end:
            config = self.model.config_bytes()
            start = offset - DEVICE.offset
            return int.from_bytes(config[start:start + size].ljust(size, b"\0"), "little")
        return 0

    def write_bar(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            if COMMON.offset <= offset < COMMON.end:
                self.write_common(offset - COMMON.offset, size, value)
            elif NOTIFY.offset <= offset < NOTIFY.end:
                index = (offset - NOTIFY.offset) // NOTIFY_OFF_MULTIPLIER
                if self.notifier is not None:
                    self.notifier.kick(index)
                else:
                    self._serve(index)
            # the device configuration of the models here is read-only

    def bus_master_changed(self, enabled: bool) -> None:
        with self.lock:
            if enabled:
                held, self.held = sorted(self.held), set()
                for index in held:
                    self._serve(index)

    def bar_moved(self, bar, address: int | None) -> None:
        if bar.index == VIRTIO_BAR and self.notifier is not None:
            self.notifier.notify_area_moved(None if address is None else address + NOTIFY.offset)

    # --- configuration space: the INTx mask and the PCI_CFG window ----------------
    def config_written(self, offset: int, size: int, changed: bool) -> None:
        with self.lock:
            if offset < PCI_COMMAND + 2 and offset + size > PCI_COMMAND:
                self._update_irq()                  # INTx disable may have changed
            data = self.pci_cfg + PCI_CFG_DATA
            if offset < data + 4 and offset + size > data:
                self._window(write=True)

    def read_config(self, offset: int, size: int) -> int:
        with self.lock:
            data = self.pci_cfg + PCI_CFG_DATA
            if offset < data + 4 and offset + size > data:
                self._window(write=False)
            return super().read_config(offset, size)

    def _window(self, write: bool) -> None:
        """Carry out the access the PCI_CFG capability describes: `length` (1, 2 or 4) bytes
        at `offset` in BAR `bar`; its data field holds what is written or read."""
        cap = self.pci_cfg
        bar = self.config[cap + PCI_CFG_BAR]
        offset = self.get(cap + PCI_CFG_OFFSET, 4)
        length = self.get(cap + PCI_CFG_LENGTH, 4)
        if bar != VIRTIO_BAR or length not in (1, 2, 4) or offset % length or offset + length > BAR_SIZE:
            return
        if write:
            value = self.get(cap + PCI_CFG_DATA, length)
            self.write_bar(offset, length, value)
        else:
            value = self.read_bar(offset, length)
            self.config[cap + PCI_CFG_DATA:cap + PCI_CFG_DATA + length] = value.to_bytes(length, "little")


class VirtioBar(RegisterDevice):
    """BAR4's accesses, by offset, to the transport's registers."""

    name = "virtio-bar"

    def __init__(self, function: VirtioPciDevice):
        self.function = function

    def read_register(self, offset: int, size: int) -> int:
        return self.function.read_bar(offset, size)

    def write_register(self, offset: int, size: int, value: int) -> None:
        self.function.write_bar(offset, size, value)
