"""SMBIOS tables served through fw_cfg: entry point and structures as SMBIOS 2.8 lays them out."""

import struct

import pytest

from tinyvmm import layout
from tinyvmm.fw_cfg.smbios import smbios_files

# Formatted-area lengths of SMBIOS 2.8 (header included), by structure type.
SPEC_LENGTHS = {1: 0x1B, 3: 0x16, 4: 0x2A, 16: 0x17, 17: 0x28, 19: 0x1F, 32: 0x0B, 127: 0x04}


def walk(table: bytes):
    """(type, handle, formatted area, strings) of each structure, as firmware and dmidecode walk."""
    at = 0
    while at < len(table):
        kind, length, handle = struct.unpack_from("<BBH", table, at)
        end = table.index(b"\0\0", at + length)
        strings = [s.decode() for s in table[at + length:end].split(b"\0") if s]
        yield kind, handle, table[at:at + length], strings
        at = end + 2


@pytest.mark.parametrize("ram,cpus", [(256 * layout.MiB, 1), (40 * layout.GiB, 4)])
def test_entry_point_and_structures(ram, cpus):
    anchor, table = smbios_files(ram, cpus)
    assert len(anchor) == 31 and anchor[:4] == b"_SM_" and anchor[0x10:0x15] == b"_DMI_"
    assert sum(anchor) & 0xFF == 0 and sum(anchor[0x10:]) & 0xFF == 0
    length, address, count = struct.unpack_from("<HIH", anchor, 0x16)
    assert length == len(table) and address == 0      # the firmware places the table
    structures = list(walk(table))
    assert len(structures) == count and structures[-1][0] == 127
    assert anchor[8] | anchor[9] << 8 == max(len(s) for s in _raw(table))
    for kind, _, formatted, _ in structures:
        assert len(formatted) == SPEC_LENGTHS[kind], kind
    handles = [handle for _, handle, _, _ in structures]
    assert len(set(handles)) == len(handles)
    kinds = [kind for kind, _, _, _ in structures]
    assert kinds.count(4) == cpus
    devices = [s for s in structures if s[0] == 17]
    assert len(devices) == -(-ram // (16 * layout.GiB))
    assert sum(struct.unpack_from("<H", d[2], 0x0C)[0] for d in devices) * layout.MiB == ram
    system = next(s for s in structures if s[0] == 1)
    assert system[3] == ["tinyvmm", "i440FX + PIIX"]


def test_mapped_ranges_follow_the_e820_ram_entries():
    ram = 4 * layout.GiB
    _, table = smbios_files(ram)
    ranges = [struct.unpack_from("<II", formatted, 4) for kind, _, formatted, _ in walk(table)
              if kind == 19]
    expected = [(start // 1024, (start + length - 1) // 1024)
                for start, length, kind in layout.e820_map(ram, 0) if kind == layout.E820_RAM]
    assert ranges == expected and ranges[-1][0] == layout.FOUR_GIB // 1024


def _raw(table: bytes):
    at = 0
    while at < len(table):
        end = table.index(b"\0\0", at + table[at + 1]) + 2
        yield table[at:end]
        at = end
