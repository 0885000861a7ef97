"""cluster-func: run a function over many arguments on every core (clum) or a cluster (cluf).

``from cluster_func import IterableQueue`` works; the queue's module is imported on first use,
so that the commands do not pay for it at start-up.
"""

__version__ = "0.1.0"

_QUEUE_NAMES = ("IterableQueue", "ProducerQueueClosedException", "ConsumerQueueClosedException")
__all__ = ["__version__", "read_results", *_QUEUE_NAMES]


def read_results(*paths):
    """Yield ``(position, value)`` in position order from ``--results`` files, several of them,
    or a cluf jobs dir (see :mod:`cluster_func.record.results`)."""
    from .record.results import read_results as read

    return read(*paths)


def __getattr__(name):
    if name in _QUEUE_NAMES:
        from . import iterable_queue

        return getattr(iterable_queue, name)
    raise AttributeError(f"module 'cluster_func' has no attribute {name!r}")
