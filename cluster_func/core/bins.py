"""Bin specifications and the rules that deal arguments into bins.

One parser serves ``--bins`` (``0-2,7/8``) and the position lists of ``--hash``
(``0-2,7``); one small function per binning rule serves both ``clum`` (to
filter the work) and ``cluf`` (to name jobs).
"""

from __future__ import annotations

import itertools
import operator
import re
from typing import Any, Callable, Iterable, Iterator, NamedTuple, NoReturn, Optional, Sequence, Tuple

from .arguments import Arguments
from .errors import UserError

_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


MAX_BINS = 1_000_000  # bins of one run: cluf's most jobs, and more than any machine count
MAX_POSITION = 99_999  # an argument position: no call has more arguments than that


def _sorted_positions(out: Iterable[int | str]) -> tuple[Any, ...]:
    """Integer positions in order, then keyword names in order (a stable order for the hash)."""
    return tuple(sorted(p for p in out if isinstance(p, int))) + tuple(sorted(p for p in out if isinstance(p, str)))


def parse_positions(text: Any, what: str = "position list", limit: int = MAX_POSITION,
                    beyond: Callable[[Any], str] | None = None, names: bool = False) -> tuple[Any, ...]:
    """Parse ``"0-2,7"`` into the sorted tuple ``(0, 1, 2, 7)``.

    Accepts an int or a list/tuple of ints too (as found in ``*_options`` dicts).  A number
    above ``limit`` is refused before any range is expanded, so a typed number never costs
    memory in proportion to it; ``beyond(n)`` gives the message for such a number.  With
    ``names``, an item may also be the name of a keyword argument (of the elements that are
    :class:`cluster_func.Arguments`): ``"0,scale"`` is ``(0, "scale")``, the names after the
    integers.
    """
    def too_big(n: object) -> NoReturn:
        raise UserError(beyond(n) if beyond is not None else
                        f"{what} {_short(str(text))}: {_short(str(n), quote=False)} is not an argument position "
                        f"(positions count the arguments of one call from 0, at most {limit:,}).")

    if isinstance(text, bool):
        raise UserError(f"{what} must be non-negative integers, not {text!r}.")
    if isinstance(text, int):
        text = str(text)
    if isinstance(text, (list, tuple)):
        out: set[int | str] = set()
        for item in text:
            out.update(parse_positions(item, what, limit, beyond, names))
        if not out:
            raise UserError(f"{what} is empty: give at least one non-negative integer.")
        return _sorted_positions(out)
    if not isinstance(text, str):
        raise UserError(f"{what} must be a string like '0-2,7' or a list of integers, not {text!r}.")
    out = set()
    for part in text.split(","):
        m = _ITEM.match(part)
        if not m and names and part.strip().isidentifier():
            out.add(part.strip())
            continue
        if not m:
            also = (" or names of keyword arguments (for elements that are cluster_func.Arguments), "
                    "e.g. '0,scale'") if names else ""
            raise UserError(
                f"{what} {text!r} does not parse: expected non-negative integers and inclusive "
                f"ranges separated by commas, e.g. '0', '0,3' or '0-2,7'{also}."
            )
        if max(len(g or "") for g in m.groups()) > 15:  # (int() of thousands of digits fails)
            too_big(max(m.groups(), key=lambda g: len(g or "")))
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserError(f"{what} {text!r}: the range {lo}-{hi} is empty (write it low-high).")
        if hi > limit:
            too_big(hi)
        out.update(range(lo, hi + 1))
    return _sorted_positions(out)


def _short(text: str, quote: bool = True, limit: int = 40) -> str:
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text) if quote else text


class BinSpec(NamedTuple):
    """Which bins (a sorted tuple) out of how many (``total``)."""

    bins: Tuple[int, ...]
    total: int

    def __str__(self) -> str:
        return f"{format_positions(self.bins)}/{self.total}"

    @property
    def is_everything(self) -> bool:
        return len(self.bins) == self.total


def format_positions(positions: Sequence[Any]) -> str:
    """Inverse of :func:`parse_positions`: ``(0, 1, 2, 7)`` -> ``"0-2,7"`` (keyword names last:
    ``(0, "scale")`` -> ``"0,scale"``)."""
    names = sorted(p for p in positions if isinstance(p, str))
    parts = []
    positions = sorted(p for p in positions if not isinstance(p, str))
    i = 0
    while i < len(positions):
        j = i
        while j + 1 < len(positions) and positions[j + 1] == positions[j] + 1:
            j += 1
        parts.append(str(positions[i]) if i == j else f"{positions[i]}-{positions[j]}")
        i = j + 1
    return ",".join(parts + names)


def parse_bin_spec(text: Any) -> BinSpec:
    """Parse ``"x/y"`` where x is a comma list of bins and inclusive ranges."""
    if isinstance(text, BinSpec):
        return text
    hint = (
        "A bin spec is 'x/y': do bins x out of y in total, bins numbered from 0 to y-1; "
        "x is a comma list of bins and ranges, e.g. '0/3', '0,1/3' or '0-2,7/8'."
    )
    if not isinstance(text, str) or text.count("/") != 1:
        raise UserError(f"Bin spec {text!r} does not parse. {hint}")
    left, right = text.split("/")
    right = right.strip()
    if not (right.isascii() and right.isdigit()):
        raise UserError(f"Bin spec {text!r} does not parse: {right!r} is not a number of bins. {hint}")
    if len(right) > 7 or int(right) > MAX_BINS:
        raise UserError(f"Bin spec {_short(text)}: {_short(right, quote=False)} bins is more than the {MAX_BINS:,} "
                        f"a run may have. Use fewer bins: a few per machine is plenty. {hint}")
    total = int(right)
    if total < 1:
        raise UserError(f"Bin spec {text!r}: the number of bins must be at least 1. {hint}")

    def beyond(n: object) -> str:
        return (f"Bin spec {_short(text)} names bin {_short(str(n), quote=False)}, but bins are numbered 0 to {total - 1} "
                f"when there are {total}. {hint}")
    try:
        bins = parse_positions(left, "bin list", limit=total - 1, beyond=beyond)
    except UserError as e:
        if str(e).startswith("Bin spec"):
            raise
        raise UserError(f"Bin spec {text!r} does not parse: {left!r} is not a list of bins. {hint}") from None
    return BinSpec(bins, total)


# --- the three binning rules -------------------------------------------------

def hash_key(values: Sequence[object]) -> bytes:
    """Stable digest of the ``str()`` of some values.

    Each string is length-prefixed, so ("1", "23") and ("12", "3") differ.
    """
    import hashlib  # here: only --hash needs it

    h = hashlib.blake2b(digest_size=8)
    for v in values:
        s = str(v).encode("utf-8", "surrogatepass")
        h.update(len(s).to_bytes(8, "little"))
        h.update(s)
    return h.digest()


def argument(args: Any, where: int | str) -> Any:
    """The argument of a call at an integer position or of a keyword name: ``args`` is the
    tuple of positional arguments or an :class:`cluster_func.Arguments`.  IndexError when
    there is no such position, KeyError when there is no such keyword argument."""
    if args.__class__ is Arguments:
        return args.get(where)
    if isinstance(where, str):
        raise KeyError(where)
    return args[where]


def hash_bin(args: Any, positions: Sequence[int | str], total: int) -> int:
    """Bin from a stable hash of ``str()`` of the arguments at ``positions`` (integer positions
    or keyword names).

    Raises IndexError (KeyError) when an element has no argument at a position (of a name).
    """
    return int.from_bytes(hash_key([argument(args, p) for p in positions]), "little") % total


def key_bin(args: Any, position: int | str, total: int) -> Optional[int]:
    """The argument at ``position`` (or of that keyword name) is the bin; None when it is not
    an int in [0, total)."""
    value = argument(args, position)
    if isinstance(value, bool):
        return None  # True/False are not bin numbers
    if not isinstance(value, int):
        try:
            value = operator.index(value)  # numpy integers and the like
        except TypeError:
            return None
    if 0 <= value < total:
        return value
    return None


# --- selecting the work of some bins -----------------------------------------

class SelectionCounts:
    """What selection passed over: elements no bin runs, elements too short to bin."""

    MAX_KEPT = 1000

    def __init__(self) -> None:
        self.bad_keys = 0
        self.first_bad_key: tuple[int, Any] | None = None
        self.bad_elements: list[tuple[int, Any, str]] = []  # (position, element, message): failed calls, reported by the runner
        self.more_bad_elements = 0  # beyond the first MAX_KEPT, only counted


def select(args: Iterable[Any], spec: BinSpec, hash_positions: Sequence[int | str] | None = None,
           key_position: int | str | None = None, counts: SelectionCounts | None = None) -> Work:
    """Yield ``(position, element)`` for the elements that fall in ``spec``'s bins.

    An element too short for its hash/key position is recorded in
    ``counts.bad_elements`` by the one bin that round-robin would give it, so
    exactly one machine reports it; a key out of range is counted in every bin.
    """
    counts = counts if counts is not None else SelectionCounts()
    total, chosen = spec.total, frozenset(spec.bins)
    if hash_positions is None and key_position is None and spec.is_everything:
        return Work(iter(args), 0, 1)  # the positions taken say how far args got
    # Elements are passed over here: a counter says how far args got when it raises.
    counter = itertools.count()
    counted = zip(counter, args)
    if hash_positions is None and key_position is None:
        if len(chosen) == 1:
            elements = map(operator.itemgetter(1), counted)
            return Work(itertools.islice(elements, spec.bins[0], None, total), spec.bins[0], total, counter)
        return Work(((i, e) for i, e in counted if i % total in chosen), counter=counter)
    return Work(_select_by_content(counted, total, chosen, hash_positions, key_position, counts), counter=counter)


class Work:
    """The selected elements, for the runner to take in batches.

    Either an iterator of elements at evenly spaced positions (``start``, ``step``),
    which costs nothing per element to track, or one of ``(position, element)`` pairs.
    """

    def __init__(self, iterator: Iterator[Any], start: int | None = None, step: int | None = None,
                 counter: Iterator[int] | None = None) -> None:
        self.iterator = iterator
        self.next_position: Any = start  # an int when step is given
        self.step = step
        self.counter = counter  # itertools.count() zipped before args, or None when start=0, step=1
        self.error_position: int | None = None  # the position args was producing when it raised
        self._produced: int | None = None

    def produced(self) -> int | None:
        """How many elements args produced, once the work is all taken (for 'args is empty')."""
        if self.counter is None:
            return self.next_position
        if self._produced is None:
            self._produced = next(self.counter) - 1  # zip advanced it once more at the end
        return self._produced

    def take(self, n: int) -> tuple[Sequence[int], list[Any], BaseException | None]:
        """Up to n elements as (positions, elements, error); positions is a range or a list.

        If the iterator raises, the elements it gave before are returned with the
        exception (list.extend keeps what it had appended), and it is finished.
        """
        got: list[Any] = []
        error = None
        try:
            got.extend(itertools.islice(self.iterator, n))
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's iterator failed: the runner reports it
            error = e
            self.iterator = iter(())
        if self.step is not None:
            first = self.next_position
            self.next_position = first + len(got) * self.step
            if error is not None:
                self.error_position = next(self.counter) - 1 if self.counter is not None else self.next_position
            return range(first, self.next_position, self.step), got, error
        if error is not None and self.counter is not None:
            self.error_position = next(self.counter) - 1
        if not got:
            return range(0), [], error
        positions, elements = map(list, zip(*got))
        return positions, elements, error

    def pairs(self) -> Iterator[tuple[int, Any]]:
        """All that is left as (position, element) pairs (for filters such as --resume)."""
        if self.step is None:
            return self.iterator
        return zip(itertools.count(self.next_position, self.step), self.iterator)


class RangeWork:
    """All of a ``range`` as the work, taken as slices of it: no list of elements is built, and a
    batch travels to its worker as a range (a few bytes) rather than as the pickle of its list.

    Only for a run without a journal: a journal's content check (``c``) is of the pickle of the
    batch's elements as a list, which a range does not pickle to."""

    def __init__(self, args: range) -> None:
        self.args = args
        self.size = len(args)
        self.next_position = 0
        self.error_position = None

    def produced(self) -> int:
        return self.next_position

    def take(self, n: int) -> tuple:
        first = self.next_position
        last = min(first + n, self.size)
        self.next_position = last
        return range(first, last), self.args[first:last], None


def missing_argument(a: Any, hash_positions: Sequence[int | str] | None, key_position: int | str | None) -> str:
    """Why the element ``a`` (a tuple or an Arguments) has no argument to bin by: the message."""
    wanted = hash_positions if hash_positions is not None else (key_position,)
    kwargs = a.kwargs if a.__class__ is Arguments else {}
    positional = a.args if a.__class__ is Arguments else a
    names = [p for p in wanted if isinstance(p, str) and p not in kwargs]
    if names:
        has = f"keyword arguments {', '.join(sorted(kwargs))}" if kwargs else "no keyword arguments"
        return (f"keyword argument {names[0]!r} does not exist: this call has {has} (give them with "
                f"cluster_func.Arguments(..., {names[0]}=...))")
    pos = max(p for p in wanted if isinstance(p, int))
    return (f"argument position {pos} does not exist: this call has {len(positional)} argument(s) "
            f"(positions count from 0)")


def _select_by_content(counted: Iterator[tuple[int, Any]], total: int, chosen: frozenset[int],
                       hash_positions: Sequence[int | str] | None, key_position: Any,
                       counts: SelectionCounts) -> Iterator[tuple[int, Any]]:
    for i, element in counted:
        a = element if isinstance(element, tuple) or element.__class__ is Arguments else (element,)
        try:
            if hash_positions is not None:
                b: int | None = hash_bin(a, hash_positions, total)
            else:
                b = key_bin(a, key_position, total)
        except (IndexError, KeyError):
            if i % total in chosen:
                if len(counts.bad_elements) >= SelectionCounts.MAX_KEPT:
                    counts.more_bad_elements += 1
                    continue
                counts.bad_elements.append((i, element, missing_argument(a, hash_positions, key_position)))
            continue
        if b is None:
            counts.bad_keys += 1
            if counts.first_bad_key is None:
                counts.first_bad_key = (i, argument(a, key_position))
            continue
        if b in chosen:
            yield i, element


def expected_count(args: Any, spec: BinSpec, mode: str) -> int | None:
    """How many calls the selection will hold, when that is known without iterating."""
    if mode != "round-robin":
        return None
    try:
        n = len(args)
    except Exception:  # noqa: BLE001 - no len(), or the script's __len__ failed: unknown
        return None
    return sum((n - b + spec.total - 1) // spec.total for b in spec.bins if b < n)
