"""Reading the files a user names (kernel, initrd, firmware, option ROMs, fw_cfg items) within a bound.

A regular file's size is known from stat, so anything over the bound is refused
before a byte is read; anything else (a character device such as /dev/zero, a
pipe given as /dev/stdin) is read through the bound, never to the end of memory.
A FIFO is refused outright: opening one waits for a writer that may never come.
"""

import os
import stat


class FileTooLarge(ValueError):
    """A file over its bound: `size` in bytes (None when it is not a regular file)."""

    def __init__(self, size: int | None, limit: int):
        super().__init__(f"is {size} bytes" if size is not None else f"holds more than {limit} bytes")
        self.size = size
        self.limit = limit


class NotAFile(ValueError):
    """A path that cannot be read as a file's contents (a FIFO, a directory, a socket)."""


def read_bounded(path: str, limit: int) -> bytes:
    """The contents of `path`, at most `limit` bytes. Raises FileTooLarge, NotAFile or OSError."""
    mode = os.stat(path).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise NotAFile(f"{path} is a {'FIFO' if stat.S_ISFIFO(mode) else 'socket'}; "
                       "give a regular file")
    if stat.S_ISDIR(mode):
        raise NotAFile(f"{path} is a directory")
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > 0:
            if info.st_size > limit:
                raise FileTooLarge(info.st_size, limit)
            return f.read(info.st_size)
        # Devices, pipes, and files whose size stat does not know (/proc, /sys report 0):
        # read through the bound.
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(None, limit)
    return data


# Kernel file systems: their files open for writing (as root) and then refuse the bytes.
KERNEL_FILE_SYSTEMS = ("/proc/", "/sys/")


def check_output_path(option: str, path: str) -> None:
    """Raise ValueError now, naming `option`, for a result file that could not be written at
    the end of a long run: a directory, a missing or read-only folder, /proc and the like."""
    if not path:
        raise ValueError(f"{option}: an empty path")
    if os.path.realpath(path).startswith(KERNEL_FILE_SYSTEMS):
        raise ValueError(f"{option} {path}: a kernel file, not a place for results")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a directory")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: cannot write in {folder}")
    existed = os.path.lexists(path)
    try:                                        # /proc files and the like refuse here
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666))
    except OSError as exc:
        raise ValueError(f"{option} {path}: {exc.strerror}") from None
    if not existed:
        os.unlink(path)
