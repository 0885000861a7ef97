"""``Arguments``: one call's positional and keyword arguments, as an element of ``args``.

Kept apart from everything else (it imports nothing) so that the worker, the journal and the
binning rules can all recognise it at no cost.
"""

from typing import Any, Dict, Tuple, Union


def _rebuild(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> "Arguments":
    return Arguments(*args, **kwargs)


class Arguments:
    """The arguments of one call: ``Arguments(1, scale=3, label="x")`` in ``args`` makes clum,
    cluf and :func:`cluster_func.map` call ``target(1, scale=3, label="x")``.

    ``.args`` is the tuple of positional arguments, ``.kwargs`` the dict of keyword arguments.
    ``--hash`` and ``--key`` may name a keyword argument (``-x scale``, ``-k label``) as well as a
    position.  Two ``Arguments`` are equal when they hold equal arguments; the order in which the
    keywords were given does not matter for equality, nor for the journal's digests.
    """

    __slots__ = ("args", "kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args: Tuple[Any, ...] = args
        self.kwargs: Dict[str, Any] = kwargs

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Arguments({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Arguments:
            return NotImplemented
        return self.args == other.args and self.kwargs == other.kwargs

    def __hash__(self) -> int:
        return hash((self.args, frozenset(self.kwargs.items())))

    def __reduce__(self) -> Tuple[Any, ...]:
        return _rebuild, (self.args, self.kwargs)

    def get(self, where: Union[int, str]) -> Any:
        """The argument at an integer position, or the keyword argument of that name (for
        ``--hash``/``--key``); IndexError or KeyError when there is none."""
        if isinstance(where, str):
            return self.kwargs[where]
        return self.args[where]
