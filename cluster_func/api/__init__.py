"""cluster-func from Python.

- :mod:`.local`: ``cluster_func.map`` and ``imap`` on this machine's cores, with clum's engine.
- :mod:`.cluster`: ``cluster_func.submit``, :class:`Run` and ``map(..., nodes=N)``: the same
  calls as cluf's jobs on the cluster's scheduler.
- :mod:`.failures`: :class:`MapError`, :class:`Failure` and :data:`MISSING`, raised alike by both.
"""

from .failures import MISSING, Failure, MapError

__all__ = ["MapError", "Failure", "MISSING"]

from .local import imap, map  # noqa: E402,F401 (the cluster API's map takes their place below)
