"""cluster-func from Python.

- :mod:`.local`: ``cluster_func.map`` and ``imap`` on this machine's cores, with clum's engine.
- :mod:`.cluster`: ``cluster_func.submit``, :class:`Run` and ``map(..., nodes=N)``: the same
  calls as cluf's jobs on the cluster's scheduler.
- :mod:`.failures`: :class:`MapError`, :class:`Failure` and :data:`MISSING`, raised alike by both.
"""

from typing import Any, Callable, Iterable, List, Optional

from . import local
from .failures import MISSING, Failure, MapError
from .local import imap

__all__ = ["MapError", "Failure", "MISSING", "imap", "submit", "Run", "RunStatus"]
_CLUSTER_NAMES = ("submit", "Run", "RunStatus")


def map(target: Callable[..., Any], args: Iterable[Any], *, nodes: Optional[int] = None,
        iterations: Optional[int] = None, jobs_dir: Optional[str] = None, **kwargs: Any) -> List[Any]:
    """Call ``target`` for every element of ``args``; return the values in the order of ``args``.

    Without ``nodes``/``iterations``/``jobs_dir``: on this machine's cores (see
    :func:`cluster_func.api.local.map` for its keywords: processes, journal, resume, retries,
    timeout, start_method, quiet, progress, init_worker).  With them: on the cluster, as
    ``cluster_func.submit(...).wait()`` then ``.results()`` (see :func:`cluster_func.submit`
    for its keywords, cluf's options); called again with the same target and args it attaches
    to that run and runs no recorded call again.
    """
    if nodes is None and iterations is None and jobs_dir is None:
        return local.map(target, args, **kwargs)
    from .cluster import cluster_map

    return cluster_map(target, args, nodes=nodes, iterations=iterations, jobs_dir=jobs_dir, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _CLUSTER_NAMES:
        from . import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
