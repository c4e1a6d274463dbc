"""The spool survives kill -9: every committed sample (what sinks may have seen) is there after reopening, in order."""
from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool

WRITER = r"""
import sys, time
from pathlib import Path
from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool
from edged.tag import Sample
directory, durability, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sp = Spool.open(directory, SpoolSpec(durability=durability, commit_interval_ms=20), ["a"])
# consume a little too, so acks are part of what must survive
n = start
while True:
    sp.append([Sample(time.time_ns(), "press1", "counter", v, 0) for v in range(n, n + 50)])
    n += 50
    time.sleep(0.002)
    # everything below this was committed (visible to sinks; durable per durability)
    print(start + sp.stats().appended_total, flush=True)
    b = sp.take("a", 20)
    if b is not None:
        sp.ack(b)
"""


@pytest.mark.parametrize("durability", ["batch", "os"])
def test_kill_9_loses_nothing_that_was_appended(tmp_path: Path, durability: str) -> None:
    rng = random.Random(7)
    directory = tmp_path / "spool"
    next_value = 0
    delivered: list[int] = []
    for _round in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), durability, str(next_value)],
                                stdout=subprocess.PIPE, text=True)
        committed = next_value
        deadline = time.monotonic() + 60
        target = rng.randint(3, 40)
        lines = 0
        assert proc.stdout is not None
        while lines < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed = int(line)
            lines += 1
        proc.kill()
        proc.wait(timeout=30)
        assert lines == target, "the writer stopped early"
        sp = Spool.open(directory, SpoolSpec(durability=durability), ["a"])
        batch = sp.take("a", 10**7)
        values = [s.value for s in batch.samples] if batch else []
        if batch is not None:
            sp.release(batch)
        sp.close()
        # what is left is gap-free, in order, and reaches at least the last commit reported
        assert values, "the spool lost its unacked samples"
        assert values == list(range(values[0], values[0] + len(values)))
        assert values[-1] + 1 >= committed
        next_value = values[-1] + 1
        delivered = values
    # finally drain everything: nothing acked comes back, nothing unacked is missing
    sp = Spool.open(directory, SpoolSpec(durability=durability), ["a"])
    b = sp.take("a", 10**7)
    assert [s.value for s in b.samples] == delivered
    sp.ack(b)
    sp.close()
