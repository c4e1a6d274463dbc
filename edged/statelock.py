"""An exclusive lock on a cell's state folder, so two daemons never share one spool and one broker identity."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "edged.lock"


class StateDirBusy(Exception):
    """Another process holds the state folder's lock; the message names its PID when known."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"state folder {directory} is in use by {who} (lock {directory / LOCK_NAME}); "
                         f"two daemons cannot share one state_dir: stop the other one or give this cell its own "
                         f"state_dir")
        self.directory = directory
        self.pid = pid


class StateLock:
    """Holds ``flock(LOCK_EX)`` on ``<state_dir>/edged.lock`` until released or the process ends (also kill -9).

    The file keeps the holder's PID for the message of the next process that tries; it is never
    deleted (deleting a locked file would let a third process lock a new inode).
    """

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path) -> "StateLock":
        """Create the folder if needed and lock it; raises StateDirBusy if another process holds it, OSError
        if the folder is unusable."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirBusy(directory, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(directory, fd)

    def release(self) -> None:
        """Unlock (closing the descriptor releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StateLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The PID the holder wrote into the lock file, or None if it is not there (yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
