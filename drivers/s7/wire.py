"""S7 PDUs edged builds and checks itself: multi-item read, single-item write, setup communication.

Every field of a response is checked (protocol id, PDU type, sequence number, header error, parameter
and data lengths, function, item count, per item: return code, transport size, length against what
was requested, fill bytes, trailing bytes); anything else raises MalformedResponse.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_ID = 0x32
ROSCTR_JOB, ROSCTR_ACK, ROSCTR_ACK_DATA = 0x01, 0x02, 0x03
FN_READ, FN_WRITE, FN_SETUP = 0x04, 0x05, 0xF0
WL_BIT, WL_BYTE, WL_COUNTER, WL_TIMER = 0x01, 0x02, 0x1C, 0x1D
# data-section transport sizes: how the length field counts
TS_BIT, TS_BYTE, TS_INT, TS_REAL, TS_OCTET = 0x03, 0x04, 0x05, 0x07, 0x09
_LENGTH_IN_BITS = {TS_BYTE, TS_INT}
_LENGTH_IN_BYTES = {TS_BIT, TS_REAL, TS_OCTET}
ITEM_OK = 0xFF
HEADER = struct.Struct(">BBHHHH")
ACK_HEADER = struct.Struct(">BBHHHHBB")
ITEM_SPEC_LEN = 12
REQUEST_OVERHEAD = 12 + 2   # header (job, 10) + 2 reserve as the library's optimizer counts; function + count
RESPONSE_OVERHEAD = 12 + 2  # ack-data header 12 + function + count
ITEM_RESPONSE_HEADER = 4


class MalformedResponse(ValueError):
    """A response that does not match its request or the protocol; the connection must be dropped."""


class HeaderError(Exception):
    """The PLC refused the whole request: an error class/code in the response header."""

    def __init__(self, code: int) -> None:
        super().__init__(f"S7 header error 0x{code:04x}")
        self.code = code


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One address of a read or write request: area code, DB, start (byte or T/C element), count, word length."""

    area: int
    db: int
    start: int
    count: int
    wordlen: int = WL_BYTE
    bit: int = 0

    @property
    def byte_length(self) -> int:
        """Bytes the PLC returns for this item."""
        return 2 * self.count if self.wordlen in (WL_TIMER, WL_COUNTER) else (1 if self.wordlen == WL_BIT else self.count)

    def encode(self) -> bytes:
        """The 12-byte S7-ANY address specification."""
        if self.wordlen in (WL_TIMER, WL_COUNTER):
            address = self.start
        else:
            address = self.start * 8 + (self.bit if self.wordlen == WL_BIT else 0)
        if not 0 <= address <= 0xFFFFFF:
            raise ValueError(f"address {self.start} out of range")
        return struct.pack(">BBBBHHB", 0x12, 0x0A, 0x10, self.wordlen, self.count, self.db, self.area) + \
            address.to_bytes(3, "big")


def build_read(seq: int, items: list[ItemSpec]) -> bytes:
    """A read-var job PDU for up to 255 items."""
    if not 1 <= len(items) <= 255:
        raise ValueError("1..255 items per read request")
    params = bytes([FN_READ, len(items)]) + b"".join(i.encode() for i in items)
    return HEADER.pack(PROTOCOL_ID, ROSCTR_JOB, 0, seq & 0xFFFF, len(params), 0) + params


def build_write(seq: int, item: ItemSpec, data: bytes) -> bytes:
    """A write-var job PDU for one item (bit writes: word length BIT, one data byte 0/1)."""
    params = bytes([FN_WRITE, 1]) + item.encode()
    if item.wordlen == WL_BIT:
        ts, length = TS_BIT, len(data)
    elif item.wordlen in (WL_TIMER, WL_COUNTER):
        ts, length = TS_OCTET, len(data)
    else:
        ts, length = TS_BYTE, len(data) * 8
    body = struct.pack(">BBH", 0, ts, length) + data
    return HEADER.pack(PROTOCOL_ID, ROSCTR_JOB, 0, seq & 0xFFFF, len(params), len(body)) + params + body


def build_setup(seq: int, pdu_size: int) -> bytes:
    """The setup-communication job that negotiates the PDU size."""
    params = struct.pack(">BBHHH", FN_SETUP, 0, 1, 1, pdu_size)
    return HEADER.pack(PROTOCOL_ID, ROSCTR_JOB, 0, seq & 0xFFFF, len(params), 0) + params


def _ack(pdu: bytes, seq: int) -> tuple[int, int]:
    """Check the header of a response to job ``seq``; (parameter length, data length)."""
    if len(pdu) < 12:
        raise MalformedResponse(f"response of {len(pdu)} bytes is shorter than an S7 header")
    proto, rosctr, _reserved, rseq, plen, dlen, ecls, ecode = ACK_HEADER.unpack_from(pdu)
    if proto != PROTOCOL_ID:
        raise MalformedResponse(f"protocol id 0x{proto:02x}, expected 0x32")
    if rosctr not in (ROSCTR_ACK, ROSCTR_ACK_DATA):
        raise MalformedResponse(f"PDU type 0x{rosctr:02x}, expected an acknowledgement (2 or 3)")
    if rseq != seq & 0xFFFF:
        raise MalformedResponse(f"answer to request {rseq}, expected {seq & 0xFFFF} (a late answer)")
    if ecls or ecode:
        raise HeaderError((ecls << 8) | ecode)
    if rosctr != ROSCTR_ACK_DATA:
        raise MalformedResponse("acknowledgement without data and without an error")
    if 12 + plen + dlen != len(pdu):
        raise MalformedResponse(f"header says {plen}+{dlen} bytes of parameters and data, found {len(pdu) - 12}")
    return plen, dlen


def parse_read(pdu: bytes, seq: int, items: list[ItemSpec]) -> list[tuple[int, bytes | None]]:
    """Per requested item: (return code, data) with data None unless the code is 0xFF (success)."""
    plen, _dlen = _ack(pdu, seq)
    if plen != 2:
        raise MalformedResponse(f"read response parameters of {plen} bytes, expected 2")
    if pdu[12] != FN_READ:
        raise MalformedResponse(f"function 0x{pdu[12]:02x} in the answer to a read (0x04)")
    if pdu[13] != len(items):
        raise MalformedResponse(f"{pdu[13]} items in the answer, {len(items)} requested")
    out: list[tuple[int, bytes | None]] = []
    off, end = 14, len(pdu)
    last = len(items) - 1
    for i, item in enumerate(items):
        if off + ITEM_RESPONSE_HEADER > end:
            raise MalformedResponse(f"item {i} of the answer is missing")
        rc, ts, length = pdu[off], pdu[off + 1], (pdu[off + 2] << 8) | pdu[off + 3]
        off += ITEM_RESPONSE_HEADER
        if rc != ITEM_OK:
            if length != 0 and ts in _LENGTH_IN_BITS | _LENGTH_IN_BYTES:
                n = length // 8 if ts in _LENGTH_IN_BITS else length
                if off + n > end:
                    raise MalformedResponse(f"item {i} (error 0x{rc:02x}) declares {n} bytes past the end")
                off += n + (1 if n % 2 and i != last else 0)
            out.append((rc, None))
            continue
        if ts in _LENGTH_IN_BITS:
            if length % 8:
                raise MalformedResponse(f"item {i}: {length} bits is not whole bytes")
            n = length // 8
        elif ts in _LENGTH_IN_BYTES:
            n = length
        else:
            raise MalformedResponse(f"item {i}: transport size 0x{ts:02x} unknown")
        want = item.byte_length
        if n != want:
            raise MalformedResponse(f"item {i}: {n} bytes in the answer, {want} requested")
        if off + n > end:
            raise MalformedResponse(f"item {i}: {n} bytes declared, {end - off} present")
        out.append((rc, pdu[off:off + n]))
        off += n
        if n % 2 and i != last:
            if off >= end:
                raise MalformedResponse(f"item {i}: fill byte missing")
            off += 1
    if off != end:
        raise MalformedResponse(f"{end - off} trailing bytes after the last item")
    return out


def parse_write(pdu: bytes, seq: int) -> int:
    """The return code of a one-item write (0xFF: done)."""
    plen, dlen = _ack(pdu, seq)
    if plen != 2 or pdu[12] != FN_WRITE or pdu[13] != 1:
        raise MalformedResponse("write response parameters do not acknowledge one write item")
    if dlen != 1:
        raise MalformedResponse(f"write response data of {dlen} bytes, expected 1")
    return pdu[14]


def parse_setup(pdu: bytes, seq: int, requested: int) -> int:
    """The negotiated PDU size from a setup-communication response (checked: 64..requested)."""
    plen, dlen = _ack(pdu, seq)
    if plen != 8 or dlen != 0 or pdu[12] != FN_SETUP:
        raise MalformedResponse("setup-communication response parameters malformed")
    pdu_size = struct.unpack_from(">H", pdu, 18)[0]
    if not 64 <= pdu_size <= max(requested, 240) * 4:
        raise MalformedResponse(f"negotiated PDU size {pdu_size} is implausible")
    return min(pdu_size, requested) if pdu_size > requested else pdu_size
