"""ACPI tables (tinyvmm.acpi): each table's fields against the ACPI specification and QEMU's
pc machine, the AML encoder against hand-assembled bytes, the loader script run by an
independent interpreter, iasl's disassembly of every table, and the tables as SeaBIOS, qboot
and a direct boot receive them."""

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from command_line import tinyvmm
from payloads import KERNEL, VMLINUX

from tinyvmm import Machine, layout
from tinyvmm.acpi import (
    LOADER_FILE,
    RSDP_FILE,
    TABLES_FILE,
    AcpiMachine,
    aml,
    build_acpi,
    install_direct,
)
from tinyvmm.acpi.dsdt import build_dsdt
from tinyvmm.acpi.publish import fw_cfg_files

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
QBOOT = Path("/usr/share/qemu/qboot.rom")
TABLES_AT, RSDP_AT = 0x0FFF0000, 0xF5000


def linked(machine: AcpiMachine) -> dict[str, bytes]:
    files = build_acpi(machine).link({TABLES_FILE: TABLES_AT, RSDP_FILE: RSDP_AT})
    return {name: bytes(blob) for name, blob in files.items()}


def tables_by_signature(blob: bytes, base: int, rsdp: bytes) -> dict[bytes, bytes]:
    """Follow the RSDP like an OS: RSDT, its entries, the FADT's FACS and DSDT."""
    def at(address: int, length: int | None = None) -> bytes:
        offset = address - base
        assert 0 <= offset < len(blob), hex(address)
        if length is None:
            length = struct.unpack_from("<I", blob, offset + 4)[0]
        return blob[offset:offset + length]
    rsdt = at(struct.unpack_from("<I", rsdp, 16)[0])
    found = {b"RSDT": rsdt}
    for (address,) in struct.iter_unpack("<I", rsdt[36:]):
        table = at(address)
        found[table[:4]] = table
    fadt = found[b"FACP"]
    found[b"FACS"] = at(struct.unpack_from("<I", fadt, 36)[0])
    found[b"DSDT"] = at(struct.unpack_from("<I", fadt, 40)[0])
    return found


def test_every_table_is_reachable_from_the_rsdp_with_a_valid_checksum():
    files = linked(AcpiMachine(cpus=2, ram_size=512 * layout.MiB))
    rsdp = files[RSDP_FILE]
    assert rsdp[:8] == b"RSD PTR " and len(rsdp) == 20 and rsdp[15] == 0 and sum(rsdp) % 256 == 0
    found = tables_by_signature(files[TABLES_FILE], TABLES_AT, rsdp)
    assert sorted(found) == [b"APIC", b"DSDT", b"FACP", b"FACS", b"RSDT"]
    for signature, table in found.items():
        if signature != b"FACS":
            assert sum(table) % 256 == 0, signature
            assert struct.unpack_from("<I", table, 4)[0] == len(table)
    assert found[b"FACS"][:8] == b"FACS" + struct.pack("<I", 64)
    assert (TABLES_AT + files[TABLES_FILE].index(b"FACS")) % 64 == 0


def test_fadt_names_the_piix4_pm_block_at_the_programmed_base():
    fadt = tables_by_signature(*(lambda f: (f[TABLES_FILE], TABLES_AT, f[RSDP_FILE]))(
        linked(AcpiMachine(cpus=1, ram_size=256 * layout.MiB, pm_base=0xB000))))[b"FACP"]
    assert len(fadt) == 116 and fadt[8] == 1                     # ACPI 1.0 form, as QEMU's pc
    sci, smi_cmd = struct.unpack_from("<HI", fadt, 46)
    assert (sci, smi_cmd) == (9, 0)                              # no SMM: ACPI mode from reset
    pm1a_evt, _, pm1a_cnt, _, _, pm_tmr, gpe0 = struct.unpack_from("<7I", fadt, 56)
    assert (pm1a_evt, pm1a_cnt, pm_tmr, gpe0) == (0xB000, 0xB004, 0xB008, 0xAFE0)
    assert tuple(fadt[88:94]) == (4, 2, 0, 4, 4, 0)              # block lengths
    assert struct.unpack_from("<HH", fadt, 96) == (0x0FFF, 0x0FFF)   # no C2/C3
    assert fadt[108] == 0x32                                     # CMOS century
    assert struct.unpack_from("<I", fadt, 112)[0] == 0x80A5


@pytest.mark.parametrize("cpus", [1, 2, 4, 255])
def test_madt_has_one_enabled_local_apic_per_vcpu_and_the_pc_interrupts(cpus):
    files = linked(AcpiMachine(cpus=cpus, ram_size=256 * layout.MiB))
    madt = tables_by_signature(files[TABLES_FILE], TABLES_AT, files[RSDP_FILE])[b"APIC"]
    assert struct.unpack_from("<II", madt, 36) == (0xFEE00000, 1)
    entries, offset = [], 44
    while offset < len(madt):
        kind, length = madt[offset], madt[offset + 1]
        entries.append((kind, bytes(madt[offset + 2:offset + length])))
        offset += length
    assert offset == len(madt)
    lapics = [struct.unpack("<BBI", e) for k, e in entries if k == 0]
    assert lapics == [(cpu, cpu, 1) for cpu in range(cpus)]
    assert [struct.unpack("<BBII", e) for k, e in entries if k == 1] == [(0, 0, 0xFEC00000, 0)]
    overrides = [struct.unpack("<BBIH", e) for k, e in entries if k == 2]
    # No IRQ0 override: KVM's in-kernel PIT is on GSI 0. The PCI IRQs are level, active-high.
    assert overrides == [(0, irq, irq, 0x000D) for irq in (5, 9, 10, 11)]
    assert [struct.unpack("<BHB", e) for k, e in entries if k == 4] == [(0xFF, 0, 1)]


def test_aml_encodings_match_the_specification():
    assert aml.pkg_length(0x3E) == b"\x3F"
    assert aml.pkg_length(0x3F) == b"\x41\x04"                   # 0x41: 2 bytes, length 0x41
    assert aml.pkg_length(0x1000) == b"\x83\x00\x01"               # 3 bytes, length 0x1003
    assert aml.integer(0) == b"\x00" and aml.integer(1) == b"\x01"
    assert aml.integer(0x80) == b"\x0a\x80" and aml.integer(0x1234) == b"\x0b\x34\x12"
    assert aml.eisa_id("PNP0A03") == b"\x0c\x41\xd0\x0a\x03"
    assert aml.name_string("\\_SB.PCI0.ISA") == b"\\\x2f\x03_SB_PCI0ISA_"
    assert aml.name_string("^LNK") == b"^LNK_"
    assert aml.name("_S5", aml.package([aml.integer(0)] * 4)) == b"\x08_S5_\x12\x06\x04\x00\x00\x00\x00"
    assert aml.resource_template(aml.irq_no_flags(4)) == b"\x11\x08\x0a\x05\x22\x10\x00\x79\x00"
    with pytest.raises(ValueError):
        aml.name_seg("lnka")


def test_dsdt_routes_every_slot_through_the_piix3_links():
    dsdt = build_dsdt(AcpiMachine(cpus=2, ram_size=256 * layout.MiB))
    for hid in ("PNP0A03", "PNP0C0F", "PNP0303", "PNP0501", "PNP0B00"):
        assert aml.eisa_id(hid)[1:] in dsdt, hid
    assert b"QEMU0002" in dsdt and b"ACPI0007" in dsdt
    # The 00:02.0 entry (the first virtio disk) for INTA: LNKB, i.e. PIRQB, register 0x61.
    entry = aml.package([aml.integer(0x0002FFFF), aml.integer(0), aml.ref("LNKB"), aml.integer(0)])
    assert entry in dsdt
    for slot in range(32):
        for pin in range(4):         # PIRQ (A-D) = (slot + pin - 1) mod 4; 00:01.0 INTA is the SCI
            link = "LNKS" if (slot, pin) == (1, 0) else "LNK" + "ABCD"[(slot + pin - 1) % 4]
            assert aml.package([aml.integer(slot << 16 | 0xFFFF), aml.integer(pin),
                                aml.ref(link), aml.integer(0)]) in dsdt, (slot, pin)


def run_loader(script: bytes, files: dict[str, bytes], fseg: int, high: int) -> dict[str, bytearray]:
    """A table-loader consumer written from the command format alone (not tinyvmm's Linker):
    allocate each file in its zone, then patch pointers and checksums in order."""
    memory: dict[str, bytearray] = {}
    address: dict[str, int] = {}
    assert len(script) % 128 == 0
    for at in range(0, len(script), 128):
        entry = script[at:at + 128]
        command = struct.unpack_from("<I", entry)[0]

        def name(offset: int, entry: bytes = entry) -> str:
            raw = entry[offset:offset + 56]
            assert raw[55] == 0
            return raw.split(b"\0")[0].decode()
        if command == 1:
            file, (align, zone) = name(4), struct.unpack_from("<IB", entry, 60)
            assert align & (align - 1) == 0 and zone in (1, 2)
            base = fseg if zone == 2 else high
            address[file] = -(-base // align) * align
            memory[file] = bytearray(files[file])
        elif command == 2:
            dest, src = name(4), name(60)
            offset, size = struct.unpack_from("<IB", entry, 116)
            value = int.from_bytes(memory[dest][offset:offset + size], "little") + address[src]
            memory[dest][offset:offset + size] = value.to_bytes(size, "little")
        elif command == 3:
            file = name(4)
            offset, start, length = struct.unpack_from("<III", entry, 60)
            memory[file][offset] = (memory[file][offset] - sum(memory[file][start:start + length])) & 0xFF
        else:
            assert command == 0
    return memory


def test_the_loader_script_links_the_files_as_the_linker_does():
    machine = AcpiMachine(cpus=3, ram_size=1 * layout.GiB, pm_base=0x600)
    files = fw_cfg_files(machine)
    script = files[LOADER_FILE]
    commands = [struct.unpack_from("<I", script, at)[0] for at in range(0, len(script), 128)]
    assert commands[:2] == [1, 1] and 1 not in commands[2:]       # every ALLOCATE first
    memory = run_loader(script, files, fseg=RSDP_AT, high=TABLES_AT)
    assert {name: bytes(blob) for name, blob in memory.items()} == linked(machine)


IASL = shutil.which("iasl")


@pytest.mark.skipif(IASL is None, reason="needs iasl (Debian package acpica-tools; make setup)")
def test_iasl_disassembles_every_table_without_errors_or_warnings(tmp_path):
    """The tables as `tinyvmm fw-cfg list --acpi-tables DIR` writes them for a user's iasl."""
    result = tinyvmm("fw-cfg", "list", "--smp", "2", "--acpi-tables", str(tmp_path), text=True)
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in tmp_path.glob("*.dat"))
    assert written == ["apic.dat", "dsdt.dat", "facp.dat", "facs.dat", "rsdt.dat"]
    for name in written:
        path = tmp_path / name
        result = subprocess.run([IASL, "-d", str(path)], capture_output=True, text=True, cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Error" not in output and "Warning" not in output, output
        assert path.with_suffix(".dsl").exists()
    assert "Local Apic ID : 01" in (tmp_path / "apic.dsl").read_text()        # the second vCPU
    dsl = (tmp_path / "dsdt.dsl").read_text()
    for text in ("Device (LNKA)", "Name (\\_S5, Package (0x04)", "IRQNoFlags ()", "0x0CF8",
                 'Name (_HID, "QEMU0002")'):
        assert text in dsl, text
    # The disassembly compiles again: the AML is well-formed, not just printable.
    result = subprocess.run([IASL, "-tc", "dsdt.dsl"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def read_fw_cfg_file(machine: Machine, name: str) -> bytes:
    """The file as the guest's first read gets it (a select through the device)."""
    device = machine._built.fw_cfg
    key = machine.fw_cfg_file_key(name)
    device.select(key)
    return device.read_data(device.items.file(name).size)


@pytest.mark.kvm
def test_fw_cfg_files_are_rebuilt_on_first_read_with_the_firmwares_pm_base():
    with Machine(None, mem=64 * layout.MiB, smp=1) as machine:
        machine._built.board.power_management.enable_pm_io(0xB000)   # as OVMF programs it
        tables = read_fw_cfg_file(machine, TABLES_FILE)
        rsdp = read_fw_cfg_file(machine, RSDP_FILE)
        script = read_fw_cfg_file(machine, LOADER_FILE)
    memory = run_loader(script, {TABLES_FILE: tables, RSDP_FILE: rsdp}, RSDP_AT, TABLES_AT)
    fadt = tables_by_signature(bytes(memory[TABLES_FILE]), TABLES_AT, bytes(memory[RSDP_FILE]))[b"FACP"]
    assert struct.unpack_from("<I", fadt, 56)[0] == 0xB000


@pytest.mark.kvm
def test_without_acpi_no_tables_are_published(tmp_path):
    listed = tinyvmm("fw-cfg", "list", "--no-acpi", text=True).stdout
    assert "etc/acpi" not in listed and "etc/table-loader" not in listed
    refused = tinyvmm("fw-cfg", "list", "--no-acpi", "--acpi-tables", str(tmp_path), text=True)
    assert refused.returncode == 2 and "no ACPI tables" in refused.stderr
    assert not list(tmp_path.iterdir())
    listed = tinyvmm("fw-cfg", "list", text=True).stdout
    for name in (RSDP_FILE, TABLES_FILE, LOADER_FILE, "etc/system-states"):
        assert name in listed


@pytest.mark.kvm
@pytest.mark.kernel
@pytest.mark.parametrize("vmlinux", [False, True], ids=["bzImage", "pvh"])
def test_a_direct_boot_finds_the_rsdp_where_linux_looks(vmlinux):
    kernel = VMLINUX if vmlinux else KERNEL
    with Machine(None, kernel=kernel, boot="direct", mem=128 * layout.MiB) as machine:
        read = machine.read_memory
        if vmlinux:
            rsdp_at = struct.unpack_from("<Q", read(layout.PVH_START_INFO + 32, 8))[0]
        else:
            rsdp_at = struct.unpack_from("<Q", read(layout.BOOT_PARAMS_START + 0x70, 8))[0]
        assert rsdp_at == layout.BOOT_TABLES_POINTER
        ebda = struct.unpack("<H", read(layout.BDA_EBDA_SEGMENT, 2))[0] << 4
        rsdp = read(ebda, 20)                       # Linux's scan: the EBDA's first KiB
        assert rsdp[:8] == b"RSD PTR " and sum(rsdp) % 256 == 0
        blob = read(layout.BOOT_TABLES_START, layout.EBDA_START - layout.BOOT_TABLES_START)
        found = tables_by_signature(blob, layout.BOOT_TABLES_START, rsdp)
        fadt = found[b"FACP"]
        pm_base = struct.unpack_from("<I", fadt, 56)[0]
        # The PM block the FADT names decodes: the PM timer counts.
        assert pm_base == layout.ACPI_PM_BASE
        assert machine._built.board.power_management.pm_base() == pm_base
    with Machine(None, kernel=kernel, boot="direct", mem=128 * layout.MiB, acpi=False) as machine:
        assert machine.read_memory(layout.BOOT_TABLES_POINTER, 8) != b"RSD PTR "


def test_direct_install_fits_the_most_cpus():
    from guest_memory import guest_memory
    memory = guest_memory((0, 0x100000))
    at = install_direct(memory, AcpiMachine(cpus=layout.SMP_MAX, ram_size=256 * layout.MiB))
    assert memory.read(at, 8) == b"RSD PTR "


def test_the_direct_boot_memory_map_marks_the_tables_as_acpi_data():
    plain = layout.e820_map(256 * layout.MiB, 64 * layout.KiB)
    with_acpi = layout.e820_map(256 * layout.MiB, 64 * layout.KiB, acpi=True)
    assert (layout.BOOT_TABLES_START, layout.EBDA_START - layout.BOOT_TABLES_START,
            layout.E820_ACPI) in with_acpi
    assert plain[0] == with_acpi[0] == (0, layout.BOOT_TABLES_START, layout.E820_RAM)
    assert (layout.BOOT_TABLES_START, layout.EBDA_START - layout.BOOT_TABLES_START,
            layout.E820_RESERVED) in plain                  # the MP table's place


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.skipif(not SEABIOS.exists(), reason="needs SeaBIOS (Debian package seabios)")
def test_seabios_installs_the_tables_and_reads_the_dsdt(tmp_path):
    log = tmp_path / "seabios.log"
    result = tinyvmm("run", "--bios", str(SEABIOS), "--debugcon", f"file:{log}", "--serial", "none",
                     "--expect", "enter handle_19", "--timeout", "200", timeout=300, text=True)
    text = log.read_text(errors="replace")
    assert result.returncode == 0, result.stderr + text[-2000:]
    assert "(via rsdt)" in text                         # it found our RSDP and RSDT
    assert "ACPI: parse DSDT" in text
    # It initialises the keyboard only when the DSDT has a PNP0303 device.
    assert "PS2 keyboard initialized" in text and "no PS/2 keyboard" not in text
    assert "WARNING" not in text


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.skipif(not QBOOT.exists(), reason="needs qboot (Debian package qemu-system-data)")
def test_qboot_runs_the_loader_script_and_boots(tmp_path):
    result = tinyvmm("boot", "--bios", str(QBOOT), "--expect", "Linux version", "--timeout", "200",
                     "--serial", f"file:{tmp_path / 'serial.txt'}", timeout=300, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def find_rsdp(read) -> int:
    """Where an OS's scan of 0xE0000-0xFFFFF finds a valid RSDP."""
    area = read(0xE0000, 0x20000)
    for offset in range(0, len(area), 16):
        if area[offset:offset + 8] == b"RSD PTR " and sum(area[offset:offset + 20]) % 256 == 0:
            return 0xE0000 + offset
    raise AssertionError("no RSDP in 0xE0000-0xFFFFF")


@pytest.mark.kvm
def test_tinyvmms_bios_enables_the_pm_block_and_installs_the_tables_naming_it():
    with Machine(None, mem=64 * layout.MiB, smp=2) as machine:
        result = machine.run(timeout=60)
        assert result.outcome.name == "HALTED", result.message    # no boot ROM to hand over to
        assert machine._built.board.power_management.pm_base() == layout.ACPI_PM_BASE
        read = machine.read_memory
        rsdp_at = find_rsdp(read)
        rsdt_at = struct.unpack_from("<I", read(rsdp_at, 20), 16)[0]
        base = rsdt_at - 0x10000                         # the tables lie below the RSDT
        found = tables_by_signature(read(base, 64 * layout.MiB - base), base, read(rsdp_at, 20))
        assert struct.unpack_from("<I", found[b"FACP"], 56)[0] == layout.ACPI_PM_BASE
        assert sum(found[b"APIC"]) % 256 == 0 and found[b"APIC"].count(b"\x00\x08") >= 1
        assert b"acpi: etc/acpi/tables at" in machine.debugcon_output


@pytest.mark.kvm
def test_a_pm_base_over_another_device_is_refused_and_that_device_keeps_its_ports():
    with Machine(None, mem=64 * layout.MiB) as machine:
        board = machine._built.board
        board.power_management.enable_pm_io(0x3C0)          # the 64-byte block would cover COM1
        assert board.power_management.window is None
        assert any("PM I/O block at 0x3c0" in m and "refused" in m for m in board.pci.buses.refused)
        assert board.pio.find(0x3F8) == (0x3F8, board.serial)
        board.power_management.enable_pm_io(0xB000)         # moved clear of it: mapped
        assert board.power_management.window == 0xB000


@pytest.mark.kvm
def test_without_acpi_the_piix4_pm_function_is_absent_as_with_qemus_acpi_off():
    """Firmware that finds a PIIX4 PM function builds ACPI tables of its own (SeaBIOS does):
    without ACPI the machine has none, as QEMU's -machine acpi=off."""
    with Machine(None, mem=64 * layout.MiB, acpi=False) as machine:
        board = machine._built.board
        assert board.power_management is None
        board.pio.write(0xCF8, 4, (0x80000000 | 1 << 11 | 3 << 8).to_bytes(4, "little"))
        assert board.pio.read(0xCFC, 4) == b"\xff" * 4              # 00:01.3: nothing there
        board.pio.write(0xCF8, 4, (0x80000000 | 1 << 11).to_bytes(4, "little"))
        assert board.pio.read(0xCFC, 4) == bytes.fromhex("86800070")   # the PIIX3 stays
        assert board.pio.find(0xAFE0) is None                        # nor its GPE0 block
