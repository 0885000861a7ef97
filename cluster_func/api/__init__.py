"""cluster-func from Python.

- :mod:`.local`: ``cluster_func.map`` and ``imap`` on this machine's cores, with clum's engine.
- :mod:`.cluster`: ``cluster_func.submit``, :class:`Run` and ``map(..., nodes=N)``: the same
  calls as cluf's jobs on the cluster's scheduler.
- :mod:`.failures`: :class:`MapError`, :class:`Failure` and :data:`MISSING`, raised alike by both.
"""

from typing import Any

from .failures import MISSING, Failure, MapError
from .local import imap, map  # noqa: F401 (cluster_func.map: this machine, or the cluster with nodes=)

__all__ = ["MapError", "Failure", "MISSING", "imap", "submit", "Run", "RunStatus"]
_CLUSTER_NAMES = ("submit", "Run", "RunStatus")


def __getattr__(name: str) -> Any:
    if name in _CLUSTER_NAMES:
        from . import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
