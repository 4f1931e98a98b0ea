"""virtio devices over PCI (virtio 1.x, modern layout): the transport (pci), split virtqueues
(queue), the block device (blk), and the --drive option (drive)."""
