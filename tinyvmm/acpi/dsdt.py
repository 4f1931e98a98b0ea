"""The DSDT of tinyvmm's PC: the PCI host with its windows and interrupt routing, the ISA
devices, fw_cfg, the processors and the soft-off state, in AML (tinyvmm.acpi.aml).

What is described, and why:
* \\_SB.PCI0 (PNP0A03): bus 0-255, config ports 0xCF8-0xCFF, the I/O windows around them,
  the VGA window and the 32-bit window from the end of low RAM to below the I/O APIC.
* \\_SB.PCI0._PRT: INTA-INTD of every slot to the link device of the PIRQ the PIIX3 routes
  it through (PIRQ = (slot + pin - 1) mod 4, QEMU's swizzle; tinyvmm.pci.piix), and
  slot 1's INTA (the PM function's SCI) to LNKS, fixed at IRQ 9.
* \\_SB.LNKA-LNKD (PNP0C0F) over the PIIX3 route registers 0x60-0x63: _STA, _CRS, _PRS
  {5, 10, 11}, _SRS and _DIS read and write the register, so an OS that finds a link
  disabled (no firmware ran) programs it itself and the device's INTx follows.
* The ISA devices Linux and SeaBIOS look for: the keyboard controller (PNP0303), COM1
  (PNP0501), the RTC (PNP0B00); fw_cfg (QEMU0002), so Linux's driver finds it without a
  command-line parameter.
* One processor device (ACPI0007) per vCPU, and \\_S5 with SLP_TYP 0 (PIIX4 soft-off).
"""

from __future__ import annotations

import functools

from .. import layout
from ..pci.piix import PIRQ_COUNT, PIRQ_DISABLED, SCI_IRQ
from . import aml
from .tables import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import AcpiMachine

DSDT_REVISION = 1                       # 32-bit AML integers, as the PIIX4 tables of QEMU
PCI_SLOTS = 32
PCI_WINDOW_END = 0xFEBFFFFF             # below the I/O APIC
LINK_IRQS = (5, 10, 11)                 # what a PIRQ link may be routed to
LINK_INTERRUPT = aml.INTERRUPT_CONSUMER | aml.INTERRUPT_SHARED    # level, active-high, shared
STA_PRESENT_ENABLED = 0x0B              # present, enabled, functioning (not shown in UI)
STA_PRESENT_DISABLED = 0x09
STA_ALL = 0x0F
ISA_BRIDGE_ADR = 0x00010000             # 00:01.0
PIRQ_ROUTE = "\\_SB.PCI0.ISA.PRQ"       # + 0..3: the PIIX3 route register fields
IQCR_IRQ_OFFSET = 5                     # the first interrupt number in an Interrupt descriptor
FW_CFG_PORTS_DMA = 12                   # 0x510-0x51b: selector, data and the DMA address
FW_CFG_PORTS = 2
FW_CFG_MMIO_SIZE = 0x18


@functools.lru_cache(maxsize=4)
def build_dsdt(machine: AcpiMachine) -> bytes:
    """The DSDT's bytes (checksum 0 until linked). Kept for the next call with the same
    machine: a direct boot builds the tables for fw_cfg and for RAM, about 1 ms each."""
    body = aml.scope("\\_SB",
                     pci_host(machine),
                     *link_devices(),
                     *processors(machine.cpus))
    body += aml.name("\\_S5", aml.package([aml.integer(0)] * 4))
    return table(b"DSDT", DSDT_REVISION, body)


def pci_host(machine: AcpiMachine) -> bytes:
    io_base = layout.PORTS["pci_config"][0]
    io_size = layout.PORTS["pci_config"][1]
    windows = aml.resource_template(
        aml.word_address(aml.RESOURCE_BUS, 0, 0, 0xFF),
        aml.io_port(io_base, io_size),
        aml.word_address(aml.RESOURCE_IO, aml.IO_ENTIRE_RANGE, 0, io_base - 1),
        aml.word_address(aml.RESOURCE_IO, aml.IO_ENTIRE_RANGE, io_base + io_size, 0xFFFF),
        aml.dword_memory(aml.MEMORY_CACHEABLE | aml.MEMORY_READ_WRITE, layout.VGA_START,
                         layout.VGA_END - 1),
        aml.dword_memory(aml.MEMORY_READ_WRITE, layout.low_ram_end(machine.ram_size),
                         PCI_WINDOW_END))
    return aml.device(
        "PCI0",
        aml.name("_HID", aml.eisa_id("PNP0A03")),
        aml.name("_ADR", aml.integer(0)),
        aml.name("_UID", aml.integer(0)),
        aml.name("_CRS", windows),
        aml.name("_PRT", routing_table()),
        isa_bridge(),
        fw_cfg_device(machine))


def routing_table() -> bytes:
    """_PRT: {address (slot << 16 | 0xFFFF), pin 0-3, link, 0} for every pin of every slot."""
    entries = []
    for slot in range(PCI_SLOTS):
        for pin in range(4):
            link = "LNKS" if (slot, pin) == (1, 0) else f"LNK{'ABCD'[(slot + pin - 1) % 4]}"
            entries.append(aml.package([aml.integer(slot << 16 | 0xFFFF), aml.integer(pin),
                                        aml.ref(link), aml.integer(0)]))
    return aml.package(entries)


def isa_bridge() -> bytes:
    kbd_data, _ = layout.PORTS["i8042"]
    com1, com1_size = layout.PORTS["com1"]
    cmos, cmos_size = layout.PORTS["cmos"]
    return aml.device(
        "ISA",
        aml.name("_ADR", aml.integer(ISA_BRIDGE_ADR)),
        aml.operation_region("P40C", aml.PCI_CONFIG, 0x60, PIRQ_COUNT),
        aml.field("P40C", aml.BYTE_ACC | aml.NO_LOCK | aml.PRESERVE,
                  [(f"PRQ{i}", 8) for i in range(PIRQ_COUNT)]),
        isa_device("KBD", "PNP0303", aml.io_port(kbd_data, 1), aml.io_port(kbd_data + 4, 1),
                   aml.irq_no_flags(layout.KEYBOARD_IRQ)),
        isa_device("COM1", "PNP0501", aml.io_port(com1, com1_size),
                   aml.irq_no_flags(layout.COM1_IRQ), uid=1),
        isa_device("RTC", "PNP0B00", aml.io_port(cmos, cmos_size),
                   aml.irq_no_flags(layout.RTC_IRQ)))


def isa_device(path: str, hid: str, *resources: bytes, uid: int | None = None) -> bytes:
    terms = [aml.name("_HID", aml.eisa_id(hid))]
    if uid is not None:
        terms.append(aml.name("_UID", aml.integer(uid)))
    terms += [aml.name("_STA", aml.integer(STA_ALL)),
              aml.name("_CRS", aml.resource_template(*resources))]
    return aml.device(path, *terms)


def fw_cfg_device(machine: AcpiMachine) -> bytes:
    """QEMU0002 where the guest reaches fw_cfg: the ports (with DMA's when it has DMA), else
    the MMIO window."""
    if machine.fw_cfg_ports:
        base = layout.PORTS["fw_cfg"][0]
        resource = aml.io_port(base, FW_CFG_PORTS_DMA if machine.fw_cfg_dma else FW_CFG_PORTS)
    else:
        assert machine.fw_cfg_mmio is not None
        resource = aml.memory32_fixed(machine.fw_cfg_mmio, FW_CFG_MMIO_SIZE)
    return aml.device(
        "FWCF",
        aml.name("_HID", aml.string("QEMU0002")),
        aml.name("_STA", aml.integer(STA_PRESENT_ENABLED)),
        aml.name("_CRS", aml.resource_template(resource)))


def link_devices() -> list[bytes]:
    """Two helper methods, LNKA-LNKD over the PIRQ route registers, and LNKS (the SCI)."""
    link_irqs = aml.resource_template(aml.interrupt(LINK_INTERRUPT, *LINK_IRQS))
    status = aml.method(        # IQST(route): a disabled route is present but not enabled
        "IQST", 1,
        aml.if_(aml.and_(aml.integer(PIRQ_DISABLED), aml.ARG0),
                aml.return_(aml.integer(STA_PRESENT_DISABLED))),
        aml.return_(aml.integer(STA_PRESENT_ENABLED)))
    current = aml.method(       # IQCR(route): the Interrupt descriptor of the routed IRQ
        "IQCR", 1,
        aml.name("PRR0", aml.resource_template(aml.interrupt(LINK_INTERRUPT, 0))),
        aml.create_dword_field(aml.ref("PRR0"), IQCR_IRQ_OFFSET, "PRRI"),
        aml.if_(aml.lless(aml.ARG0, aml.integer(PIRQ_DISABLED)),
                aml.store(aml.ARG0, aml.ref("PRRI"))),
        aml.return_(aml.ref("PRR0")),
        serialized=True)
    devices = [status, current]
    for index in range(PIRQ_COUNT):
        route = aml.ref(f"{PIRQ_ROUTE}{index}")
        devices.append(aml.device(
            f"LNK{'ABCD'[index]}",
            aml.name("_HID", aml.eisa_id("PNP0C0F")),
            aml.name("_UID", aml.integer(index)),
            aml.name("_PRS", link_irqs),
            aml.method("_STA", 0, aml.return_(aml.ref("IQST") + route)),
            aml.method("_DIS", 0, aml.or_(route, aml.integer(PIRQ_DISABLED), route)),
            aml.method("_CRS", 0, aml.return_(aml.ref("IQCR") + route)),
            aml.method("_SRS", 1,
                       aml.create_dword_field(aml.ARG0, IQCR_IRQ_OFFSET, "PRRI"),
                       aml.store(aml.ref("PRRI"), route))))
    sci = aml.resource_template(aml.interrupt(LINK_INTERRUPT, SCI_IRQ))
    devices.append(aml.device(
        "LNKS",
        aml.name("_HID", aml.eisa_id("PNP0C0F")),
        aml.name("_UID", aml.integer(PIRQ_COUNT)),
        aml.name("_STA", aml.integer(STA_PRESENT_ENABLED)),
        aml.name("_PRS", sci),
        aml.name("_CRS", sci),
        aml.method("_SRS", 1),
        aml.method("_DIS", 0)))
    return devices


def processors(cpus: int) -> list[bytes]:
    """C000, C001, ...: processor devices whose _UID is the MADT's processor UID."""
    return [aml.device(f"C{cpu:03X}",
                       aml.name("_HID", aml.string("ACPI0007")),
                       aml.name("_UID", aml.integer(cpu)))
            for cpu in range(cpus)]
