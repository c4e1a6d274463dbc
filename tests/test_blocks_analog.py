"""PID step response against an independent discrete-time computation; RAMP, LPF, MAVG and Z1."""
from __future__ import annotations

import random

import pytest

from edged.control.sim import BlockSim

MS = 1_000_000


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


class ReferencePID:
    """The textbook positional PID the block documents, written out independently of the C code.

    I += KP * e * dt / TR; I clamped to [XMIN, XMAX]; D = -KP * TD * dPV/dt (on measurement);
    OUT = clamp(KP * e + I + D). The first step has no history (dt = 0, dPV = 0).
    """

    def __init__(self, kp: float, tr_s: float, td_s: float, lo: float, hi: float) -> None:
        self.kp, self.tr, self.td, self.lo, self.hi = kp, tr_s, td_s, lo, hi
        self.i = 0.0
        self.prev: float | None = None
        self.t: float | None = None

    def step(self, t: float, sp: float, pv: float) -> float:
        dt = 0.0 if self.t is None else t - self.t
        prev = pv if self.prev is None else self.prev
        e = sp - pv
        if self.tr > 0 and dt > 0:
            self.i += self.kp * e * dt / self.tr
        self.i = clamp(self.i, self.lo, self.hi)
        d = -self.kp * self.td * (pv - prev) / dt if self.td > 0 and dt > 0 else 0.0
        self.prev, self.t = pv, t
        return clamp(self.kp * e + self.i + d, self.lo, self.hi)


def plant_step(y: float, u: float, dt: float, gain: float = 2.0, tau: float = 5.0) -> float:
    """First-order process, explicit Euler: tau * dy/dt = gain * u - y."""
    return y + dt / tau * (gain * u - y)


@pytest.mark.parametrize("kp,tr_ms,td_ms,lo,hi", [
    (0.8, 2000, 0, -1e300, 1e300),       # PI, unlimited
    (1.5, 1000, 200, -1e300, 1e300),     # PID
    (2.0, 500, 0, 0.0, 60.0),            # PI with output limits (anti-windup clamps the integral)
])
def test_pid_closed_loop_step_response_matches_reference(kp: float, tr_ms: float, td_ms: float,
                                                         lo: float, hi: float) -> None:
    sim = BlockSim("PID", const=dict(KP=kp, TR=tr_ms, TD=td_ms, XMIN=lo, XMAX=hi, AUTO=True, X0=0.0))
    ref = ReferencePID(kp, tr_ms / 1000, td_ms / 1000, lo, hi)
    dt, y_sim, y_ref, sp = 0.1, 0.0, 0.0, 50.0
    for k in range(600):
        t = k * dt
        u_sim = sim.step(round(t * 1e9), SP=sp, PV=y_sim)["XOUT"]
        u_ref = ref.step(t, sp, y_ref)
        assert u_sim == pytest.approx(u_ref, rel=1e-9, abs=1e-9), f"step {k}"
        y_sim, y_ref = plant_step(y_sim, u_sim, dt), plant_step(y_ref, u_ref, dt)
    assert y_sim == pytest.approx(sp, rel=1e-3)      # integral action: no steady-state error


def test_pid_first_steps_by_hand() -> None:
    # KP=2, TR=1 s: step 0 (no history): 2*10 = 20; step 1 after 0.5 s: I = 2*10*0.5/1 = 10 -> 30
    sim = BlockSim("PID", const=dict(KP=2.0, TR=1000))
    assert sim.step(0, SP=10.0, PV=0.0)["XOUT"] == pytest.approx(20.0)
    assert sim.step(500 * MS, SP=10.0, PV=0.0)["XOUT"] == pytest.approx(30.0)
    assert sim.step(1000 * MS, SP=10.0, PV=5.0)["XOUT"] == pytest.approx(2 * 5 + 10 + 2 * 5 * 0.5)


def test_pid_anti_windup_leaves_saturation_at_once() -> None:
    sim = BlockSim("PID", const=dict(KP=1.0, TR=100, XMIN=0.0, XMAX=10.0))
    for k in range(200):                        # long saturation: the integral must not wind up
        assert sim.step(k * 100 * MS, SP=100.0, PV=0.0)["XOUT"] == 10.0
    out = sim.step(200 * 100 * MS, SP=0.0, PV=5.0)["XOUT"]
    # I was clamped at 10; now I += 1 * -5 * 0.1 / 0.1 = -5 -> 5; P = -5 -> OUT = 0 (not still 10)
    assert out == pytest.approx(0.0)


def test_pid_manual_to_auto_is_bumpless() -> None:
    sim = BlockSim("PID", const=dict(KP=2.0, TR=1000))
    for k in range(10):
        assert sim.step(k * 100 * MS, AUTO=False, X0=30.0, SP=50.0, PV=40.0)["XOUT"] == 30.0
    first_auto = sim.step(1000 * MS, AUTO=True, SP=50.0, PV=40.0)["XOUT"]
    # the output continues from 30: only this cycle's integral increment is added (2 * 10 * 0.1 / 1)
    assert first_auto == pytest.approx(30.0 + 2.0)


def test_pid_proportional_on_measurement_has_no_setpoint_kick() -> None:
    onm = BlockSim("PID", const=dict(KP=2.0, TR=1000, PONM=True))
    one = BlockSim("PID", const=dict(KP=2.0, TR=1000, PONM=False))
    for k in range(5):
        onm.step(k * 100 * MS, SP=10.0, PV=10.0)
        one.step(k * 100 * MS, SP=10.0, PV=10.0)
    kick_m = onm.step(500 * MS, SP=20.0, PV=10.0)["XOUT"]
    kick_e = one.step(500 * MS, SP=20.0, PV=10.0)["XOUT"]
    assert kick_e == pytest.approx(2 * 10 + 2 * 10 * 0.1)   # proportional jump on the setpoint step
    assert kick_m == pytest.approx(2 * 10 * 0.1)            # only the integral moves
    # on measurement: a PV change moves the output by -KP * dPV
    assert onm.step(600 * MS, SP=20.0, PV=11.0)["XOUT"] == pytest.approx(kick_m + 2 * 9 * 0.1 - 2 * 1.0)


def test_ramp_limits_the_rate_both_ways() -> None:
    sim = BlockSim("RAMP", const=dict(RATE=10.0, FALL=20.0))
    assert sim.step(0, IN=0.0) == {"OUT": 0.0, "BUSY": False}
    outs = [sim.step(k * 100 * MS, IN=5.0) for k in range(1, 7)]
    assert [pytest.approx(o["OUT"]) for o in outs] == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0]
    assert [o["BUSY"] for o in outs] == [True, True, True, True, False, False]
    downs = [sim.step(k * 100 * MS, IN=0.0)["OUT"] for k in range(7, 10)]
    assert downs == [pytest.approx(3.0), pytest.approx(1.0), 0.0]


def test_lpf_matches_the_discrete_first_order_filter() -> None:
    sim = BlockSim("LPF", const=dict(T=1000))
    assert sim.step(0, IN=0.0)["OUT"] == 0.0
    a = 0.1 / (1.0 + 0.1)
    for k in range(1, 40):
        assert sim.step(k * 100 * MS, IN=1.0)["OUT"] == pytest.approx(1 - (1 - a) ** k, rel=1e-12)


def test_moving_average() -> None:
    sim = BlockSim("MAVG", const=dict(N=4))
    got = [sim.step(k, IN=float(v))["OUT"] for k, v in enumerate([1, 2, 3, 4, 5, 6])]
    assert got == [1.0, 1.5, 2.0, 2.5, 3.5, 4.5]


def test_moving_average_does_not_drift() -> None:
    rnd = random.Random(7)
    sim = BlockSim("MAVG", const=dict(N=16))
    values = [rnd.uniform(-1e6, 1e6) for _ in range(20_000)]
    for k, v in enumerate(values):
        out = sim.step(k, IN=v)["OUT"]
    assert out == pytest.approx(sum(values[-16:]) / 16, rel=1e-12, abs=1e-6)


def test_z1_delays_by_one_cycle() -> None:
    sim = BlockSim("Z1")
    assert [sim.step(k, IN=v)["OUT"] for k, v in enumerate([1.0, 2.0, 3.0])] == [0.0, 1.0, 2.0]
