"""cluster-func: run a function over many arguments on every core (clum) or a cluster (cluf)."""

__version__ = "0.1.0"

from .iterable_queue import (  # noqa: E402,F401
    ConsumerQueueClosedException,
    IterableQueue,
    ProducerQueueClosedException,
)
