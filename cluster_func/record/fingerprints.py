"""Content fingerprints of calls: what the worker computes over the bytes it received, and
what a resume compares (see :mod:`cluster_func.record.journal` for where they are kept).

``c``, the content check of a batch: CRC-32 (8 hex digits) and the length (hex) of
``pickle.dumps(elements, 4)``.  ``d``, one 8-byte BLAKE2b digest per call, of the element
pickled with sets in a fixed order (so that sets of strings digest alike under any
``PYTHONHASHSEED``).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zlib
from typing import Any, Iterable

from ..core.arguments import Arguments


def content_check(data: Any) -> str:
    """The ``c`` check of a batch's pickled elements (bytes or a memoryview)."""
    return f"{zlib.crc32(data):08x}{len(data):x}"


def pickle_elements(elements: Iterable[Any]) -> memoryview:
    """``pickle.dumps(list(elements), 4)``, as a buffer: the bytes a batch travels as.  (A
    Pickler on a file writes big bytes objects straight through, 30 times faster than
    ``pickle.dumps`` for a 1 MB argument; the bytes are the same.)"""
    f = io.BytesIO()
    pickle.Pickler(f, 4).dump(elements if type(elements) is list else list(elements))
    return f.getbuffer()


def elements_check(elements: Iterable[Any]) -> str:
    return content_check(pickle_elements(elements))


_SET_TAG = "\x00cluster_func:set"
_ARGUMENTS_TAG = "\x00cluster_func:Arguments"


def _canonical(obj: Any) -> Any:
    """``obj`` with every set replaced by a tagged tuple in a fixed order: a set of strings
    iterates in an order that depends on PYTHONHASHSEED, and a call's digest must not."""
    t = type(obj)
    if t is tuple:
        return tuple(_canonical(x) for x in obj)
    if t is list:
        return [_canonical(x) for x in obj]
    if t is dict:
        return {k: _canonical(v) for k, v in obj.items()}
    if t is set or t is frozenset:
        items = sorted((_canonical(x) for x in obj), key=lambda x: pickle.dumps(x, 4))
        return (_SET_TAG, t.__name__, tuple(items))
    if t is Arguments:  # keywords in a fixed order: Arguments(a=1, b=2) is the call Arguments(b=2, a=1)
        keywords = tuple(sorted((k, _canonical(v)) for k, v in obj.kwargs.items()))
        return (_ARGUMENTS_TAG, _canonical(obj.args), keywords)
    return obj


def call_digest(element: Any) -> bytes:
    try:
        data = pickle.dumps(_canonical(element), 4)
    except Exception:  # noqa: BLE001 - fall back to repr for the odd unpicklable element
        data = repr(element).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).digest()
