# Part of edged.cext.control: the sample ring, a single-producer single-consumer lock-free queue
# from one cycle thread to the asyncio thread, with an eventfd wake-up.
# Threads: the producer is one cycle thread (ring_push / ring_publish, nogil, never blocks: a full
# ring counts the sample as dropped). The consumer is the asyncio thread (Ring.drain and Ring.arm,
# which hold the GIL only to build Python tuples; the C reads are plain atomics).
# Wake-up protocol: the consumer `arm()`s the ring after draining it; the producer writes the
# eventfd once per cycle only if the ring is armed (so an idle consumer is woken once, not per sample).

ctypedef struct RingEntry:
    int64_t ts
    double value
    int32_t pin
    uint8_t q

ctypedef struct Ring:
    uint64_t head        # written by the producer
    uint64_t tail        # written by the consumer
    uint64_t mask
    uint64_t dropped     # written by the producer
    uint64_t pushed      # written by the producer
    int fd               # eventfd to wake the consumer, or -1
    int armed            # 1: the consumer sleeps and wants a wake-up
    RingEntry* e


cdef inline bint ring_push(Ring* r, int64_t ts, int32_t pin, double value, uint8_t q) noexcept nogil:
    """Producer: append one sample; False (and counted as dropped) when the ring is full."""
    cdef uint64_t h = ctl_load_rlx(&r.head)
    cdef uint64_t t = ctl_load_acq(&r.tail)
    cdef RingEntry* x
    if h - t > r.mask:
        ctl_add_rlx(&r.dropped, 1)
        return False
    x = &r.e[h & r.mask]
    x.ts = ts
    x.value = value
    x.pin = pin
    x.q = q
    ctl_store_rel(&r.head, h + 1)
    ctl_add_rlx(&r.pushed, 1)
    return True


cdef inline void ring_publish(Ring* r) noexcept nogil:
    """Producer: wake the consumer if it asked for it (call once after a cycle's pushes)."""
    if r.fd >= 0 and ctl_load_int(&r.armed) and ctl_xchg_int(&r.armed, 0):
        ctl_wake(r.fd)


cdef class SampleRing:
    """SPSC ring of (ts_ns, pin, value, quality) from a cycle thread to asyncio; eventfd wake-up."""

    cdef Ring* r

    def __cinit__(self, int capacity=16384, int wake_fd=-1):
        cdef uint64_t cap = 1
        if capacity < 2 or capacity > (1 << 24):
            raise ValueError(f"expected a capacity between 2 and {1 << 24}, found {capacity}")
        while cap < <uint64_t>capacity:
            cap <<= 1
        self.r = <Ring*>calloc(1, sizeof(Ring))
        if self.r == NULL:
            raise MemoryError()
        self.r.e = <RingEntry*>calloc(cap, sizeof(RingEntry))
        if self.r.e == NULL:
            free(self.r)
            self.r = NULL
            raise MemoryError()
        ctl_prefault(self.r.e, cap * sizeof(RingEntry))   # no page fault on a first push
        self.r.mask = cap - 1
        self.r.fd = wake_fd
        self.r.armed = 1

    def __dealloc__(self):
        if self.r != NULL:
            free(self.r.e)
            free(self.r)

    @property
    def capacity(self) -> int:
        """Number of entries (a power of two)."""
        return self.r.mask + 1

    @property
    def dropped(self) -> int:
        """Samples dropped because the ring was full."""
        return ctl_load_rlx(&self.r.dropped)

    @property
    def pushed(self) -> int:
        """Samples accepted since creation."""
        return ctl_load_rlx(&self.r.pushed)

    def __len__(self) -> int:
        return ctl_load_acq(&self.r.head) - ctl_load_rlx(&self.r.tail)

    def push(self, int64_t ts, int32_t pin, double value, int q) -> bool:
        """Producer side for tests and tools (the cycle thread pushes from C)."""
        cdef bint ok = ring_push(self.r, ts, pin, value, <uint8_t>q)
        ring_publish(self.r)
        return ok

    def drain(self, int max_items=65536) -> list:
        """Consumer (asyncio thread): take up to max_items as (ts_ns, pin, value, quality) tuples."""
        cdef uint64_t t = ctl_load_rlx(&self.r.tail)
        cdef uint64_t h = ctl_load_acq(&self.r.head)
        cdef uint64_t n = h - t, i
        cdef RingEntry* x
        cdef list out = []
        if n > <uint64_t>max_items:
            n = max_items
        for i in range(n):
            x = &self.r.e[(t + i) & self.r.mask]
            out.append((x.ts, x.pin, x.value, x.q))
        ctl_store_rel(&self.r.tail, t + n)
        return out

    def arm(self) -> bool:
        """Consumer: ask for a wake-up on the next publish; True if samples are already waiting."""
        ctl_store_int(&self.r.armed, 1)
        ctl_fence_sc()
        return ctl_load_acq(&self.r.head) != ctl_load_rlx(&self.r.tail)
