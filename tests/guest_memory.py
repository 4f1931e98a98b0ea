"""Guest memory without a VM: tinyvmm.memory.GuestMemory over bytearrays."""

from tinyvmm.memory import GuestMemory


def guest_memory(*regions) -> GuestMemory:
    """GuestMemory made of `regions`, each (gpa, size or buffer) or (gpa, size or buffer, writable).

    A size gets a fresh zero-filled bytearray; a buffer (a bytearray, a memoryview of one) is
    used whole, so the test can read and write it directly. A region is RAM unless writable
    is False (ROM: the guest's writes to it are refused).
    """
    made = []
    for gpa, backing, *writable in regions:
        buffer = bytearray(backing) if isinstance(backing, int) else backing
        made.append((gpa, memoryview(buffer).nbytes, buffer, writable[0] if writable else True))
    return GuestMemory(made)
