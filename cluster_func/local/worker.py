"""The worker process: get the target, then run the batches the runner sends.

Getting the target.  Under the ``fork`` start method (the default on Linux) the runner loaded
the script before starting the workers, and a worker inherits it: the script's top level ran
once, and the memory it allocated is shared copy-on-write.  Under ``spawn`` and ``forkserver``
a worker loads the script itself.  Either way, the script's ``init_worker()``, if it defines
one, is then called once, before the first call.  Under fork, Python's ``random`` is re-seeded
in each worker by Python itself; the worker re-seeds NumPy's global (legacy) generator when
NumPy is loaded, so that no two workers draw the same numbers.

Protocol.
  An element that is a tuple is called as ``target(*a)``, an :class:`cluster_func.Arguments`
  as ``target(*a.args, **a.kwargs)``, anything else as ``target(a)``.
  runner -> worker, on the task pipe, one message a batch (``Connection.send_bytes`` framing):
    ``HEADER`` (batch id: int64, deadline_s: float64, digests: int8, size of the elements'
    pickle: int64) followed by ``pickle.dumps(elements, 4)`` (a list; a range in a run without
    a journal whose args are a range, see core.bins.RangeWork) and, when values are collected
    (``--results``), the pickle of the batch's positions; an empty message means stop.
    ``deadline_s`` > 0 asks the worker to hand back the rest of the batch once it has spent that
    long on it (so one slow stretch cannot unbalance workers).
  worker -> runner, on the result pipe: the messages :class:`Ready`, :class:`Fatal`,
    :class:`Fail` and :class:`Done` (below: their fields are their format), each pickled as the
    plain tuple of its fields, its kind first (see :func:`wire` and :func:`message`).  A batch's
    values of 64 KiB or more follow its ``done`` as a message of their own, their bytes as they are
    (``records`` in the ``done`` is then their length): nothing copies them into a pickle, and the
    runner reads them straight into their buffer (see pool.Pool.receive).  Smaller ones travel in
    the ``done``.
  Shared memory (:class:`Counters`), two int64 per worker: [calls of the current batch
  started (0 between batches), calls finished in all, written at each batch's end].  The
  runner reads it only when a worker dies or overruns ``--timeout``, to know which call ran.
  One more int64 after them, for all: when the runner sets it (the walltime is near), a
  worker starts no new batch: it hands each one back whole (``n_done`` 0).
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import traceback
from pickle import loads
from time import perf_counter
from zlib import crc32
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Tuple, Union, cast

from ..core.arguments import Arguments
from ..record.fingerprints import call_digest, content_check

HEADER = struct.Struct("!qdbq")
# Per-call digests in "done" (the journal's "d"): never, for calls of at least
# DIGEST_MIN_SECONDS (where they cost nothing measurable), or always (--hash/--key resuming).
DIGESTS_NEVER, DIGESTS_IF_DEAR, DIGESTS_ALWAYS = 0, 1, 2
DIGEST_MIN_SECONDS = 10e-6
SEPARATE_VALUES = 1 << 16  # a batch's values of this many bytes or more follow its "done" as they are


# --- the worker's messages to the runner ---------------------------------------------------------

class Ready(NamedTuple):
    """The target is there and ``init_worker`` has run: the worker takes batches."""
    kind: str  # "ready"
    pid: int


class Fatal(NamedTuple):
    """The script cannot be loaded or ``init_worker`` failed (the worker then exits)."""
    kind: str  # "fatal"
    text: str


class Fail(NamedTuple):
    """Call ``k`` of the batch raised (sent at once; the rest of the batch runs)."""
    kind: str  # "fail"
    batch_id: int
    k: int
    exc_type: str
    message: str
    traceback: str


class Done(NamedTuple):
    """The batch, or its first ``n_done`` calls (the rest handed back), is over.

    ``seconds`` it took; ``check``, :func:`cluster_func.record.fingerprints.content_check` of the
    bytes received; ``digests``, the :func:`cluster_func.record.fingerprints.call_digest` of each
    call started (8 bytes each) when asked for (see ``DIGESTS_*``), else None; ``records``, the
    results records of its calls that completed (see results.py; an encoder may have ``pack``,
    which takes the batch's values whole, see run_batches), or None when values are not
    collected; on the wire, when they follow as a message of their own, their length.
    ``values_crc``: the CRC-32 of the records, for the journal's ``vc`` (None: not computed)."""
    kind: str  # "done"
    batch_id: int
    n_done: int
    seconds: float
    check: str
    digests: Optional[bytes]
    records: Union[bytes, bytearray, int, None]
    values_crc: Optional[int] = None


Message = Union[Ready, Fatal, Fail, Done]
MESSAGES = {cls.__name__.lower(): cls for cls in (Ready, Fatal, Fail, Done)}  # by kind


def wire(msg: tuple) -> tuple:
    """What travels: the message as a plain tuple (pickled in a third of the time of the class)."""
    return tuple(msg)


def message(raw: tuple) -> Message:
    """The typed message (:data:`MESSAGES`) of a tuple that travelled (its kind first)."""
    return cast(Message, tuple.__new__(MESSAGES[raw[0]], raw))


class Counters:
    """The shared call counters of every worker slot (see the module docstring)."""

    def __init__(self, shared: Any) -> None:
        self.values = memoryview(shared).cast("B").cast("q")
        self.stop_index = len(self.values) - 1

    @staticmethod
    def allocate(ctx: Any, slots: int) -> Any:
        return ctx.RawArray("q", 2 * slots + 1)

    def stop_new_batches(self) -> None:
        self.values[self.stop_index] = 1

    def started(self, slot: int) -> int:
        return self.values[2 * slot]

    def finished(self, slot: int) -> int:
        return self.values[2 * slot + 1]

    def reset_started(self, slot: int) -> None:
        self.values[2 * slot] = 0


class Inherited:
    """The target (and ``init_worker``) of a script the runner already loaded: for fork."""

    def __init__(self, target: Callable[..., Any], init_worker: Optional[Callable[[], Any]]) -> None:
        self.target, self.init_worker = target, init_worker

    def load(self) -> Tuple[Callable[..., Any], Optional[Callable[[], Any]]]:
        return self.target, self.init_worker


class FromScript:
    """Load the script in the worker: for spawn and forkserver."""

    def __init__(self, path: str, argv: Iterable[str], target_name: str) -> None:
        self.path, self.argv, self.target_name = path, list(argv), target_name

    def load(self) -> Tuple[Callable[..., Any], Optional[Callable[[], Any]]]:
        from ..core.script import get_init_worker, get_target, load_script

        module = load_script(self.path, self.argv)
        return get_target(module, self.target_name), get_init_worker(module)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies, however it dies (the parent is the
    runner, or under forkserver the forkserver: see _watch_runner)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the ppid check below still works
        pass


RUNNER_GONE_GRACE = 2.0  # seconds a worker may still take to end by itself once the runner is gone


def _watch_runner(task_fd: int, runner_pid: int) -> None:
    """Under forkserver, end this worker, even in the middle of a call, once the runner is gone
    however it went (``kill -9`` included).  The worker's parent is the forkserver, so the
    kernel's parent-death signal does not cover the runner; but only the runner holds the write
    end of the worker's task pipe: once the pipe hangs up and the runner's pid is gone, no one
    will ever take a result.  (A runner that ends normally closes the pipe once the worker has
    nothing left to do, and the worker ends by itself.)"""
    import select
    import threading
    import time

    def runner_alive() -> bool:
        try:
            os.kill(runner_pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True

    def watch() -> None:
        poller = select.poll()
        poller.register(task_fd, 0)  # no events asked for: only a hang-up (or error) is reported
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                if not runner_alive():
                    time.sleep(RUNNER_GONE_GRACE)
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.5)

    threading.Thread(target=watch, name="clum-runner-watch", daemon=True).start()


def _reseed_numpy() -> None:
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        try:
            np_random.seed()  # fresh entropy from the OS
        except Exception:  # noqa: BLE001
            pass


def _format_exception(e: BaseException) -> Tuple[str, str, str]:
    if getattr(e, "no_traceback", False):  # e.g. a value --results cannot write: the message says it all
        return "TypeError", str(e), f"TypeError: {e}\n"
    tb = e.__traceback__
    # Drop our own frame: start at the target's frame.
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    te = traceback.TracebackException(type(e), e, tb)
    # An error cluster-func raised at the target (e.g. a refused nested map): its message says it
    # all, the frames inside cluster_func that raised it are not the user's to read.
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if not f.filename.startswith(ours)])
    text = "".join(te.format())
    try:
        msg = str(e)
    except Exception:  # noqa: BLE001
        msg = "<unprintable exception>"
    return type(e).__name__, msg, text


def main(task_conn: Any, result_conn: Any, source: Any, shared: Any, slot: int, close_fds: Iterable[int] = (),
         parent_pid: Optional[int] = None, forked: bool = False, results_format: Optional[str] = None,
         runner_pid: Optional[int] = None) -> None:
    try:
        _main(task_conn, result_conn, source, shared, slot, close_fds, parent_pid, forked, results_format,
              runner_pid)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the runner is gone or stopped listening (interrupted): nothing to report to


def _main(task_conn: Any, result_conn: Any, source: Any, shared: Any, slot: int, close_fds: Iterable[int],
          parent_pid: Optional[int], forked: bool, results_format: Optional[str], runner_pid: Optional[int]) -> None:
    # The runner handles Ctrl-C and SIGTERM for everyone, and stops the workers itself (SIGKILL):
    # a batch scheduler's cancel sends SIGTERM to every process of the job, in no particular
    # order, and a worker dying of it first would have its call recorded as failed, not stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # see Runner._start_worker
    _die_with_parent()
    try:  # a process group of its own, which what its calls start joins: the runner ends them together
        os.setpgid(0, 0)
    except OSError:
        pass
    for fd in close_fds:  # fork only: pipes of the other workers
        try:
            os.close(fd)
        except OSError:
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        return
    if runner_pid is not None:  # forkserver: see _watch_runner
        _watch_runner(task_conn.fileno(), runner_pid)
    if forked:
        _reseed_numpy()
    conn_send = result_conn.send

    def send(msg: tuple) -> None:
        conn_send(wire(msg))

    try:
        target, init_worker = source.load()
    except BaseException as e:  # noqa: BLE001
        send(Fatal("fatal", f"{type(e).__name__}: {e}"))
        return
    if init_worker is not None:
        try:
            init_worker()
        except BaseException as e:  # noqa: BLE001
            name, _, tb = _format_exception(e)
            send(Fatal("fatal", f"init_worker() failed in a worker process:\n{tb.rstrip()}"))
            return
    send(Ready("ready", os.getpid()))
    encode = None
    if results_format is not None:
        from ..record.results import encoder

        encode = encoder(results_format)
    run_batches(task_conn, send, target, Counters(shared), slot, encode, result_conn.send_bytes)


_PLAIN, _STAR = "plain", "star"


def _one_shape(elements: List[Any]) -> Optional[str]:
    """_PLAIN when every element is passed as the one argument, _STAR when every one is a tuple
    to unpack, None when they differ (or are Arguments): then each is looked at in turn."""
    if elements.__class__ is range:  # (a batch of a range: see core.bins.RangeWork)
        return _PLAIN
    classes = set(map(type, elements))
    if len(classes) != 1:
        return None
    (cls,) = classes
    if cls is Arguments:
        return None
    return _STAR if issubclass(cls, tuple) else _PLAIN


def _run_calls(target: Callable[..., Any], elements: List[Any], n: int, stop: Optional[float], shape: Optional[str], encode: Any,
               pack: Any, positions: Any, records: Any, failed: Any, values: Any, started_slot: int, send: Callable, batch_id: int) -> int:
    """Call the target on the batch's first ``n`` elements; return how many calls started.

    Each call's number (from 1) goes to the worker's ``started`` counter before it starts; a
    failure is sent at once (``fail``) and the rest runs.  With an encoder, each value is kept in
    ``records`` (with ``pack``, a failed call's as None, its index in ``failed``).  With a clock
    (``stop``), the calls end once it is past: the rest is handed back."""
    keep: Any = records.append if records is not None else None
    i = 0  # calls of this batch started so far
    while i < n:
        try:
            rest = elements[i:] if i else elements
            if shape is _PLAIN and pack is not None:
                for i, a in enumerate(rest, i + 1):
                    values[started_slot] = i
                    keep(target(a))
                continue
            if shape is _PLAIN:
                for i, a in enumerate(rest, i + 1):
                    values[started_slot] = i
                    target(a)
                continue
            if shape is _STAR and pack is not None:
                for i, a in enumerate(rest, i + 1):
                    values[started_slot] = i
                    keep(target(*a))
                continue
            if shape is _STAR:
                for i, a in enumerate(rest, i + 1):
                    values[started_slot] = i
                    target(*a)
                continue
            for i, a in enumerate(rest, i + 1):
                values[started_slot] = i
                if a.__class__ is tuple or isinstance(a, tuple):
                    value = target(*a)
                elif a.__class__ is Arguments:
                    value = target(*a.args, **a.kwargs)
                else:
                    value = target(a)
                if encode is not None:
                    if pack is not None:
                        keep(value)
                    else:
                        records.append(encode(positions[i - 1], value))
                if stop is not None and perf_counter() > stop:
                    n = i  # hand back the rest
                    break
        except BaseException as e:  # noqa: BLE001 - every failure is reported, the rest runs
            if pack is not None:
                keep(None)
                failed.append(i - 1)
            _send_failure(send, batch_id, i - 1, e)
            del e
    return i


def _send_failure(send: Callable[[tuple], None], batch_id: int, k: int, e: BaseException) -> None:
    """Say that call k of the batch failed with e."""
    name, text, tb = _format_exception(e)
    try:
        send(Fail("fail", batch_id, k, name, text, tb))
    except Exception:  # noqa: BLE001 - e.g. an unpicklable message
        send(Fail("fail", batch_id, k, name, repr(text), tb))


def run_batches(task_conn: Any, send: Callable[[tuple], None], target: Callable[..., Any], counters: Counters, slot: int,
                encode: Any = None, send_bytes: Optional[Callable[[Union[bytes, bytearray]], None]] = None) -> None:
    """Run each batch the runner sends and answer it (``done``), until the runner sends the stop or
    is gone (see the protocol in the module docstring).  ``send_bytes``: sends a batch's values
    as a message of their own, after its ``done`` (without it they travel in the ``done``)."""
    values = counters.values
    started_slot, finished_slot = 2 * slot, 2 * slot + 1
    finished = values[finished_slot]
    recv_bytes = task_conn.recv_bytes
    header_size = HEADER.size
    stop_index = counters.stop_index
    join = getattr(encode, "join", b"".join)  # how a batch's records become one message
    # An encoder with ``pack`` takes a batch's values whole: ``pack(positions, values, failed, report)``,
    # ``values`` one per call started (None for the calls that failed, whose indices are ``failed``);
    # ``report(k, error)``: call k's value cannot be written (the results formats encode a batch at once).
    pack = getattr(encode, "pack", None)
    checked = getattr(encode, "checked", False)  # the journal carries the values: their CRC-32 is made here
    while True:
        try:
            msg = recv_bytes()
        except (EOFError, OSError):
            return
        if not msg:
            return
        batch_id, deadline_s, want_digests, size = HEADER.unpack_from(msg)
        data = memoryview(msg)[header_size:header_size + size]
        check = content_check(data)
        elements = loads(data)
        if encode is not None:
            positions = loads(memoryview(msg)[header_size + size:])
            records, failed = [], []  # type: Any, Any
        else:
            positions = records = failed = None
        del data, msg
        n = 0 if values[stop_index] else len(elements)  # the walltime is near: start nothing
        stop = perf_counter() + deadline_s if deadline_s else None
        # The common batch: every element called the same way, no clock to check, values (if
        # any) taken whole: a loop that does nothing else (see _one_shape and _run_calls).
        shape = _one_shape(elements) if stop is None and (encode is None or pack is not None) else None
        t0 = perf_counter()
        i = _run_calls(target, elements, n, stop, shape, encode, pack, positions, records, failed, values,
                       started_slot, send, batch_id)
        finished += i
        # This order matters: once `finished` has moved on, `started` is known to be about the
        # next batch. (Killed between the two stores, the batch looks unfinished: it runs again,
        # rather than being counted as done.)
        seconds = perf_counter() - t0
        digests = None
        if want_digests == DIGESTS_ALWAYS or (want_digests and i and seconds / i >= DIGEST_MIN_SECONDS):
            digests = b"".join(call_digest(a) for a in elements[:i])
        values[started_slot] = 0
        values[finished_slot] = finished
        if pack is not None:  # a value the results file cannot hold fails its call, said before "done"
            records = pack(positions, records, failed, lambda k, e: _send_failure(send, batch_id, k, e))
        elif encode is not None:
            records = join(records)
        _send_done(send, send_bytes, Done("done", batch_id, i, seconds, check, digests, records), checked)


def _send_done(send: Callable[[tuple], None], send_bytes: Optional[Callable[[Union[bytes, bytearray]], None]], done: Done,
               checked: bool) -> None:
    """Send ``done``, with the CRC-32 of its values when ``checked``; values of SEPARATE_VALUES bytes
    or more (and ``send_bytes``) as they are, after it (see the protocol): smaller ones stay in it,
    so that a batch of a few slow calls is still one message, which one wake-up of the runner reads."""
    records = done.records
    if records and not isinstance(records, int):
        if checked:
            done = done._replace(values_crc=crc32(records))
        if send_bytes is not None and len(records) >= SEPARATE_VALUES:
            send(done._replace(records=len(records)))
            send_bytes(records)
            return
    send(done)
