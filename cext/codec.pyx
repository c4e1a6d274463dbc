# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Modbus register codec: decode a whole read response into tag values in one call, encode values for writes."""
# Thread: called only from the asyncio event-loop thread (the Modbus driver and its emulator), holding
# the GIL at entry. `Program.decode`/`Program.readings` copy the response into a C buffer, then run the
# per-value decode loop (word/byte order, sign, float reinterpretation, scale and offset) WITHOUT the
# GIL over C arrays; Python objects are created afterwards, with the GIL. `readings_from`/`decode_from`
# read a response frame's bytes directly (TCP fast path) and run the short decode loop with the GIL. Encoding holds the GIL (it
# handles Python ints of any size and strings). A Program is not shared between threads.

from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from libc.math cimport isfinite, fabs
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM

# Type codes: must match drivers/modbus/address.py (T_BIT ... T_COIL).
cdef enum:
    T_BIT = 0
    T_INT16 = 1
    T_UINT16 = 2
    T_INT32 = 3
    T_UINT32 = 4
    T_FLOAT32 = 5
    T_INT64 = 6
    T_UINT64 = 7
    T_FLOAT64 = 8
    T_STRING = 9
    T_COIL = 10

cdef int _WORDS[11]
_WORDS[:] = [1, 1, 1, 2, 2, 2, 4, 4, 4, 0, 1]
_TYPE_NAMES = ("bit", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64",
               "string", "coil")
cdef double FLOAT32_MAX = 3.4028234663852886e38

cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        PyObject* (*tp_alloc)(PyTypeObject*, Py_ssize_t) except NULL
    ctypedef struct PyObject


cdef inline object _reading(object cls, object tag, object value, object quality, object ts):
    """A 4-tuple of the tuple subclass ``cls`` (a NamedTuple), built in place as tuple.__new__ would."""
    cdef PyTypeObject* t = <PyTypeObject*>cls
    cdef object r = <object>t.tp_alloc(t, 4)
    Py_DECREF(r)  # tp_alloc returned a new reference; the <object> cast took another
    Py_INCREF(tag); PyTuple_SET_ITEM(r, 0, tag)
    Py_INCREF(value); PyTuple_SET_ITEM(r, 1, value)
    Py_INCREF(quality); PyTuple_SET_ITEM(r, 2, quality)
    Py_INCREF(ts); PyTuple_SET_ITEM(r, 3, ts)
    return r


def words(int type_code, int length=0):
    """Registers a value of a type occupies (strings: ``length`` characters, two per register)."""
    if type_code < 0 or type_code > T_COIL:
        raise ValueError(f"unknown type code {type_code}")
    if type_code == T_STRING:
        return (length + 1) // 2
    return _WORDS[type_code]


cdef inline uint16_t _swap(uint16_t w) noexcept nogil:
    return <uint16_t>((w >> 8) | (w << 8))


cdef inline uint64_t _combine(const uint16_t* r, int n, int order) noexcept nogil:
    """Big-endian integer from n registers read in a word/byte order (bit 0: words reversed, bit 1: bytes swapped)."""
    cdef uint64_t v = 0
    cdef int i
    cdef uint16_t w
    for i in range(n):
        w = r[n - 1 - i] if order & 1 else r[i]
        if order & 2:
            w = _swap(w)
        v = (v << 16) | w
    return v


cdef inline double _as_double(int t, uint64_t raw) noexcept nogil:
    """The numeric value of a raw word combination, as a double (for scaling)."""
    cdef float f
    cdef double d
    cdef uint32_t u32
    if t == T_INT16:
        return <double><int16_t><uint16_t>raw
    if t == T_UINT16:
        return <double><uint16_t>raw
    if t == T_INT32:
        return <double><int32_t><uint32_t>raw
    if t == T_UINT32:
        return <double><uint32_t>raw
    if t == T_FLOAT32:
        u32 = <uint32_t>raw
        memcpy(&f, &u32, 4)
        return <double>f
    if t == T_INT64:
        return <double><int64_t>raw
    if t == T_UINT64:
        return <double>raw
    if t == T_FLOAT64:
        memcpy(&d, &raw, 8)
        return d
    return 0.0


cdef class Program:
    """A precompiled decode program for one planned read: per value offset, type, order, bit, scale, offset.

    ``entries`` are tuples ``(offset, type_code, order, bit, length, scale, offset_eng)`` with offsets
    relative to the first register (or bit) of the request; ``span`` is the request's count.
    ``tags`` (optional, same order as entries) and ``factory`` (e.g. ``edged.tag.Reading``) let
    ``readings()`` build ``factory(tag, value, quality, ts_ns)`` tuples directly.
    """

    cdef int n
    cdef int span
    cdef bint bit_table
    cdef int* offs
    cdef int* types
    cdef int* orders
    cdef int* bits
    cdef int* lengths
    cdef char* scaled
    cdef double* scales
    cdef double* eoffs
    cdef uint64_t* raw
    cdef double* eng
    cdef uint16_t* regs
    cdef tuple tags
    cdef object factory

    def __cinit__(self, entries, int span, bint bit_table=False, tags=None, factory=None):
        cdef Py_ssize_t n = len(entries)
        self.n = <int>n
        self.span = span
        self.bit_table = bit_table
        self.offs = <int*>malloc(sizeof(int) * (n + 1))
        self.types = <int*>malloc(sizeof(int) * (n + 1))
        self.orders = <int*>malloc(sizeof(int) * (n + 1))
        self.bits = <int*>malloc(sizeof(int) * (n + 1))
        self.lengths = <int*>malloc(sizeof(int) * (n + 1))
        self.scaled = <char*>malloc(sizeof(char) * (n + 1))
        self.scales = <double*>malloc(sizeof(double) * (n + 1))
        self.eoffs = <double*>malloc(sizeof(double) * (n + 1))
        self.raw = <uint64_t*>malloc(sizeof(uint64_t) * (n + 1))
        self.eng = <double*>malloc(sizeof(double) * (n + 1))
        self.regs = <uint16_t*>malloc(sizeof(uint16_t) * (span + 1))
        if (not self.offs or not self.types or not self.orders or not self.bits or not self.lengths
                or not self.scaled or not self.scales or not self.eoffs or not self.raw or not self.eng
                or not self.regs):
            raise MemoryError()

    def __init__(self, entries, int span, bint bit_table=False, tags=None, factory=None):
        if span < 1:
            raise ValueError(f"expected a span of at least 1, found {span}")
        cdef int i = 0, off, t, order, bit, length, need
        cdef double scale, eoff
        for entry in entries:
            off, t, order, bit, length, scale, eoff = entry
            if t < 0 or t > T_COIL:
                raise ValueError(f"unknown type code {t}")
            if (t == T_COIL) != bool(bit_table):
                raise ValueError(f"type {_TYPE_NAMES[t]} does not fit a {'bit' if bit_table else 'register'} table")
            if order < 0 or order > 3:
                raise ValueError(f"unknown order {order}")
            if t == T_BIT and not 0 <= bit <= 15:
                raise ValueError(f"expected a bit 0..15, found {bit}")
            if t == T_STRING and length < 1:
                raise ValueError("expected a string length of at least 1")
            need = (length + 1) // 2 if t == T_STRING else _WORDS[t]
            if off < 0 or off + need > span:
                raise ValueError(f"entry {i} ({_TYPE_NAMES[t]} at {off}) does not fit a span of {span}")
            self.offs[i] = off
            self.types[i] = t
            self.orders[i] = order
            self.bits[i] = bit
            self.lengths[i] = length
            self.scales[i] = scale
            self.eoffs[i] = eoff
            self.scaled[i] = (scale != 1.0 or eoff != 0.0) and t not in (T_BIT, T_COIL, T_STRING)
            i += 1
        if tags is not None:
            self.tags = tuple(tags)
            if len(self.tags) != self.n:
                raise ValueError(f"expected {self.n} tags, found {len(self.tags)}")
        self.factory = factory

    def __dealloc__(self):
        free(self.offs); free(self.types); free(self.orders); free(self.bits); free(self.lengths)
        free(self.scaled); free(self.scales); free(self.eoffs); free(self.raw); free(self.eng); free(self.regs)

    @property
    def size(self):
        """Number of values the program decodes."""
        return self.n

    cdef int _load(self, data) except -1:
        """Copy a response (registers or bits) into the C buffer, checking its size and range."""
        cdef Py_ssize_t have = len(data)
        cdef Py_ssize_t i
        cdef long v
        if have < self.span:
            raise ValueError(f"expected at least {self.span} {'bits' if self.bit_table else 'registers'}, "
                             f"found {have}")
        if self.bit_table:
            for i in range(self.span):
                self.regs[i] = 1 if data[i] else 0
            return 0
        for i in range(self.span):
            v = data[i]
            if v < 0 or v > 0xFFFF:
                raise ValueError(f"expected register values 0..65535, found {v} at {i}")
            self.regs[i] = <uint16_t>v
        return 0

    cdef int _load_wire(self, bytes frame, Py_ssize_t pos) except -1:
        """Copy registers (big-endian) or packed bits (LSB first) straight from a response's bytes."""
        cdef const unsigned char* b = <const unsigned char*>PyBytes_AS_STRING(frame)
        cdef Py_ssize_t have = len(frame) - pos
        cdef Py_ssize_t need = (self.span + 7) // 8 if self.bit_table else 2 * self.span
        cdef Py_ssize_t i
        if pos < 0 or have < need:
            raise ValueError(f"expected {need} data bytes, found {max(have, 0)}")
        b += pos
        if self.bit_table:
            for i in range(self.span):
                self.regs[i] = (b[i >> 3] >> (i & 7)) & 1
        else:
            for i in range(self.span):
                self.regs[i] = <uint16_t>((b[2 * i] << 8) | b[2 * i + 1])
        return 0

    cdef void _run(self) noexcept nogil:
        """Decode every value into raw[] (and eng[] for scaled numerics); no Python objects."""
        cdef int i, t
        for i in range(self.n):
            t = self.types[i]
            if t == T_STRING:
                continue
            if t == T_BIT or t == T_COIL:
                self.raw[i] = self.regs[self.offs[i]]
                continue
            self.raw[i] = _combine(self.regs + self.offs[i], _WORDS[t], self.orders[i])
            if self.scaled[i]:
                self.eng[i] = _as_double(t, self.raw[i]) * self.scales[i] + self.eoffs[i]

    cdef object _value(self, int i):
        """The Python value of entry i after _run()."""
        cdef int t = self.types[i]
        cdef uint64_t r = self.raw[i]
        cdef float f
        cdef double d
        cdef uint32_t u32
        if self.scaled[i]:
            return self.eng[i]
        if t == T_UINT16:
            return <long>(<uint16_t>r)
        if t == T_INT16:
            return <long>(<int16_t><uint16_t>r)
        if t == T_FLOAT32:
            u32 = <uint32_t>r
            memcpy(&f, &u32, 4)
            return <double>f
        if t == T_INT32:
            return <long>(<int32_t><uint32_t>r)
        if t == T_UINT32:
            return <long long>(<uint32_t>r)
        if t == T_FLOAT64:
            memcpy(&d, &r, 8)
            return d
        if t == T_INT64:
            return <int64_t>r
        if t == T_UINT64:
            return r
        if t == T_BIT:
            return bool((r >> self.bits[i]) & 1)
        if t == T_COIL:
            return r != 0
        return self._string(i)

    cdef object _string(self, int i):
        cdef int length = self.lengths[i]
        cdef int off = self.offs[i]
        cdef bint swap = self.orders[i] & 2
        cdef bytearray out = bytearray(length)
        cdef int j
        cdef uint16_t w
        for j in range(length):
            w = self.regs[off + j // 2]
            if swap:
                w = _swap(w)
            out[j] = (w >> 8) if j % 2 == 0 else (w & 0xFF)
        cdef Py_ssize_t end = out.find(b"\0")
        if end >= 0:
            del out[end:]
        return out.decode("latin-1")

    def decode(self, data):
        """Values of every entry from a response's registers (or bits); ValueError if malformed."""
        self._load(data)
        with nogil:
            self._run()
        return [self._value(i) for i in range(self.n)]

    def readings(self, data, long long ts_ns, quality):
        """``factory(tag, value, quality, ts_ns)`` for every entry (needs tags and factory)."""
        if self.factory is None or self.tags is None:
            raise ValueError("readings() needs tags and a factory")
        self._load(data)
        with nogil:
            self._run()
        cdef list out = []
        cdef int i
        cdef object cls = self.factory
        cdef tuple tags = self.tags
        cdef object ts = ts_ns
        if isinstance(cls, type) and issubclass(cls, tuple):
            for i in range(self.n):
                out.append(_reading(cls, tags[i], self._value(i), quality, ts))
        else:
            for i in range(self.n):
                out.append(cls(tags[i], self._value(i), quality, ts))
        return out


    def readings_from(self, bytes frame, Py_ssize_t pos, long long ts_ns, quality):
        """Like ``readings()``, decoding the data bytes of a response frame that start at ``pos``."""
        if self.factory is None or self.tags is None:
            raise ValueError("readings_from() needs tags and a factory")
        self._load_wire(frame, pos)
        self._run()
        cdef list out = []
        cdef int i
        cdef object cls = self.factory
        cdef tuple tags = self.tags
        cdef object ts = ts_ns
        if isinstance(cls, type) and issubclass(cls, tuple):
            for i in range(self.n):
                out.append(_reading(cls, tags[i], self._value(i), quality, ts))
        else:
            for i in range(self.n):
                out.append(cls(tags[i], self._value(i), quality, ts))
        return out

    def readings_mbap(self, bytes frame, int unit, int fc, long long ts_ns, quality):
        """Readings of a whole Modbus/TCP read response (MBAP header first), or None unless it matches exactly.

        Exactly: total size = 6 + MBAP length, unit id, function code, byte count (the request's) and
        MBAP length = 3 + byte count. On None, ``edged.cext.mbap.check_read`` says which field differs.
        The transaction id is the caller's to match.
        """
        cdef const unsigned char* b = <const unsigned char*>PyBytes_AS_STRING(frame)
        cdef Py_ssize_t n = len(frame)
        cdef Py_ssize_t nbytes = (self.span + 7) // 8 if self.bit_table else 2 * self.span
        if n < 9 or n != 9 + nbytes or ((b[4] << 8) | b[5]) != 3 + nbytes or b[6] != unit or b[7] != fc \
                or b[8] != nbytes:
            return None
        return self.readings_from(frame, 9, ts_ns, quality)

    def decode_from(self, bytes frame, Py_ssize_t pos):
        """Like ``decode()``, from the data bytes of a response frame that start at ``pos``."""
        self._load_wire(frame, pos)
        self._run()
        return [self._value(i) for i in range(self.n)]


cdef inline object _check_int(value, object lo, object hi, str name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number for {name}, found {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer for {name}, found {value!r}")
        value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"value {value} is outside the range of {name} [{lo}, {hi}]")
    return value


def encode(int type_code, int order, value, int length=0, bint finite=True):
    """Registers (list of 0..65535) holding a raw value of a type in a word/byte order.

    Raises ValueError when the value does not fit the type (range, integer-ness, finite floats unless
    ``finite`` is false (emulators may hold NaN and infinities), string length in latin-1 characters).
    """
    cdef uint64_t v
    cdef int n, i, k
    cdef float f
    cdef double d
    cdef uint32_t u32
    cdef bytes b
    cdef list out
    cdef uint16_t w
    if type_code == T_STRING:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, found {value!r}")
        try:
            b = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"expected latin-1 characters, found {value!r}") from None
        if len(b) > length:
            raise ValueError(f"expected at most {length} characters, found {len(b)}")
        n = (length + 1) // 2
        b = b + b"\0" * (2 * n - len(b))
        out = []
        for i in range(n):
            w = (b[2 * i] << 8) | b[2 * i + 1]
            out.append(_swap(w) if order & 2 else w)
        return out
    if type_code == T_INT16:
        v = <uint16_t><int16_t>_check_int(value, -32768, 32767, "int16")
    elif type_code == T_UINT16:
        v = <uint16_t>_check_int(value, 0, 65535, "uint16")
    elif type_code == T_INT32:
        v = <uint32_t><int32_t>_check_int(value, -(2**31), 2**31 - 1, "int32")
    elif type_code == T_UINT32:
        v = <uint32_t>_check_int(value, 0, 2**32 - 1, "uint32")
    elif type_code == T_INT64:
        v = <uint64_t><int64_t>_check_int(value, -(2**63), 2**63 - 1, "int64")
    elif type_code == T_UINT64:
        v = <uint64_t>_check_int(value, 0, 2**64 - 1, "uint64")
    elif type_code == T_FLOAT32 or type_code == T_FLOAT64:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, found {value!r}")
        d = <double>float(value)
        if not isfinite(d) and finite:
            raise ValueError(f"expected a finite number, found {value!r}")
        if type_code == T_FLOAT32:
            if isfinite(d) and fabs(d) > FLOAT32_MAX:
                raise ValueError(f"value {value!r} is outside the range of float32")
            f = <float>d
            memcpy(&u32, &f, 4)
            v = u32
        else:
            memcpy(&v, &d, 8)
    else:
        raise ValueError(f"type {_TYPE_NAMES[type_code] if 0 <= type_code <= T_COIL else type_code} "
                         "is not encoded into registers")
    n = _WORDS[type_code]
    out = [0] * n
    for i in range(n):
        w = <uint16_t>((v >> (16 * (n - 1 - i))) & 0xFFFF)
        k = n - 1 - i if order & 1 else i
        out[k] = _swap(w) if order & 2 else w
    return out


def decode(int type_code, int order, registers, int length=0, int bit=0):
    """Raw value of one type from its registers (a convenience for the emulator and tests)."""
    cdef int span = (length + 1) // 2 if type_code == T_STRING else _WORDS[type_code]
    cdef Program p = Program([(0, type_code, order, bit, length, 1.0, 0.0)], span, type_code == T_COIL)
    return p.decode(registers)[0]
