"""cluster-func: run a function over many arguments on every core (clum) or a cluster (cluf).

``from cluster_func import IterableQueue`` works; the queue's module is imported on first use,
so that the commands do not pay for it at start-up.
"""

__version__ = "0.1.0"

_QUEUE_NAMES = ("IterableQueue", "ProducerQueueClosedException", "ConsumerQueueClosedException")
__all__ = ["__version__", *_QUEUE_NAMES]


def __getattr__(name):
    if name in _QUEUE_NAMES:
        from . import iterable_queue

        return getattr(iterable_queue, name)
    raise AttributeError(f"module 'cluster_func' has no attribute {name!r}")
