"""The worker process: load the script, then run the batches the runner sends.

Protocol (all messages pickled):
  runner -> worker, on the task pipe: ``(batch_id, elements, deadline_s)`` or ``None`` to stop.
    ``deadline_s`` > 0 asks the worker to hand back the rest of the batch once it has
    spent that long on it (so one slow stretch of calls cannot unbalance the workers).
  worker -> runner, on the result pipe:
    ``("ready", pid)`` once the script is loaded;
    ``("fatal", text)`` when the script cannot be loaded here (then it exits);
    ``("fail", batch_id, k, exc_type, exc_message, traceback_text)`` as soon as call k raises;
    ``("done", batch_id, n_done, seconds)`` when the batch (or its first n_done calls) is over.
  Shared memory, two int64 per worker: [calls of the current batch started (0 between
  batches), calls finished in all, written at each batch's end].
  The runner reads it only when a worker dies or overruns ``--timeout``, to know
  which call was running.
"""

import os
import signal
import traceback
from pickle import loads
from time import perf_counter


def _die_with_parent():
    """Ask Linux to kill this worker when the runner dies, however it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the ppid check below still works
        pass


def _format_exception(e):
    tb = e.__traceback__
    # Drop our own frame: start at the target's frame.
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(e), e, tb))
    try:
        msg = str(e)
    except Exception:  # noqa: BLE001
        msg = "<unprintable exception>"
    return type(e).__name__, msg, text


def main(task_conn, result_conn, script_path, script_argv, target_name, shared, slot,
         close_fds=(), parent_pid=None):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner handles Ctrl-C for everyone
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    for fd in close_fds:  # fork only: pipes of the other workers
        try:
            os.close(fd)
        except OSError:
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        return
    send = result_conn.send
    try:
        from .script import get_target, load_script

        # Always load it afresh, even under fork: module-level state (open files, connections,
        # random seeds) is then the worker's own, the same under every start method.
        module = load_script(script_path, script_argv)
        target = get_target(module, target_name)
    except BaseException as e:  # noqa: BLE001
        send(("fatal", f"{type(e).__name__}: {e}"))
        return
    send(("ready", os.getpid()))

    counters = memoryview(shared).cast("B").cast("q")
    started_slot, finished_slot = 2 * slot, 2 * slot + 1
    started = counters[finished_slot]
    recv_bytes = task_conn.recv_bytes
    while True:
        try:
            msg = loads(recv_bytes())
        except (EOFError, OSError):
            return
        if msg is None:
            return
        batch_id, elements, deadline_s = msg
        elements = loads(elements)
        n = len(elements)
        base = started
        i = 0  # calls of this batch started so far
        t0 = perf_counter()
        while i < n:
            try:
                if deadline_s:
                    stop = t0 + deadline_s
                    for i, a in enumerate(elements[i:] if i else elements, i + 1):
                        counters[started_slot] = i
                        if a.__class__ is tuple or isinstance(a, tuple):
                            target(*a)
                        else:
                            target(a)
                        if perf_counter() > stop:
                            break
                    break
                for i, a in enumerate(elements[i:] if i else elements, i + 1):
                    counters[started_slot] = i
                    if a.__class__ is tuple:
                        target(*a)
                    elif isinstance(a, tuple):
                        target(*a)
                    else:
                        target(a)
            except BaseException as e:  # noqa: BLE001 - every failure is reported, the rest runs
                name, text, tb = _format_exception(e)
                try:
                    send(("fail", batch_id, i - 1, name, text, tb))
                except Exception:  # noqa: BLE001 - e.g. an unpicklable message
                    send(("fail", batch_id, i - 1, name, repr(text), tb))
                del e
            else:
                break
        started = base + i
        # This order matters: once `finished` has moved on, `current` is known to be about the
        # next batch. (Killed between the two stores, the batch looks unfinished: it runs again,
        # rather than being counted as done.)
        counters[started_slot] = 0
        counters[finished_slot] = started
        send(("done", batch_id, i, perf_counter() - t0))
