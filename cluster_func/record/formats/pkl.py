"""``.pkl``: a stream of pickles, each a tuple ``(pos, value)`` (load them one by one with
``pickle.load`` until EOFError), for values JSON cannot hold.  Reading one runs code from it:
read only the files you or your own runs wrote.
"""

import io
import pickle
import struct
from itertools import repeat
from typing import Any, BinaryIO, Dict, Iterator, Optional, Sequence, Tuple

from .base import Report, ResultsFormat, ValueNotWritable, register


# The records of a batch of ints, or of floats, made at once.  Each is the pickle (protocol 4)
# of ``(pos, value)``: PROTO 4, a FRAME of the rest, BININT pos (4 bytes, little-endian),
# BININT value or BINFLOAT value (8 bytes, big-endian), TUPLE2, MEMOIZE, STOP: all of one size,
# so the positions' and values' bytes (made by struct, in C) are laid into copies of one template,
# a byte lane at a time.  (pickle.dumps writes the same, but for ints below 65536, which it writes
# shorter.)
_FIXED = {int: (b"J", "<%di", 4), float: (b"G", ">%dd", 8)}
_templates: Dict[Tuple[bytes, int], bytes] = {}  # (value's opcode, records) -> the batch's template


def _template(code: bytes, size: int, n: int) -> bytes:
    """``n`` copies of the record of a value of ``size`` bytes (opcode ``code``), position and value 0."""
    key = (code, n)
    got = _templates.get(key)
    if got is None:
        body = b"J\0\0\0\0" + code + bytes(size) + b"\x86\x94."
        got = (b"\x80\x04\x95" + len(body).to_bytes(8, "little") + body) * n
        if len(_templates) >= 8:  # (batches come in few sizes: keep the last ones)
            _templates.clear()
        _templates[key] = got
    return got


def _fixed_size(positions: Sequence[int], values: Sequence[Any], code: bytes, fmt: str, size: int) -> bytes:
    n = len(values)
    pb = struct.pack("<%di" % n, *positions[:n])
    vb = struct.pack(fmt % n, *values)  # (struct.error for an int beyond 32 bits)
    out = bytearray(_template(code, size, n))
    width = len(out) // n if n else 0
    for j in range(4):
        out[12 + j::width] = pb[j::4]
    for j in range(size):
        out[17 + j::width] = vb[j::size]
    return bytes(out)


@register
class Pickles(ResultsFormat):
    name = "pkl"
    extension = ".pkl"
    unframed_after_torn = True

    def encode(self, pos: int, value: Any) -> bytes:
        try:
            return pickle.dumps((pos, value), 4)
        except Exception as e:  # noqa: BLE001
            raise ValueNotWritable(f"the value returned, a {type(value).__qualname__}, cannot be pickled: "
                                   f"{e}") from None

    def encode_batch(self, positions: Sequence[int], values: Sequence[Any], skip: Sequence[int] = (),
                     report: Optional[Report] = None) -> bytes:
        if not skip and values:
            kinds = set(map(type, values))
            fixed = _FIXED.get(kinds.pop()) if len(kinds) == 1 else None
            if fixed is not None:
                try:
                    return _fixed_size(positions, values, *fixed)
                except (OverflowError, struct.error):  # a position or an int beyond 32 bits
                    pass
        if not skip:
            try:  # each record its own pickle, as encode makes it, without a Python call per value
                return b"".join(map(pickle.dumps, zip(positions, values), repeat(4)))
            except Exception:  # noqa: BLE001 - find the values that cannot be pickled, one by one
                pass
        return super().encode_batch(positions, values, skip, report)

    def split(self, data: bytes) -> Iterator[Tuple[int, bytes]]:
        buf = io.BytesIO(data)
        start = 0
        while start < len(data):
            pos, _ = pickle.load(buf)
            end = buf.tell()
            yield pos, data[start:end]
            start = end

    def moved(self, record: bytes, pos: int) -> bytes:
        return pickle.dumps((pos, pickle.loads(record)[1]), 4)

    def decode(self, data: bytes) -> Iterator[Tuple[int, Any]]:
        buf = io.BytesIO(data)
        while buf.tell() < len(data):
            yield pickle.load(buf)

    def read(self, f: BinaryIO) -> Iterator[Optional[Tuple[int, Any]]]:
        """``(position, value)`` of each record of an open results file; None for the first one
        that cannot be read (a torn or foreign pickle: what follows cannot be framed), then no more."""
        data = f.read()
        buf = io.BytesIO(data)
        while buf.tell() < len(data):
            try:
                rec = pickle.load(buf)
                if not (isinstance(rec, tuple) and len(rec) == 2 and type(rec[0]) is int and rec[0] >= 0):
                    raise ValueError
            except Exception:  # noqa: BLE001 - a torn or foreign pickle: what follows cannot be framed
                yield None
                return
            yield rec

    def records_of_file(self, data: bytes) -> Iterator[Optional[Tuple[Any, bytes]]]:
        """``(position, record bytes)`` of each record of a results file's bytes; None for the first
        that cannot be read (torn: what follows cannot be framed), then no more."""
        try:
            for pos, item in self.split(data):
                yield pos, item
        except Exception:  # noqa: BLE001 - a torn pickle
            yield None
