"""An LD_PRELOAD shim that makes fsync and fdatasync slower (like the SD cards and eMMC of small IPCs), built with gcc."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow(void) {
    const char *s = getenv("EDGED_TEST_FSYNC_DELAY_MS");
    long ms = s ? atol(s) : 0;
    if (ms > 0) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) != 0) {}
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow();
    return real(fd);
}
"""


def build_shim(directory: Path) -> Path | None:
    """Compile the shim into directory; None when gcc is missing (callers skip with that reason)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / "slow_fsync.c"
    lib = directory / "slow_fsync.so"
    src.write_text(SOURCE)
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True,
                   capture_output=True, timeout=120)
    return lib


def slow_fsync_env(lib: Path, delay_ms: int) -> dict[str, str]:
    """Environment for a subprocess whose fsync/fdatasync take delay_ms longer."""
    return {"LD_PRELOAD": str(lib), "EDGED_TEST_FSYNC_DELAY_MS": str(delay_ms)}
