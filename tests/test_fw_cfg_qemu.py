"""fw_cfg as firmware reads it, tinyvmm against QEMU 7.2's pc machine: one guest
(tests/guests/fwcfg_dump.S) dumps every numeric key and every file through the legacy ports, under
each, and the dumps are compared item by item. What tinyvmm serves on purpose otherwise is listed
below with the reason; anything else that differs is a bug."""

import pytest
from debugcon_runs import QEMU_MARKS, run_qemu, run_tinyvmm
from guest_build import build_guest

pytestmark = QEMU_MARKS

# Files of QEMU's that tinyvmm does not serve, and why.
QEMU_ONLY = {
    "bios-geometry": "empty without IDE disks",
    "bootorder": "empty: tinyvmm adds it only when a kernel or a drive is to be booted",
    "etc/tpm/log": "empty without a TPM",
    "genroms/kvmvapic.bin": "QEMU's TPR patching ROM for old Windows guests",
}
# Files both serve with contents of their own: tinyvmm's SMBIOS names tinyvmm, QEMU's names QEMU;
# the ACPI tables describe each one's machine (tinyvmm's unpadded, with no HPET, no hotplug and
# no S3/S4 sleep states).
OWN_CONTENTS = {"etc/smbios/smbios-anchor", "etc/smbios/smbios-tables", "etc/acpi/rsdp",
                "etc/acpi/tables", "etc/table-loader", "etc/system-states"}


def parse_dump(text: str) -> dict[str, tuple[int | None, str]]:
    """{"key 0003": (None, hex), "etc/e820": (size, hex)} from the guest's lines, which must end
    with "end"."""
    lines = text.splitlines()
    assert lines and lines[-1] == "end", text[-500:]
    items = {}
    for line in lines[:-1]:
        kind, rest = line.split(" ", 1)
        if kind == "key":
            key, data = rest.split(" ")
            items[f"key {key}"] = (None, data)
        else:
            name, size, _select, *data = rest.split(" ")
            items[name] = (int(size, 16), data[0] if data else "")
    return items


@pytest.mark.parametrize("mem_mib", [128, 3328, 5120], ids=["128M", "3.25G", "5G"])
def test_fw_cfg_items_are_qemus(tmp_path, mem_mib):
    image = build_guest("fwcfg_dump").bin_path
    qemu = parse_dump(run_qemu(image, mem_mib, tmp_path))
    ours = parse_dump(run_tinyvmm(image, mem_mib, tmp_path))
    assert {name for name in ours if name.startswith("key")} == \
        {name for name in qemu if name.startswith("key")}
    assert set(qemu) - set(ours) == set(QEMU_ONLY)
    assert set(ours) - set(qemu) == set()
    different = {name: (ours[name], qemu[name]) for name in ours
                 if name not in OWN_CONTENTS and ours[name] != qemu[name]}
    assert different == {}
    # the comparison saw the memory map: KVM's pages, low RAM, on an AMD host QEMU's
    # HyperTransport hole, above 4 GiB the rest (20 bytes an entry)
    assert qemu["etc/e820"][0] in (40, 60, 80)
