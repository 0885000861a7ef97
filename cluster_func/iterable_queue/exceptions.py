"""The exceptions raised by :class:`IterableQueue` and its endpoints."""

__all__ = [
    "IterableQueueException",
    "IterableQueueClosedException",
    "ProducerQueueClosedException",
    "ConsumerQueueClosedException",
    "Done",
]


class IterableQueueException(Exception):
    """Base class of the exceptions raised by :class:`IterableQueue`."""


class IterableQueueClosedException(IterableQueueException):
    """Raised by ``get_producer()``/``get_consumer()`` after ``close()``."""


class ProducerQueueClosedException(IterableQueueException):
    """Raised by ``put()`` on a producer endpoint that has been closed."""


class ConsumerQueueClosedException(IterableQueueException):
    """Raised by ``get()`` when no item is left and none will ever come.

    That is: the :class:`IterableQueue` is closed, every producer endpoint
    is closed, and every item has been taken (or this consumer endpoint has
    itself been closed).
    """


#: Name used by the original ``iterable_queue`` package for the same event.
Done = ConsumerQueueClosedException
