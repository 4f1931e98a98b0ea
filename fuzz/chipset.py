"""Fuzz target: every device of the other device targets at once, on one platform: fw_cfg DMA
into RAM whose PAM modes the input changes, virtio rings there too, configuration cycles and
port and MMIO accesses interleaved, so one device's state can meet another's."""

import atheris
import fw_cfg
import pci
import virtio
from common import Platform, config, main, poke, run_ops

OPS = [fw_cfg.ports, fw_cfg.dma, virtio.common, virtio.handshake, virtio.request, config, config,
       pci.pio, pci.mmio, poke]


def test_one_input(data: bytes) -> None:
    platform = Platform(virtio=True)
    virtio.firmware_setup(platform)
    run_ops(platform, atheris.FuzzedDataProvider(data), OPS)
    pci.check_mappings(platform)


if __name__ == "__main__":
    main(test_one_input, "chipset")
