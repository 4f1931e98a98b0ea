"""Ending a run of the software CPU (unicorn) at the start of a translated block, from a timer.

uc_emu_stop called from another thread takes effect at unicorn's next check, and unicorn
checks after every memory access too, restarting the interrupted instruction from its start:
an instruction that had already written memory (`add [m], r`, `lock cmpxchg`, `xchg`) then
ran twice when the software CPU went on. Its instruction-count limit stops only between
instructions, but makes every instruction call a hook (OVMF's boot took three times as long)
and did not stop a one-instruction loop (`jmp $`).

So the software CPU is stopped only from its own thread, at a block's start, before the
block's first instruction: a block hook (UC_HOOK_BLOCK, called as each translated block
begins) made of a few bytes of x86-64 machine code, no Python, calls uc_emu_stop when a flag
byte is set; a thread sets the flag every TICK_S, and the stretch clears it before each run
and looks at the clock, IF and the run's end when the run comes back.
"""

import ctypes
import mmap
import struct
import threading
import time
import weakref

from unicorn import UC_HOOK_BLOCK
from unicorn.unicorn_py3.unicorn import uclib

TICK_S = 0.002
# void hook(uc_engine *uc, uint64_t address, uint32_t size, void *flag): the System V
# arguments are in rdi, rsi, edx, rcx; uc_emu_stop(uc) is tail-called with uc still in rdi.
STOP_IF_FLAGGED = (b"\x80\x39\x00"                  # cmp byte ptr [rcx], 0
                   b"\x75\x01"                      # jne stop
                   b"\xc3"                          # ret
                   b"\xff\x25\x00\x00\x00\x00")     # stop: jmp qword ptr [rip]: the address below
_hook: tuple[mmap.mmap, int] | None = None


def stop_hook() -> int:
    """The address of the native block hook (made once: an executable page, read-only)."""
    global _hook
    if _hook is None:
        emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        page.write(STOP_IF_FLAGGED + struct.pack("<Q", emu_stop))
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            raise OSError(ctypes.get_errno(), "mprotect of the software CPU's block hook")
        _hook = (page, address)
    return _hook[1]


class Preemption:
    """One unicorn engine's preemption: `flag` is the byte the hook reads; `request()` sets it
    (from any thread), `clear()` before a run; `asked` whether it was set during the run."""

    def __init__(self, uc) -> None:
        self.flag = ctypes.c_uint8(0)
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK, stop_hook(),
                                   ctypes.addressof(self.flag), 1, 0)   # begin > end: everywhere
        if status != 0:
            raise OSError(f"unicorn refused the block hook (error {status})")

    def request(self) -> None:
        self.flag.value = 1

    def clear(self) -> None:
        self.flag.value = 0

    @property
    def asked(self) -> bool:
        return bool(self.flag.value)


class Ticker:
    """A thread that calls `target()`'s request() every TICK_S while `owner` lives (held
    weakly: the thread ends once it is gone); `target(owner)` gives the Preemption to ask, or
    None."""

    def __init__(self, owner, target) -> None:
        threading.Thread(target=_tick, args=(weakref.ref(owner), target),
                         name="software CPU ticker", daemon=True).start()


def _tick(reference: weakref.ref, target) -> None:
    while True:
        time.sleep(TICK_S)
        owner = reference()
        if owner is None:
            return
        preemption = target(owner)
        if preemption is not None:
            preemption.request()
        del owner, preemption
