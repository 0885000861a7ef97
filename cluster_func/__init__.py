"""cluster-func: run a function over many arguments on every core (clum) or a cluster (cluf).

From Python: :func:`map` and :func:`imap` run ``target`` over ``args`` on local worker processes
with clum's engine (see docs/api.md); :func:`submit`, :class:`Run` and ``map(..., nodes=N)`` on the
cluster's scheduler as cluf's jobs (docs/cluster-api.md); :class:`Arguments` gives one call keyword arguments.
``from cluster_func import IterableQueue`` works; the queue's module, and the engine, are
imported on first use, so that the commands do not pay for them at start-up.
"""

import typing as _typing  # (for annotations only: this module's names are its public ones)

from .core.arguments import Arguments

__version__ = "0.1.0"

_QUEUE_NAMES = ("IterableQueue", "ProducerQueueClosedException", "ConsumerQueueClosedException")
_API_NAMES = ("map", "imap", "MapError", "Failure", "MISSING", "submit", "Run", "RunStatus")
# (map and imap are left out of __all__: ``from cluster_func import *`` must not hide the builtin map;
# call them as cluster_func.map and cluster_func.imap.)
__all__ = ["__version__", "read_results", "Arguments", "MapError", "Failure", "MISSING", "submit", "Run",
           "RunStatus", *_QUEUE_NAMES]


def __dir__() -> list[str]:
    """Every public name, for Tab completion (map and imap included; they load on first use)."""
    return sorted(set(globals()) | set(_QUEUE_NAMES) | set(_API_NAMES))


def read_results(*paths: str) -> _typing.Iterator[tuple[int, _typing.Any]]:
    """Yield ``(position, value)`` in position order from ``--results`` files, several of them,
    or a cluf jobs dir (see :mod:`cluster_func.record.results`)."""
    from .record.results import read_results as read

    return read(*paths)


def __getattr__(name: str) -> _typing.Any:
    if name in _QUEUE_NAMES:
        from . import iterable_queue

        return getattr(iterable_queue, name)
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'cluster_func' has no attribute {name!r}")
