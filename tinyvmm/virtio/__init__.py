"""virtio devices over PCI (virtio 1.x, modern layout): the transport (pci), what it asks of a
device model (model), split virtqueues (queue), the block device (blk), and the --drive option
(drive)."""
