"""The put path's slow half: what a producer does when its message cannot go
straight into the pipe.

A message of at most ``PIPE_BUF`` bytes is written atomically or not at all.
A larger one is written in parts while its writer holds the shared write
lock, so that no other message lands between its parts.  While the pipe is
full a process keeps its messages, in order, in a buffer that one feeder
thread writes out (several small messages together in one atomic write)."""

import collections
import io
import os
import pickle
import select
import threading
from multiprocessing.reduction import ForkingPickler
from typing import Deque, List, Optional, Tuple, Union, cast

from ._shared import (
    _FAST_LOCK_TIMEOUT,
    _PIPE_BUF,
    _POLLOUT,
    _PRODUCER_SLICE,
    _Shared,
    _nobody_reads,
    _pack_header,
)

_SIMPLE_TYPES = frozenset((int, float, str, bytes, bool, type(None), complex))
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps

# A message waiting for the feeder, and whether the write lock is held for it.
_Message = Tuple[Union[bytes, memoryview], bool]


class _PutState(object):
    """Per-process state of a producer endpoint: the pickler, and the
    buffer and feeder thread used only while the pipe is full.

    The feeder thread holds no reference to the endpoint, so the endpoint
    can still be garbage collected while the feeder finishes its work."""

    def __init__(self, shared: _Shared, slot: int) -> None:
        self.shared = shared
        self.slot = slot
        self.pickle_lock = threading.Lock()
        self.pbuf: Optional[io.BytesIO] = None
        self.pickler: Optional[ForkingPickler] = None
        # Recursive: a garbage-collection finalizer may run in a thread that
        # holds it (see _exit_close).
        self.cond = threading.Condition(threading.RLock())
        self.buffer: Deque[_Message] = collections.deque()
        self.pending = 0          # messages buffered or being written
        self.thread: Optional[threading.Thread] = None
        self.close_after = False  # close the slot once everything is out

    def serialize(self, obj: object) -> bytes:
        if type(obj) in _SIMPLE_TYPES:
            return _dumps(obj, _PROTOCOL)
        with self.pickle_lock:
            buf = self.pbuf
            pickler = self.pickler
            if buf is None or pickler is None or buf.tell() > (1 << 20):
                buf = self.pbuf = io.BytesIO()
                pickler = self.pickler = ForkingPickler(buf, _PROTOCOL)
            buf.seek(0)
            buf.truncate()
            pickler.clear_memo()
            try:
                pickler.dump(obj)
            except BaseException:
                self.pbuf = None
                raise
            return buf.getvalue()

    # -- buffered path ------------------------------------------------------

    def enqueue(self, msg: Union[bytes, memoryview],
                lock_held: bool = False) -> None:
        """Hand a message to the feeder thread.  ``msg`` is bytes (a whole
        small message) or a memoryview (the rest of a big message whose
        start is already in the pipe; then the write lock is held and the
        feeder releases it)."""
        with self.cond:
            self.buffer.append((msg, lock_held))
            self.pending += 1
            if self.thread is None:
                t = threading.Thread(target=self._feed,
                                     name="IterableQueueFeeder")
                t.daemon = True
                self.thread = t
                t.start()
            else:
                self.cond.notify()

    def close_when_flushed(self) -> bool:
        """Ask the feeder to close the slot once it has written everything.
        Return False if there is nothing left to write (caller closes)."""
        with self.cond:
            if not self.pending:
                return False
            self.close_after = True
            self.cond.notify()
            return True

    def flush(self) -> None:
        """Wait until everything buffered here is in the pipe (or dropped
        because nobody can read it any more)."""
        with self.cond:
            while self.pending:
                if self.thread is None or not self.thread.is_alive():
                    break
                self.cond.wait(_PRODUCER_SLICE)

    def _feed(self) -> None:
        """The feeder thread: write out the buffer, batch by batch, until
        it stays empty for a while or the slot is closed."""
        cond = self.cond
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._write_batch(batch)
        except BaseException:
            with cond:
                self.thread = None
                cond.notify_all()
            raise

    def _next_batch(self) -> Optional[List[_Message]]:
        """Wait for the next messages to write: one, or several small ones
        that fit in one atomic write.  None when the feeder should end."""
        cond = self.cond
        buffer = self.buffer
        with cond:
            while not buffer:
                if self.close_after and not self.pending:
                    self.thread = None
                    self.shared.close_slot(self.slot)
                    return None
                if not cond.wait(5.0) and not buffer:
                    # Idle: let the thread go; a new one is started
                    # when the pipe is full again.
                    if not self.pending and not self.close_after:
                        self.thread = None
                        return None
            batch = [buffer.popleft()]
            msg, lock_held = batch[0]
            if not lock_held and len(msg) < _PIPE_BUF:
                # Several small messages in one atomic write.
                total = len(msg)
                while buffer:
                    nxt = buffer[0]
                    if nxt[1] or total + len(nxt[0]) > _PIPE_BUF:
                        break
                    total += len(nxt[0])
                    batch.append(buffer.popleft())
            return batch

    def _write_batch(self, batch: List[_Message]) -> None:
        """Write one batch; if nobody reads any more, drop it and the rest
        of the buffer, giving their item slots back."""
        cond = self.cond
        buffer = self.buffer
        msg, lock_held = batch[0]
        if lock_held:
            ok = self._write_rest(cast(memoryview, msg))
        elif len(batch) > 1:
            ok = self._write_small(b"".join(m for m, _ in batch))
        elif len(msg) <= _PIPE_BUF:
            ok = self._write_small(msg)
        else:
            ok = self._write_big(msg)
        dropped = 0 if ok else len(batch)
        with cond:
            if not ok:
                # Nobody can read any more: drop the rest too.
                dropped += len(buffer)
                buffer.clear()
            self.pending -= len(batch) if ok else dropped
            if not self.pending:
                cond.notify_all()
        for _ in range(dropped):
            self.shared.sem.release()

    def _wait_writable(self, poller: select.poll) -> bool:
        """Wait for room in the pipe; False if nobody reads any more."""
        while True:
            if poller.poll(_PRODUCER_SLICE * 1000.0):
                return True
            if _nobody_reads(self.shared):
                return False

    def _poller(self) -> select.poll:
        p = select.poll()
        p.register(self.shared.wfd, _POLLOUT)
        return p

    def _write_small(self, msg: Union[bytes, memoryview]) -> bool:
        shared = self.shared
        wlock = shared.wlock
        poller = None
        while True:
            wlock.acquire()
            try:
                os.write(shared.wfd, msg)   # atomic: all or nothing
                return True
            except BlockingIOError:
                pass
            finally:
                wlock.release()
            if poller is None:
                poller = self._poller()
            if not self._wait_writable(poller):
                return False

    def _write_big(self, framed: Union[bytes, memoryview]) -> bool:
        """Write a whole message longer than PIPE_BUF (header included)."""
        poller = self._poller()
        if not self._wait_writable(poller):
            return False
        self.shared.wlock.acquire()
        return self._write_rest(memoryview(framed), poller)

    def _write_rest(self, view: memoryview,
                    poller: Optional[select.poll] = None) -> bool:
        """Write ``view`` while holding the write lock; release it."""
        shared = self.shared
        fd = shared.wfd
        try:
            while len(view):
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    n = 0
                if n:
                    view = view[n:]
                    continue
                if poller is None:
                    poller = self._poller()
                if not poller.poll(_PRODUCER_SLICE * 1000.0):
                    if _nobody_reads(shared):
                        return False
            return True
        finally:
            shared.wlock.release()


def _put_large(shared: _Shared, local: _PutState, data: bytes,
               size: int) -> None:
    """put's part for a message larger than the pipe writes atomically
    (``_PIPE_BUF``): as much of it as fits now, the rest by the feeder."""
    msg = memoryview(_pack_header(size) + data)
    if not local.pending:
        # Write as much as fits now; a partly written message keeps the
        # write lock, which the feeder releases when it has written the
        # rest.
        wlock = shared.wlock
        if wlock.acquire(True, _FAST_LOCK_TIMEOUT):
            try:
                n = os.write(shared.wfd, msg)
            except BlockingIOError:
                n = 0
            except BaseException:
                wlock.release()
                raise
            if n == len(msg):
                wlock.release()
                return
            if n:
                local.enqueue(msg[n:], lock_held=True)
                return
            wlock.release()
    local.enqueue(msg)
