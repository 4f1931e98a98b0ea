"""Writes the seed corpora, fuzz/corpus/<target>/: a few tiny inputs per target, built here
rather than kept as opaque files. `python fuzz/seeds.py` rewrites them (deterministic)."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


def elf_kernel(pvh_entry: int | None = 0x100000, paddr: int = 0x100000, code: bytes = b"\xf4" * 16,
               bss: int = 0x100) -> bytes:
    """A 64-bit x86 ELF executable: one PT_LOAD at `paddr` and, with `pvh_entry`, the Xen
    PHYS32_ENTRY note (type 18) a PVH kernel carries."""
    note = b""
    if pvh_entry is not None:
        note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", pvh_entry)
    phnum = 2 if note else 1
    code_offset = 64 + 56 * phnum
    note_offset = code_offset + len(code)
    header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
              + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, paddr, 64, 0, 0, 64, 56, phnum, 64, 0, 0))
    load = struct.pack("<IIQQQQQQ", 1, 5, code_offset, paddr, paddr, len(code), len(code) + bss, 0x1000)
    phdrs = load + (struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(note), len(note), 4)
                    if note else b"")
    return header + phdrs + code + note


def bzimage(protocol: int = 0x20F, setup_sects: int = 1, kernel: bytes = b"\xf4" * 32,
            init_size: int = 0x10000, xloadflags: int = 1) -> bytes:
    """A bzImage: `setup_sects` sectors of real-mode setup after the boot sector, with the
    setup header of boot protocol `protocol`, then the protected-mode kernel."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x1F4, -(-len(kernel) // 16))           # syssize
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200:0x202] = b"\xeb\x66"                                       # the jump: header ends at 0x268
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    setup[0x211] = 0x01                                                    # LOADED_HIGH
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)                       # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, 0x1000)                           # kernel_alignment
    setup[0x234] = 1                                                       # relocatable
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<I", setup, 0x238, 255)                              # cmdline_size
    struct.pack_into("<Q", setup, 0x258, MiB)                              # pref_address
    struct.pack_into("<I", setup, 0x260, init_size)
    return bytes(setup) + kernel


def option_rom(blocks: int = 1, pnp: bool = True, checksum: bool = True) -> bytes:
    """A legacy option ROM: 55 AA, size byte, a PnP header at 0x20 with its entry vector."""
    rom = bytearray(blocks * 512)
    rom[0:3] = b"\x55\xaa" + bytes([blocks])
    rom[3:6] = b"\xcb\x90\x90"                                             # retf
    if pnp:
        rom[0x1A:0x1C] = struct.pack("<H", 0x20)
        rom[0x20:0x24] = b"$PnP"
        rom[0x20 + 5] = 2                                                  # 32 bytes
        rom[0x20 + 0x10:0x20 + 0x12] = struct.pack("<H", 0x60)             # product name
        rom[0x20 + 0x1A:0x20 + 0x1C] = struct.pack("<H", 0x50)             # entry vector
        rom[0x60:0x65] = b"seed\0"
        rom[0x20 + 9] = -sum(rom[0x20:0x40]) & 0xFF
    if checksum:
        rom[-1] = -sum(rom) & 0xFF
    return bytes(rom)


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + b"%02x" % (sum(payload) & 0xFF)


SEEDS = {
    # The loaders: the first byte picks the options (common.boot_kernel), the file follows.
    "elf": {
        "pvh-firmware": b"\x02" + elf_kernel(),
        "pvh-direct-initrd": b"\x25" + elf_kernel(bss=0x1000),
        "no-note": b"\x00" + elf_kernel(pvh_entry=None),
        "below-1m": b"\x01" + elf_kernel(paddr=0x8000, pvh_entry=0x8000),
        "header-only": b"\x00" + elf_kernel()[:64],
    },
    "bzimage": {
        "firmware": b"\x02" + bzimage(),
        "direct-initrd": b"\x45" + bzimage(),
        "protocol-2.02": b"\x00" + bzimage(protocol=0x202, xloadflags=0),
        "big-init-size": b"\x01" + bzimage(init_size=64 * MiB),
        "truncated": b"\x00" + bzimage()[:0x300],
    },
    "optionrom": {
        "valid": option_rom(),
        "two-blocks": option_rom(blocks=2),
        "no-pnp": option_rom(pnp=False),
        "bad-checksum": option_rom(checksum=False),
    },
    "gdb_rsp": {
        # Before the packets: the software-breakpoint and layout choices, then chunk sizes.
        "session": b"\x01\x01\xff" + b"".join(frame(p) for p in (
            b"qSupported:swbreak+;hwbreak+", b"?", b"g", b"m0,10", b"M100,4:deadbeef",
            b"X200,2:}\x03*", b"Z0,fff0,1", b"z0,fff0,1", b"p8", b"P8=f0ff0000", b"Hg1",
            b"qXfer:features:read:target.xml:0,100", b"qRcmd,68656c70", b"s", b"c")),
        "acks-interrupts": b"\x00\x00\x10+-\x03" + frame(b"m1000,4") + b"$bad#00",
        "runs": b"\x00\x00\x40" + frame(b"M0,8:0*\"") + frame(b"Z2,1000,4") + frame(b"vCont?"),
    },
    "options": {
        "drives": b"dfile=disk.img,if=virtio,format=raw,readonly=on,serial=abc,bootindex=1\n"
                  b"dif=pflash,format=raw,unit=0,file=flash.img\ndif=pflash,file=vars.img",
        "fw-cfg": b"fname=opt/hello,string=world\nfopt/x,string=a,,b\nfname=etc/boot,file=x",
        "bad": b"dfile=a,if=scsi\nd,,\nfstring=x\ndfile=x,bootindex=99999",
    },
    # The device targets: operations decoded by atheris.FuzzedDataProvider; a few bytes
    # are enough for a start, coverage does the rest.
    "fw_cfg": {"zeros": bytes(32), "ones": b"\x01" * 32, "ramp": bytes(range(64))},
    "pci": {"zeros": bytes(32), "ones": b"\xff" * 32, "ramp": bytes(range(64))},
    "virtio": {"zeros": bytes(64), "ramp": bytes(range(128)), "ones": b"\x01" * 64},
    "chipset": {"zeros": bytes(64), "ramp": bytes(range(128)), "ones": b"\x01" * 64},
    "legacy": {"zeros": bytes(32), "ones": b"\xff" * 32, "ramp": bytes(range(64))},
}


def main() -> None:
    for target, seeds in SEEDS.items():
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
