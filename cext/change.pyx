# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Report by exception in C: which readings become samples (deadband, quality change, heartbeat).

Thread: called by the asyncio thread (Runtime.accept) for every batch of readings a scan delivers.
It holds the GIL throughout: it reads Reading tuples and builds Sample tuples, so it cannot run
without it; the per-slot state (last reported number, quality, time) lives in C arrays.

Semantics, per tag slot:
- the first reading always passes; a quality change always passes;
- numbers (int and float, not bool) with a deadband pass when |value - last reported| > deadband;
  without a deadband when they differ; NaN is one value (NaN after NaN is no change, NaN after a
  number is a change);
- anything else (bool, str, None) passes when it differs from the last reported value;
- an unchanged value passes again when ``heartbeat_s`` has elapsed since it was last reported.
"""
from libc.math cimport fabs, isnan
from libc.stdlib cimport calloc, free

from edged.tag import Sample

cdef object _tuple_new = tuple.__new__
cdef object _Sample = Sample


cdef class ChangeFilter:
    """Remembers the last reported value per tag slot and lets through only what changed (or heartbeats)."""

    cdef double* last_num
    cdef unsigned char* num_valid
    cdef signed char* last_q
    cdef long long* last_ts
    cdef list last_value
    cdef readonly Py_ssize_t slots
    cdef public long long heartbeat_ns
    cdef public long long suppressed

    def __cinit__(self, Py_ssize_t slots, double heartbeat_s=0.0):
        cdef Py_ssize_t n = slots if slots > 0 else 1
        self.slots = slots
        self.last_num = <double*>calloc(n, sizeof(double))
        self.num_valid = <unsigned char*>calloc(n, sizeof(unsigned char))
        self.last_q = <signed char*>calloc(n, sizeof(signed char))
        self.last_ts = <long long*>calloc(n, sizeof(long long))
        if self.last_num == NULL or self.num_valid == NULL or self.last_q == NULL or self.last_ts == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(n):
            self.last_q[i] = -1
        self.last_value = [None] * n
        self.heartbeat_ns = <long long>(heartbeat_s * 1e9)
        self.suppressed = 0

    def __dealloc__(self):
        free(self.last_num)
        free(self.num_valid)
        free(self.last_q)
        free(self.last_ts)

    def filter(self, readings, dict current=None) -> list:
        """The samples to emit for a batch of readings (``Reading(tag, value, quality, ts_ns)`` tuples).

        With ``current``, also store ``current[tag.key] = (value, quality, ts_ns)`` for every reading
        (the runtime's table of current values), saving a second pass over the batch.
        """
        cdef list out = []
        cdef Py_ssize_t s
        cdef int q
        cdef long long ts
        cdef double v, last, dbd
        cdef bint changed, numeric
        cdef long long hb = self.heartbeat_ns
        for r in readings:
            tag = r[0]
            value = r[1]
            q = r[2]
            ts = r[3]
            s = tag.slot
            if current is not None:
                current[tag.key] = (value, q, ts)
            if s < 0 or s >= self.slots:
                raise IndexError(f"tag {tag.key} has slot {s}, outside 0..{self.slots - 1}")
            t = type(value)
            numeric = t is float or t is int
            if numeric:
                try:
                    v = value
                except OverflowError:  # an int beyond a double: compare as Python objects
                    numeric = False
            changed = q != self.last_q[s]
            if not changed:
                if numeric and self.num_valid[s]:
                    last = self.last_num[s]
                    if isnan(v) or isnan(last):
                        changed = isnan(v) != isnan(last)
                    else:
                        dbd = tag.deadband
                        if dbd > 0.0:
                            changed = fabs(v - last) > dbd
                        elif t is int:
                            changed = value != self.last_value[s]  # exact beyond 2**53
                        else:
                            changed = v != last
                else:
                    changed = numeric != self.num_valid[s] or value != self.last_value[s]
                if not changed and hb and ts - self.last_ts[s] >= hb:
                    changed = True
            if changed:
                self.last_q[s] = q
                self.last_ts[s] = ts
                self.last_value[s] = value
                self.num_valid[s] = numeric
                if numeric:
                    self.last_num[s] = v
                out.append(_tuple_new(_Sample, (ts, tag.device, tag.name, value, q)))
            else:
                self.suppressed += 1
        return out
