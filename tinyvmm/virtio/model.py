"""What the virtio-pci transport (tinyvmm.virtio.pci) asks of a device model: the contract
tinyvmm.virtio.blk.BlockDevice fulfils, and any other device type would."""

from typing import Protocol

from .queue import SplitQueue


class VirtioModel(Protocol):
    """A virtio device's own logic, behind VirtioPciDevice.

    `name` names the PCI function (the board adds an index: "virtio-blk0"). `device_type`
    is the virtio device ID (2 for a block device; the PCI device ID is 0x1040 plus it);
    `class_code` the 24-bit PCI class code; `features` the offered feature bits (64 bits,
    VIRTIO_F_VERSION_1 among them); `queue_sizes` the largest size of each queue, in
    entries (powers of two up to 32768), one entry per queue.
    """

    name: str
    device_type: int
    class_code: int
    features: int
    queue_sizes: list[int]

    def config_bytes(self) -> bytes:
        """The device-specific configuration structure, little-endian, as the driver reads it
        (reads beyond its end read as 0)."""
        ...

    def serve(self, queue: SplitQueue) -> bool:
        """Handle every chain available in `queue`, pushing each to the used ring; True when
        the driver should be interrupted. VirtqueueError for a malformed chain (the
        transport then sets DEVICE_NEEDS_RESET)."""
        ...

    def reset(self) -> None:
        """The driver reset the device: forget per-driver state."""
        ...
