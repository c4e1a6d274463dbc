# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Modbus/TCP MBAP framing for edged's own TCP client: request frames, stream splitting, exact response checks."""
# Thread: called only from the asyncio event-loop thread (the Modbus TCP protocol's data_received and the
# driver's read/write coroutines), holding the GIL throughout; the header and check loops are plain C
# over the bytes of a frame and create no Python objects until they return.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy

# Result codes of check_read / check_write (the driver maps them to malformed kinds).
OK = 0
EXCEPTION = 1          # the device answered with a Modbus exception (code at frame[8])
BAD_UNIT = 2           # unit id differs from the request's
BAD_FUNCTION = 3       # function code is neither the request's nor its exception code
BAD_COUNT = 4          # byte count differs from the one the request implies
BAD_LENGTH = 5         # MBAP length differs from what the function code and byte count imply
BAD_ECHO = 6           # a write's echo differs from the request
KIND = ("ok", "exception", "unit", "function", "count", "length", "echo")

MAX_LENGTH = 254       # MBAP length field: unit id + PDU of at most 253 bytes


class FramingError(Exception):
    """The stream holds bytes that are no MBAP header: it cannot be resynchronised (drop the connection)."""


def read_request(int tid, int unit, int fc, int start, int count):
    """The 12-byte request of a read (fc 1..4): MBAP header and PDU."""
    cdef unsigned char b[12]
    b[0] = (tid >> 8) & 0xFF; b[1] = tid & 0xFF
    b[2] = 0; b[3] = 0
    b[4] = 0; b[5] = 6
    b[6] = unit & 0xFF; b[7] = fc & 0xFF
    b[8] = (start >> 8) & 0xFF; b[9] = start & 0xFF
    b[10] = (count >> 8) & 0xFF; b[11] = count & 0xFF
    return PyBytes_FromStringAndSize(<char*>b, 12)


def frame(int tid, int unit, bytes pdu):
    """A request frame: MBAP header (tid, protocol 0, length, unit) and the given PDU."""
    cdef Py_ssize_t n = len(pdu)
    if n < 1 or n > MAX_LENGTH - 1:
        raise ValueError(f"expected a PDU of 1..{MAX_LENGTH - 1} bytes, found {n}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 7 + n)
    cdef unsigned char* b = <unsigned char*>PyBytes_AS_STRING(out)
    b[0] = (tid >> 8) & 0xFF; b[1] = tid & 0xFF
    b[2] = 0; b[3] = 0
    b[4] = ((n + 1) >> 8) & 0xFF; b[5] = (n + 1) & 0xFF
    b[6] = unit & 0xFF
    memcpy(b + 7, PyBytes_AS_STRING(pdu), n)
    return out


cdef class Splitter:
    """Cuts a TCP byte stream into whole MBAP frames (by the header's length); keeps a partial tail."""

    cdef bytearray buf

    def __cinit__(self):
        self.buf = bytearray()

    @property
    def pending(self):
        """Bytes held that do not make a whole frame yet."""
        return len(self.buf)

    def clear(self):
        """Forget the partial tail (after a resynchronisation point)."""
        del self.buf[:]

    def feed(self, data):
        """Whole frames (bytes) found after appending data; FramingError on a header that cannot be one.

        A header is impossible when its protocol id is not 0 or its length is outside 2..254.
        """
        cdef const unsigned char[:] view
        cdef Py_ssize_t pos = 0, n, length
        cdef list out = []
        cdef object src
        if self.buf:
            self.buf += data
            src = bytes(self.buf)
        else:
            src = data if type(data) is bytes else bytes(data)
        view = src
        n = view.shape[0]
        while n - pos >= 7:
            if view[pos + 2] != 0 or view[pos + 3] != 0:
                del self.buf[:]
                raise FramingError(f"protocol id {view[pos + 2] * 256 + view[pos + 3]} (expected 0)")
            length = view[pos + 4] * 256 + view[pos + 5]
            if length < 2 or length > MAX_LENGTH:
                del self.buf[:]
                raise FramingError(f"MBAP length {length} (expected 2..{MAX_LENGTH})")
            if n - pos < 6 + length:
                break
            out.append(src[pos:pos + 6 + length] if (pos or n != 6 + length) else src)
            pos += 6 + length
        if pos == n:
            if self.buf:
                del self.buf[:]
        elif self.buf:
            del self.buf[:pos]
        else:
            self.buf += src[pos:]
        return out


def tid_of(bytes f):
    """Transaction id of a frame."""
    cdef const unsigned char* b = <const unsigned char*>PyBytes_AS_STRING(f)
    return (b[0] << 8) | b[1]


def check_read(bytes f, int unit, int fc, int nbytes):
    """OK, EXCEPTION or the first field of a read response that differs from the request.

    The frame's tid has been matched already; checked here: unit id, function code (or fc | 0x80 with
    exactly one code byte), byte count (== ``nbytes``) and MBAP length (== 3 + byte count).
    """
    cdef const unsigned char* b = <const unsigned char*>PyBytes_AS_STRING(f)
    cdef Py_ssize_t n = len(f)
    cdef int length = (b[4] << 8) | b[5]
    if n < 8 or n != 6 + length:
        return BAD_LENGTH
    if b[6] != unit:
        return BAD_UNIT
    if b[7] == (fc | 0x80):
        return EXCEPTION if length == 3 else BAD_LENGTH
    if b[7] != fc:
        return BAD_FUNCTION
    if n < 9:
        return BAD_LENGTH
    if b[8] != nbytes:
        return BAD_COUNT if length == 3 + b[8] else BAD_LENGTH
    if length != 3 + nbytes:
        return BAD_LENGTH
    return OK


def check_write(bytes f, int unit, bytes echo):
    """OK, EXCEPTION or the first field of a write response that differs from the expected echo PDU."""
    cdef const unsigned char* b = <const unsigned char*>PyBytes_AS_STRING(f)
    cdef Py_ssize_t n = len(f)
    cdef int length = (b[4] << 8) | b[5]
    cdef int fc = echo[0]
    if n < 8 or n != 6 + length:
        return BAD_LENGTH
    if b[6] != unit:
        return BAD_UNIT
    if b[7] == (fc | 0x80):
        return EXCEPTION if length == 3 else BAD_LENGTH
    if b[7] != fc:
        return BAD_FUNCTION
    if length != 1 + len(echo):
        return BAD_LENGTH
    if f[7:] != echo:
        return BAD_ECHO
    return OK


def exception_code(bytes f):
    """The exception code of an exception response (checked by check_read/check_write first)."""
    return f[8]
