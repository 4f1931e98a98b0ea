"""The 8-bit checksum of PC firmware structures: option ROMs and their PnP header, SMBIOS entry
points, ACPI tables, MP tables. Each is valid when its bytes sum to 0 modulo 256."""


def checksum_byte(data: bytes | bytearray | memoryview) -> int:
    """The byte that, in a zeroed checksum field of `data`, makes all of it sum to 0 mod 256."""
    return -sum(data) & 0xFF
