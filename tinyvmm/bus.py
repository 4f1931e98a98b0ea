"""Port-I/O and MMIO buses: devices registered on address ranges, accesses dispatched by offset.

A device sees offsets into its own range, never absolute addresses. A string
I/O exit (`rep insb` and friends, kvm_run.io.count > 1) reaches the device as
one call covering all its elements, so a device can serve it with one slice.
An access that straddles the end of a device is split into bytes, each going
to whatever claims its address (an `inl` at fw_cfg's 0x511 reads the data byte,
then what 0x512-0x514 answer), as QEMU's buses and the hardware do.
Accesses nobody claims read as all-ones and are dropped on write; both are
counted, and reported to the bus's observer (the exit trace).
"""

import bisect

# True for type checkers only: typing (2 ms to import) stays out of the command's start, and
# the contracts below are plain classes at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    # observer(kind, address, length, data): kind "read" or "write", data None for a read.
    BusObserver = Callable[[str, int, int, bytes | None], None]
else:
    Protocol = object


class Device(Protocol):
    """What a bus dispatches to: `name` (for messages and traces) and two calls.

    read(offset, size, count) returns size * count bytes: `count` successive
    accesses of `size` bytes each at the same offset (count > 1 for string I/O),
    little-endian, one after the other. write(offset, size, data) receives
    len(data) // size such accesses. `offset` counts from the device's base.
    """

    name: str

    def read(self, offset: int, size: int, count: int = 1) -> bytes: ...

    def write(self, offset: int, size: int, data: bytes) -> None: ...


class Registers(Protocol):
    """Registers accessed one at a time, as integers: `size` bytes at `offset`, the value
    from 0 to 2**(8*size) - 1."""

    def read_register(self, offset: int, size: int) -> int: ...

    def write_register(self, offset: int, size: int, value: int) -> None: ...


class RegisterDevice(Device, Registers):
    """A Device made of Registers: string I/O becomes one register access per element, in
    order (each may have side effects, as a UART's receive buffer does). This is the one
    place that splitting is written; devices with registers subclass it.

    Unless overridden, registers read as all-ones and ignore writes.
    """

    name = "device"

    def read_register(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write_register(self, offset: int, size: int, value: int) -> None:
        pass

    def read(self, offset: int, size: int, count: int = 1) -> bytes:
        if count == 1:
            return self.read_register(offset, size).to_bytes(size, "little")
        read_register = self.read_register
        return b"".join([read_register(offset, size).to_bytes(size, "little")
                         for _ in range(count)])

    def write(self, offset: int, size: int, data: bytes) -> None:
        write_register = self.write_register
        if size == 1:
            for value in data:                  # bytes iterate as ints: no slicing
                write_register(offset, 1, value)
            return
        for i in range(0, len(data), size):
            write_register(offset, size, int.from_bytes(data[i:i + size], "little"))


class BusError(ValueError):
    """A registration that overlaps another or is malformed."""


class Bus:
    """Devices on non-overlapping [base, base + size) ranges of one address space."""

    def __init__(self, name: str):
        self.name = name
        self._bases: list[int] = []
        self._ranges: list[tuple[int, int, Device]] = []
        self.unclaimed_reads = 0
        self.unclaimed_writes = 0
        # Told of every unclaimed access.
        self.observer: BusObserver | None = None

    def register(self, base: int, size: int, device: Device) -> None:
        if size <= 0 or base < 0:
            raise BusError(f"{self.name}: bad range {base:#x}+{size:#x} for {device.name}")
        index = bisect.bisect_left(self._bases, base)
        if index > 0:
            prev_base, prev_end, prev = self._ranges[index - 1]
            if prev_end > base:
                raise BusError(f"{self.name}: {device.name} at {base:#x} overlaps {prev.name}")
        if index < len(self._ranges) and base + size > self._ranges[index][0]:
            raise BusError(f"{self.name}: {device.name} at {base:#x} overlaps "
                           f"{self._ranges[index][2].name}")
        self._bases.insert(index, base)
        self._ranges.insert(index, (base, base + size, device))

    def unregister(self, base: int) -> Device:
        """Remove the device registered at exactly `base`; returns it."""
        index = bisect.bisect_left(self._bases, base)
        if index == len(self._bases) or self._bases[index] != base:
            raise BusError(f"{self.name}: nothing registered at {base:#x}")
        del self._bases[index]
        return self._ranges.pop(index)[2]

    def find(self, address: int, size: int = 1) -> tuple[int, Device] | None:
        """The (base, device) whose range holds [address, address + size), if any."""
        index = bisect.bisect_right(self._bases, address) - 1
        if index >= 0:
            base, end, device = self._ranges[index]
            if address + size <= end:
                return base, device
        return None

    def devices(self) -> list[tuple[int, int, Device]]:
        return list(self._ranges)

    def _straddles(self, address: int, size: int) -> bool:
        """Some but not all of [address, address + size) belongs to one device."""
        return size > 1 and any(self.find(address + i, 1) for i in range(size))

    def read(self, address: int, size: int, count: int = 1) -> bytes:
        found = self.find(address, size)
        if found is None and self._straddles(address, size):
            return b"".join(self.read(address + i, 1) for _ in range(count) for i in range(size))
        if found is None:
            self.unclaimed_reads += 1
            if self.observer:
                self.observer("read", address, size * count, None)
            return b"\xff" * (size * count)
        base, device = found
        data = device.read(address - base, size, count)
        if len(data) != size * count:
            raise RuntimeError(f"{device.name} returned {len(data)} bytes for a "
                               f"{size}x{count} read at {address:#x}")
        return data

    def write(self, address: int, size: int, data: bytes) -> None:
        found = self.find(address, size)
        if found is None and self._straddles(address, size):
            for element in range(0, len(data), size):
                for i in range(size):
                    self.write(address + i, 1, data[element + i:element + i + 1])
            return
        if found is None:
            self.unclaimed_writes += 1
            if self.observer:
                self.observer("write", address, len(data), data)
            return
        base, device = found
        device.write(address - base, size, data)


class PioBus(Bus):
    """The 64 KiB port space, with a per-port table so dispatch is one dict lookup."""

    def __init__(self) -> None:
        super().__init__("pio")
        self._table: dict[int, tuple[int, int, Device]] = {}

    def register(self, base: int, size: int, device: Device) -> None:
        if base + size > 0x10000:
            raise BusError(f"pio: {device.name} at {base:#x}+{size} is beyond port 0xffff")
        super().register(base, size, device)
        for port in range(base, base + size):
            self._table[port] = (base, base + size, device)

    def unregister(self, base: int) -> Device:
        device = super().unregister(base)
        for port in [p for p, entry in self._table.items() if entry[0] == base]:
            del self._table[port]
        return device

    @property
    def table(self) -> dict[int, tuple[int, int, Device]]:
        """port -> (base, end, device): the run loop's fast path reads it directly."""
        return self._table

    def find(self, address: int, size: int = 1) -> tuple[int, Device] | None:
        entry = self._table.get(address)
        if entry is not None and address + size <= entry[1]:
            return entry[0], entry[2]
        return None
