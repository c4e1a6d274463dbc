# Part of edged.cext.control: the ProcessImage, C arrays of value/quality/timestamp per slot
# behind a single-writer seqlock.
# Threads: exactly one writer per image. The input image is written by the asyncio thread
# (ProcessImage.write, which copies the Python values into C buffers and then runs the seqlock
# write with the GIL released) and read by the cycle threads (image_read_slots, nogil, never
# blocks: after IMAGE_READ_TRIES torn reads it gives up and the cycle keeps its previous inputs).
# An output image is written by its one cycle thread (image_write_from, nogil) and read by the
# asyncio thread (ProcessImage.snapshot, GIL released during the copy).
#
# Values are C doubles: bools are 0/1, integers are exact up to 2**53 in magnitude (larger ones
# are rounded to the nearest double); strings are never in the image.

from libc.stdlib cimport calloc, free
from libc.string cimport memset

cdef enum:
    IMAGE_READ_TRIES = 64

ctypedef struct Image:
    uint64_t seq
    int32_t n
    double* val
    uint8_t* q
    int64_t* ts


cdef Image* image_new(int32_t n) noexcept nogil:
    cdef Image* im = <Image*>calloc(1, sizeof(Image))
    if im == NULL:
        return NULL
    cdef int32_t m = n if n > 0 else 1
    im.n = n
    im.val = <double*>calloc(m, sizeof(double))
    im.q = <uint8_t*>calloc(m, sizeof(uint8_t))
    im.ts = <int64_t*>calloc(m, sizeof(int64_t))
    if im.val == NULL or im.q == NULL or im.ts == NULL:
        image_free(im)
        return NULL
    memset(im.q, 2, m)   # nothing read yet: bad quality
    return im


cdef void image_free(Image* im) noexcept nogil:
    if im != NULL:
        free(im.val)
        free(im.q)
        free(im.ts)
        free(im)


cdef void image_write_batch(Image* im, int32_t* slots, double* vals, uint8_t* qs, int64_t* ts,
                            uint8_t* has_value, int count) noexcept nogil:
    """Seqlock write of `count` slots (single writer). A slot without a value keeps its old one."""
    cdef uint64_t s = ctl_load_rlx(&im.seq)
    cdef int i
    cdef int32_t k
    ctl_store_rlx(&im.seq, s + 1)
    ctl_fence_rel()
    for i in range(count):
        k = slots[i]
        if has_value[i]:
            im.val[k] = vals[i]
        im.q[k] = qs[i]
        im.ts[k] = ts[i]
    ctl_store_rel(&im.seq, s + 2)


cdef void image_write_from(Image* im, double* ws, uint8_t* wq, int32_t* ws_idx, int count,
                           int64_t ts) noexcept nogil:
    """Seqlock write of slots 0..count-1 from workspace indices (single writer: a cycle thread)."""
    cdef uint64_t s = ctl_load_rlx(&im.seq)
    cdef int i
    ctl_store_rlx(&im.seq, s + 1)
    ctl_fence_rel()
    for i in range(count):
        im.val[i] = ws[ws_idx[i]]
        im.q[i] = wq[ws_idx[i]]
        im.ts[i] = ts
    ctl_store_rel(&im.seq, s + 2)


cdef void image_write_vals(Image* im, double* vals, int count) noexcept nogil:
    """Seqlock write of the values of slots 0..count-1 (single writer; quality and time untouched)."""
    cdef uint64_t s = ctl_load_rlx(&im.seq)
    cdef int i
    ctl_store_rlx(&im.seq, s + 1)
    ctl_fence_rel()
    for i in range(count):
        im.val[i] = vals[i]
    ctl_store_rel(&im.seq, s + 2)


cdef bint image_read_slots(Image* im, int32_t* slots, int count, double* v, uint8_t* q,
                           int tries) noexcept nogil:
    """Consistent copy of some slots; False when every try saw a concurrent write."""
    cdef uint64_t s1, s2
    cdef int i, t
    cdef int32_t k
    for t in range(tries):
        s1 = ctl_load_acq(&im.seq)
        if s1 & 1:
            continue
        for i in range(count):
            k = slots[i]
            v[i] = im.val[k]
            q[i] = im.q[k]
        ctl_fence_acq()
        s2 = ctl_load_rlx(&im.seq)
        if s1 == s2:
            return True
    return False


cdef class ProcessImage:
    """C arrays of value (double), quality (uint8) and source time (int64 ns), one slot per tag."""

    cdef Image* im
    cdef int32_t* _slots
    cdef double* _vals
    cdef uint8_t* _qs
    cdef int64_t* _ts
    cdef uint8_t* _has
    cdef int _cap

    def __cinit__(self, int n):
        if n < 0:
            raise ValueError(f"expected a slot count >= 0, found {n}")
        self.im = image_new(n)
        if self.im == NULL:
            raise MemoryError()
        self._cap = 0

    def __dealloc__(self):
        image_free(self.im)
        free(self._slots); free(self._vals); free(self._qs); free(self._ts); free(self._has)

    @property
    def size(self) -> int:
        """Number of slots."""
        return self.im.n

    cdef int _reserve(self, int n) except -1:
        if n <= self._cap:
            return 0
        free(self._slots); free(self._vals); free(self._qs); free(self._ts); free(self._has)
        self._slots = <int32_t*>calloc(n, sizeof(int32_t))
        self._vals = <double*>calloc(n, sizeof(double))
        self._qs = <uint8_t*>calloc(n, sizeof(uint8_t))
        self._ts = <int64_t*>calloc(n, sizeof(int64_t))
        self._has = <uint8_t*>calloc(n, sizeof(uint8_t))
        if not (self._slots and self._vals and self._qs and self._ts and self._has):
            self._cap = 0
            raise MemoryError()
        self._cap = n
        return 0

    def write(self, items) -> int:
        """Asyncio thread: write (slot, value or None, quality, ts_ns) items in one seqlock section.

        Values must be bool, int or float (None keeps the slot's value and only updates quality
        and time). Raises ValueError naming the first bad item before anything is written.
        Returns the number of slots written.
        """
        cdef list lst = list(items)
        cdef int n = len(lst), i = 0
        cdef int32_t slot
        self._reserve(n)
        for item in lst:
            slot_o, value, quality, ts = item
            slot = slot_o
            if slot < 0 or slot >= self.im.n:
                raise ValueError(f"expected a slot in 0..{self.im.n - 1}, found {slot}")
            if not 0 <= quality <= 255:
                raise ValueError(f"expected a quality 0..255, found {quality}")
            self._slots[i] = slot
            self._qs[i] = <uint8_t>quality
            self._ts[i] = ts
            if value is None:
                self._has[i] = 0
            elif isinstance(value, (bool, int, float)):
                self._has[i] = 1
                self._vals[i] = <double>value
            else:
                raise ValueError(f"expected a bool or number for slot {slot}, found {type(value).__name__}")
            i += 1
        with nogil:
            image_write_batch(self.im, self._slots, self._vals, self._qs, self._ts, self._has, n)
        return n

    def read(self, int slot):
        """(value, quality, ts_ns) of one slot, consistent with concurrent writes."""
        if slot < 0 or slot >= self.im.n:
            raise IndexError(f"expected a slot in 0..{self.im.n - 1}, found {slot}")
        return self.snapshot()[slot]

    def snapshot(self) -> list:
        """Every slot as (value, quality, ts_ns), from one consistent moment (waits out writers)."""
        cdef int n = self.im.n, i
        cdef uint64_t s1, s2
        cdef double* v = <double*>calloc(n + 1, sizeof(double))
        cdef uint8_t* q = <uint8_t*>calloc(n + 1, sizeof(uint8_t))
        cdef int64_t* t = <int64_t*>calloc(n + 1, sizeof(int64_t))
        try:
            if v == NULL or q == NULL or t == NULL:
                raise MemoryError()
            with nogil:
                while True:
                    s1 = ctl_load_acq(&self.im.seq)
                    if s1 & 1:
                        continue
                    for i in range(n):
                        v[i] = self.im.val[i]
                        q[i] = self.im.q[i]
                        t[i] = self.im.ts[i]
                    ctl_fence_acq()
                    s2 = ctl_load_rlx(&self.im.seq)
                    if s1 == s2:
                        break
            return [(v[i], q[i], t[i]) for i in range(n)]
        finally:
            free(v); free(q); free(t)
