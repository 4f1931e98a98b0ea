"""Fuzz target: PCI configuration mechanism #1 (0xCF8-0xCFF), BAR sizing and moves, PAM shadow
RAM (i440FX 0x59-0x5F), the PIIX3 and the PIIX4 PM block wherever the input maps it, and
whatever then decodes on the port and MMIO buses (tinyvmm.pci)."""

import atheris
from common import Platform, access, config, main, run_ops

with atheris.instrument_imports():
    from tinyvmm import layout

def pio(platform, fdp):
    access(platform, fdp, platform.pio)


def mmio(platform, fdp):
    access(platform, fdp, platform.mmio)


OPS = [config, config, config, pio, mmio]


def check_mappings(platform) -> None:
    """Every BAR the functions think mapped is on its bus there, and none covers guest memory."""
    for function in platform.pci.functions.values():
        for index, (bus, address) in function.mapped.items():
            bar = function.bars[index]
            found = (platform.pio if bus == "pio" else platform.mmio).find(address, bar.size)
            assert found == (address, bar.device), (function.describe(), index, address)
            if bus == "mmio":
                assert layout.mmio_conflict(address, bar.size, platform.memory.regions) is None


def test_one_input(data: bytes) -> None:
    platform = Platform(virtio=True)
    run_ops(platform, atheris.FuzzedDataProvider(data), OPS)
    check_mappings(platform)


if __name__ == "__main__":
    main(test_one_input, "pci")
