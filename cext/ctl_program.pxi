# Part of edged.cext.control: a compiled cycle program (block records, workspace, input copy list,
# bound outputs, report-by-exception list) and one cycle of it.
# Threads: Program is built by the asyncio thread from a plain layout (edged.control.graph).
# prog_cycle runs without the GIL on the program's cycle thread; Program.step runs the same C code
# with the GIL released, for tests and tools, and is refused while a cycle thread owns the program.
# Retained block state is copied out by the cycle (prog_publish_retained, nogil, seqlock write) and
# read by the asyncio thread (Program.retained, GIL released while it copies); Program.restore
# loads it before the program is attached to a cycle thread.

ctypedef struct Prog:
    Blk* blk
    int nblk
    double* ws
    uint8_t* wq
    int nws
    double* heap
    int nheap
    int32_t* in_img          # tag inputs: image slot ...
    int32_t* in_ws           # ... copied into this workspace index
    double* in_v             # scratch for a consistent read
    uint8_t* in_q
    int nin
    int32_t* z1
    int nz1
    int32_t* out_ws          # bound outputs: workspace index of output image slot k
    int nout
    int32_t* rep_ws          # reported pins: workspace index of pin id k
    double* rep_v            # last reported value and quality
    double* rep_db           # deadband of pin id k (0: every change)
    uint8_t* rep_q
    int nrep
    int reported_once
    uint64_t stale_inputs    # cycles that kept the previous inputs (writer busy)
    int32_t* ret_blk         # retained blocks: block index k ...
    int nret
    double* ret_buf          # ... whose state (s[0..3], timer elapsed ns) is copied here each cycle
    Image* ret_img           # ... and published through this seqlock (read by the asyncio thread)


cdef void prog_free(Prog* p) noexcept nogil:
    if p == NULL:
        return
    free(p.blk); free(p.ws); free(p.wq); free(p.heap); free(p.in_img); free(p.in_ws); free(p.in_v)
    free(p.in_q); free(p.z1); free(p.out_ws); free(p.rep_ws); free(p.rep_v); free(p.rep_q)
    free(p.rep_db); free(p.ret_blk); free(p.ret_buf)
    image_free(p.ret_img)
    free(p)


cdef enum:
    RET_WIDTH = 5            # doubles per retained block: s[0..3] and the timer's elapsed ns


cdef void prog_publish_retained(Prog* p, int64_t now) noexcept nogil:
    """Copy the retained blocks' state out through a seqlock (never waits; one writer: this cycle)."""
    cdef int i, j
    cdef Blk* b
    cdef double* d = p.ret_buf
    for i in range(p.nret):
        b = &p.blk[p.ret_blk[i]]
        for j in range(4):
            d[i * RET_WIDTH + j] = b.s[j]
        # only a running timer's elapsed time is state (the rest would change every cycle for nothing)
        if (b.op == OP_TON or b.op == OP_TOF or b.op == OP_TP) and b.s[0] != 0.0:
            d[i * RET_WIDTH + 4] = <double>(now - b.t0)
        else:
            d[i * RET_WIDTH + 4] = 0.0
    image_write_vals(p.ret_img, d, p.nret * RET_WIDTH)


cdef inline bint _changed(double a, double b, double deadband) noexcept nogil:
    """a differs from the last reported b by at least the deadband (NaN to NaN is no change)."""
    if a != a or b != b:
        return (a != a) != (b != b)
    if deadband > 0.0:
        return fabs(a - b) >= deadband
    return a != b


cdef void prog_cycle(Prog* p, Image* inimg, Image* outimg, Ring* ring, int64_t now,
                     int64_t wall) noexcept nogil:
    """One cycle: consistent input copy, blocks in order, Z1 latches, outputs, samples on change."""
    cdef int i, k
    cdef bint pushed = False
    cdef double v
    cdef uint8_t q
    if inimg != NULL and p.nin > 0:
        if image_read_slots(inimg, p.in_img, p.nin, p.in_v, p.in_q, IMAGE_READ_TRIES):
            for i in range(p.nin):
                p.ws[p.in_ws[i]] = p.in_v[i]
                p.wq[p.in_ws[i]] = p.in_q[i]
        else:
            p.stale_inputs += 1
    run_blocks(p.blk, p.nblk, p.ws, p.wq, p.heap, now)
    run_latches(p.blk, p.z1, p.nz1, p.ws, p.wq)
    if p.nret > 0:
        prog_publish_retained(p, now)
    if outimg != NULL and p.nout > 0:
        image_write_from(outimg, p.ws, p.wq, p.out_ws, p.nout, wall)
    if ring != NULL:
        for i in range(p.nrep):
            k = p.rep_ws[i]
            v = p.ws[k]
            q = p.wq[k]
            if not p.reported_once or q != p.rep_q[i] or _changed(v, p.rep_v[i], p.rep_db[i]):
                if ring_push(ring, wall, i, v, q):
                    p.rep_v[i] = v
                    p.rep_q[i] = q
                    pushed = True
        p.reported_once = 1
        if pushed:
            ring_publish(ring)


cdef class Program:
    """A compiled cycle program; build it with edged.control.graph, run it with a CycleThread.

    Layout arguments (all indices are workspace indices, 0..nws-1):
      blocks:     [(op, [input idx...], [output idx...], heap_n, bad_after_ns, {output k: safe value})]
      consts:     [(idx, value)]            constants (quality good)
      tag_inputs: [(image slot, idx)]       copied from the input ProcessImage each cycle
      outputs:    [idx]                     published into output image slot k
      reports:    [idx]                     reported on change as pin id k
      deadbands:  [float]                   per reported pin: report only moves of at least this much
      retain:     [block index]             blocks whose state is copied out every cycle (retained())
    """

    cdef Prog* p
    cdef public bint attached

    def __cinit__(self, int nws, list blocks, list consts, list tag_inputs, list outputs, list reports,
                  list deadbands=None, list retain=None):
        cdef int i, k, heap = 0
        cdef Blk* b
        cdef Prog* p
        self.p = <Prog*>calloc(1, sizeof(Prog))
        if self.p == NULL:
            raise MemoryError()
        p = self.p
        if nws < 0:
            raise ValueError("expected nws >= 0")
        p.nws = nws
        p.ws = <double*>calloc(nws + 1, sizeof(double))
        p.wq = <uint8_t*>calloc(nws + 1, sizeof(uint8_t))
        p.nblk = len(blocks)
        p.blk = <Blk*>calloc(p.nblk + 1, sizeof(Blk))
        p.nin = len(tag_inputs)
        p.in_img = <int32_t*>calloc(p.nin + 1, sizeof(int32_t))
        p.in_ws = <int32_t*>calloc(p.nin + 1, sizeof(int32_t))
        p.in_v = <double*>calloc(p.nin + 1, sizeof(double))
        p.in_q = <uint8_t*>calloc(p.nin + 1, sizeof(uint8_t))
        p.nout = len(outputs)
        p.out_ws = <int32_t*>calloc(p.nout + 1, sizeof(int32_t))
        p.nrep = len(reports)
        p.rep_ws = <int32_t*>calloc(p.nrep + 1, sizeof(int32_t))
        p.rep_v = <double*>calloc(p.nrep + 1, sizeof(double))
        p.rep_q = <uint8_t*>calloc(p.nrep + 1, sizeof(uint8_t))
        p.rep_db = <double*>calloc(p.nrep + 1, sizeof(double))
        p.nz1 = sum(1 for blk in blocks if blk[0] == OP_Z1)
        p.z1 = <int32_t*>calloc(p.nz1 + 1, sizeof(int32_t))
        if not (p.ws and p.wq and p.blk and p.in_img and p.in_ws and p.in_v and p.in_q and p.out_ws
                and p.rep_ws and p.rep_v and p.rep_q and p.rep_db and p.z1):
            raise MemoryError()

        def idx(value) -> int:
            i = int(value)
            if not 0 <= i < nws:
                raise ValueError(f"expected a workspace index in 0..{nws - 1}, found {value}")
            return i

        k = 0
        for i, (op, ins, outs, heap_n, bad_after_ns, safe) in enumerate(blocks):
            if op not in OPCODES.values():
                raise ValueError(f"block {i}: unknown op code {op}")
            if len(ins) > BLK_MAX_IN or len(outs) > BLK_MAX_OUT or not outs:
                raise ValueError(f"block {i}: expected at most {BLK_MAX_IN} inputs and 1..{BLK_MAX_OUT} outputs")
            b = &p.blk[i]
            b.op = op
            b.nin = len(ins)
            b.nout = len(outs)
            for j, x in enumerate(ins):
                b.inp[j] = idx(x)
            for j, x in enumerate(outs):
                b.out[j] = idx(x)
            b.bad_after_ns = bad_after_ns
            for j, v in safe.items():
                if not 0 <= j < b.nout:
                    raise ValueError(f"block {i}: safe value for output {j} of {b.nout}")
                b.safe_mask |= 1 << j
                b.safe[j] = v
            if op == OP_MAVG:
                if heap_n < 1:
                    raise ValueError(f"block {i}: MAVG needs N >= 1")
                b.heap = heap
                b.heap_n = heap_n
                heap += heap_n
            if op == OP_Z1:
                p.z1[k] = i
                k += 1
        p.nheap = heap
        p.heap = <double*>calloc(heap + 1, sizeof(double))
        if p.heap == NULL:
            raise MemoryError()
        for i, v in consts:
            p.ws[idx(i)] = v
        for i, (slot, w) in enumerate(tag_inputs):
            p.in_img[i] = slot
            p.in_ws[i] = idx(w)
            p.wq[p.in_ws[i]] = Q_BAD   # not read yet
        for i, w in enumerate(outputs):
            p.out_ws[i] = idx(w)
        for i, w in enumerate(reports):
            p.rep_ws[i] = idx(w)
        if deadbands is not None:
            if len(deadbands) != p.nrep:
                raise ValueError(f"expected {p.nrep} deadbands, found {len(deadbands)}")
            for i, db in enumerate(deadbands):
                if not db >= 0.0:
                    raise ValueError(f"expected deadbands >= 0, found {db}")
                p.rep_db[i] = db
        retain = retain or []
        p.nret = len(retain)
        p.ret_blk = <int32_t*>calloc(p.nret + 1, sizeof(int32_t))
        p.ret_buf = <double*>calloc(p.nret * RET_WIDTH + 1, sizeof(double))
        p.ret_img = image_new(p.nret * RET_WIDTH)
        if p.ret_blk == NULL or p.ret_buf == NULL or p.ret_img == NULL:
            raise MemoryError()
        for i, bi in enumerate(retain):
            if not 0 <= bi < p.nblk:
                raise ValueError(f"expected a block index in 0..{p.nblk - 1} to retain, found {bi}")
            p.ret_blk[i] = bi

    def __dealloc__(self):
        prog_free(self.p)

    @property
    def nblocks(self) -> int:
        """Number of blocks."""
        return self.p.nblk

    @property
    def stale_inputs(self) -> int:
        """Cycles that kept their previous inputs because the image writer was busy."""
        return self.p.stale_inputs

    @property
    def nretained(self) -> int:
        """Number of retained blocks."""
        return self.p.nret

    def retained(self):
        """Asyncio thread: [(s0, s1, s2, s3, timer elapsed ns)] of each retained block, from one cycle.

        None before the first cycle has run (nothing to save yet). Never blocks the cycle thread: a
        read torn by a concurrent cycle is retried (GIL released).
        """
        cdef Image* im = self.p.ret_img
        cdef int n = im.n, i
        cdef uint64_t s1, s2
        cdef double* v
        if self.p.nret == 0 or ctl_load_acq(&im.seq) == 0:
            return None
        v = <double*>calloc(n + 1, sizeof(double))
        if v == NULL:
            raise MemoryError()
        try:
            with nogil:
                while True:
                    s1 = ctl_load_acq(&im.seq)
                    if s1 & 1:
                        continue
                    for i in range(n):
                        v[i] = im.val[i]
                    ctl_fence_acq()
                    s2 = ctl_load_rlx(&im.seq)
                    if s1 == s2:
                        break
            return [tuple(v[k * RET_WIDTH + j] for j in range(RET_WIDTH)) for k in range(self.p.nret)]
        finally:
            free(v)

    def restore(self, int k, state, double elapsed_ns) -> None:
        """Load retained block k (index into `retain`) before the program runs: s[0..3] and timer elapsed ns."""
        cdef Blk* b
        if self.attached:
            raise RuntimeError("the program is owned by a running cycle thread")
        if not 0 <= k < self.p.nret:
            raise IndexError(k)
        vals = [float(x) for x in state]
        if len(vals) != 4:
            raise ValueError(f"expected 4 state values, found {len(vals)}")
        b = &self.p.blk[self.p.ret_blk[k]]
        for j in range(4):
            b.s[j] = vals[j]
        b.t0 = ctl_mono() - <int64_t>elapsed_ns

    def max_input_slot(self) -> int:
        """Largest input image slot the program reads (-1 when none)."""
        return max([self.p.in_img[i] for i in range(self.p.nin)], default=-1)

    def get(self, int i):
        """(value, quality) at a workspace index."""
        if not 0 <= i < self.p.nws:
            raise IndexError(i)
        return self.p.ws[i], self.p.wq[i]

    def set(self, int i, double value, int quality=0):
        """Set a workspace value (tests: inputs of a program stepped without an image)."""
        if not 0 <= i < self.p.nws:
            raise IndexError(i)
        if self.attached:
            raise RuntimeError("the program is owned by a running cycle thread")
        self.p.ws[i] = value
        self.p.wq[i] = <uint8_t>quality

    def step(self, int64_t now_ns, ProcessImage image=None, ProcessImage out=None, SampleRing ring=None,
             wall_ns=None):
        """Run one cycle at monotonic time now_ns with the same C code the cycle thread runs."""
        cdef Image* im = image.im if image is not None else NULL
        cdef Image* om = out.im if out is not None else NULL
        cdef Ring* r = ring.r if ring is not None else NULL
        cdef int64_t wall = now_ns if wall_ns is None else wall_ns
        if self.attached:
            raise RuntimeError("the program is owned by a running cycle thread")
        if om != NULL and om.n < self.p.nout:
            raise ValueError(f"expected an output image of at least {self.p.nout} slots")
        if im != NULL and self.max_input_slot() >= im.n:
            raise ValueError(f"expected an input image of more than {self.max_input_slot()} slots")
        with nogil:
            prog_cycle(self.p, im, om, r, now_ns, wall)

    def bench(self, int64_t iterations, int64_t period_ns=1000000) -> int:
        """Run only the block interpreter `iterations` times (simulated clock); elapsed ns of wall time."""
        cdef int64_t i, t0, t1
        if self.attached:
            raise RuntimeError("the program is owned by a running cycle thread")
        with nogil:
            t0 = ctl_mono()
            for i in range(iterations):
                run_blocks(self.p.blk, self.p.nblk, self.p.ws, self.p.wq, self.p.heap, i * period_ns)
                run_latches(self.p.blk, self.p.z1, self.p.nz1, self.p.ws, self.p.wq)
            t1 = ctl_mono()
        return t1 - t0
