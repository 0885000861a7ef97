"""How workers start and what they inherit (issue 11), through the real ``clum`` command:
the script loads once under fork and in every worker otherwise, ``init_worker`` runs once in
every worker, workers never share random streams, and a signal while workers start is a clean
interrupt."""

import collections
import signal

import pytest

METHODS = ["fork", "spawn", "forkserver"]


@pytest.mark.parametrize("method", METHODS)
def test_init_worker_runs_once_in_every_worker_before_its_first_call(clum, method):
    clum.script("init.py", """\
        import os
        READY = []
        def init_worker():
            rec("I", os.getpid())
            READY.append(1)
        def target(x):
            rec("C", os.getpid(), len(READY))
        args = range(200)
        """)
    r = clum.run("init.py", "-p", "2", "--start-method", method)
    assert r.returncode == 0, r.stderr
    ev = clum.evidence()
    inits = collections.Counter(line[1] for line in ev if line[0] == "I")
    callers = {line[1] for line in ev if line[0] == "C"}
    assert all(n == 1 for n in inits.values()) and callers <= set(inits)
    assert {line[2] for line in ev if line[0] == "C"} == {"1"}


def test_init_worker_runs_in_a_worker_that_replaces_a_dead_one(clum):
    clum.script("init.py", """\
        import os
        def init_worker():
            rec("I", os.getpid())
        def target(x):
            rec("C", os.getpid())
            if x == 3:
                os._exit(3)
        args = range(8)
        """)
    r = clum.run("init.py", "-p", "1")
    assert r.returncode == 1
    ev = clum.evidence()
    inits = [line[1] for line in ev if line[0] == "I"]
    assert len(inits) == 2 and len(set(inits)) == 2
    assert {line[1] for line in ev if line[0] == "C"} == set(inits)


@pytest.mark.parametrize("method", METHODS)
def test_a_failing_init_worker_stops_the_run_with_its_traceback(clum, method):
    clum.script("badinit.py", """\
        def init_worker():
            raise RuntimeError("no GPU left")
        def target(x):
            rec("C", x)
        args = range(10)
        """)
    r = clum.run("badinit.py", "-p", "2", "--start-method", method)
    assert r.returncode == 1
    assert "init_worker" in r.stderr and "RuntimeError: no GPU left" in r.stderr
    assert 'File "' in r.stderr and "badinit.py" in r.stderr  # the script's own traceback
    assert clum.evidence() == []


@pytest.mark.parametrize("method", METHODS)
def test_workers_never_share_random_streams(clum, method):
    clum.script("draw.py", """\
        import random
        import numpy
        def target(x):
            rec("R", random.random(), numpy.random.random())
        args = range(1000)
        """)
    r = clum.run("draw.py", "-p", "2", "--start-method", method)
    assert r.returncode == 0, r.stderr
    ev = clum.evidence()
    assert len(ev) == 1000
    assert len({line[1] for line in ev}) == 1000 and len({line[2] for line in ev}) == 1000


def test_no_more_workers_start_than_there_are_calls(clum):
    clum.script("few.py", """\
        import os
        def init_worker():
            rec("I", os.getpid())
        def target(x):
            pass
        args = range(3)
        """)
    r = clum.run("few.py", "-p", "50")
    assert r.returncode == 0, r.stderr
    assert len(clum.evidence()) <= 3
    assert r.stderr.count("far above") == 1


def test_a_script_that_starts_a_thread_at_import_still_runs_under_spawn(clum):
    clum.script("threads.py", """\
        import threading, time
        threading.Thread(target=time.sleep, args=(0.2,), daemon=True).start()
        def target(x):
            rec("C", x)
        args = range(20)
        """)
    r = clum.run("threads.py", "-p", "2", "--start-method", "spawn")
    assert r.returncode == 0, r.stderr
    assert len(clum.evidence()) == 20


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_workers_start_is_a_clean_interrupt(clum, procs, tmp_path, method, sig):
    # The script's top level says when it has run in the main process; workers (64 of them,
    # under spawn each loading the script) are then starting.
    clum.script("start.py", """\
        import os, time
        if os.environ.get("MAIN_PID") is None:
            os.environ["MAIN_PID"] = str(os.getpid())
            rec("M", os.getpid())
        def init_worker():
            rec("W", os.getpid())
        def target(x):
            time.sleep(0.5)
        args = range(1000)
        """)
    j = tmp_path / "start.journal"
    p = clum.popen("start.py", "-p", "64", "--start-method", method, "--journal", j)
    # (the journal too: a signal before clum opened it ends the run before there is one to check)
    status, err = clum.signal_when(p, lambda: clum.count_lines(prefix="M") >= 1 and j.exists(), sig,
                                   what="the script to load and the journal to be opened")
    assert status == 128 + sig, err
    assert "Traceback" not in err and "interrupted by" in err
    procs.all_gone([], sid=p.pid)
    last = j.read_text().splitlines()[-1]
    assert '"status":"interrupted"' in last


def test_walltime_stops_new_calls_before_it_and_exits_75_with_work_left(clum, tmp_path):
    clum.script("slow.py", """\
        import time
        def target(x):
            rec("S", x)
            time.sleep(0.05)
            rec("E", x)
        args = range(200)
        """)
    j = tmp_path / "w.journal"
    r = clum.run("slow.py", "-p", "2", "--walltime", "2s", "--grace", "1", "--journal", j)
    assert r.returncode == 75, r.stderr
    assert "stopped at walltime, work left" in r.stderr
    assert '"status":"walltime"' in j.read_text().splitlines()[-1]
    ended = clum.count_lines(prefix="E")
    assert 0 < ended < 200
    r = clum.run("slow.py", "-p", "2", "--journal", j, "--resume", env={"X": 1})
    assert r.returncode == 0, r.stderr
    assert clum.count_lines(prefix="E") == 200  # nothing ran twice: stopped calls had not ended


@pytest.mark.parametrize("opts,word", [(["--grace", "5"], "--walltime"), (["--walltime", "10s", "--grace", "20"], "shorter")])
def test_grace_without_a_longer_walltime_is_a_usage_error(clum, clean_error, opts, word):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(3)\n")
    clean_error(clum.run("ok.py", *opts), word)
    assert clum.evidence() == []
