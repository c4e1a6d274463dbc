"""IEC timers and counters on a simulated clock (no wall time): TON, TOF, TP, CTU, CTD, CTUD."""
from __future__ import annotations

import pytest

from edged.control.sim import BlockSim

MS = 1_000_000


def run(sim: BlockSim, steps: list[tuple[int, dict]]) -> list[tuple]:
    """Step at (time ms, inputs) and collect (Q, ET) pairs."""
    out = []
    for t_ms, ins in steps:
        o = sim.step(t_ms * MS, **ins)
        out.append((o["Q"], pytest.approx(o["ET"])))
    return out


TON_STEPS = [
    (0, dict(IN=0), (False, 0)), (10, dict(IN=1), (False, 0)), (60, {}, (False, 50)), (109, {}, (False, 99)),
    (110, {}, (True, 100)), (200, {}, (True, 100)), (210, dict(IN=0), (False, 0)),
    (220, dict(IN=1), (False, 0)), (300, {}, (False, 80)), (310, dict(IN=0), (False, 0)),   # interrupted
]
TOF_STEPS = [
    (0, dict(IN=1), (True, 0)), (10, dict(IN=0), (True, 0)), (50, {}, (True, 40)), (109, {}, (True, 99)),
    (110, {}, (False, 100)), (150, {}, (False, 100)), (160, dict(IN=1), (True, 0)),
    (170, dict(IN=0), (True, 0)), (200, dict(IN=1), (True, 0)),         # IN back on: timer reset
    (210, dict(IN=0), (True, 0)), (309, {}, (True, 99)), (310, {}, (False, 100)),
]
TP_STEPS = [
    (0, dict(IN=1), (True, 0)), (50, dict(IN=0), (True, 50)),           # the pulse runs on without IN
    (60, dict(IN=1), (True, 60)),                                        # not retriggerable
    (100, {}, (False, 100)), (150, {}, (False, 100)),                    # ET holds PT while IN stays on
    (160, dict(IN=0), (False, 0)), (170, dict(IN=1), (True, 0)), (270, {}, (False, 100)),
]


@pytest.mark.parametrize("kind,steps", [("TON", TON_STEPS), ("TOF", TOF_STEPS), ("TP", TP_STEPS)])
def test_timers(kind: str, steps: list) -> None:
    sim = BlockSim(kind, const=dict(PT=100))
    got = run(sim, [(t, ins) for t, ins, _ in steps])
    assert got == [exp for _, _, exp in steps]


def test_tof_starts_off_when_in_starts_false() -> None:
    sim = BlockSim("TOF", const=dict(PT=100))
    assert sim.step(0, IN=0) == {"Q": False, "ET": 0.0}
    assert sim.step(500 * MS) == {"Q": False, "ET": 0.0}


def test_timer_preset_can_be_wired() -> None:
    sim = BlockSim("TON")
    sim.step(0, IN=1, PT=50)
    assert sim.step(49 * MS)["Q"] is False
    assert sim.step(50 * MS)["Q"] is True
    assert sim.step(60 * MS, PT=500)["Q"] is False     # a larger PT while running: ET < PT again


def test_long_timer_is_exact_to_the_nanosecond() -> None:
    day_ms = 86_400_000
    sim = BlockSim("TON", const=dict(PT=day_ms))
    base = 10**15   # a monotonic clock far from zero
    sim.step(base, IN=1)
    assert sim.step(base + day_ms * MS - 1)["Q"] is False
    assert sim.step(base + day_ms * MS)["Q"] is True


def test_ctu() -> None:
    sim = BlockSim("CTU", const=dict(PV=3))
    cu = [1, 1, 0, 1, 0, 1, 0, 1]
    got = [tuple(sim.step(i, CU=c, R=0).values()) for i, c in enumerate(cu)]
    assert got == [(False, 1), (False, 1), (False, 1), (False, 2), (False, 2), (True, 3), (True, 3), (True, 4)]
    assert sim.step(100, CU=0, R=1) == {"Q": False, "CV": 0}
    assert sim.step(101, CU=1, R=1) == {"Q": False, "CV": 0}    # reset dominates a rising CU
    assert sim.step(102, CU=0, R=0) == {"Q": False, "CV": 0}
    assert sim.step(103, CU=1, R=0) == {"Q": False, "CV": 1}


def test_ctd() -> None:
    sim = BlockSim("CTD", const=dict(PV=2))
    assert sim.step(0, CD=0, LD=1) == {"Q": False, "CV": 2}
    got = [tuple(sim.step(i, CD=c, LD=0).values()) for i, c in enumerate([1, 0, 1, 0, 1], start=1)]
    assert got == [(False, 1), (False, 1), (True, 0), (True, 0), (True, -1)]


def test_ctud() -> None:
    sim = BlockSim("CTUD", const=dict(PV=2))
    seq = [  # (CU, CD, R, LD) -> (QU, QD, CV)
        ((1, 0, 0, 0), (False, False, 1)), ((0, 0, 0, 0), (False, False, 1)),
        ((1, 1, 0, 0), (False, False, 1)),                       # both edges at once: no count
        ((0, 0, 0, 0), (False, False, 1)), ((1, 0, 0, 0), (True, False, 2)), ((0, 1, 0, 0), (False, False, 1)),
        ((0, 0, 0, 1), (True, False, 2)), ((0, 0, 1, 1), (False, True, 0)),   # R dominates LD
        ((0, 1, 0, 0), (False, True, -1)),
    ]
    for i, ((cu, cd, r, ld), exp) in enumerate(seq):
        assert tuple(sim.step(i, CU=cu, CD=cd, R=r, LD=ld).values()) == exp, f"step {i}"


def test_counters_are_exact_up_to_2_pow_53_and_stop_there() -> None:
    top = 2**53
    sim = BlockSim("CTUD", const=dict(PV=top - 2))
    sim.step(0, CU=0, CD=0, R=0, LD=1)
    assert sim.step(1, LD=0)["CV"] == top - 2
    values = []
    for i in range(3):
        sim.step(10 + 2 * i, CU=1)
        values.append(sim.step(11 + 2 * i, CU=0)["CV"])
    assert values == [top - 1, top, top]


def test_heartbeat_toggles_every_pt_on_the_cycle_clock() -> None:
    sim = BlockSim("HEARTBEAT", const={"PT": 30})
    q = [sim.step(t * 10 * MS)["Q"] for t in range(10)]      # a 10 ms cycle
    # starts FALSE, toggles once 30 ms have passed since the last toggle
    assert q == [False, False, False, True, True, True, False, False, False, True]
    assert sim.quality("Q") == 0


def test_heartbeat_with_pt_zero_toggles_every_cycle() -> None:
    sim = BlockSim("HEARTBEAT", const={"PT": 0})
    assert [sim.step(t * MS)["Q"] for t in range(5)] == [False, True, False, True, False]


def test_retained_counter_state_round_trips_through_the_program() -> None:
    from edged.cext.control import Program
    from edged.control.blocks_catalog import BLOCK_TYPES

    ctu = BLOCK_TYPES["CTU"].code
    ton = BLOCK_TYPES["TON"].code

    def program() -> Program:
        # ws: 0 CU, 1 R, 2 PV, 3 Q, 4 CV, 5 IN, 6 PT, 7 Q, 8 ET
        return Program(9, [(ctu, [0, 1, 2], [3, 4], 0, 0, {}), (ton, [5, 6], [7, 8], 0, 0, {})],
                       [(1, 0.0), (2, 100.0), (6, 1000.0)], [], [], [], None, [0, 1])

    p = program()
    assert p.retained() is None                        # nothing to save before the first cycle
    for i in range(7):                                  # 3 rising edges of CU; TON timing for 60 ms
        p.set(0, float(i % 2))
        p.set(5, 1.0)
        p.step(10 * i * MS)
    rows = p.retained()
    assert rows[0][:2] == (3.0, 0.0) and rows[0][4] == 0.0   # CV 3, edge memory FALSE, no timer
    assert rows[1][0] == 1.0 and rows[1][4] == 60 * MS       # timing, 60 ms elapsed

    q = program()
    q.restore(0, rows[0][:4], rows[0][4])
    q.restore(1, rows[1][:4], rows[1][4])
    q.set(0, 1.0)                                       # a rising edge right away: counts on from 3
    q.set(5, 1.0)
    import edged.cext.control as c
    q.step(c.monotonic_ns())
    assert q.get(4)[0] == 4.0
    assert 60.0 <= q.get(8)[0] < 1000.0                 # the timer goes on from where it was
