"""pflash: the CFI flash device alone (QEMU 7.2's status values), its configuration, and a
guest booted from a flash unit programming another."""

import os

import pytest

from tinyvmm.devices.pflash import SECTOR_SIZE, Pflash, cfi_table


def put(dev, offset, value):
    dev.write(offset, 1, bytes([value]))


def get(dev, offset, size=1):
    return int.from_bytes(dev.read(offset, size), "little")


def make(size=2 * SECTOR_SIZE, read_only=False, fill=0x5A, **options):
    storage = bytearray([fill]) * size
    modes = []
    dev = Pflash(storage, read_only=read_only, on_array=modes.append, **options)
    return dev, storage, modes


# --- the device model ------------------------------------------------------------------------
def test_array_mode_reads_contents_and_starts_ready():
    dev, storage, _ = make()
    storage[5:9] = b"\x01\x02\x03\x04"
    assert dev.in_array_mode and dev.status == 0x80
    assert dev.read(5, 4) == b"\x01\x02\x03\x04"


def test_read_status_then_read_array():
    dev, _, modes = make()
    put(dev, 0x10, 0x70)
    assert not dev.in_array_mode and modes == [False]
    assert get(dev, 0x123) == 0x80
    assert get(dev, 0, 4) == 0x00800080       # 4-byte reads repeat it at bits 16-23
    put(dev, 0x10, 0xFF)
    assert dev.in_array_mode and modes == [False, True]
    assert get(dev, 0x10) == 0x5A


def test_clear_status_returns_to_array_mode():
    dev, _, modes = make()
    put(dev, 0, 0x50)
    assert dev.status == 0 and dev.in_array_mode and modes == []
    assert get(dev, 0) == 0x5A


def test_ovmf_detection_sequence_says_flash():
    """QemuFlashDetected (reference K.2): a byte that is not 0x00/0x50/0x70; write 0x50 and
    read it back (0x50 would be RAM); write 0x70 and read: 0x00 means flash; then 0xFF."""
    dev, _, _ = make()
    offset = 0x10
    original = get(dev, offset)
    assert original not in (0x00, 0x50, 0x70)
    put(dev, offset, 0x50)
    assert get(dev, offset) != 0x50
    put(dev, offset, 0x70)
    answer = get(dev, offset)
    put(dev, offset, 0xFF)
    kind = "ram" if answer == 0x70 else "rom" if answer == original else \
        "flash" if answer == 0x00 else "unknown"
    assert kind == "flash"
    assert dev.in_array_mode and get(dev, offset) == original


@pytest.mark.parametrize("command", [0x10, 0x40])
def test_program_pairs_then_read_array(command):
    dev, storage, modes = make()
    for i, byte in enumerate(b"VARS"):
        put(dev, 0x100 + i, command)
        put(dev, 0x100 + i, byte)
        assert get(dev, 0x100 + i) == 0x80    # status until read array
    put(dev, 0x103, 0xFF)
    assert bytes(storage[0x100:0x104]) == b"VARS" and dev.read(0x100, 4) == b"VARS"
    assert dev.programmed == 4 and modes == [False, True]


def test_program_stores_the_byte_as_given():
    dev, storage, _ = make(fill=0x00)     # QEMU does not AND: bits can be set by programming
    put(dev, 7, 0x10)
    put(dev, 7, 0xA5)
    assert storage[7] == 0xA5


def test_block_erase_and_confirm():
    dev, storage, _ = make()
    put(dev, SECTOR_SIZE + 0x123, 0x20)
    assert bytes(storage[SECTOR_SIZE:]) == b"\xff" * SECTOR_SIZE     # erased at once
    assert bytes(storage[:SECTOR_SIZE]) == b"\x5a" * SECTOR_SIZE
    put(dev, SECTOR_SIZE, 0xD0)
    assert get(dev, SECTOR_SIZE) == 0x80
    put(dev, 0, 0xFF)
    assert get(dev, SECTOR_SIZE) == 0xFF and dev.erased == 1


def test_erase_followed_by_another_byte_returns_to_array():
    dev, _, _ = make()
    put(dev, 0, 0x20)
    put(dev, 0, 0x42)                     # QEMU: unimplemented sequence, read array
    assert dev.in_array_mode and get(dev, 0) == 0xFF and dev.status == 0x80


def test_read_only_unit_refuses_program_and_erase():
    dev, storage, _ = make(read_only=True)
    put(dev, 3, 0x10)
    put(dev, 3, 0x00)
    assert get(dev, 3) == 0x90            # ready | program error
    assert storage[3] == 0x5A
    put(dev, 0, 0x50)
    put(dev, 0, 0x20)
    put(dev, 0, 0xD0)
    assert get(dev, 0) == 0xA0            # ready | erase error
    put(dev, 0, 0xFF)
    assert bytes(storage) == b"\x5a" * len(storage)


def test_identifier_and_cfi_query():
    dev, _, _ = make(size=0x20000)
    put(dev, 0, 0x90)
    assert get(dev, 0) == 0 and get(dev, 1) == 0
    put(dev, 0, 0xFF)
    put(dev, 0x55, 0x98)
    assert dev.read(0x10, 1) + dev.read(0x11, 1) + dev.read(0x12, 1) == b"QRY"
    assert get(dev, 0x13) == 0x01 and get(dev, 0x14) == 0x00   # Intel/Sharp command set
    assert get(dev, 0x27) == 17                                # 128 KiB
    assert get(dev, 0x2D) | get(dev, 0x2E) << 8 == 31          # 32 sectors...
    assert get(dev, 0x2F) << 8 | get(dev, 0x30) << 16 == SECTOR_SIZE   # ... of 4 KiB
    assert get(dev, 0x60) == 0
    put(dev, 0, 0x42)                     # QEMU: anything but 0xFF keeps the query mode
    assert get(dev, 0x10) == ord("Q")
    put(dev, 0, 0xFF)
    assert get(dev, 0x10) == 0x5A


def test_cfi_table_of_ovmf_code_size():
    table = cfi_table(0x1E0000)
    assert table[0x27] == 17 and table[0x2D] | table[0x2E] << 8 == 0x1E0 - 1


@pytest.mark.parametrize("value", [0x01, 0x30, 0xE8, 0xC0, 0xD0])
def test_unknown_commands_return_to_array_without_error(value):
    dev, storage, modes = make()
    put(dev, 0, 0x70)
    put(dev, 0, value)
    assert dev.in_array_mode and dev.status == 0x80 and modes == [False, True]
    assert bytes(storage) == b"\x5a" * len(storage)


def test_lock_setup_and_confirm():
    dev, _, _ = make()
    put(dev, 0, 0x60)
    put(dev, 0, 0x01)
    assert get(dev, 0) == 0x80
    put(dev, 0, 0xFF)
    assert dev.in_array_mode


def test_wide_program_and_eight_byte_write():
    dev, storage, _ = make()
    dev.write(0x20, 2, (0x10).to_bytes(2, "little"))
    dev.write(0x20, 2, b"\x34\x12")
    put(dev, 0, 0xFF)
    assert storage[0x20:0x22] == b"\x34\x12"
    dev.write(0, 8, b"\xff" * 8)          # split in two 4-byte accesses: read array twice
    assert dev.in_array_mode


def test_writes_reach_the_file(tmp_path):
    path = tmp_path / "vars.fd"
    path.write_bytes(b"\x5a" * 2 * SECTOR_SIZE)
    fd = os.open(path, os.O_RDWR)
    try:
        dev = Pflash(bytearray(path.read_bytes()), fd=fd)
        put(dev, 9, 0x10)
        put(dev, 9, 0x33)
        put(dev, SECTOR_SIZE, 0x20)
        put(dev, SECTOR_SIZE, 0xD0)
        put(dev, 0, 0xFF)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[9] == 0x33 and data[SECTOR_SIZE:] == b"\xff" * SECTOR_SIZE


def test_file_write_error_is_a_warning_not_a_crash(tmp_path):
    path = tmp_path / "vars.fd"
    path.write_bytes(bytes(SECTOR_SIZE))
    fd = os.open(path, os.O_RDONLY)
    warnings = []
    try:
        dev = Pflash(bytearray(SECTOR_SIZE), fd=fd, warn=warnings.append)
        for _ in range(2):
            put(dev, 1, 0x10)
            put(dev, 1, 0x22)
    finally:
        os.close(fd)
    assert len(warnings) == 1 and "cannot write" in warnings[0]


def test_size_must_be_whole_sectors():
    with pytest.raises(ValueError):
        Pflash(bytearray(1000))


# --- configuration ---------------------------------------------------------------------------
def test_drive_parses_pflash_units():
    from tinyvmm.spec import DriveSpec, PflashSpec, split_drives
    from tinyvmm.virtio.drive import parse_drive
    code = parse_drive("if=pflash,format=raw,unit=0,readonly=on,file=CODE.fd")
    assert code == PflashSpec("CODE.fd", 0, True)
    disks, flash = split_drives([parse_drive("file=a.img"), parse_drive("if=pflash,file=V.fd"),
                                 code])
    assert disks == (DriveSpec("a.img"),)
    assert flash == (PflashSpec("V.fd", 1, False), code)    # numbered around the given unit


@pytest.mark.parametrize("text, message", [
    ("if=pflash,file=x,unit=2", "pflash has units 0 and 1"),
    ("if=pflash,file=x,unit=one", "expected 0 or 1"),
    ("if=pflash,file=x,serial=s", "serial= is not a pflash option"),
    ("if=pflash,file=x,format=qcow2", "only format=raw"),
    ("file=x,unit=0", "unit= numbers if=pflash drives"),
    ("if=floppy,file=x", "if=pflash"),
])
def test_drive_refuses_bad_pflash_options(text, message):
    from tinyvmm.spec import DriveError
    from tinyvmm.virtio.drive import parse_drive
    with pytest.raises(DriveError, match=message):
        parse_drive(text)


@pytest.mark.parametrize("drives, message", [
    (["if=pflash,unit=0,file=a", "if=pflash,unit=0,file=b"], "unit=0 is given twice"),
    (["if=pflash,unit=1,file=a"], "unit=1 needs unit=0"),
    (["if=pflash,file=a", "if=pflash,file=b", "if=pflash,file=c"], "more than 2 pflash drives"),
])
def test_machine_spec_refuses_bad_unit_sets(drives, message):
    from tinyvmm.errors import ConfigError
    from tinyvmm.spec import MachineSpec
    with pytest.raises(ConfigError, match=message):
        MachineSpec.from_api(drives=drives)


def test_pflash_and_firmware_are_exclusive():
    from tinyvmm.errors import ConfigError
    from tinyvmm.spec import MachineSpec
    with pytest.raises(ConfigError, match="not both"):
        MachineSpec.from_api("bios.bin", drives=["if=pflash,file=a"])


def test_open_flash_files_checks_before_kvm(tmp_path):
    from tinyvmm.devices.pflash import open_flash_files
    from tinyvmm.spec import DriveError, PflashSpec
    good = tmp_path / "good.fd"
    good.write_bytes(bytes(2 * SECTOR_SIZE))
    odd = tmp_path / "odd.fd"
    odd.write_bytes(bytes(SECTOR_SIZE + 1))
    locked = tmp_path / "locked.fd"
    locked.write_bytes(bytes(SECTOR_SIZE))
    locked.chmod(0o444)
    cases = [([PflashSpec(str(odd))], "whole number of 4 KiB sectors"),
             ([PflashSpec(str(tmp_path / "none.fd"))], "No such file"),
             ([PflashSpec(str(tmp_path))], "not a regular file"),
             ([PflashSpec(str(locked))], "read-only on disk; give readonly=on"),
             ([PflashSpec(str(good)), PflashSpec(str(good), 1)], "given to units 0 and 1"),
             ([PflashSpec(str(good)), PflashSpec(str(locked), 1, True)], "at most 0 MiB")]
    for specs, message in cases:
        window = SECTOR_SIZE * 2 if message == "at most 0 MiB" else 16 << 20
        with pytest.raises(DriveError, match=message):
            open_flash_files(specs, window)
    files = open_flash_files([PflashSpec(str(locked), 1, True), PflashSpec(str(good))], 16 << 20)
    try:
        assert [f.unit for f in files] == [0, 1] and files[0].data == bytes(2 * SECTOR_SIZE)
    finally:
        for f in files:
            os.close(f.fd)


# --- on KVM: a guest in flash programming flash ---------------------------------------------
VARS_OFFSET = 0x100                 # where tests/guests/pflash_vars.S programs its message


def flash_files(tmp_path):
    from guest_build import build_guest
    code = tmp_path / "code.fd"
    code.write_bytes(build_guest("pflash_vars").bin_path.read_bytes())
    variables = tmp_path / "vars.fd"
    variables.write_bytes(b"\x5a" * 0x2000)
    return code, variables


def flash_drives(code, variables):
    return [f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            f"if=pflash,format=raw,unit=1,file={variables}"]


@pytest.mark.kvm
def test_guest_in_flash_programs_the_variable_unit(tmp_path):
    from tinyvmm import Machine
    from tinyvmm.outcome import Outcome
    code, variables = flash_files(tmp_path)
    with Machine(drives=flash_drives(code, variables)) as guest:
        result = guest.run(timeout=30)
        code_unit, vars_unit = guest.board.pflash
        assert result.outcome == Outcome.RESET, result.message
        assert guest.serial_output == b"flash ok\n"
        # 2000 passes over the 10 programmed bytes read array from a memory slot: the run's
        # exits are the 20 program writes, the detection, COM1's bytes and the reset.
        assert result.exits < 100, result.exits
        assert vars_unit.programmed == 10 and code_unit.programmed == 0
        assert vars_unit.in_array_mode
        assert guest.read_memory(0xFFFF0000 - 0x2000 + VARS_OFFSET, 9) == b"flash ok\n"
    data = variables.read_bytes()
    assert data[VARS_OFFSET:VARS_OFFSET + 10] == b"flash ok\n\0" and data[:0x10] == b"\x5a" * 0x10
    from guest_build import build_guest
    assert code.read_bytes() == build_guest("pflash_vars").bin_path.read_bytes()


@pytest.mark.kvm
def test_variables_survive_into_a_second_machine(tmp_path):
    from tinyvmm import Machine
    code, variables = flash_files(tmp_path)
    with Machine(drives=flash_drives(code, variables)) as guest:
        guest.run(timeout=30)
    with Machine(drives=flash_drives(code, variables)) as second:
        # Before it runs, the second machine's unit 1 already holds what the first wrote.
        assert second.read_memory(0xFFFF0000 - 0x2000 + VARS_OFFSET, 9) == b"flash ok\n"


@pytest.mark.kvm
def test_read_only_code_unit_on_the_board(tmp_path):
    """Program commands reaching a read-only unit 0 (as a guest's MMIO writes do) fail with
    QEMU's status and change neither the memory the guest reads nor the file."""
    from tinyvmm import Machine
    code, variables = flash_files(tmp_path)
    with Machine(drives=flash_drives(code, variables)) as guest:
        unit0 = guest.board.pflash[0]
        unit0.write(0x100, 1, b"\x10")
        unit0.write(0x100, 1, b"\x00")
        assert unit0.read(0x100, 1) == b"\x90"          # ready | program error
        unit0.write(0, 1, b"\xff")
        assert guest.read_memory(0xFFFF0000 + 0x100, 1) == code.read_bytes()[0x100:0x101]


# --- the command line: bad input is status 2 and one line, before the guest starts ----------
def test_command_line_refuses_bad_pflash_input(tmp_path):
    from command_line import tinyvmm
    odd = tmp_path / "odd.fd"
    odd.write_bytes(bytes(5000))
    big = tmp_path / "big.fd"
    big.write_bytes(b"")
    os.truncate(big, 17 << 20)
    good = tmp_path / "good.fd"
    good.write_bytes(bytes(0x10000))
    locked = tmp_path / "locked.fd"
    locked.write_bytes(bytes(SECTOR_SIZE))
    locked.chmod(0o444)
    pf = "if=pflash,format=raw,"
    cases = [
        ([f"{pf}unit=0,file={odd}"], "whole number of 4 KiB sectors"),
        ([f"{pf}unit=0,file={big}"], "at most 16 MiB fit below 4 GiB"),
        ([f"{pf}unit=0,file={tmp_path / 'missing.fd'}"], "No such file"),
        ([f"{pf}unit=0,file={good}", f"{pf}unit=0,file={locked}"], "unit=0 is given twice"),
        ([f"{pf}unit=2,file={good}"], "pflash has units 0 and 1"),
        ([f"{pf}unit=0,file={locked}"], "read-only on disk; give readonly=on"),
        ([f"{pf}unit=0,file={good}", "--bios", "bios.bin"], "not both"),
        ([f"{pf}unit=1,file={good}"], "unit=1 needs unit=0"),
        ([], "run needs the firmware"),
    ]
    for drives, message in cases:
        args = []
        for item in drives:
            args += [item] if item.startswith("-") or item == "bios.bin" else ["--drive", item]
        result = tinyvmm("run", *args, "--timeout", "5", text=True)
        assert result.returncode == 2, (drives, result.stderr)
        assert message in result.stderr, (drives, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert good.read_bytes() == bytes(0x10000)


@pytest.mark.kvm
def test_command_line_boots_from_flash_with_the_boot_path_imports(tmp_path):
    import subprocess

    from tinyvmm import bench
    code, variables = flash_files(tmp_path)
    command = bench.TINYVMM[:1] + ["-X", "importtime"] + bench.TINYVMM[1:]
    args = [item for drive in flash_drives(code, variables) for item in ("--drive", drive)]
    result = subprocess.run(command + ["run", *args, "--serial", "stdio", "--timeout", "30"],
                            capture_output=True, env=bench.child_env(), timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout == b"flash ok\n"
    imported = [line.rsplit("|", 1)[1].strip() for line in result.stderr.decode().splitlines()
                if line.startswith("import time:") and "|" in line]
    assert "tinyvmm.devices.pflash" in imported
    assert not {"dataclasses", "typing", "inspect", "pathlib"} & set(imported)
    assert variables.read_bytes()[VARS_OFFSET:VARS_OFFSET + 9] == b"flash ok\n"
