"""The bzImage parser and the -kernel style loader, against synthetic images (no KVM)."""

import struct

import pytest

from tinyvmm import firmware, layout
from tinyvmm.boot import bzimage as bz
from tinyvmm.boot import linux
from tinyvmm.fw_cfg import items as fwc

MiB = layout.MiB


def make_bzimage(protocol=0x20F, setup_sects=4, kernel_size=64 * 1024, loadflags=bz.LOADED_HIGH,
                 cmdline_size=2047, initrd_addr_max=0x7FFFFFFF, xloadflags=0, init_size=0,
                 version=b"6.1.0-test (tests)", pref_address=0x1000000, relocatable=False,
                 kernel_alignment=0x200000, syssize=None):
    setup = bytearray(((setup_sects or 4) + 1) * 512)
    setup[bz.HDR_SETUP_SECTS] = setup_sects
    struct.pack_into("<H", setup, bz.HDR_BOOT_FLAG, bz.BOOT_FLAG)
    setup[bz.HDR_MAGIC:bz.HDR_MAGIC + 4] = bz.MAGIC
    struct.pack_into("<H", setup, bz.HDR_VERSION, protocol)
    setup[bz.HDR_LOADFLAGS] = loadflags
    struct.pack_into("<I", setup, bz.HDR_INITRD_ADDR_MAX, initrd_addr_max)
    struct.pack_into("<H", setup, bz.HDR_XLOADFLAGS, xloadflags)
    struct.pack_into("<I", setup, bz.HDR_CMDLINE_SIZE, cmdline_size)
    struct.pack_into("<I", setup, bz.HDR_INIT_SIZE, init_size)
    struct.pack_into("<Q", setup, bz.HDR_PREF_ADDRESS, pref_address)
    setup[bz.HDR_RELOCATABLE_KERNEL] = relocatable
    struct.pack_into("<I", setup, bz.HDR_KERNEL_ALIGNMENT, kernel_alignment)
    struct.pack_into("<I", setup, bz.HDR_SYSSIZE, (kernel_size if syssize is None else syssize) // 16)
    setup[0x400:0x400 + len(version) + 1] = version + b"\0"
    struct.pack_into("<H", setup, bz.HDR_KERNEL_VERSION, 0x400 - 0x200)
    return bytes(setup) + bytes(range(256)) * (kernel_size // 256)


def test_parse_header():
    image = bz.parse_bzimage(make_bzimage(setup_sects=0))
    assert image.setup_size == 5 * 512             # 0 means 4 sectors
    assert image.kernel_size == 64 * 1024
    assert image.protocol_text == "2.15"
    assert image.kernel_version == "6.1.0-test (tests)"
    assert image.cmdline_size == 2047


@pytest.mark.parametrize("data,message", [
    (b"", "not a bzImage"),
    (b"\x7fELF" + bytes(4096), "not a bzImage"),
    (make_bzimage(protocol=0x201), "2.02 or newer"),
    (make_bzimage(loadflags=0), "zImage"),
    (make_bzimage()[:2000], "truncated"),
])
def test_malformed_images_rejected(data, message):
    with pytest.raises(bz.BzImageError, match=message):
        bz.parse_bzimage(data)


def test_plan_patches_header_and_places_initrd_at_top_of_ram():
    image = bz.parse_bzimage(make_bzimage())
    plan = linux.plan_boot(image, "console=ttyS0", b"i" * 5000, 64 * MiB)
    setup = plan.setup
    assert setup[bz.HDR_TYPE_OF_LOADER] == 0xB0
    assert setup[bz.HDR_LOADFLAGS] & bz.CAN_USE_HEAP
    assert struct.unpack_from("<H", setup, bz.HDR_HEAP_END_PTR)[0] == 0xFE00
    assert struct.unpack_from("<I", setup, bz.HDR_CMD_LINE_PTR)[0] == 0x20000
    addr, size = struct.unpack_from("<II", setup, bz.HDR_RAMDISK_IMAGE)
    assert (addr, size) == (plan.initrd_addr, 5000)
    assert addr % 4096 == 0 and addr + size <= 64 * MiB and addr + size > 64 * MiB - 8192
    assert plan.cmdline == b"console=ttyS0\0"
    assert bytes(image.setup)[bz.HDR_TYPE_OF_LOADER] == 0   # the image itself is untouched


def test_initrd_respects_the_kernels_limit():
    image = bz.parse_bzimage(make_bzimage(initrd_addr_max=32 * MiB - 1))
    plan = linux.plan_boot(image, "", b"x" * 100, 256 * MiB)
    assert plan.initrd_addr + 100 <= 32 * MiB


def test_command_line_too_long():
    image = bz.parse_bzimage(make_bzimage(cmdline_size=16))
    with pytest.raises(linux.BootConfigError, match="at most 16"):
        linux.plan_boot(image, "x" * 17, None, 64 * MiB)
    linux.plan_boot(image, "x" * 16, None, 64 * MiB)


def test_kernel_and_initrd_too_large_for_ram():
    image = bz.parse_bzimage(make_bzimage(init_size=2 * MiB, pref_address=MiB))
    with pytest.raises(linux.BootConfigError, match="must lie above the kernel's run-time"):
        linux.plan_boot(image, "", b"\0" * (12 * MiB), 12 * MiB)
    with pytest.raises(linux.BootConfigError, match="kernel needs RAM up to 3.0 MiB"):
        linux.plan_boot(image, "", None, 2 * MiB)


@pytest.mark.parametrize("relocatable,pref,align,runs_at", [
    (False, 16 * MiB, 2 * MiB, 16 * MiB),          # pref_address: LOAD_PHYSICAL_ADDR
    (True, 16 * MiB, 2 * MiB, 16 * MiB),           # max(align_up(1 MiB, 2 MiB), 16 MiB)
    (True, MiB, 4 * MiB, 4 * MiB),                 # alignment above the preferred address
])
def test_the_kernels_run_time_footprint(relocatable, pref, align, runs_at):
    """The test kernel's case: loaded at 1 MiB, it runs from 16 MiB and needs init_size there."""
    image = bz.parse_bzimage(make_bzimage(init_size=12 * MiB, pref_address=pref,
                                          relocatable=relocatable, kernel_alignment=align))
    assert image.run_address(linux.KERNEL_ADDR) == runs_at
    end = runs_at + 12 * MiB
    with pytest.raises(linux.BootConfigError, match=f"give the guest at least --mem {end // MiB}M"):
        linux.plan_boot(image, "", None, end - MiB)      # past 1 MiB + init_size, short of the end
    linux.plan_boot(image, "", None, end)
    # An initrd is never placed where the kernel decompresses itself.
    initrd = b"\0" * (8 * MiB)
    with pytest.raises(linux.BootConfigError, match="must lie above"):
        linux.plan_boot(image, "", initrd, end + 4 * MiB)
    plan = linux.plan_boot(image, "", initrd, end + 9 * MiB)
    assert plan.initrd_addr >= end


@pytest.mark.parametrize("build,message", [
    (lambda: make_bzimage()[:60000], "syssize"),                           # cut short
    (lambda: make_bzimage(syssize=128 * 1024), "syssize"),                 # header says more
    (lambda: make_bzimage(setup_sects=100), "setup_sects 100"),           # setup over the heap
])
def test_malformed_bzimages_are_refused(build, message):
    with pytest.raises(bz.BzImageError, match=message):
        bz.parse_bzimage(build())


def test_publish_fills_the_kernel_keys_rom_and_bootorder():
    image = bz.parse_bzimage(make_bzimage())
    plan = linux.plan_boot(image, "quiet", b"RD" * 10, 64 * MiB)
    items = fwc.FwCfgItems()
    linux.publish(plan, items, firmware.LINUXBOOT_DMA, b"\x55\xaa" + bytes(510))

    def u32(key):
        return struct.unpack("<I", bytes(items.lookup(key).data))[0]

    assert u32(fwc.FW_CFG_SETUP_ADDR) == 0x10000 and u32(fwc.FW_CFG_SETUP_SIZE) == image.setup_size
    assert bytes(items.lookup(fwc.FW_CFG_SETUP_DATA).data) == plan.setup
    assert u32(fwc.FW_CFG_KERNEL_ADDR) == 0x100000 and u32(fwc.FW_CFG_KERNEL_SIZE) == image.kernel_size
    assert bytes(items.lookup(fwc.FW_CFG_KERNEL_DATA).data) == bytes(image.kernel)
    assert u32(fwc.FW_CFG_CMDLINE_SIZE) == 6
    assert bytes(items.lookup(fwc.FW_CFG_CMDLINE_DATA).data) == b"quiet\0"
    assert u32(fwc.FW_CFG_INITRD_ADDR) == plan.initrd_addr and u32(fwc.FW_CFG_INITRD_SIZE) == 20
    assert "genroms/linuxboot_dma.bin" in items.file_names()
    assert bytes(items.file("bootorder").data) == b"/rom@genroms/linuxboot_dma.bin\0"
