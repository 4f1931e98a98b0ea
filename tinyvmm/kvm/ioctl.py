"""One way into the kernel: ioctl through libc, with errors that name the call.

fcntl.ioctl parses a scalar argument as a C int and rejects values above
2**31-1 (KVM_SET_TSS_ADDR takes an address), so these calls go through libc
with an unsigned long or a pointer. KVM_RUN, which takes no argument, is the
run loop's own (tinyvmm.runner, through fcntl.ioctl).
"""

import ctypes
import errno
import os

from ..errors import HostError
from . import abi

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int


class KvmError(HostError, OSError):
    """An ioctl on a KVM file descriptor failed."""


def ioctl(fd: int, request: int, arg=None, name: str | None = None) -> int:
    """Issue one ioctl; arg is None, an int (passed by value) or a ctypes object.

    EINTR is retried: only KVM_RUN, issued by the run loop, treats it as an event.
    """
    if arg is None:
        value = None
    elif isinstance(arg, int):
        value = arg
    else:
        value = ctypes.addressof(arg)
    while True:
        result = _ioctl(fd, request, value)
        if result >= 0:
            return result
        err = ctypes.get_errno()
        if err != errno.EINTR:
            label = name or abi.IOCTL_NAMES.get(request, f"ioctl {request:#x}")
            raise KvmError(err, f"{label}: {os.strerror(err)}")

