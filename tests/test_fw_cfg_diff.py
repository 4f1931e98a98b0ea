"""fw_cfg operation by operation, tinyvmm against QEMU 7.2's pc machine: a seeded random
sequence of selects, port reads and writes of every width, `rep ins` and DMA transfers with good
and bad descriptors, run by one guest (tests/guests/fwcfg_ops.S) under each, whose result lines
are compared one by one. A difference fails the test with the operation that made it.

The operations keep to what both machines serve alike: the numeric keys 0x00-0x18, files
found by name in the guest (the user's files given to both, and etc/e820 and
etc/boot-fail-wait), and keys neither serves. Left out, and why:
- the file directory (0x19) and numeric keys 0x20-0x3f: QEMU has files tinyvmm does not serve
  (test_fw_cfg_qemu.QEMU_ONLY), so the directory and the file selectors differ;
- the SMBIOS and ACPI files: each machine describes itself (test_fw_cfg_qemu.OWN_CONTENTS);
- the legacy x86 keys 0x8000-0x8004 (ACPI tables, SMBIOS entries, IRQ0 override, e820
  reservations, HPET): QEMU serves them for old firmware (the IRQ0 override and the HPET
  description read 1 first); tinyvmm serves none of them;
- the MMIO window: QEMU's pc machine has none;
- DMA buffers that run past 2^64: QEMU wraps to address 0 and writes low RAM (the guest's own
  page tables and stack); tinyvmm refuses the transfer with the error bit;
- 32-bit reads at 0x510 (in and rep ins), which run past the two ports into 0x512-0x513: QEMU
  reads 0 and moves no data offset; tinyvmm's port bus splits an access across a device's end
  into bytes (two data bytes, then 0xff for the ports nobody has). A 32-bit read at 0x511
  reads the same on both (a data byte, 0xff, 0xff, then "Q" from 0x514), and writes across
  0x510 do nothing on either.
DMA writes have no writable item to go to (QEMU's pc machine has none without devices such as
vmgenid): both refuse every one with a length with the error bit, and what is compared is
that, and the data offset the refusal leaves.
Compared in part:
- what a DMA transfer whose buffer runs past the end of RAM left in RAM (its hash): QEMU
  copies up to the end of RAM before it sets the error bit; tinyvmm checks the whole buffer
  first and leaves RAM untouched. The control word is compared.
- the control word of a DMA descriptor that selects a file, when the device never wrote it back
  (the transfer did not start: its descriptor was not in RAM, or the address register's high
  half, left by an earlier write, pointed elsewhere): its top half is still the guest's key for
  the file, which differs between the two. Its low half is compared; a word written back, and
  every other control word, is compared whole.
Not compared against QEMU: a DMA WRITE that succeeds (QEMU's pc machine has no writable item;
tests/test_fw_cfg.py covers it), and in a long buffer the guest hashes one byte in
len // 512 (short ones whole), so a single wrong byte deep in a long transfer can pass here
(tests/test_fw_cfg.py checks whole transfers).
"""

import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from debugcon_runs import QEMU_MARKS, run_qemu, run_tinyvmm
from guest_build import GUESTS, assemble

pytestmark = QEMU_MARKS

SEEDS = (1, 2, 3)
OPERATIONS = 1200
MEM_MIB = 128
RAM_END = MEM_MIB << 20
BUFFER = 0x100000              # where the guest's RAM buffers start (the descriptor is below)
HASH_MAX = 0x90000             # the most of a buffer hashed after a transfer
HASH_SAMPLES = 512             # bytes hashed, at most: the guest's code may run slowly
ROM = 0xFFFF0000               # the firmware image at the top of 4 GiB

# The files the operations select by name, and the user's files given to both machines.
USER_FILES = {"opt/tinyvmm/small": 37, "opt/tinyvmm/page": 4096,
              "opt/tinyvmm/big": 5 * 4096 + 777}
NAMES = ("etc/e820", "etc/boot-fail-wait", *USER_FILES, "opt/tinyvmm/absent")
NUMERIC_KEYS = tuple(range(0x19))
# The numeric keys with contents (0x0d: QEMU's NUMA table, zeros, as tinyvmm's absent key reads).
POPULATED_KEYS = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x0d, 0x0e, 0x0f)
UNKNOWN_KEYS = (0x1a, 0x1f, 0x40, 0x41, 0x100, 0x3fff, 0x7fff, 0xbfff, 0xffff)

# Record kinds and fields (tests/guests/fwcfg_ops.S)
OP_SELECT, OP_IN, OP_OUT, OP_INS, OP_DMA = range(5)
AT_RAM, AT_RAM_ODD, AT_RAM_END, AT_PAST, AT_ROM = range(5)
START_BOTH, START_LOW, START_HIGH = range(3)
RECORD = struct.Struct("<BBBBHH16sII")
HEADER = struct.Struct("<IIII")
NAME_SIZE = 56

CTL_ERROR, CTL_READ, CTL_SKIP, CTL_SELECT, CTL_WRITE = 0x01, 0x02, 0x04, 0x08, 0x10
CONTROL, HASH = 1, 2           # the fields of a DMA line


@dataclass
class Operation:
    """A record and what it does; `compared`: the part of each field of its line compared
    (a slice of the field, or None for none of it) where not all of it is."""
    record: bytes
    text: str
    compared: dict[int, slice | None] = field(default_factory=dict)
    # A DMA that selects a file: the low half of the control word the guest wrote. While the
    # word still holds it, the device never wrote the word back, and its top half is the guest's
    # key for the file, which each machine numbers its own way: only the low half is compared.
    unwritten_control: str | None = None

    def fields(self, line: str) -> list[str]:
        """The fields of its line, cut to what is compared."""
        parts = line.split()
        if self.unwritten_control is not None and len(parts) > CONTROL and \
                parts[CONTROL][4:] == self.unwritten_control:
            parts[CONTROL] = parts[CONTROL][4:]
        return [part if i not in self.compared else
                part[self.compared[i]] if self.compared[i] is not None else ""
                for i, part in enumerate(parts)]


class Generator:
    """The operations of one seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def key(self) -> tuple[int, int, str]:
        """(file index + 1 or 0, numeric key, its description): mostly items with contents."""
        rng = self.rng
        choice = rng.random()
        if choice < 0.55:
            index = rng.randrange(len(NAMES) - 1) if rng.random() < 0.95 else len(NAMES) - 1
            return index + 1, 0, NAMES[index]
        if choice < 0.75:
            key = rng.choice(POPULATED_KEYS)
        elif choice < 0.85:
            key = rng.choice(NUMERIC_KEYS + UNKNOWN_KEYS)
        else:                                            # bit 0x4000 (once the write channel)
            key = rng.choice(NUMERIC_KEYS) | 0x4000
        return 0, key, f"key {key:#06x}"

    def operation(self) -> Operation:
        rng = self.rng
        kind = rng.choices((OP_SELECT, OP_IN, OP_OUT, OP_INS, OP_DMA), (15, 30, 8, 12, 35))[0]
        if kind == OP_SELECT:
            file, key, text = self.key()
            return Operation(RECORD.pack(OP_SELECT, 2, file, 0, key, 0, bytes(16), 0, 0),
                             f"select {text}")
        if kind == OP_IN:
            return self.port_in()
        if kind == OP_OUT:
            return self.port_out()
        if kind == OP_INS:
            return self.ins()
        return self.dma()

    def port_in(self) -> Operation:
        rng = self.rng
        choice = rng.random()
        if choice < 0.6:
            port, width = 0x511, 1
        elif choice < 0.7:
            port, width = 0x510, 1
        elif choice < 0.8:
            port, width = rng.choice(((0x510, 2), (0x511, 2), (0x511, 4)))
        else:
            port, width = 0x514 + rng.randrange(8), rng.choice((1, 2, 4))
        return Operation(RECORD.pack(OP_IN, width, 0, 0, 0, 0, struct.pack("<II", port, 0), 0, 0),
                         f"in{'bwl'[width // 2]} {port:#x}")

    def port_out(self) -> Operation:
        rng = self.rng
        value = rng.getrandbits(32)
        choice = rng.random()
        if choice < 0.3:
            port, width = rng.choice(((0x510, 1), (0x511, 1), (0x511, 2), (0x511, 4)))
        elif choice < 0.45:              # a select in the low half, maybe: a key of the pool
            port, width = 0x510, 4
            value = value & 0xFFFF0000 | self.key()[1]
        elif choice < 0.65:              # the DMA address's high half: 0, or not
            port, width = 0x514, 4
            value = 0 if rng.random() < 0.5 else rng.choice((1, 0x1000000, value))
        else:                            # no transfer starts: misaligned, or narrow at 0x518
            port = 0x514 + rng.randrange(8)
            width = rng.choice((1, 2) if port == 0x518 else (1, 2, 4))
            if width == 4 and port in (0x514, 0x518):
                port += 1
        value &= (1 << 8 * width) - 1
        return Operation(RECORD.pack(OP_OUT, width, 0, 0, 0, 0,
                                     struct.pack("<II", port, value), 0, 0),
                         f"out{'bwl'[width // 2]} {value:#x} to {port:#x}")

    def ins(self) -> Operation:
        rng = self.rng
        width = rng.choices((1, 2, 4), (8, 1, 1))[0]
        port = 0x511 if width == 4 or rng.random() < 0.85 else 0x510
        if width == 1 and rng.random() < 0.2:
            count = rng.randrange(30000)
        else:
            count = rng.choice((0, 1, rng.randrange(2, 600)))
        start = BUFFER + rng.randrange(16)
        length = start - BUFFER + count * width + 16
        return Operation(RECORD.pack(OP_INS, width, 0, 0, stride(length), 0,
                                     struct.pack("<II", port, count), BUFFER, length),
                         f"rep ins{'bwl'[width // 2]} {count} from {port:#x} to {start:#x}")

    def dma(self) -> Operation:
        rng = self.rng
        control = rng.choice((CTL_READ,) * 5 + (CTL_SKIP,) * 2 + (CTL_WRITE,) * 2 + (
            CTL_READ | CTL_WRITE, CTL_READ | CTL_SKIP, CTL_SKIP | CTL_WRITE, 0, CTL_ERROR | CTL_READ))
        at = rng.choices((AT_RAM, AT_RAM_ODD, AT_RAM_END, AT_PAST, AT_ROM), (70, 10, 5, 5, 10))[0]
        file, text = 0, ""
        if rng.random() < 0.5:
            file, key, text = self.key()
            if at == AT_ROM and file:                    # the guest cannot patch the ROM
                file, key, text = 0, 0, "key 0x0000"
            control |= CTL_SELECT | key << 16
            text = f" select {text}"
        elif rng.random() < 0.3:
            control |= rng.getrandbits(16) << 16         # no select: the key is ignored
        if rng.random() < 0.1:
            control |= 1 << rng.randrange(5, 16)         # a bit with no meaning
        length = rng.choices((0, rng.randrange(1, 9), rng.randrange(9, 600),
                              rng.randrange(600, 30000), rng.randrange(0x10000, 0x80000),
                              RAM_END - BUFFER + rng.randrange(0x1000)), (8, 25, 30, 22, 10, 5))[0]
        where = rng.random()
        compared: dict[int, slice | None] = {}
        if where < 0.75:
            address = BUFFER + rng.randrange(16)
            hash_start, hash_length = BUFFER, address - BUFFER + min(length, HASH_MAX) + 16
            if address + length > RAM_END:
                compared[HASH] = None
        elif where < 0.83:                               # across the end of RAM
            address = RAM_END - rng.randrange(1, 0x200)
            length = rng.randrange(RAM_END - address, 0x800)
            hash_start, hash_length = RAM_END - 0x400, 0x400
            compared[HASH] = None
        else:                            # not RAM, and (see above) not wrapping past 2^64
            address = rng.choice((RAM_END + rng.randrange(0x1000000), ROM + rng.randrange(0x10000),
                                  (1 << 32) + BUFFER, 0xFFFFFFFFFFFFF000))
            length = min(length, (1 << 64) - address)
            hash_start, hash_length = BUFFER, 0x100
        start = rng.choices((START_BOTH, START_LOW, START_HIGH), (80, 15, 5))[0]
        high = rng.choice((1, 0xFFFF)) if start == START_HIGH else 0
        descriptor = struct.pack(">IIQ", control, length, address)
        at_text = ("", " descriptor at +3", " descriptor at RAM end - 8",
                   " descriptor past RAM", " descriptor in ROM")[at]
        start_text = ("", " (low half only)", f" (high half {high:#x})")[start]
        return Operation(RECORD.pack(OP_DMA, start, file if at != AT_PAST else 0, at,
                                     stride(hash_length), high,
                                     descriptor, hash_start, hash_length),
                         f"DMA control {control:#010x}{text} length {length:#x} address "
                         f"{address:#x}{at_text}{start_text}", compared,
                         f"{control & 0xFFFF:04x}" if file else None)


def stride(length: int) -> int:
    """One byte in how many the guest hashes: all of a short range, an odd stride in a long
    one (so that the bytes hashed fall at every alignment)."""
    return 1 if length <= HASH_SAMPLES else length // HASH_SAMPLES | 1


def operations(seed: int, count: int = OPERATIONS) -> list[Operation]:
    generator = Generator(seed)
    return [generator.operation() for _ in range(count)]


def table(ops: list[Operation]) -> bytes:
    """The guest's table: header, names, records."""
    names = b"".join(name.encode().ljust(NAME_SIZE, b"\0") for name in NAMES)
    return HEADER.pack(len(ops), len(NAMES), RAM_END, 0) + names + b"".join(
        op.record for op in ops)


def user_files(tmp_path: Path) -> tuple[str, ...]:
    """-fw_cfg arguments for USER_FILES, with contents of their own."""
    rng = random.Random(0)
    items = []
    for name, size in USER_FILES.items():
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(size)))
        items.append(f"name={name},file={path}")
    return tuple(items)


def first_difference(ops: list[Operation], ours: str, qemu: str) -> str | None:
    """None if the two logs agree, else the first line where they part, with its operation."""
    ours_lines, qemu_lines = ours.splitlines(), qemu.splitlines()
    for number in range(max(len(ours_lines), len(qemu_lines))):
        mine = ours_lines[number] if number < len(ours_lines) else "(nothing)"
        theirs = qemu_lines[number] if number < len(qemu_lines) else "(nothing)"
        index = number - len(NAMES)
        op = ops[index] if 0 <= index < len(ops) else Operation(b"", "")
        if op.fields(mine) != op.fields(theirs):
            what = f"operation {index} ({op.text})" if op.text else f"line {number + 1}"
            return f"{what}:\n  tinyvmm: {mine}\n  QEMU:    {theirs}"
    return None


@pytest.mark.parametrize("seed", SEEDS)
def test_fw_cfg_operations_are_qemus(tmp_path, seed):
    ops = operations(seed)
    (tmp_path / "ops.bin").write_bytes(table(ops))
    image = assemble(GUESTS / "fwcfg_ops.S", tmp_path / "fwcfg_ops",
                     defines={"OPS_FILE": f'"{tmp_path / "ops.bin"}"'}).bin_path
    fw_cfg = user_files(tmp_path)
    ours = run_tinyvmm(image, MEM_MIB, tmp_path, fw_cfg)
    qemu = run_qemu(image, MEM_MIB, tmp_path, fw_cfg)
    difference = first_difference(ops, ours, qemu)
    assert difference is None, (f"seed {seed}, {difference}\n  (the logs: {tmp_path / 'tinyvmm.txt'}, "
                                f"{tmp_path / 'qemu.txt'}; fields: index, values read, DMA control "
                                "word, hash of the buffer)")
    lines = ours.splitlines()
    assert lines[-1] == "end" and len(lines) == len(NAMES) + len(ops) + 1, lines[-3:]
