"""cluster_func.map and cluster_func.imap: clum's engine from Python (issue 24)."""

import collections
import operator
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import cluster_func
from cluster_func import Arguments, MapError
from cluster_func.record import journal as jmod
from cluster_func.record.fingerprints import call_digest


def record(path, *parts):
    """Append one evidence line (O_APPEND: lines of several processes never interleave)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("\t".join(str(p) for p in parts) + "\n").encode())
    finally:
        os.close(fd)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split("\t") for line in f.read().splitlines() if line]


def run_child(tmp_path, body, **kw):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


# --- values -----------------------------------------------------------------------------------

def test_map_returns_the_values_in_the_order_of_args():
    assert cluster_func.map(operator.neg, range(1000), processes=2) == [-x for x in range(1000)]


def test_map_of_a_range_with_a_start_and_a_step_returns_each_elements_value_in_order():
    # (a range travels to the workers as slices of itself: core.bins.RangeWork)
    args = range(7, 90_000, 3)
    assert cluster_func.map(operator.neg, args, processes=2) == [-x for x in args]
    assert cluster_func.map(operator.neg, range(50, 0, -2), processes=2) == [-x for x in range(50, 0, -2)]


def test_a_failure_in_a_map_of_a_range_is_named_by_its_position_and_the_rest_run():
    def picky(x):
        if x == 31:
            raise ValueError("thirty-one")
        return x * 2

    with pytest.raises(MapError) as e:
        cluster_func.map(picky, range(1, 60, 3), processes=2, quiet=True)
    assert list(e.value.failures) == [10] and e.value.failures[10].args == "31"
    assert [v for v in e.value.values if v is not cluster_func.MISSING] == [x * 2 for x in range(1, 60, 3) if x != 31]


def test_map_unpacks_tuples_and_passes_anything_else_as_the_one_argument():
    assert cluster_func.map(operator.add, [(1, 2), (3, 4)], processes=2) == [3, 7]
    assert cluster_func.map(len, [[1, 2], "abc", ((),)], processes=2) == [2, 3, 0]


def test_map_of_nothing_is_an_empty_list_and_starts_no_worker():
    assert cluster_func.map(operator.neg, [], processes=2) == []


def test_map_runs_the_calls_on_several_worker_processes(tmp_path):
    out = str(tmp_path / "pids")

    def where(x):
        record(out, os.getpid())
        return x

    assert cluster_func.map(where, range(50), processes=2) == list(range(50))
    pids = {int(p) for (p,) in lines(out)}
    assert len(pids) == 2 and os.getpid() not in pids, pids


def test_map_takes_a_closure_and_a_lambda_under_fork():
    scale = 7

    def scaled(x):
        return x * scale

    assert cluster_func.map(scaled, range(5), processes=2, start_method="fork") == [0, 7, 14, 21, 28]
    assert cluster_func.map(lambda x: x + scale, range(3), processes=2, start_method="fork") == [7, 8, 9]


def test_map_takes_keyword_arguments_from_arguments_elements():
    def call(i, scale=1, label=""):
        return f"{label}{i * scale}"

    args = [Arguments(i, scale=3, label="x") for i in range(3)] + [Arguments(5), (6, 2)]
    assert cluster_func.map(call, args, processes=2) == ["x0", "x3", "x6", "5", "12"]


def test_map_under_spawn_runs_an_importable_target():
    assert cluster_func.map(operator.neg, range(4), processes=2, start_method="spawn") == [0, -1, -2, -3]


def test_map_under_spawn_refuses_a_lambda_saying_the_target_must_be_importable():
    with pytest.raises(TypeError) as e:
        cluster_func.map(lambda x: x, range(3), start_method="spawn")
    text = str(e.value)
    assert "top level of a module" in text and "start_method='fork'" in text


def test_map_runs_from_a_thread_other_than_the_main_one_and_leaves_the_signal_handlers_alone():
    before = signal.getsignal(signal.SIGINT)
    got = {}
    t = threading.Thread(target=lambda: got.update(v=cluster_func.map(operator.neg, range(100), processes=2)))
    t.start()
    t.join(120)
    assert got["v"] == [-x for x in range(100)]
    assert signal.getsignal(signal.SIGINT) is before


def test_map_puts_back_the_callers_signal_handlers():
    def mine(signum, frame):
        pass

    old = signal.signal(signal.SIGINT, mine)
    try:
        cluster_func.map(operator.neg, range(10), processes=2)
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, old)


# --- failures -------------------------------------------------------------------------------------

def test_failed_calls_do_not_stop_the_others_and_map_raises_one_error_naming_each(tmp_path):
    out = str(tmp_path / "ran")

    def picky(x):
        record(out, x)
        if x % 4 == 1:
            raise ValueError(f"{x} is odd in a bad way")
        return x * 10

    with pytest.raises(MapError) as e:
        cluster_func.map(picky, range(12), processes=2, quiet=True)
    err = e.value
    assert sorted(int(x) for (x,) in lines(out)) == list(range(12)), "every call ran"
    assert list(err.failures) == [1, 5, 9]
    f = err.failures[5]
    assert (f.position, f.type, f.message) == (5, "ValueError", "5 is odd in a bad way")
    assert "in picky" in f.traceback and "raise ValueError" in f.traceback
    assert err.values == [cluster_func.MISSING if x % 4 == 1 else x * 10 for x in range(12)]
    assert err.completed == {x: x * 10 for x in range(12) if x % 4 != 1}
    text = str(err)
    assert "3 of 12 calls failed" in text and "position 9" in text and "ValueError" in text
    again = pickle.loads(pickle.dumps(err))
    assert again.failures == err.failures and again.values == err.values and str(again) == text


Pair = collections.namedtuple("Pair", "a b")  # (at the top level, so that it pickles)


def test_a_failure_amid_tuples_or_named_tuples_leaves_the_calls_after_it_running():
    for args in ([(1, 1), (1, 0), (4, 2)] * 50, [Pair(1, 1), Pair(1, 0), Pair(4, 2)] * 50):
        with pytest.raises(MapError) as e:
            cluster_func.map(operator.truediv, args, processes=2, quiet=True)
        assert list(e.value.failures) == list(range(1, 150, 3))
        assert {e.value.failures[1].type} == {"ZeroDivisionError"}
        assert e.value.values[:3] == [1.0, cluster_func.MISSING, 2.0] and e.value.values[-1] == 2.0


def test_elements_of_mixed_shapes_in_one_batch_are_each_called_as_they_are():
    def show(*a, **kw):
        return (a, kw)

    args = [1, (2, 3), Arguments(4, k=5), "six", ((7,),)] * 20
    got = cluster_func.map(show, args, processes=1)
    assert got[:5] == [((1,), {}), ((2, 3), {}), ((4,), {"k": 5}), (("six",), {}), (((7,),), {})]
    assert got == got[:5] * 20


def test_a_worker_that_dies_fails_its_call_and_is_replaced():
    def fragile(x):
        if x == 3:
            os._exit(7)
        return x

    with pytest.raises(MapError) as e:
        cluster_func.map(fragile, range(8), processes=2, quiet=True)
    assert list(e.value.failures) == [3] and e.value.failures[3].type == "WorkerDied"
    assert [v for v in e.value.values if v is not cluster_func.MISSING] == [0, 1, 2, 4, 5, 6, 7]


def test_retries_run_a_failing_call_again(tmp_path):
    marker = tmp_path / "failed-once"

    def flaky(x):
        if x == 2 and not marker.exists():
            marker.write_text("")
            raise RuntimeError("first time")
        return x

    assert cluster_func.map(flaky, range(4), processes=2, retries=1, quiet=True) == [0, 1, 2, 3]


def test_a_value_that_cannot_be_pickled_fails_its_call_with_a_message_saying_so():
    with pytest.raises(MapError) as e:
        cluster_func.map(lambda x: (lambda: x) if x == 1 else x, range(3), processes=2, quiet=True)
    assert list(e.value.failures) == [1] and "cannot be pickled" in e.value.failures[1].message
    assert e.value.values[0] == 0 and e.value.values[2] == 2


def test_an_args_iterable_that_raises_raises_its_own_exception():
    def args():
        yield 1
        yield 2
        raise LookupError("the table ended early")

    with pytest.raises(LookupError, match="the table ended early"):
        cluster_func.map(operator.neg, args(), processes=2, quiet=True)


@pytest.mark.parametrize("kw, words", [
    ({"resume": True}, ["resume=True needs journal=PATH"]),
    ({"processes": 0}, ["processes=0", "integer from 1"]),
    ({"retries": -1}, ["retries=-1"]),
    ({"timeout": 0}, ["timeout=0"]),
    ({"start_method": "teleport"}, ["start_method='teleport'", "not available"]),
])
def test_bad_arguments_are_value_errors_that_say_what_to_give(kw, words):
    with pytest.raises(ValueError) as e:
        cluster_func.map(operator.neg, range(3), **kw)
    for w in words:
        assert w in str(e.value)


# --- the journal --------------------------------------------------------------------------------

def test_a_failed_run_resumed_runs_only_the_failed_calls_and_returns_every_value(tmp_path):
    out = str(tmp_path / "ran")
    journal = str(tmp_path / "sweep.journal")
    bad = {3, 7}

    def work(x):
        record(out, x)
        if x in bad:
            raise ValueError(x)
        return x * x

    with pytest.raises(MapError):
        cluster_func.map(work, range(20), processes=2, journal=journal, quiet=True)
    first = sorted(int(x) for (x,) in lines(out))
    os.unlink(out)
    bad.clear()
    assert cluster_func.map(work, range(20), processes=2, journal=journal, resume=True) == [x * x for x in range(20)]
    assert first == list(range(20))
    assert sorted(int(x) for (x,) in lines(out)) == [3, 7], "only the failed calls ran again"
    # Resumed once more: nothing runs, every value still comes back.
    os.unlink(out)
    assert cluster_func.map(work, range(20), processes=2, journal=journal, resume=True) == [x * x for x in range(20)]
    assert lines(out) == []


def test_a_killed_run_resumed_runs_only_what_did_not_complete(tmp_path, procs):
    out, journal = tmp_path / "ran", tmp_path / "killed.journal"
    child = run_child(tmp_path, f"""
        import os, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import cluster_func
        from test_api import record

        def work(x):
            record({str(out)!r}, "S", x, os.getpid())
            if x >= 30 and not os.path.exists({str(tmp_path / 'go')!r}):
                time.sleep(600)  # held here until the run is killed
            record({str(out)!r}, "E", x)
            return -x

        cluster_func.map(work, range(60), processes=2, journal={str(journal)!r})
    """)
    try:
        procs.wait_for(lambda: child.poll() is not None or (
            any(ln[0] == "S" and int(ln[1]) >= 30 for ln in lines(out))
            and '"t":"ok"' in journal.read_text()), what="a call to be held and some to be recorded")
        assert child.poll() is None, child.communicate()
        workers = {int(ln[2]) for ln in lines(out) if ln[0] == "S"}
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    procs.all_gone(workers)
    state = jmod.read(str(journal), for_resume=True)
    recorded = {p for r in state.records for p in r.positions}
    assert recorded and len(recorded) < 60
    os.unlink(out)
    (tmp_path / "go").write_text("")

    def work(x):
        record(str(out), "S", x, os.getpid())
        return -x

    assert cluster_func.map(work, range(60), processes=2, journal=str(journal), resume=True) == \
        [-x for x in range(60)]
    again = sorted(int(ln[1]) for ln in lines(out))
    assert again == sorted(set(range(60)) - recorded), "exactly the calls not recorded as completed ran"


def test_a_resume_takes_the_skipped_calls_values_from_the_journal_itself(tmp_path):
    out, journal = str(tmp_path / "ran"), str(tmp_path / "j.journal")

    def work(x):
        with open(out, "a") as f:
            f.write(f"{x}\n")
        return -x

    assert cluster_func.map(work, range(5), processes=2, journal=journal) == [0, -1, -2, -3, -4]
    assert sorted(os.listdir(tmp_path)) == ["j.journal", "ran"]  # no file of values beside it
    assert cluster_func.map(work, range(5), processes=2, journal=journal, resume=True) == [0, -1, -2, -3, -4]
    assert len(open(out).read().split()) == 5  # nothing ran again


def test_a_resume_of_a_journal_without_values_runs_its_calls_again_for_them(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""\
        def target(x):
            return -x
        args = range(5)
        """))
    journal = str(tmp_path / "j.journal")
    clum = os.path.join(os.path.dirname(sys.executable), "clum")
    assert subprocess.run([clum, str(script), "--journal", journal], capture_output=True).returncode == 0
    with pytest.raises(ValueError) as e:  # a journal of clum's script is not map's
        cluster_func.map(operator.neg, range(5), processes=2, journal=journal, resume=True, quiet=True)
    assert "another script" in str(e.value)


def test_a_run_without_resume_starts_over_and_keeps_the_old_journal(tmp_path):
    out, journal = str(tmp_path / "ran"), str(tmp_path / "j.journal")

    def work(x):
        record(out, x)
        return x

    cluster_func.map(work, range(5), processes=2, journal=journal)
    cluster_func.map(work, range(5), processes=2, journal=journal)
    assert sorted(int(x) for (x,) in lines(out)) == sorted(list(range(5)) * 2)
    assert os.path.exists(journal + ".prev")


# --- Ctrl-C -------------------------------------------------------------------------------------------

def test_ctrl_c_stops_the_workers_and_raises_keyboard_interrupt_in_the_caller(tmp_path, procs):
    out = tmp_path / "ran"
    child = run_child(tmp_path, f"""
        import os, signal, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import cluster_func
        from test_api import record

        def work(x):
            record({str(out)!r}, os.getpid())
            time.sleep(600)

        before = signal.getsignal(signal.SIGINT)
        try:
            cluster_func.map(work, range(10), processes=2, journal={str(tmp_path / 'c.journal')!r})
        except KeyboardInterrupt:
            print("KeyboardInterrupt; handler restored:", signal.getsignal(signal.SIGINT) is before, flush=True)
    """)
    try:
        procs.wait_for(lambda: len(lines(out)) >= 2 or child.poll() is not None, what="two calls to start")
        workers = {int(p) for (p,) in lines(out)}
        os.kill(child.pid, signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert "KeyboardInterrupt; handler restored: True" in stdout, (stdout, stderr)
    assert len(workers) == 2
    procs.all_gone(workers, sid=child.pid)
    assert '"status":"interrupted"' in (tmp_path / "c.journal").read_text()


# --- imap ----------------------------------------------------------------------------------------------

def test_imap_yields_each_position_with_its_value():
    got = list(cluster_func.imap(operator.neg, range(500), processes=2))
    assert sorted(got) == [(x, -x) for x in range(500)]


def test_imap_left_early_stops_its_workers(tmp_path, procs):
    out = str(tmp_path / "pids")

    def slow_after_ten(x):
        record(out, os.getpid())
        if x >= 10:
            import time
            time.sleep(600)
        return x

    it = cluster_func.imap(slow_after_ten, range(100), processes=2)
    first = next(it)
    assert first[1] < 10
    procs.wait_for(lambda: len({p for (p,) in lines(out)}) == 2, what="both workers")
    it.close()
    procs.all_gone({int(p) for (p,) in lines(out)})


def test_imap_raises_map_error_after_yielding_every_other_value():
    seen = []
    with pytest.raises(MapError) as e:
        for pos, value in cluster_func.imap(lambda x: 1 // (x - 2), range(5), processes=2, quiet=True):
            seen.append(pos)
    assert sorted(seen) == [0, 1, 3, 4] and list(e.value.failures) == [2]


def test_imap_resumed_yields_the_skipped_values_too(tmp_path):
    journal = str(tmp_path / "j.journal")
    cluster_func.map(operator.neg, range(10), processes=2, journal=journal)
    assert sorted(cluster_func.imap(operator.neg, range(10), processes=2, journal=journal, resume=True)) == \
        [(x, -x) for x in range(10)]


# --- Arguments -------------------------------------------------------------------------------------------

def test_arguments_reads_like_the_call_and_pickles():
    a = Arguments(1, scale=3, label="x")
    assert repr(a) == "Arguments(1, scale=3, label='x')"
    assert repr(Arguments()) == "Arguments()"
    b = pickle.loads(pickle.dumps(a))
    assert b == a and b.args == (1,) and b.kwargs == {"scale": 3, "label": "x"}
    assert a != Arguments(1, scale=3) and a != (1,)


def test_the_journal_digest_of_arguments_ignores_the_order_of_the_keywords_and_sees_their_values():
    d = call_digest
    assert d(Arguments(1, a={"x", "y"}, b=2)) == d(Arguments(1, b=2, a={"y", "x"}))
    assert d(Arguments(1, a=1)) != d(Arguments(1, a=2))
    assert d(Arguments(1, a=1)) != d((1,)) and d(Arguments(1)) != d(Arguments(a=1))


def test_a_second_map_of_this_process_on_the_same_journal_is_refused_while_the_first_runs(tmp_path, procs):
    journal, started, go = str(tmp_path / "j.journal"), str(tmp_path / "started"), tmp_path / "go"

    def held(x):
        record(started, x)
        while not go.exists():
            import time
            time.sleep(0.01)
        return x

    got = {}
    t = threading.Thread(target=lambda: got.update(v=cluster_func.map(held, range(4), processes=2, journal=journal)))
    t.start()
    try:
        procs.wait_for(lambda: lines(started), what="the first map to start a call")
        with pytest.raises(ValueError) as e:
            cluster_func.map(operator.neg, range(3), journal=journal)
        assert "another map of this process is using the journal" in str(e.value)
    finally:
        go.write_text("")
        t.join(120)
    assert got["v"] == [0, 1, 2, 3]
    assert cluster_func.map(operator.neg, range(3), journal=journal) == [0, -1, -2], "free again once it ended"


def test_on_a_terminal_map_draws_the_progress_line_and_passes_the_targets_output_on(tmp_path):
    import pty

    script = tmp_path / "on_a_terminal.py"  # (not tty.py: that would hide the standard module)
    script.write_text("import cluster_func\n"
                      "def loud(x):\n    if x == 0:\n        print('out of the target', flush=True)\n    return x\n"
                      "print('values', cluster_func.map(loud, range(20), processes=2))\n")
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the last writer has gone
            break
        if not data:
            break
        out += data
    os.close(master)
    assert p.wait(60) == 0, out
    text = out.decode()
    assert re.search(r"cluster_func.map: \d+ done, 0 failed of 20", text), text
    assert "out of the target" in text and f"values {list(range(20))}" in text, text


def test_a_star_import_of_cluster_func_does_not_hide_the_builtin_map():
    namespace = {}
    exec("from cluster_func import *", namespace)
    assert "map" not in namespace and "imap" not in namespace
    assert "Arguments" in namespace and "MapError" in namespace
    assert cluster_func.map is cluster_func.api.map


def test_init_worker_runs_once_in_each_worker_before_its_first_call(tmp_path):
    log = tmp_path / "inits"

    def init():
        record(log, os.getpid())

    def where(x):
        return os.getpid()

    pids = cluster_func.map(where, range(200), processes=2, init_worker=init)
    inits = [int(line[0]) for line in lines(log)]
    assert len(inits) == len(set(inits)), "once per worker"
    assert set(pids) <= set(inits), "every worker that made a call had run init_worker first"


def test_an_init_worker_that_is_not_a_function_is_refused_naming_the_parameter():
    with pytest.raises(TypeError, match="init_worker must be a function"):
        cluster_func.map(abs, [1], init_worker=3)
