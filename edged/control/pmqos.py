"""CPU wake-up latency request (/dev/cpu_dma_latency, PM QoS): keeps idle CPUs out of deep idle states while held."""
from __future__ import annotations

import errno
import os
import struct

DEVICE = "/dev/cpu_dma_latency"


class CpuLatencyRequest:
    """Holds a PM QoS CPU latency request for as long as it is open (the kernel drops it when the fd closes).

    0 keeps idle CPUs polling (no idle state at all), as cyclictest does by default; a value of N us
    lets them enter only idle states whose exit latency is at most N us.
    """

    def __init__(self) -> None:
        self.fd = -1
        self.value_us = -1

    def acquire(self, value_us: int, path: str = DEVICE) -> int:
        """Request value_us (replacing an earlier request): 0 when held, else the errno of the refusal."""
        if value_us < 0:
            return errno.EINVAL
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            return exc.errno or errno.EIO
        try:
            os.write(fd, struct.pack("=i", min(value_us, 2**31 - 1)))
        except OSError as exc:
            os.close(fd)
            return exc.errno or errno.EIO
        self.release()
        self.fd, self.value_us = fd, value_us
        return 0

    @property
    def held(self) -> bool:
        """True while the request is in force."""
        return self.fd >= 0

    def release(self) -> None:
        """Drop the request (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.value_us = -1, -1


def idle_states(cpu: int = 0) -> list[tuple[str, int]]:
    """(name, exit latency us) of the CPU's idle states from sysfs (empty when cpuidle is absent)."""
    base = f"/sys/devices/system/cpu/cpu{cpu}/cpuidle"
    out: list[tuple[str, int]] = []
    try:
        names = sorted(os.listdir(base), key=lambda n: int(n[5:]) if n[5:].isdigit() else 0)
    except OSError:
        return out
    for st in names:
        if not st.startswith("state"):
            continue
        try:
            with open(f"{base}/{st}/name") as f:
                name = f.read().strip()
            with open(f"{base}/{st}/latency") as f:
                lat = int(f.read().strip())
        except (OSError, ValueError):
            continue
        out.append((name, lat))
    return out


def idle_driver() -> str:
    """The cpuidle driver in use ("" when unknown)."""
    try:
        with open("/sys/devices/system/cpu/cpuidle/current_driver") as f:
            return f.read().strip()
    except OSError:
        return ""
