"""``.jsonl``: JSON Lines, one ``{"pos": 17, "value": 0.93}`` a line (``pandas.read_json(PATH,
lines=True)`` reads it).  Tuples become lists; NumPy scalars and arrays become numbers and lists
(anything with ``tolist()``); a value JSON cannot hold makes that call fail, with its type named
(never a silent ``repr``).  JSON object keys must be strings: a dict whose keys would become equal
strings makes the call fail (``{1: "a", "1": "b"}`` would otherwise come back as one key).
"""

import json
from json.encoder import encode_basestring_ascii
from math import isfinite
from typing import Any, BinaryIO, Iterator, Optional, Sequence, Tuple

from .base import Report, ResultsFormat, ValueNotWritable, register

_INT_LINE = b'{"pos":%d,"value":%d}\n'
_TEXT_LINE = '{"pos":%d,"value":%s}\n'
_FLOAT_LINE = '{"pos":%d,"value":%r}\n'


def _pairs(positions: Sequence[int], values: Sequence[Any]) -> tuple:
    """(positions[0], values[0], positions[1], values[1], ...): the arguments of a batch's format."""
    n = len(values)
    out: list = [None] * (2 * n)
    out[0::2] = positions[:n]
    out[1::2] = values
    return tuple(out)


def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # NumPy scalars and arrays
    if tolist is not None and callable(tolist):
        return tolist()
    t = type(value)
    name = t.__qualname__ if t.__module__ in ("builtins", "__cluster_func_target__") else \
        f"{t.__module__}.{t.__qualname__}"
    raise TypeError(f"the value returned is a {name}, "
                    f"which JSON cannot hold: return numbers, strings, lists or dicts, or write the "
                    f"results as pickles with --results PATH.pkl")


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is True or k is False or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    return float.__repr__(k) if isinstance(k, float) else str(k)


def _check_keys(value: Any) -> None:
    """JSON turns dict keys into strings: refuse a dict where two keys would become one."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if len({_json_key(k) for k in v}) < len(v):
                keys = [k for k in v if not isinstance(k, str)][:3]
                raise ValueNotWritable(
                    f"the value returned holds a dict whose keys {', '.join(map(repr, keys))} become the same "
                    f"JSON strings as other keys of it (JSON keys are strings), so one would be lost: return "
                    f"distinct string keys, or write the results as pickles with --results PATH.pkl")
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(x for x in v if isinstance(x, (dict, list, tuple)))


_dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


def value_text(value: Any) -> str:
    """The JSON text of a value (what json.dumps writes, without spaces)."""
    t = type(value)
    try:
        # The usual scalars without building an encoder per call.
        if t is int:
            return int.__repr__(value)
        if t is float and isfinite(value):
            return float.__repr__(value)
        if t is str:
            return encode_basestring_ascii(value)
        text = _dumps(value)
        if "{" in text:  # a dict somewhere: its keys must stay apart once JSON made them strings
            _check_keys(value)
        return text
    except (TypeError, ValueError) as e:
        raise ValueNotWritable(str(e)) from None


@register
class JsonLines(ResultsFormat):
    name = "jsonl"
    extension = ".jsonl"

    def encode(self, pos: int, value: Any) -> bytes:
        return (_TEXT_LINE % (pos, value_text(value))).encode("utf-8", "surrogatepass")

    def encode_batch(self, positions: Sequence[int], values: Sequence[Any], skip: Sequence[int] = (),
                     report: Optional[Report] = None) -> bytes:
        # A batch of one type of scalar, the usual case (return score), is formatted at once:
        # what value_text would write for each, without a function call per value.
        if not skip and values:
            kinds = set(map(type, values))
            if len(kinds) == 1:
                kind = kinds.pop()
                if kind is int:
                    return (_INT_LINE * len(values)) % _pairs(positions, values)
                if kind is float and all(map(isfinite, values)):
                    return ((_FLOAT_LINE * len(values)) % _pairs(positions, values)).encode("ascii")
                if kind is str:
                    texts = list(map(encode_basestring_ascii, values))
                    return ((_TEXT_LINE * len(values)) % _pairs(positions, texts)).encode("ascii")
        return super().encode_batch(positions, values, skip, report)

    def split(self, data: bytes) -> Iterator[Tuple[int, bytes]]:
        for line in data.split(b"\n")[:-1]:
            yield int(line[7:line.index(b",", 7)]), line + b"\n"

    def moved(self, record: bytes, pos: int) -> bytes:
        return b'{"pos":%d' % pos + record[record.index(b",", 7):]

    def decode(self, data: bytes) -> Iterator[Tuple[int, Any]]:
        for line in data.split(b"\n")[:-1]:
            r = json.loads(line)
            yield r["pos"], r["value"]

    def read(self, f: BinaryIO) -> Iterator[Optional[Tuple[int, Any]]]:
        """``(position, value)`` of each record of an open results file; None for one that
        cannot be read (torn, or not a record): the next line is read on."""
        for line in f:
            try:
                rec = json.loads(line)
                if not (isinstance(rec, dict) and type(rec.get("pos")) is int and rec["pos"] >= 0 and "value" in rec):
                    raise ValueError
                if not line.endswith(b"\n"):
                    raise ValueError
            except (ValueError, UnicodeDecodeError, RecursionError):  # (RecursionError: nested too deep)
                yield None
                continue
            yield rec["pos"], rec["value"]

    def records_of_file(self, data: bytes) -> Iterator[Optional[Tuple[Any, bytes]]]:
        """``(position, record bytes)`` of each line of a results file's bytes that has a position
        (whatever its type); None for a line that has none (torn)."""
        for line in data.split(b"\n")[:-1]:
            line += b"\n"
            try:
                pos = json.loads(line)["pos"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
                yield None  # a torn line
                continue
            yield pos, line
