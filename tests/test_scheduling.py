"""Scan scheduling arithmetic and reconnect backoff: absolute deadlines, phases, skipped overruns, jitter bounds."""
import asyncio
import random

from edged.backoff import backoff_delay, backoff_delays
from edged.scan import ScanGroup, phase_for


async def _noop() -> None:
    return None


def test_first_deadline_aligns_to_interval_plus_phase() -> None:
    g = ScanGroup("d", "g", 0.5, 0.1, _noop)
    assert abs(g.first_deadline(10.0) - 10.1) < 1e-9
    assert abs(g.first_deadline(10.2) - 10.6) < 1e-9
    assert abs(g.first_deadline(10.1) - 10.6) < 1e-9


def test_phases_spread_groups_evenly() -> None:
    assert [phase_for(i, 4, 1.0) for i in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert phase_for(0, 1, 1.0) == 0.0


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        d = min(30.0, 0.5 * 2 ** attempt)
        for _ in range(50):
            v = backoff_delay(attempt, 0.5, 30.0, rng)
            assert d / 2 <= v <= d
    assert backoff_delay(1000, 0.5, 30.0, rng) <= 30.0


def test_slow_poll_counts_overruns_and_never_bursts() -> None:
    """A poll that takes 2.5 intervals: missed deadlines are skipped, polls never run back to back to catch up."""
    starts: list[float] = []

    async def main() -> ScanGroup:
        loop = asyncio.get_running_loop()

        async def slow() -> None:
            starts.append(loop.time())
            await asyncio.sleep(0.25)

        g = ScanGroup("d", "g", 0.1, 0.0, slow)
        task = asyncio.create_task(g.run())
        while len(starts) < 4:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return g

    g = asyncio.run(main())
    assert g.overruns >= 3 * 2  # at least two deadlines skipped per slow poll
    # never a catch-up burst: consecutive starts are at least one poll duration apart
    assert all(b - a >= 0.25 for a, b in zip(starts, starts[1:]))


def test_backoff_delays_generator_follows_the_same_policy() -> None:
    rng = random.Random(2)
    gen = backoff_delays(1.0, 8.0, rng)
    for attempt, d in zip(range(8), [1, 2, 4, 8, 8, 8, 8, 8]):
        assert d / 2 <= next(gen) <= d
