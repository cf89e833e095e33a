# The virtual board's flash as its MicroPython sees it (tests/micropython/board.mjs runs this).
#
# The WebAssembly port's VfsPosix sits on Emscripten's filesystem, whose errno numbers are
# WASI's (ENOENT is 44), while MicroPython on a real board raises its own (py/mperrno.h, Linux's
# numbers: ENOENT is 2) and mpremote reads those. So the flash is VfsPosix behind a small user
# VFS that renumbers each OSError, mounted at "/" in place of the port's root.
import errno
import os

import vfs

# WASI errno -> MicroPython's (numbers where the port's errno module has no name).
RENUMBER = {
    63: errno.EPERM,
    44: errno.ENOENT,
    29: errno.EIO,
    8: errno.EBADF,
    6: errno.EAGAIN,
    48: errno.ENOMEM,
    2: errno.EACCES,
    10: 16,  # EBUSY
    20: errno.EEXIST,
    75: 18,  # EXDEV
    54: 20,  # ENOTDIR
    31: 21,  # EISDIR
    28: errno.EINVAL,
    51: 28,  # ENOSPC
    69: 30,  # EROFS
    37: 36,  # ENAMETOOLONG
    55: 39,  # ENOTEMPTY
}


def _call(fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        raise OSError(RENUMBER.get(e.errno, e.errno)) from None


class Flash:
    def __init__(self, root):
        self._fs = vfs.VfsPosix(root)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        return _call(self._fs.open, path, mode)

    def ilistdir(self, path):
        # (name, type, inode, size), as a board's FAT or littlefs gives them.
        entries = _call(lambda p: list(self._fs.ilistdir(p)), path)
        base = path.rstrip("/") + "/"
        return iter([(e[0], e[1], e[2], self._fs.stat(base + e[0])[6]) for e in entries])

    def stat(self, path):
        return _call(self._fs.stat, path)

    def statvfs(self, path):
        return _call(self._fs.statvfs, path)

    def mkdir(self, path):
        return _call(self._fs.mkdir, path)

    def rmdir(self, path):
        return _call(self._fs.rmdir, path)

    def remove(self, path):
        return _call(self._fs.remove, path)

    def rename(self, old, new):
        return _call(self._fs.rename, old, new)

    def chdir(self, path):
        return _call(self._fs.chdir, path)

    def getcwd(self):
        return _call(self._fs.getcwd)


def mount_flash(root):
    vfs.umount("/")
    vfs.mount(Flash(root), "/")
    os.chdir("/")
