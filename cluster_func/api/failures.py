"""What the Python API raises when calls failed, the same for the local and the cluster API:
:class:`MapError` (every failed call as a :class:`Failure`, with its traceback text, and the
values of the rest), and :data:`MISSING` at the positions without a value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional


class _Missing:
    """The value at a failed position in :attr:`MapError.values`."""

    _instance = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "cluster_func.MISSING"

    def __reduce__(self) -> tuple:
        return _Missing, ()

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


@dataclass(frozen=True)
class Failure:
    """One failed call: its position in ``args``, a short ``repr`` of its arguments, the
    exception's type name and message, and the traceback text (from inside the worker)."""

    position: int
    args: str
    type: str
    message: str
    traceback: str

    def __str__(self) -> str:
        return f"position {self.position}: args {self.args}: {self.type}: {self.message}"


class MapError(Exception):
    """Some calls failed (or, from the cluster, have no value); every other call ran.

    ``failures``: ``{position: Failure}``, in position order.  ``values``: the list that
    :func:`map` would have returned, with :data:`MISSING` at the failed positions and at those
    without a value (for :func:`imap`, which has already yielded the values, it is empty).
    ``missing``: the positions that neither completed nor failed (a run from the cluster whose
    bins did not all finish).  ``completed``: ``{position: value}`` of the calls that completed.
    """

    def __init__(self, failures: Dict[int, Failure], values: List[Any], total: int,
                 missing: Optional[List[int]] = None) -> None:
        self.failures = dict(sorted(failures.items()))
        self.values = values
        self.total = total
        self.missing = sorted(missing or [])
        super().__init__(self._text())

    def __reduce__(self) -> tuple:
        return MapError, (self.failures, self.values, self.total, self.missing)

    @property
    def completed(self) -> Dict[int, Any]:
        gone = set(self.failures) | set(self.missing)
        return {p: v for p, v in enumerate(self.values) if p not in gone}

    def _text(self, listed: int = 10) -> str:
        fs = list(self.failures.values())
        lines = []
        if fs:
            lines.append(f"{len(fs)} of {self.total} calls failed (the others completed; their values are in "
                         f".values, the failures in .failures):")
            lines += [f"  {f}" for f in fs[:listed]]
            if len(fs) > listed:
                lines.append(f"  ... and {len(fs) - listed} more")
        if self.missing:
            shown = ", ".join(map(str, self.missing[:listed])) + (" ..." if len(self.missing) > listed else "")
            lines.append(f"{len(self.missing)} of {self.total} calls have no value (they did not run to the end: "
                         f"their positions are in .missing): {shown}")
        if fs:
            first = fs[0]
            lines.append(f"The traceback of the first, at position {first.position}:")
            lines.append(first.traceback.rstrip())
        return "\n".join(lines)
