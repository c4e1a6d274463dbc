# Part of edged.cext.control: the function block interpreter. A program is a flat array of block
# records (op code, input and output indices into a double workspace, state); one loop runs them.
# Threads: run_block / run_blocks are called by a cycle thread (or by Program.step in tests) and
# run without the GIL; they touch no Python object and allocate nothing.
# Semantics follow IEC 61131-3 where it defines the block (edges on R_EDGE inputs start with
# memory FALSE, so a counter input already TRUE on the first cycle counts once, and F_TRIG gives
# one pulse on the first cycle when CLK is FALSE, exactly as the standard's reference code).
# Time pins (PT, ET, TR, TD, T) are in milliseconds; `now` is CLOCK_MONOTONIC nanoseconds.

from libc.math cimport fabs

cdef enum:
    BLK_MAX_IN = 10
    BLK_MAX_OUT = 4

cdef enum:
    OP_AND = 1
    OP_OR = 2
    OP_XOR = 3
    OP_NOT = 4
    OP_GT = 10
    OP_GE = 11
    OP_LT = 12
    OP_LE = 13
    OP_EQ = 14
    OP_NE = 15
    OP_R_TRIG = 20
    OP_F_TRIG = 21
    OP_TON = 30
    OP_TOF = 31
    OP_TP = 32
    OP_CTU = 40
    OP_CTD = 41
    OP_CTUD = 42
    OP_SR = 50
    OP_RS = 51
    OP_ADD = 60
    OP_SUB = 61
    OP_MUL = 62
    OP_DIV = 63
    OP_MIN = 64
    OP_MAX = 65
    OP_LIMIT = 66
    OP_SEL = 67
    OP_MOVE = 68
    OP_SCALE = 69
    OP_PID = 80
    OP_RAMP = 81
    OP_LPF = 82
    OP_MAVG = 83
    OP_Z1 = 90
    OP_QUALITY = 91
    OP_HEARTBEAT = 92

OPCODES = {
    "AND": OP_AND, "OR": OP_OR, "XOR": OP_XOR, "NOT": OP_NOT, "GT": OP_GT, "GE": OP_GE, "LT": OP_LT,
    "LE": OP_LE, "EQ": OP_EQ, "NE": OP_NE, "R_TRIG": OP_R_TRIG, "F_TRIG": OP_F_TRIG, "TON": OP_TON,
    "TOF": OP_TOF, "TP": OP_TP, "CTU": OP_CTU, "CTD": OP_CTD, "CTUD": OP_CTUD, "SR": OP_SR, "RS": OP_RS,
    "ADD": OP_ADD, "SUB": OP_SUB, "MUL": OP_MUL, "DIV": OP_DIV, "MIN": OP_MIN, "MAX": OP_MAX,
    "LIMIT": OP_LIMIT, "SEL": OP_SEL, "MOVE": OP_MOVE, "SCALE": OP_SCALE, "PID": OP_PID,
    "RAMP": OP_RAMP, "LPF": OP_LPF, "MAVG": OP_MAVG, "Z1": OP_Z1, "QUALITY": OP_QUALITY,
    "HEARTBEAT": OP_HEARTBEAT,
}
"""Block type name -> interpreter op code (checked against edged.control.blocks_catalog)."""

cdef enum:
    F_STARTED = 1     # the block has run at least once (dt is valid)
    F_BAD = 2         # an input has bad quality since bad_since

cdef enum:
    Q_GOOD = 0
    Q_UNCERTAIN = 1
    Q_BAD = 2

cdef double COUNTER_MAX = 9007199254740992.0   # 2**53: counters stay exact doubles

ctypedef struct Blk:
    int32_t op
    int32_t nin                 # inputs used (extensible blocks: the connected ones)
    int32_t nout
    int32_t flags
    int32_t inp[BLK_MAX_IN]
    int32_t out[BLK_MAX_OUT]
    double s[4]                 # state
    int64_t t0                  # timer start (monotonic ns)
    int64_t last_ns             # time of the previous step
    int64_t bad_since
    int64_t bad_after_ns
    int32_t heap                # MAVG: offset of its buffer in the program heap
    int32_t heap_n              # MAVG: N
    int32_t safe_mask           # bit k: output k has a safe value
    double safe[BLK_MAX_OUT]


cdef inline double _clamp(double x, double lo, double hi) noexcept nogil:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


cdef inline bint _timer_done(int64_t elapsed, double pt_ms) noexcept nogil:
    return <double>elapsed >= pt_ms * 1e6


cdef void run_block(Blk* b, double* ws, uint8_t* wq, double* heap, int64_t now) noexcept nogil:
    """Step one block at monotonic time `now` (ns)."""
    cdef int32_t* I = b.inp
    cdef int32_t* O = b.out
    cdef double* s = b.s
    cdef int op = b.op
    cdef int i, k
    cdef uint8_t qual = Q_GOOD
    cdef double x, y, h, acc, dt, pt, el, e, p, d, u, lo, hi, dpv
    cdef bint c, q, inp, eu, ed
    cdef double* buf

    for i in range(b.nin):
        if wq[I[i]] > qual:
            qual = wq[I[i]]
    if b.flags & F_STARTED:
        dt = (now - b.last_ns) * 1e-9
    else:
        dt = 0.0

    if op == OP_AND:
        c = True
        for i in range(b.nin):
            c = c and ws[I[i]] != 0.0
        ws[O[0]] = c
    elif op == OP_OR:
        c = False
        for i in range(b.nin):
            c = c or ws[I[i]] != 0.0
        ws[O[0]] = c
    elif op == OP_XOR:
        c = False
        for i in range(b.nin):
            c = c ^ (ws[I[i]] != 0.0)
        ws[O[0]] = c
    elif op == OP_NOT:
        ws[O[0]] = ws[I[0]] == 0.0
    elif op == OP_GT or op == OP_GE or op == OP_LT or op == OP_LE:
        x = ws[I[0]]
        y = ws[I[1]]
        h = ws[I[2]] if ws[I[2]] > 0.0 else 0.0
        if s[0] == 0.0:
            h = 0.0
        if op == OP_GT:
            q = x > y - h
        elif op == OP_GE:
            q = x >= y - h
        elif op == OP_LT:
            q = x < y + h
        else:
            q = x <= y + h
        s[0] = q
        ws[O[0]] = q
    elif op == OP_EQ or op == OP_NE:
        h = ws[I[2]] if ws[I[2]] > 0.0 else 0.0
        q = fabs(ws[I[0]] - ws[I[1]]) <= h
        ws[O[0]] = q if op == OP_EQ else not q
    elif op == OP_R_TRIG:
        c = ws[I[0]] != 0.0
        ws[O[0]] = c and s[0] == 0.0
        s[0] = c
    elif op == OP_F_TRIG:
        c = ws[I[0]] == 0.0
        ws[O[0]] = c and s[0] == 0.0
        s[0] = c
    elif op == OP_TON:
        inp = ws[I[0]] != 0.0
        pt = ws[I[1]] if ws[I[1]] > 0.0 else 0.0
        if not inp:
            s[0] = 0.0
            ws[O[0]] = 0.0
            ws[O[1]] = 0.0
        else:
            if s[0] == 0.0:
                s[0] = 1.0
                b.t0 = now
            if _timer_done(now - b.t0, pt):
                ws[O[0]] = 1.0
                ws[O[1]] = pt
            else:
                ws[O[0]] = 0.0
                ws[O[1]] = (now - b.t0) * 1e-6
    elif op == OP_TOF:
        # s[0]: timing, s[1]: Q, s[2]: ET, s[3]: IN of the previous cycle
        inp = ws[I[0]] != 0.0
        pt = ws[I[1]] if ws[I[1]] > 0.0 else 0.0
        if inp:
            s[0] = 0.0
            s[1] = 1.0
            s[2] = 0.0
        elif s[3] != 0.0:
            s[0] = 1.0
            b.t0 = now
        if not inp and s[0] != 0.0:
            if _timer_done(now - b.t0, pt):
                s[0] = 0.0
                s[1] = 0.0
                s[2] = pt
            else:
                s[2] = (now - b.t0) * 1e-6
        s[3] = inp
        ws[O[0]] = s[1]
        ws[O[1]] = s[2]
    elif op == OP_TP:
        # s[0]: pulsing, s[2]: ET, s[3]: IN of the previous cycle
        inp = ws[I[0]] != 0.0
        pt = ws[I[1]] if ws[I[1]] > 0.0 else 0.0
        if s[0] == 0.0 and inp and s[3] == 0.0 and s[2] == 0.0:
            s[0] = 1.0
            b.t0 = now
        if s[0] != 0.0:
            if _timer_done(now - b.t0, pt):
                s[0] = 0.0
                s[2] = pt
            else:
                s[2] = (now - b.t0) * 1e-6
        if s[0] == 0.0 and not inp:
            s[2] = 0.0
        s[3] = inp
        ws[O[0]] = s[0]
        ws[O[1]] = s[2]
    elif op == OP_CTU:
        c = ws[I[0]] != 0.0
        eu = c and s[1] == 0.0
        s[1] = c
        if ws[I[1]] != 0.0:
            s[0] = 0.0
        elif eu and s[0] < COUNTER_MAX:
            s[0] += 1.0
        ws[O[0]] = s[0] >= ws[I[2]]
        ws[O[1]] = s[0]
    elif op == OP_CTD:
        c = ws[I[0]] != 0.0
        ed = c and s[1] == 0.0
        s[1] = c
        if ws[I[1]] != 0.0:
            s[0] = ws[I[2]]
        elif ed and s[0] > -COUNTER_MAX:
            s[0] -= 1.0
        ws[O[0]] = s[0] <= 0.0
        ws[O[1]] = s[0]
    elif op == OP_CTUD:
        c = ws[I[0]] != 0.0
        eu = c and s[1] == 0.0
        s[1] = c
        c = ws[I[1]] != 0.0
        ed = c and s[2] == 0.0
        s[2] = c
        if ws[I[2]] != 0.0:
            s[0] = 0.0
        elif ws[I[3]] != 0.0:
            s[0] = ws[I[4]]
        elif not (eu and ed):
            if eu and s[0] < COUNTER_MAX:
                s[0] += 1.0
            elif ed and s[0] > -COUNTER_MAX:
                s[0] -= 1.0
        ws[O[0]] = s[0] >= ws[I[4]]
        ws[O[1]] = s[0] <= 0.0
        ws[O[2]] = s[0]
    elif op == OP_SR:
        s[0] = (ws[I[0]] != 0.0) or (ws[I[1]] == 0.0 and s[0] != 0.0)
        ws[O[0]] = s[0]
    elif op == OP_RS:
        s[0] = (ws[I[1]] == 0.0) and (ws[I[0]] != 0.0 or s[0] != 0.0)
        ws[O[0]] = s[0]
    elif op == OP_ADD:
        acc = 0.0
        for i in range(b.nin):
            acc += ws[I[i]]
        ws[O[0]] = acc
    elif op == OP_SUB:
        ws[O[0]] = ws[I[0]] - ws[I[1]]
    elif op == OP_MUL:
        acc = 1.0
        for i in range(b.nin):
            acc *= ws[I[i]]
        ws[O[0]] = acc
    elif op == OP_DIV:
        if ws[I[1]] == 0.0:
            qual = Q_BAD
            ws[O[0]] = s[0]
        else:
            s[0] = ws[I[0]] / ws[I[1]]
            ws[O[0]] = s[0]
    elif op == OP_MIN:
        acc = ws[I[0]]
        for i in range(1, b.nin):
            if ws[I[i]] < acc:
                acc = ws[I[i]]
        ws[O[0]] = acc
    elif op == OP_MAX:
        acc = ws[I[0]]
        for i in range(1, b.nin):
            if ws[I[i]] > acc:
                acc = ws[I[i]]
        ws[O[0]] = acc
    elif op == OP_LIMIT:
        x = ws[I[1]]
        if x > ws[I[2]]:
            x = ws[I[2]]
        if x < ws[I[0]]:
            x = ws[I[0]]
        ws[O[0]] = x
    elif op == OP_SEL:
        ws[O[0]] = ws[I[2]] if ws[I[0]] != 0.0 else ws[I[1]]
    elif op == OP_MOVE:
        ws[O[0]] = ws[I[0]]
    elif op == OP_SCALE:
        x = ws[I[2]] - ws[I[1]]
        if x == 0.0:
            qual = Q_BAD
            ws[O[0]] = s[0]
        else:
            s[0] = ws[I[3]] + (ws[I[0]] - ws[I[1]]) * (ws[I[4]] - ws[I[3]]) / x
            ws[O[0]] = s[0]
    elif op == OP_PID:
        # inputs: AUTO PV SP X0 KP TR TD XMIN XMAX PONM; s[0]: integral term, s[1]: PV of previous step
        lo = ws[I[7]]
        hi = ws[I[8]]
        x = ws[I[1]]
        e = ws[I[2]] - x
        p = ws[I[4]] * e
        if not (b.flags & F_STARTED):
            s[1] = x
        if ws[I[0]] == 0.0:
            # manual: output X0, and track so that switching to AUTO is bumpless
            u = _clamp(ws[I[3]], lo, hi)
            s[0] = u if ws[I[9]] != 0.0 else u - p
        else:
            dpv = x - s[1]
            if ws[I[5]] > 0.0 and dt > 0.0:
                s[0] += ws[I[4]] * e * dt / (ws[I[5]] * 1e-3)
            if ws[I[9]] != 0.0:
                s[0] -= ws[I[4]] * dpv
                p = 0.0
            s[0] = _clamp(s[0], lo, hi)
            d = 0.0
            if ws[I[6]] > 0.0 and dt > 0.0:
                d = -ws[I[4]] * (ws[I[6]] * 1e-3) * dpv / dt
            u = _clamp(p + s[0] + d, lo, hi)
        s[1] = x
        ws[O[0]] = u
    elif op == OP_RAMP:
        x = ws[I[0]]
        if not (b.flags & F_STARTED) or ws[I[1]] <= 0.0:
            s[0] = x
            ws[O[1]] = 0.0
        else:
            hi = ws[I[1]] * dt
            lo = (ws[I[2]] if ws[I[2]] > 0.0 else ws[I[1]]) * dt
            if x - s[0] > hi:
                s[0] += hi
                ws[O[1]] = 1.0
            elif s[0] - x > lo:
                s[0] -= lo
                ws[O[1]] = 1.0
            else:
                s[0] = x
                ws[O[1]] = 0.0
        ws[O[0]] = s[0]
    elif op == OP_LPF:
        x = ws[I[0]]
        if not (b.flags & F_STARTED) or ws[I[1]] <= 0.0:
            s[0] = x
        elif dt > 0.0:
            s[0] += dt / (ws[I[1]] * 1e-3 + dt) * (x - s[0])
        ws[O[0]] = s[0]
    elif op == OP_MAVG:
        # s[0]: running sum, s[1]: count, s[2]: next position; the sum is recomputed on each wrap
        buf = heap + b.heap
        k = <int>s[2]
        x = ws[I[0]]
        if s[1] < b.heap_n:
            s[1] += 1.0
            s[0] += x
        else:
            s[0] += x - buf[k]
        buf[k] = x
        k += 1
        if k >= b.heap_n:
            k = 0
            acc = 0.0
            for i in range(b.heap_n):
                acc += buf[i]
            s[0] = acc
        s[2] = k
        ws[O[0]] = s[0] / s[1]
    elif op == OP_Z1:
        # OUT is the IN latched at the end of the previous cycle (run_latches)
        qual = <uint8_t>s[1]
        ws[O[0]] = s[0]
    elif op == OP_QUALITY:
        # the quality of IN as values; these outputs are facts, always of good quality
        ws[O[0]] = wq[I[0]] == Q_GOOD
        ws[O[1]] = wq[I[0]]
        qual = Q_GOOD
    elif op == OP_HEARTBEAT:
        # s[0]: Q; toggles every cycle (PT = 0) or every PT ms, on the cycle's own time base. A
        # device-side watchdog that sees Q stop toggling knows that edged (or its cycle) stopped.
        pt = ws[I[0]] if ws[I[0]] > 0.0 else 0.0
        if not (b.flags & F_STARTED):
            b.t0 = now
        elif pt == 0.0 or _timer_done(now - b.t0, pt):
            s[0] = 0.0 if s[0] != 0.0 else 1.0
            b.t0 = now
        ws[O[0]] = s[0]
        qual = Q_GOOD

    for k in range(b.nout):
        wq[O[k]] = qual
    if qual >= Q_BAD:
        if not (b.flags & F_BAD):
            b.flags |= F_BAD
            b.bad_since = now
        if b.safe_mask and now - b.bad_since >= b.bad_after_ns:
            for k in range(b.nout):
                if b.safe_mask & (1 << k):
                    ws[O[k]] = b.safe[k]
                    wq[O[k]] = Q_UNCERTAIN
    else:
        b.flags &= ~F_BAD
    b.flags |= F_STARTED
    b.last_ns = now


cdef inline void run_blocks(Blk* blk, int n, double* ws, uint8_t* wq, double* heap, int64_t now) noexcept nogil:
    """Step every block in execution order."""
    cdef int i
    for i in range(n):
        run_block(&blk[i], ws, wq, heap, now)


cdef inline void run_latches(Blk* blk, int32_t* z1, int nz1, double* ws, uint8_t* wq) noexcept nogil:
    """End of cycle: every Z1 block latches its input for the next cycle."""
    cdef int i
    cdef Blk* b
    for i in range(nz1):
        b = &blk[z1[i]]
        b.s[0] = ws[b.inp[0]]
        b.s[1] = wq[b.inp[0]]
