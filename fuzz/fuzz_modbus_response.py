"""Fuzz target: Modbus/TCP response bytes through edged's own client path (MBAP splitter, checks, decoder).

``TARGET(data)`` cuts ``data`` into TCP segments, feeds them to ``edged.cext.mbap.Splitter`` and runs
every whole frame through the exact checks and the decoder of a fixed set of requests. The only error
it may raise is ``edged.cext.mbap.FramingError`` (the documented error of the splitter: a stream that
cannot be resynchronised). Anything else (IndexError, ValueError from the decoder on a frame the
checks passed, a crash) is a bug.
"""
from __future__ import annotations

from edged.cext import codec, mbap

# (unit, fc, count, program) of the requests a frame is checked against
_T_UINT16, _T_FLOAT32, _T_STRING, _T_COIL = 2, 5, 9, 10
_REQUESTS = [
    (1, 3, 4, codec.Program([(0, _T_UINT16, 0, 0, 0, 1.0, 0.0), (2, _T_FLOAT32, 1, 0, 0, 2.0, 1.0)], 4)),
    (1, 4, 125, codec.Program([(i * 2, _T_FLOAT32, 0, 0, 0, 1.0, 0.0) for i in range(62)], 125)),
    (9, 1, 11, codec.Program([(i, _T_COIL, 0, 0, 0, 1.0, 0.0) for i in range(11)], 11, True)),
    (0, 3, 3, codec.Program([(0, _T_STRING, 2, 0, 5, 1.0, 0.0)], 3)),
]


def TARGET(data: bytes) -> None:  # noqa: N802 - the fuzz harness convention
    """Feed the bytes as a response stream; raise nothing but mbap.FramingError."""
    splitter = mbap.Splitter()
    cut = data[0] % 8 + 1 if data else 1
    frames = []
    for i in range(0, len(data), cut):
        frames.extend(splitter.feed(data[i:i + cut]))
    for f in frames:
        mbap.tid_of(f)
        for unit, fc, count, program in _REQUESTS:
            nbytes = (count + 7) // 8 if fc in (1, 2) else 2 * count
            st = mbap.check_read(f, unit, fc, nbytes)
            if st == mbap.OK:
                program.decode_from(f, 9)
            elif st == mbap.EXCEPTION:
                mbap.exception_code(f)
            assert 0 <= st < len(mbap.KIND)
        mbap.check_write(f, 1, b"\x06\x00\x01\x00\x02")
        mbap.check_write(f, 1, b"\x10\x00\x01\x00\x02")
