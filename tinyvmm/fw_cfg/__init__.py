"""QEMU's firmware configuration device (fw_cfg): item registry, device state machine, options.

items   - keys, the registry of numbered items and files, FILE_DIR, etc/e820, user items
device  - the selector/data/DMA state machine and its port and MMIO faces
options - command-line options, attaching to a Board, `tinyvmm fw-cfg list`
"""

from .device import FwCfg, FwCfgDmaPorts, FwCfgIoPorts, FwCfgMmio
from .items import FwCfgConfigError, FwCfgEntry, FwCfgItems

__all__ = ["FwCfg", "FwCfgDmaPorts", "FwCfgIoPorts", "FwCfgMmio",
           "FwCfgConfigError", "FwCfgEntry", "FwCfgItems"]
