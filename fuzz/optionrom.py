"""Fuzz target: option ROM images through the checks `--option-rom` and `tinyvmm.optionrom`
make of them: check_loadable, validate, and sign (which must make a valid ROM of any image it
accepts), and read_option_rom, which reads the file as --option-rom does."""

import atheris
from common import bad_input, main, memfd_path

with atheris.instrument_imports():
    from tinyvmm import optionrom


def test_one_input(data: bytes) -> None:
    with memfd_path(data) as path:
        bad_input(optionrom.read_option_rom, path)
    bad_input(optionrom.check_loadable, data)
    bad_input(optionrom.validate, data)
    signed = bad_input(optionrom.sign, data)
    if signed is not None:
        # A signed image loads: signature, size and checksum are right.
        assert optionrom.check_loadable(signed) == [], data[:32]


if __name__ == "__main__":
    main(test_one_input, "optionrom")
