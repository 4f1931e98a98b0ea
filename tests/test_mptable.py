"""The MP table of a direct boot without ACPI (tinyvmm.mptable), read back by a parser written
from the MultiProcessor Specification 1.4 alone."""

import struct

import pytest
from payloads import KERNEL

from tinyvmm import Machine, layout
from tinyvmm.mptable import config_table, floating_pointer


def parse(table: bytes) -> dict:
    """{"cpus": [(apic id, flags)], "buses": {id: type}, "ioapics": [...], "ints": [...],
    "lints": [...]} of a configuration table, its header and checksum checked."""
    signature, length, revision, _, _, _, _, _, count, lapic, _, _, _ = struct.unpack_from(
        "<4sHBB8s12sIHHIHBB", table)
    assert (signature, revision, lapic) == (b"PCMP", 4, 0xFEE00000)
    assert length == len(table) and sum(table) % 256 == 0
    found: dict = {"cpus": [], "buses": {}, "ioapics": [], "ints": [], "lints": []}
    offset = 44
    for _ in range(count):
        kind = table[offset]
        if kind == 0:
            _, apic_id, _, flags = struct.unpack_from("<BBBB", table, offset)
            found["cpus"].append((apic_id, flags))
            offset += 20
            continue
        entry = table[offset:offset + 8]
        if kind == 1:
            found["buses"][entry[1]] = entry[2:8].decode().strip()
        elif kind == 2:
            found["ioapics"].append(struct.unpack("<BBBBI", entry)[1:])
        else:
            _, int_type, flags, bus, source, apic, pin = struct.unpack("<BBHBBBB", entry)
            found["ints" if kind == 3 else "lints"].append((int_type, bus, source, apic, pin))
        offset += 8
    assert offset == len(table)
    return found


@pytest.mark.parametrize("cpus", [1, 2, 255])
def test_the_table_lists_every_vcpu_the_ioapic_and_the_interrupt_wiring(cpus):
    found = parse(config_table(cpus, [(2, 1, 10), (3, 1, 11)]))
    assert found["cpus"] == [(0, 3)] + [(cpu, 1) for cpu in range(1, cpus)]   # vCPU 0: BSP
    assert found["buses"] == {0: "PCI", 1: "ISA"}
    assert found["ioapics"] == [(0, 0x11, 1, 0xFEC00000)]
    isa = [(source, pin) for kind, bus, source, _, pin in found["ints"] if bus == 1]
    # ISA IRQs to the I/O APIC pin of the same number (KVM's routing), not the cascade nor
    # the IRQs the PCI devices are routed to.
    assert isa == [(irq, irq) for irq in range(16) if irq not in (2, 10, 11)]
    pci = [(source >> 2, (source & 3) + 1, pin) for kind, bus, source, _, pin in found["ints"]
           if bus == 0]
    assert pci == [(2, 1, 10), (3, 1, 11)]
    assert found["lints"] == [(3, 1, 0, 0, 0), (1, 1, 0, 0xFF, 1)]     # ExtINT, NMI


def test_the_floating_pointer_points_at_the_table_with_a_valid_checksum():
    pointer = floating_pointer(0x9A000)
    assert len(pointer) == 16 and sum(pointer) % 256 == 0
    assert pointer[:4] == b"_MP_" and struct.unpack_from("<IBB", pointer, 4) == (0x9A000, 1, 4)
    assert pointer[11] == 0                              # a table follows, no default config


@pytest.mark.kvm
@pytest.mark.kernel
def test_a_direct_boot_without_acpi_gets_an_mp_table_with_its_disk_routed(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    with Machine(None, kernel=KERNEL, boot="direct", acpi=False, smp=2, mem=64 * layout.MiB,
                 drives=[f"file={disk},if=virtio,format=raw"]) as machine:
        read = machine.read_memory
        ebda = struct.unpack("<H", read(layout.BDA_EBDA_SEGMENT, 2))[0] << 4
        pointer = read(ebda, 16)                         # Linux scans the EBDA's first KiB
        assert pointer[:4] == b"_MP_" and sum(pointer) % 256 == 0
        address = struct.unpack_from("<I", pointer, 4)[0]
        length = struct.unpack_from("<H", read(address, 6), 4)[0]
        found = parse(read(address, length))
        assert [cpu for cpu, _ in found["cpus"]] == [0, 1]
        # The disk at 00:02.0, INTA: PIRQB, which the loader routed to IRQ 10 as firmware would.
        assert (0, 0, 2 << 2, 0, 10) in found["ints"]
        disk_function = machine._built.board.pci.functions[(2, 0)]
        assert disk_function.config[0x3C] == 10          # its Interrupt Line says the same
        assert (layout.BOOT_TABLES_START, layout.EBDA_START - layout.BOOT_TABLES_START,
                layout.E820_RESERVED) in layout.e820_map(64 * layout.MiB, 64 * layout.KiB)
