"""A directed multiprocessing queue that consumers can iterate over.

An :class:`IterableQueue` hands out *producer endpoints* (which can only
``put``) and *consumer endpoints* (which can only ``get``).  Because it knows
how many producers are still open, it can tell "empty for now" apart from
"empty and nothing more will ever come", so consumers can simply write::

    for item in consumer_queue:
        ...

and the loop ends by itself once every producer has closed, the
``IterableQueue`` itself has been closed, and every item has been taken.

Design (no manager process)
---------------------------
* Items travel through one OS pipe, framed as ``4-byte length + pickle``.
  A ``put`` writes its item into the pipe itself whenever it can.  Only
  while the pipe is full (or another producer holds the write lock for
  long) does the item wait in a per-process buffer, which a feeder thread
  empties in order; ``close()`` and process exit wait for that buffer to
  drain, so nothing is left behind in a process's memory when it exits.
* Both ends of the pipe are non-blocking.  Readers hold the shared read
  lock only while taking one message that is already there; writers hold
  the shared write lock only while writing one message (a message of at
  most ``PIPE_BUF`` bytes is written atomically or not at all).  Waiting
  for data or for room is done with ``poll`` *without* holding a lock, so a
  process that is killed while waiting never blocks the others.
* A small table in shared memory counts open producers and consumers and
  records, for every endpoint, which process owns it.  When the queue has
  been closed and the last producer closes, one byte is written into a
  second "done" pipe that is never read: it stays readable for ever and
  wakes every waiting consumer at once.
* An endpoint belongs to the process that it was handed to as a
  :class:`multiprocessing.Process` argument, or otherwise to the process
  that first calls ``put``/``get`` on it.  When that process exits normally
  (even through an exception) the endpoint is closed for it.  When it dies
  without cleaning up (killed, ``os._exit``) the other processes notice on
  Linux through ``/proc`` and close the endpoint for it.

Where each part lives
---------------------
* ``exceptions``: the exceptions.
* ``_shared``: the shared state (pipes, locks, the item semaphore, the table
  of endpoints) and the constants of its layout and waits.
* ``_process``: this process's fork generation and start time; whether
  another process is alive; whether an endpoint was handed to this one.
* ``_spawn``: keeping the shared state alive until spawned children open it.
* ``_endpoint``: what both endpoints share (slot, owner, closing at exit).
* ``producer``: :class:`ProducerQueue` and the fast put path; ``_put``: the
  rest of the put path (large messages, the buffer and its feeder thread).
* ``consumer``: :class:`ConsumerQueue`.
* ``_registry``: :class:`IterableQueue`.

POSIX only (non-blocking pipes and ``select.poll``).
"""

from queue import Empty, Full

from ._registry import IterableQueue
from .consumer import ConsumerQueue
from .exceptions import (
    ConsumerQueueClosedException,
    Done,
    IterableQueueClosedException,
    IterableQueueException,
    ProducerQueueClosedException,
)
from .producer import ProducerQueue

__all__ = [
    "IterableQueue",
    "ProducerQueue",
    "ConsumerQueue",
    "IterableQueueException",
    "IterableQueueClosedException",
    "ProducerQueueClosedException",
    "ConsumerQueueClosedException",
    "Done",
    "Empty",
    "Full",
]

# The public classes keep the name they had when this package was one module
# (cluster_func.iterable_queue): in tracebacks, reprs and pickles.
for _cls in (IterableQueue, ProducerQueue, ConsumerQueue, IterableQueueException,
             IterableQueueClosedException, ProducerQueueClosedException,
             ConsumerQueueClosedException):
    _cls.__module__ = __name__
del _cls
