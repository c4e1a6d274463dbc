# Part of edged.cext.control: the CycleThread, a native pthread that runs one program at a fixed
# period to absolute CLOCK_MONOTONIC deadlines.
# Threads: cycle_main is the body of the native thread; it never takes the GIL and touches no
# Python object (only the C structs of the program, the images and the ring, kept alive by the
# CycleThread object until the thread is joined). The CycleThread methods are called by the
# asyncio (or main) thread; stop() releases the GIL while it joins.

import time as _time

cdef enum:
    POLICY_SKIP = 0      # overrun: skip the missed cycles and stay on the period grid
    POLICY_DELAY = 1     # overrun: start the next cycle one period after the late one ended
    SLEEP_SLICE_NS = 100000000   # wake at least every 100 ms to notice stop()
    SLICE_NS = 100000            # EEVDF time slice asked for under normal scheduling (the minimum)

OVERRUN_POLICIES = {"skip": POLICY_SKIP, "delay": POLICY_DELAY}
"""Overrun policy name -> code."""

ctypedef struct Cycle:
    Prog* prog
    Image* inimg
    Image* outimg
    Ring* ring
    int64_t period
    int64_t base
    int priority
    int cpu
    int policy
    int stop
    int state            # 0 created, 1 running (setup done), 2 exited
    int prio_rc          # -1 not requested, 0 granted, else errno
    int cpu_rc
    int slice_rc         # normal scheduling: 0 short slice granted, else errno; -1 not tried
    uint64_t cycles
    uint64_t overruns
    uint64_t skipped
    ctl_hist* late
    ctl_hist* exec_


cdef void* cycle_main(void* arg) noexcept nogil:
    cdef Cycle* c = <Cycle*>arg
    cdef int64_t next_t, now, wake, end, target, missed
    ctl_set_name("edged-cycle")
    ctl_prefault_stack()
    c.prio_rc = ctl_set_fifo(c.priority) if c.priority > 0 else -1
    if c.priority <= 0 or c.prio_rc != 0:
        c.slice_rc = ctl_tune_other(SLICE_NS)
    c.cpu_rc = ctl_set_cpu(c.cpu) if c.cpu >= 0 else -1
    ctl_store_int(&c.state, 1)
    next_t = c.base
    while not ctl_load_int(&c.stop):
        now = ctl_mono()
        if now < next_t:
            target = next_t if next_t - now <= SLEEP_SLICE_NS else now + SLEEP_SLICE_NS
            ctl_sleep_until(target)
            continue
        wake = now
        ctl_hist_add(c.late, wake - next_t)
        prog_cycle(c.prog, c.inimg, c.outimg, c.ring, next_t, ctl_wall())
        end = ctl_mono()
        ctl_hist_add(c.exec_, end - wake)
        ctl_add_rlx(&c.cycles, 1)
        next_t += c.period
        if end > next_t:
            ctl_add_rlx(&c.overruns, 1)
            if c.policy == POLICY_SKIP:
                missed = (end - next_t) // c.period + 1
                ctl_add_rlx(&c.skipped, <uint64_t>missed)
                next_t += missed * c.period
            else:
                next_t = end + c.period
    ctl_store_int(&c.state, 2)
    return NULL


def lock_memory() -> int:
    """mlockall(MCL_CURRENT | MCL_FUTURE) for the whole process: 0 or the errno of the refusal."""
    cdef int rc
    with nogil:
        rc = ctl_mlockall()
    return rc


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in nanoseconds (the clock of cycle deadlines)."""
    return ctl_mono()


cdef class CycleThread:
    """Runs a Program every period on a native thread that never takes the GIL."""

    cdef Cycle c
    cdef pthread_t tid
    cdef bint started
    cdef bint joined
    cdef readonly Program program
    cdef readonly ProcessImage inputs
    cdef readonly ProcessImage outputs
    cdef readonly SampleRing ring

    def __cinit__(self, Program program, ProcessImage inputs, ProcessImage outputs, SampleRing ring,
                  int64_t period_ns, int priority=0, int cpu=-1, str overrun="skip"):
        if period_ns < 10000 or period_ns > 10_000_000_000:
            raise ValueError(f"expected a period between 10 us and 10 s, found {period_ns} ns")
        if not 0 <= priority <= 99:
            raise ValueError(f"expected a priority 0..99, found {priority}")
        if overrun not in OVERRUN_POLICIES:
            raise ValueError(f"expected an overrun policy {sorted(OVERRUN_POLICIES)}, found {overrun!r}")
        if inputs is not None and program.max_input_slot() >= inputs.size:
            raise ValueError("the input image is smaller than the program's input slots")
        if outputs is not None and outputs.size < program.p.nout:
            raise ValueError("the output image is smaller than the program's outputs")
        self.program = program
        self.inputs = inputs
        self.outputs = outputs
        self.ring = ring
        self.c.prog = program.p
        self.c.inimg = inputs.im if inputs is not None else NULL
        self.c.outimg = outputs.im if outputs is not None else NULL
        self.c.ring = ring.r if ring is not None else NULL
        self.c.period = period_ns
        self.c.priority = priority
        self.c.cpu = cpu
        self.c.policy = OVERRUN_POLICIES[overrun]
        self.c.prio_rc = -1
        self.c.cpu_rc = -1
        self.c.slice_rc = -1
        self.c.late = <ctl_hist*>calloc(1, sizeof(ctl_hist))
        self.c.exec_ = <ctl_hist*>calloc(1, sizeof(ctl_hist))
        if self.c.late == NULL or self.c.exec_ == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.started and not self.joined:
            ctl_store_int(&self.c.stop, 1)
            with nogil:
                pthread_join(self.tid, NULL)
        free(self.c.late)
        free(self.c.exec_)

    def start(self, base_ns=None, double setup_timeout_s=5.0) -> None:
        """Start the thread; the first cycle is due at base_ns (monotonic), default one period from now.

        Returns once the thread has applied its priority and affinity (see prio_errno, cpu_errno).
        """
        cdef int rc
        if self.started:
            raise RuntimeError("a CycleThread starts once")
        if self.program.attached:
            raise RuntimeError("the program already belongs to a cycle thread")
        self.c.base = ctl_mono() + self.c.period if base_ns is None else base_ns
        self.program.attached = True
        rc = pthread_create(&self.tid, NULL, cycle_main, &self.c)
        if rc != 0:
            self.program.attached = False
            raise OSError(rc, "pthread_create failed")
        self.started = True
        deadline = _time.monotonic() + setup_timeout_s
        while ctl_load_int(&self.c.state) == 0 and _time.monotonic() < deadline:
            _time.sleep(0.0005)

    def stop(self) -> None:
        """Ask the thread to stop and join it (at most one cycle plus 100 ms); idempotent."""
        if not self.started or self.joined:
            return
        ctl_store_int(&self.c.stop, 1)
        with nogil:
            pthread_join(self.tid, NULL)
        self.joined = True
        self.program.attached = False

    @property
    def running(self) -> bool:
        """True between start() and the end of the thread."""
        return self.started and ctl_load_int(&self.c.state) == 1

    @property
    def period_ns(self) -> int:
        """The cycle period."""
        return self.c.period

    @property
    def prio_errno(self) -> int:
        """-1: no real-time priority requested; 0: SCHED_FIFO granted; else the errno of the refusal."""
        return self.c.prio_rc

    @property
    def slice_errno(self) -> int:
        """Normal scheduling: 0 when the short EEVDF slice was granted, else an errno; -1 under SCHED_FIFO."""
        return self.c.slice_rc

    @property
    def cpu_errno(self) -> int:
        """-1: no affinity requested; 0: pinned; else the errno of the refusal."""
        return self.c.cpu_rc

    @property
    def cycles(self) -> int:
        """Cycles run."""
        return ctl_load_rlx(&self.c.cycles)

    @property
    def overruns(self) -> int:
        """Cycles that ended after the next cycle's deadline."""
        return ctl_load_rlx(&self.c.overruns)

    @property
    def skipped(self) -> int:
        """Cycles skipped by the skip policy."""
        return ctl_load_rlx(&self.c.skipped)

    def histogram(self, str which, les_ns) -> tuple:
        """Cumulative counts at each upper bound (ns), the total count and the sum (ns).

        which: "lateness" (wake-up time minus deadline) or "execution" (cycle run time).
        """
        cdef ctl_hist* h = self._hist(which)
        counts = [ctl_hist_count_le(h, <uint64_t>le) for le in les_ns]
        return counts, ctl_load_rlx(&h.total), ctl_load_rlx(&h.sum)

    def quantiles(self, str which, qs) -> list:
        """Quantiles (0..1) in ns, to 0.4 % (exact below 512 ns)."""
        cdef ctl_hist* h = self._hist(which)
        return [ctl_hist_quantile(h, q) for q in qs]

    def max_ns(self, str which) -> int:
        """Largest value recorded."""
        return ctl_load_rlx(&self._hist(which).max)

    cdef ctl_hist* _hist(self, str which) except NULL:
        if which == "lateness":
            return self.c.late
        if which == "execution":
            return self.c.exec_
        raise ValueError(f"expected 'lateness' or 'execution', found {which!r}")
