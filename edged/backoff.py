"""Reconnect delays: exponential backoff with jitter, one policy for devices and upstream connections."""
from __future__ import annotations

import random
from typing import Iterator


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): uniform in [d/2, d], d = min(max_s, initial_s * 2**attempt).

    The jitter keeps many devices (or many edge nodes on one broker) from retrying in lockstep.
    """
    d = min(max_s, initial_s * (2 ** min(attempt, 30)))
    return (rng or random).uniform(d / 2, d)


def backoff_delays(initial_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Successive delays of :func:`backoff_delay` for attempts 0, 1, 2, ..."""
    attempt = 0
    while True:
        yield backoff_delay(attempt, initial_s, max_s, rng)
        attempt += 1
