"""Fuzz target: the option parsers for `--drive` (tinyvmm.virtio.drive.parse_drive, then
split_drives and check_pflash) and `--fw-cfg` (tinyvmm.fw_cfg.items.parse_user_item, then the
item added to a registry). Input lines are option values; a leading "d" or "f" picks which.
Only a ConfigError may refuse one."""

import atheris
from common import bad_input, main

with atheris.instrument_imports():
    from tinyvmm.fw_cfg.items import FwCfgItems, add_user_items, parse_user_item
    from tinyvmm.spec import check_pflash, split_drives
    from tinyvmm.virtio.drive import parse_drive

MAX_OPTIONS = 8


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")      # as argv reaches Python
    drives, items = [], FwCfgItems()
    for line in text.split("\n")[:MAX_OPTIONS]:
        kind, value = line[:1], line[1:]
        if kind == "d":
            spec = bad_input(parse_drive, value)
            if spec is not None:
                drives.append(spec)
        else:
            spec = bad_input(parse_user_item, value)
            # string= only: a file= path would be opened, and the input must not reach the host.
            if spec is not None and spec.file is None:
                bad_input(add_user_items, items, [spec], lambda text: None)
    split = bad_input(split_drives, drives)
    if split is not None:
        bad_input(check_pflash, split[1])


if __name__ == "__main__":
    main(test_one_input, "options")
