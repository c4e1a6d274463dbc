# Part of edged.cext.control: C-level helpers (atomics, clocks, scheduling, eventfd, histograms).
# Threads: every function here is callable from any thread without the GIL (all are `nogil`,
# none touches a Python object). The histogram is written by exactly one thread (its cycle
# thread) and read with relaxed atomic loads by the asyncio thread at scrape time.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <time.h>
    #include <errno.h>
    #include <pthread.h>
    #include <sched.h>
    #include <unistd.h>
    #include <sys/mman.h>

    static inline uint64_t ctl_load_acq(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint64_t ctl_load_rlx(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void ctl_store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void ctl_store_rlx(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void ctl_add_rlx(uint64_t *p, uint64_t v) { __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED); }
    static inline void ctl_fence_acq(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void ctl_fence_rel(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static inline void ctl_fence_sc(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    static inline int ctl_xchg_int(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int ctl_load_int(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void ctl_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

    static inline int64_t ctl_now(clockid_t c) {
        struct timespec ts; clock_gettime(c, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    static inline int64_t ctl_mono(void) { return ctl_now(CLOCK_MONOTONIC); }
    static inline int64_t ctl_wall(void) { return ctl_now(CLOCK_REALTIME); }
    /* Sleep until an absolute CLOCK_MONOTONIC time; restarts after signals. */
    static inline int ctl_sleep_until(int64_t t) {
        struct timespec ts; int rc;
        ts.tv_sec = (time_t)(t / 1000000000LL); ts.tv_nsec = (long)(t % 1000000000LL);
        do { rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL); } while (rc == EINTR);
        return rc;
    }
    /* SCHED_FIFO for the calling thread: 0 or an errno value. */
    static int ctl_set_fifo(int prio) {
        struct sched_param sp; memset(&sp, 0, sizeof sp); sp.sched_priority = prio;
        return pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    }
    /* Pin the calling thread to one CPU: 0 or an errno value. */
    static int ctl_set_cpu(int cpu) {
        cpu_set_t set; CPU_ZERO(&set); CPU_SET(cpu, &set);
        return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    /* Normal scheduling only: wake-ups without the default 50 us timer slack, and (Linux >= 6.12,
       EEVDF) a short time slice, which lets the woken thread preempt CPU hogs sooner. 0 or errno
       of the slice request (older kernels refuse it; the thread runs anyway). */
    #include <sys/prctl.h>
    #include <sys/syscall.h>
    struct ctl_sched_attr { uint32_t size, sched_policy; uint64_t sched_flags; int32_t sched_nice;
                            uint32_t sched_priority; uint64_t sched_runtime, sched_deadline, sched_period; };
    static int ctl_tune_other(uint64_t slice_ns) {
        prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    #ifdef SYS_sched_setattr
        struct ctl_sched_attr a; memset(&a, 0, sizeof a);
        a.size = sizeof a; a.sched_policy = SCHED_OTHER; a.sched_runtime = slice_ns;
        return syscall(SYS_sched_setattr, 0, &a, 0) == 0 ? 0 : errno;
    #else
        return ENOSYS;
    #endif
    }
    /* Name the calling thread (ps -L, top -H, perf and ftrace show it): at most 15 characters. */
    static void ctl_set_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL); }
    /* Touch every page of a fresh buffer so that the cycle never takes the page fault of a first
       access (calloc returns untouched zero pages; a fault costs microseconds, more in a VM). */
    static void ctl_prefault(void *p, size_t n) {
        volatile char *c = (volatile char *)p;
        for (size_t i = 0; i < n; i += 4096) c[i] = 0;
        if (n) c[n - 1] = 0;
    }
    /* The same for the calling thread's stack, up to 64 KiB deeper than the caller. */
    static __attribute__((noinline)) void ctl_prefault_stack(void) {
        volatile char buf[65536];
        for (size_t i = 0; i < sizeof buf; i += 4096) buf[i] = 0;
    }
    static int ctl_mlockall(void) { return mlockall(MCL_CURRENT | MCL_FUTURE) == 0 ? 0 : errno; }
    static void ctl_wake(int fd) { uint64_t one = 1; ssize_t r = write(fd, &one, sizeof one); (void)r; }

    /* Log-linear histogram of non-negative int64 values (nanoseconds): exact below 512,
       then 256 sub-buckets per power of two (relative error below 0.4 %), up to 2^41 ns. */
    #define CTL_HSUB 256
    #define CTL_HEXACT 512
    #define CTL_HMAXEXP 41
    #define CTL_HN (CTL_HEXACT + (CTL_HMAXEXP - 9) * CTL_HSUB)
    typedef struct { uint64_t counts[CTL_HN]; uint64_t total; uint64_t sum; uint64_t max; } ctl_hist;

    static inline int ctl_hist_index(uint64_t v) {
        if (v < CTL_HEXACT) return (int)v;
        if (v >= (1ULL << CTL_HMAXEXP)) v = (1ULL << CTL_HMAXEXP) - 1;
        int e = 63 - __builtin_clzll(v);
        uint64_t sub = v >> (e - 8);
        return CTL_HEXACT + (e - 9) * CTL_HSUB + (int)(sub - CTL_HSUB);
    }
    static inline uint64_t ctl_hist_lo(int i) {
        if (i < CTL_HEXACT) return (uint64_t)i;
        int k = i - CTL_HEXACT; int e = k / CTL_HSUB + 9; uint64_t sub = (uint64_t)(k % CTL_HSUB + CTL_HSUB);
        return sub << (e - 8);
    }
    static inline uint64_t ctl_hist_hi(int i) {
        if (i < CTL_HEXACT) return (uint64_t)i + 1;
        int k = i - CTL_HEXACT; int e = k / CTL_HSUB + 9; uint64_t sub = (uint64_t)(k % CTL_HSUB + CTL_HSUB);
        return (sub + 1) << (e - 8);
    }
    /* Writer: the owning cycle thread only. */
    static inline void ctl_hist_add(ctl_hist *h, int64_t v) {
        uint64_t u = v < 0 ? 0 : (uint64_t)v;
        int i = ctl_hist_index(u);
        ctl_add_rlx(&h->counts[i], 1);
        ctl_add_rlx(&h->sum, u);
        if (u > ctl_load_rlx(&h->max)) ctl_store_rlx(&h->max, u);
        ctl_add_rlx(&h->total, 1);
    }
    /* Readers (any thread): number of values whose bucket lies wholly at or below le. */
    static uint64_t ctl_hist_count_le(ctl_hist *h, uint64_t le) {
        uint64_t c = 0;
        for (int i = 0; i < CTL_HN; i++) {
            if (ctl_hist_hi(i) > le + 1) break;
            c += ctl_load_rlx(&h->counts[i]);
        }
        return c;
    }
    /* The lower edge of the bucket holding quantile q (0..1), exact below 512 ns. */
    static uint64_t ctl_hist_quantile(ctl_hist *h, double q) {
        uint64_t n = 0;
        for (int i = 0; i < CTL_HN; i++) n += ctl_load_rlx(&h->counts[i]);
        if (n == 0) return 0;
        uint64_t rank = (uint64_t)(q * (double)n); if (rank >= n) rank = n - 1;
        uint64_t c = 0;
        for (int i = 0; i < CTL_HN; i++) {
            c += ctl_load_rlx(&h->counts[i]);
            if (c > rank) return ctl_hist_lo(i);
        }
        return ctl_load_rlx(&h->max);
    }
    """
    ctypedef int clockid_t
    uint64_t ctl_load_acq(uint64_t* p) nogil
    uint64_t ctl_load_rlx(uint64_t* p) nogil
    void ctl_store_rel(uint64_t* p, uint64_t v) nogil
    void ctl_store_rlx(uint64_t* p, uint64_t v) nogil
    void ctl_add_rlx(uint64_t* p, uint64_t v) nogil
    void ctl_fence_acq() nogil
    void ctl_fence_rel() nogil
    void ctl_fence_sc() nogil
    int ctl_xchg_int(int* p, int v) nogil
    int ctl_load_int(int* p) nogil
    void ctl_store_int(int* p, int v) nogil
    int64_t ctl_mono() nogil
    int64_t ctl_wall() nogil
    int ctl_sleep_until(int64_t t) nogil
    int ctl_set_fifo(int prio) nogil
    int ctl_set_cpu(int cpu) nogil
    int ctl_mlockall() nogil
    void ctl_set_name(const char* name) nogil
    void ctl_prefault(void* p, size_t n) nogil
    void ctl_prefault_stack() nogil
    int ctl_tune_other(uint64_t slice_ns) nogil
    void ctl_wake(int fd) nogil

    ctypedef struct ctl_hist:
        uint64_t total
        uint64_t sum
        uint64_t max
    void ctl_hist_add(ctl_hist* h, int64_t v) nogil
    uint64_t ctl_hist_count_le(ctl_hist* h, uint64_t le) nogil
    uint64_t ctl_hist_quantile(ctl_hist* h, double q) nogil

    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t* t, void* attr, void* (*fn)(void*) noexcept nogil, void* arg) nogil
    int pthread_join(pthread_t t, void** ret) nogil
