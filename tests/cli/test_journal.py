"""The run journal, --resume, --retries, --timeout and --failed (issue 5), end to end,
plus a few unit checks of the journal module that the end-to-end tests rely on."""

import collections
import json
import os
import re
import signal
import subprocess
import textwrap
import time

import pytest

from cluster_func.record import journal as jmod
from cluster_func.record.fingerprints import call_digest
from cluster_func.record.resume import ResumeWork
from cluster_func.record.writer import Journal
from cluster_func.local import batching
from cluster_func.core.bins import Work


def remaining(state, elements, mode="round-robin", spaced=True, n=7):
    """Run ResumeWork over ``elements`` like the runner does; (positions left, ResumeWork)."""
    work = Work(iter(elements), 0, 1) if spaced else Work(iter(list(enumerate(elements))))
    rw = ResumeWork(work, state, mode)
    left = []
    while True:
        positions, elems, error = rw.take(n)
        assert error is None
        if not elems:
            return left, rw
        assert [elements[p] for p in positions] == list(elems)
        left.extend(positions)


def recorded_positions(journal_path, elements, mode="round-robin"):
    """Positions the journal records as completed (what --resume would skip)."""
    st = jmod.read(str(journal_path), for_resume=True)
    left, rw = remaining(st, elements, mode)
    assert len(left) == len(set(left))
    done = set(range(len(elements))) - set(left)
    assert rw.skipped == len(done)
    return done


def starts(ev):
    return collections.Counter(int(line[1]) for line in ev if line[0] == "S")


def ends(ev):
    return collections.Counter(int(line[1]) for line in ev if line[0] == "E")


# A call writes S when it starts and E when it ends; FAIL=1 makes multiples of 7 raise.
WORK = """\
    import os, time
    SLEEP = float(os.environ.get("SLEEP", "0"))
    FAIL = os.environ.get("FAIL") == "1"
    REVERSE = os.environ.get("REVERSE") == "1"
    def target(x):
        rec("S", x, os.getpid())
        if SLEEP:
            time.sleep(SLEEP)
        if FAIL and x % 7 == 0:
            raise ValueError("multiple of seven: %d" % x)
        rec("E", x)
    def args():
        xs = list(range(int(os.environ.get("N", "50"))))
        return reversed(xs) if REVERSE else xs
    """


# --- where the journal is ---------------------------------------------------------------

def test_default_journal_is_next_to_the_script_one_per_script_and_bin_spec(clum, tmp_path):
    proj = tmp_path / "proj"
    clum.script("work.py", WORK, folder=proj)
    clum.script("other.py", WORK, folder=proj)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for argv in (["work.py"], ["work.py", "-b", "0/2"], ["work.py", "--bins=1/2"], ["work.py", "-b", "0,1/3"],
                 ["other.py"]):
        r = clum.run(proj / argv[0], *argv[1:], cwd=cwd)
        assert r.returncode == 0, r.stderr
    files = sorted(os.listdir(proj / ".cluster_func"))
    assert len([f for f in files if not f.endswith(".prev")]) == 5, files
    assert not os.path.exists(cwd / ".cluster_func")
    for f in files:
        assert f.startswith(("work.", "other."))


def test_journal_option_chooses_another_path(clum, tmp_path):
    clum.script("work.py", WORK)
    path = tmp_path / "j" / "deep" / "run.journal"
    r = clum.run("work.py", "--journal", path)
    assert r.returncode == 0, r.stderr
    assert path.exists() and not (tmp_path / ".cluster_func").exists()
    st = jmod.read(str(path))
    assert st.last_done == 50 and st.last_status == "complete" and st.bad == 0


def test_journal_option_in_clum_options(clum, tmp_path):
    clum.script("work.py", "clum_options = {'journal': 'from-options.journal'}\n" + textwrap.dedent(WORK))
    r = clum.run("work.py")
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.rglob("from-options.journal"))


def test_journal_in_an_unwritable_place_is_a_clear_error(clum, clean_error, tmp_path):
    clum.script("work.py", WORK)
    blocker = tmp_path / "file"
    blocker.write_text("")
    clean_error(clum.run("work.py", "--journal", blocker / "sub" / "j"), "journal")
    assert clum.evidence() == []


def test_journal_records_what_completed_and_what_failed(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    r = clum.run("work.py", "--journal", j, env={"FAIL": 1})
    assert r.returncode == 1
    assert "8 of 50 calls failed" in r.stderr
    st = jmod.read(str(j))
    assert st.last_done == 42 and st.last_status == "complete" and st.runs == 1
    assert sorted(rec["pos"] for rec in st.last_failed) == list(range(0, 50, 7))
    assert recorded_positions(j, list(range(50))) == {x for x in range(50) if x % 7}
    for line in j.read_text().splitlines():
        json.loads(line)  # one JSON record per line


# --- starting over -------------------------------------------------------------------------

def test_a_run_without_resume_starts_over_and_keeps_the_previous_journal(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    assert clum.run("work.py", "--journal", j).returncode == 0
    first = j.read_bytes()
    r = clum.run("work.py", "--journal", j)
    assert r.returncode == 0
    assert (tmp_path / "w.journal.prev").read_bytes() == first
    assert ends(clum.evidence()) == collections.Counter({x: 2 for x in range(50)})
    assert "previous run" not in r.stderr  # it was complete: nothing to say


def test_a_previous_run_with_failures_is_mentioned_when_starting_over(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    clum.run("work.py", "--journal", j, env={"FAIL": 1})
    r = clum.run("work.py", "--journal", j)
    assert r.returncode == 0
    assert "42" in r.stderr and "--resume" in r.stderr and str(j) + ".prev" in r.stderr


def _kill_mid_run(clum, j, at_least, env, extra=()):
    """Start clum, SIGKILL it once ``at_least`` calls have ended; return the evidence of that run."""
    p = clum.popen("work.py", "--journal", j, "-p", "2", *extra, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while clum.count_lines(prefix="E") < at_least:
            assert p.poll() is None, "clum finished before it could be killed"
            assert time.monotonic() < deadline, "calls did not start"
            time.sleep(0.005)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    time.sleep(0.2)  # orphaned workers die with their parent (PR_SET_PDEATHSIG); let any last line land
    ev = clum.evidence()
    clum.out.rename(str(clum.out) + ".killed")
    return ev


def test_an_incomplete_previous_run_is_reported_when_starting_over(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    _kill_mid_run(clum, j, 10, {"SLEEP": 0.03, "N": 200})
    r = clum.run("work.py", "--journal", j, env={"N": 200})
    assert r.returncode == 0, r.stderr
    assert "did not finish" in r.stderr and "--resume" in r.stderr
    n = len(recorded_positions(str(j) + ".prev", list(range(200))))
    assert n >= 1 and re.search(rf"\b{n} calls completed", r.stderr), r.stderr
    assert ends(clum.evidence()) == collections.Counter(range(200))  # everything ran again


# --- resume ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sigkill_mid_run_then_resume_runs_every_call_exactly_once(clum, tmp_path, method, procs):
    """Kill clum with SIGKILL in the middle of a run, then --resume: every call has completed
    exactly once overall except those in flight at the kill; nothing recorded runs again."""
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    n = 150
    env = {"SLEEP": 0.02, "N": n, "CLUSTER_FUNC_START_METHOD": method}
    ev1 = _kill_mid_run(clum, j, 40, env)
    procs.all_gone({int(line[2]) for line in ev1 if line[0] == "S"})
    s1, e1 = starts(ev1), ends(ev1)
    recorded = recorded_positions(j, list(range(n)))
    assert recorded <= set(e1), "the journal records calls that never finished"
    assert len(recorded) >= 30
    in_flight = set(s1) - recorded
    assert len(in_flight) <= 3 * 2, in_flight  # per worker: one just reported, two batches of one call

    r = clum.run("work.py", "--journal", j, "-p", "2", "--resume", env=env)
    assert r.returncode == 0, r.stderr
    assert f"skipped {len(recorded)} calls" in r.stderr
    s2, e2 = starts(clum.evidence()), ends(clum.evidence())
    assert set(s2) == set(range(n)) - recorded  # nothing recorded runs again, everything else does
    assert max(s2.values()) == 1 and s2 == e2
    overall = e1 + e2
    assert set(overall) == set(range(n))
    twice = {x for x, c in overall.items() if c > 1}
    assert twice <= in_flight


def test_sigkill_mid_run_of_cheap_calls_then_resume(clum, tmp_path):
    """The same with calls so cheap that the journal records whole batches by one digest."""
    clum.script("work.py", """\
        import os, time
        _fd = os.open(os.environ["CLUM_TEST_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        N = int(os.environ["N"])
        BLOCK = os.environ.get("BLOCK") == "1"
        def target(x):
            if BLOCK and x >= N // 2:
                time.sleep(60)   # so the kill surely comes before the end of the run
            os.write(_fd, b"E\\t%d\\n" % x)
        args = range(N)
        """)
    j = tmp_path / "w.journal"
    n = 400_000
    ev1 = _kill_mid_run(clum, j, n // 8, {"N": n, "BLOCK": 1})
    e1 = ends(ev1)
    assert max(e1.values()) == 1 and len(e1) < n
    recorded = recorded_positions(j, list(range(n)))
    assert recorded <= set(e1), "the journal records calls that never finished"
    assert len(recorded) >= n // 16
    assert len(set(e1) - recorded) <= 3 * 2 * batching.MAX_BATCH

    r = clum.run("work.py", "--journal", j, "--resume", env={"N": n})
    assert r.returncode == 0, r.stderr
    e2 = ends(clum.evidence())
    assert set(e2) == set(range(n)) - recorded and max(e2.values()) == 1
    assert f"skipped {len(recorded)} calls" in r.stderr


def test_resume_of_a_complete_run_of_cheap_calls_runs_nothing(clum, tmp_path):
    """Regression: a one-call batch recorded by one digest made --resume re-run everything after it."""
    clum.script("cheap.py", """\
        import os
        def target(x):
            if os.environ.get("RECORD"):
                rec("E", x)
        args = range(5000)
        """)
    j = tmp_path / "c.journal"
    assert clum.run("cheap.py", "--journal", j, "-p", "1").returncode == 0
    r = clum.run("cheap.py", "--journal", j, "-p", "1", "--resume", env={"RECORD": 1})
    assert r.returncode == 0, r.stderr
    assert clum.evidence() == []
    assert "skipped 5000 calls" in r.stderr


def test_resume_runs_earlier_failures_and_says_how_many_were_skipped(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    assert clum.run("work.py", "--journal", j, env={"FAIL": 1}).returncode == 1
    clum.out.unlink()
    r = clum.run("work.py", "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert "skipped 42 calls" in r.stderr
    assert ends(clum.evidence()) == collections.Counter(range(0, 50, 7))
    clum.out.unlink()
    r = clum.run("work.py", "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert "skipped 50 calls" in r.stderr and clum.evidence() == []


def test_resume_in_clum_options(clum, tmp_path):
    clum.script("work.py", "clum_options = {'resume': True}\n" + textwrap.dedent(WORK))
    j = tmp_path / "w.journal"
    assert clum.run("work.py", "--journal", j, env={"FAIL": 1}).returncode == 1
    clum.out.unlink()
    r = clum.run("work.py", "--journal", j)
    assert r.returncode == 0 and "skipped 42" in r.stderr
    assert ends(clum.evidence()) == collections.Counter(range(0, 50, 7))


def test_resume_in_round_robin_matches_calls_by_position_and_runs_changed_ones_again(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    assert clum.run("work.py", "--journal", j, env={"FAIL": 1, "SLEEP": 0.001}).returncode == 1
    clum.out.unlink()
    r = clum.run("work.py", "--journal", j, "--resume", env={"REVERSE": 1})
    assert r.returncode == 0, r.stderr
    # reversed, position p holds 49 - p: it ran before only if 49 - p was not a failure and p was not
    ran = ends(clum.evidence())
    assert ran == collections.Counter(49 - p for p in range(50) if p % 7 == 0 or (49 - p) != p)
    assert max(ran.values()) == 1


def test_resume_under_hash_matches_calls_by_content_in_any_order(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    assert clum.run("work.py", "-x", "0", "--journal", j, env={"FAIL": 1, "SLEEP": 0.001}).returncode == 1
    clum.out.unlink()
    r = clum.run("work.py", "-x", "0", "--journal", j, "--resume", env={"REVERSE": 1})
    assert r.returncode == 0, r.stderr
    assert ends(clum.evidence()) == collections.Counter(range(0, 50, 7))
    assert "skipped 42 calls" in r.stderr


def test_resume_matches_calls_whose_arguments_hold_sets(clum, tmp_path):
    # Calls of over 10 us get per-call digests, which pickle sets in a canonical order.
    # (Cheaper calls are journaled by batch checks only, which do not: they run again. See README.)
    clum.script("sets.py", """\
        import os, time
        def target(s):
            time.sleep(0.001)
            if os.environ.get("RECORD"):
                rec("E", len(s))
        args = [frozenset({"alpha%d" % i, "beta", "gamma", "delta", "epsilon"}) for i in range(20)]
        """)
    j = tmp_path / "s.journal"
    assert clum.run("sets.py", "--journal", j, env={"PYTHONHASHSEED": 1}).returncode == 0
    r = clum.run("sets.py", "--journal", j, "--resume", env={"PYTHONHASHSEED": 2, "RECORD": 1})
    assert r.returncode == 0
    assert clum.evidence() == [] and "skipped 20 calls" in r.stderr


def test_resume_without_a_journal_runs_everything(clum, tmp_path):
    clum.script("work.py", WORK)
    r = clum.run("work.py", "--journal", tmp_path / "none.journal", "--resume")
    assert r.returncode == 0, r.stderr
    assert "nothing to skip" in r.stderr
    assert ends(clum.evidence()) == collections.Counter(range(50))


def test_the_journal_is_append_only_across_resumes(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    clum.run("work.py", "--journal", j, env={"FAIL": 1})
    first = j.read_bytes()
    clum.run("work.py", "--journal", j, "--resume")
    second = j.read_bytes()
    assert second.startswith(first) and len(second) > len(first)
    clum.run("work.py", "--journal", j, "--resume")
    assert j.read_bytes().startswith(second)
    assert jmod.read(str(j)).runs == 3


@pytest.mark.parametrize("tear", ["append-partial", "truncate"])
def test_a_journal_with_a_torn_last_line_resumes(clum, tmp_path, tear):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    assert clum.run("work.py", "--journal", j, env={"FAIL": 1, "SLEEP": 0.001}).returncode == 1
    if tear == "append-partial":
        with open(j, "ab") as f:
            f.write(b'{"t":"ok","pos":[[0,50,1]],"d":"0011')  # a record torn by a kill
    else:
        data = j.read_bytes()
        j.write_bytes(data[:-9])  # the end record loses its last bytes and its newline
    clum.out.unlink()
    r = clum.run("work.py", "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert "skipped 42 calls" in r.stderr
    assert ends(clum.evidence()) == collections.Counter(range(0, 50, 7))
    st = jmod.read(str(j))
    assert st.bad == 1 and st.runs == 2 and st.last_status == "complete" and st.last_done == 8
    # ... and it resumes again: the torn line stayed a line of its own.
    clum.out.unlink()
    r = clum.run("work.py", "--journal", j, "--resume")
    assert "skipped 50 calls" in r.stderr and clum.evidence() == []


def test_a_journal_that_is_garbage_is_refused_not_a_crash(clum, clean_error, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    garbage = b"\x00\xff garbage\n[1, 2]\n\"text\"\n{\"no type\": 1}\n"
    j.write_bytes(garbage)
    clean_error(clum.run("work.py", "--journal", j, "--resume"), "not a clum journal", str(j))
    clean_error(clum.run("work.py", "--journal", j, "--failed"), "not a clum journal", str(j))
    assert j.read_bytes() == garbage and clum.evidence() == []


# --- retries and timeouts ------------------------------------------------------------------

FLAKY = """\
    import os, signal
    D = os.environ["ATTEMPTS_DIR"]
    HOW = os.environ.get("HOW", "raise")
    def target(x):
        p = os.path.join(D, "att-%d" % x)
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"x")
        os.close(fd)
        attempt = os.path.getsize(p)
        rec("S", x, attempt)
        if x in (2, 5) and attempt <= 2:   # fails twice, then succeeds
            if HOW == "raise":
                raise RuntimeError("attempt %d" % attempt)
            if HOW == "exit":
                os._exit(9)
            os.kill(os.getpid(), signal.SIGKILL)
        rec("E", x)
    args = range(10)
    """


@pytest.mark.parametrize("how", ["raise", "exit", "sigkill"])
def test_a_call_that_fails_twice_then_succeeds_with_retries_2_counts_as_done(clum, tmp_path, how):
    clum.script("flaky.py", FLAKY)
    (tmp_path / "att").mkdir()
    r = clum.run("flaky.py", "--retries", "2", env={"ATTEMPTS_DIR": tmp_path / "att", "HOW": how})
    assert r.returncode == 0, r.stderr
    assert "10 calls done" in r.stderr and "failed" in r.stderr  # the retries are mentioned
    s, e = starts(clum.evidence()), ends(clum.evidence())
    assert s == collections.Counter({**{x: 1 for x in range(10)}, 2: 3, 5: 3})
    assert e == collections.Counter(range(10))
    assert "calls failed" not in r.stderr


def test_too_few_retries_and_the_call_fails(clum, tmp_path):
    clum.script("flaky.py", FLAKY)
    (tmp_path / "att").mkdir()
    j = tmp_path / "f.journal"
    r = clum.run("flaky.py", "--retries", "1", "--journal", j, env={"ATTEMPTS_DIR": tmp_path / "att"})
    assert r.returncode == 1
    assert "2 of 10 calls failed" in r.stderr and "after 2 attempts" in r.stderr
    assert starts(clum.evidence())[2] == 2
    assert sorted(rec["pos"] for rec in jmod.read(str(j)).last_failed) == [2, 5]


def test_retries_from_clum_options(clum, tmp_path):
    clum.script("flaky.py", "clum_options = {'retries': 2}\n" + textwrap.dedent(FLAKY))
    (tmp_path / "att").mkdir()
    r = clum.run("flaky.py", env={"ATTEMPTS_DIR": tmp_path / "att"})
    assert r.returncode == 0, r.stderr


def test_no_retries_by_default(clum, tmp_path):
    clum.script("flaky.py", FLAKY)
    (tmp_path / "att").mkdir()
    r = clum.run("flaky.py", env={"ATTEMPTS_DIR": tmp_path / "att"})
    assert r.returncode == 1 and "2 of 10 calls failed" in r.stderr
    assert starts(clum.evidence())[2] == 1


def test_a_sleeping_call_with_timeout_1_is_stopped_and_the_rest_complete(clum, tmp_path, procs):
    clum.script("sleepy.py", """\
        import os, time
        def target(x):
            rec("S", x, os.getpid())
            if x == 3:
                time.sleep(60)
            rec("E", x)
        args = range(12)
        """)
    j = tmp_path / "t.journal"
    r = clum.run("sleepy.py", "--timeout", "1", "-p", "2", "--journal", j, timeout=50)
    assert r.returncode == 1, r.stderr
    assert re.search(r"position 3 .*\n.*timed out after 1 s", r.stderr), r.stderr
    assert "1 of 12 calls failed" in r.stderr
    ev = clum.evidence()
    assert ends(ev) == collections.Counter(x for x in range(12) if x != 3)
    assert starts(ev)[3] == 1
    sleeper = next(int(line[2]) for line in ev if line[0] == "S" and line[1] == "3")
    procs.all_gone([sleeper])
    assert [rec["msg"] for rec in jmod.read(str(j)).last_failed] == ["timed out after 1 s"]


def test_timeout_from_clum_options_and_fractional(clum):
    clum.script("sleepy.py", """\
        import time
        clum_options = {"timeout": 0.5}
        def target(x):
            if x == 1:
                time.sleep(60)
            rec("E", x)
        args = range(4)
        """)
    r = clum.run("sleepy.py", timeout=50)
    assert r.returncode == 1
    assert "timed out after 0.5 s" in r.stderr
    assert sorted(int(line[1]) for line in clum.evidence()) == [0, 2, 3]


def test_calls_quicker_than_the_timeout_are_not_stopped(clum):
    clum.script("q.py", """\
        import time
        def target(x):
            time.sleep(0.05)
            rec("E", x)
        args = range(40)
        """)
    r = clum.run("q.py", "--timeout", "2", "-p", "2")
    assert r.returncode == 0, r.stderr
    assert len(clum.evidence()) == 40


# --- --failed ----------------------------------------------------------------------------------

def test_failed_lists_the_failed_calls_of_the_last_run_and_runs_nothing(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    clum.run("work.py", "--journal", j, env={"FAIL": 1})
    clum.out.unlink()
    before = j.read_bytes()
    r = clum.run("work.py", "--journal", j, "--failed")
    assert clum.evidence() == []  # nothing ran
    assert j.read_bytes() == before
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 8
    for x in range(0, 50, 7):
        assert any(re.search(rf"\b{x}\b.*\b{x}\b.*ValueError.*multiple of seven: {x}", line) for line in lines), \
            (x, lines)
    assert r.returncode in (0, 1)


def test_failed_with_the_default_journal(clum):
    clum.script("work.py", WORK)
    clum.run("work.py", env={"FAIL": 1})
    r = clum.run("work.py", "--failed")
    assert "multiple of seven: 49" in r.stdout


def test_failed_after_a_clean_run(clum, tmp_path):
    clum.script("work.py", WORK)
    j = tmp_path / "w.journal"
    clum.run("work.py", "--journal", j, env={"FAIL": 1})
    clum.run("work.py", "--journal", j, "--resume")
    r = clum.run("work.py", "--journal", j, "--failed")
    assert r.returncode == 0
    assert r.stdout.strip() == "" and "no failed calls" in r.stderr


def test_failed_without_a_journal_is_a_clear_error(clum, clean_error):
    clum.script("work.py", WORK)
    clean_error(clum.run("work.py", "--failed"), "no journal")
    assert clum.evidence() == []


# --- the journal module -----------------------------------------------------------------------

@pytest.mark.parametrize("positions", [range(0), range(5), range(3, 30, 4), [1, 2, 3, 7, 9, 11, 12], [5], [4, 2, 9],
                                       [0, 0, 1]])
def test_positions_encode_and_decode(positions):
    assert list(jmod.decode_positions(jmod.encode_positions(positions))) == list(positions)


def test_read_ignores_torn_lines_anywhere(tmp_path):
    j = tmp_path / "j"
    j.write_text('{"cluster_func_journal":2,"bins":"0/1","mode":"round-robin"}\n{"t":"start"}\n'
                 '{"t":"ok","pos":[[0,3,1]],"c":"' + "0" * 17 + '"}\n{"t":"ok","po\n'
                 '{"t":"fail","pos":3,"final":true,"type":"E","msg":"m","args":"3"}\n{"t":"end","status":"comp')
    st = jmod.read(str(j), for_resume=True)
    assert st.bad == 2 and st.last_done == 3 and st.last_status is None and len(st.last_failed) == 1


def _journal_with(tmp_path, records, mode="round-robin"):
    """A journal whose records are (positions, elements, with per-call digests?)."""
    path = str(tmp_path / "unit.journal")
    for leftover in (path, path + ".prev"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    j = Journal(path, "s.py", "0/1", mode, False, lambda text: None)
    for positions, elements, dear in records:
        digests = b"".join(call_digest(e) for e in elements) if dear else None
        j.completed(positions, elements, None, digests)
    j.close(0, 0, "complete")
    return jmod.read(path, for_resume=True)


def test_resume_skips_whole_records_of_evenly_spaced_work(tmp_path):
    elems = [f"e{i}" for i in range(20)]
    st = _journal_with(tmp_path, [(range(0, 1), elems[0:1], False), (range(1, 5), elems[1:5], False),
                                  (range(5, 6), elems[5:6], False), (range(6, 10), elems[6:10], True)])
    left, rw = remaining(st, elems)
    assert left == list(range(10, 20)) and rw.skipped == 10


def test_resume_runs_a_record_again_when_its_elements_changed(tmp_path):
    elems = [f"e{i}" for i in range(10)]
    st = _journal_with(tmp_path, [(range(0, 4), elems[0:4], False)])
    changed = list(elems)
    changed[2] = "other"
    assert remaining(st, changed)[0] == list(range(10))


def test_resume_with_per_call_digests_runs_only_the_changed_call_again(tmp_path):
    elems = [f"e{i}" for i in range(10)]
    st = _journal_with(tmp_path, [(range(0, 4), elems[0:4], True)])
    changed = list(elems)
    changed[2] = "other"
    assert sorted(remaining(st, changed)[0]) == [2] + list(range(4, 10))


def test_resume_never_skips_a_replicate_that_did_not_run(tmp_path):
    """Equal elements at different positions are different calls."""
    elems = ["config-A"] * 20
    st = _journal_with(tmp_path, [(range(0, 5), elems[:5], False), ([7, 9], elems[:2], True)])
    left, rw = remaining(st, elems)
    assert sorted(left) == [5, 6, 8] + list(range(10, 20)) and rw.skipped == 7


def test_resume_under_hash_counts_equal_elements(tmp_path):
    elems = ["config-A"] * 20
    st = _journal_with(tmp_path, [([3, 8, 11], elems[:3], True)], mode="hash")
    left, rw = remaining(st, elems, mode="hash")
    assert len(left) == 17 and rw.skipped == 3


def test_resume_streams(tmp_path):
    """It pulls from the work only as far as it has to (no list of everything)."""
    st = _journal_with(tmp_path, [(range(0, 1), ["e0"], False), (range(1, 3), ["e1", "e2"], False)])
    pulled = []

    def work():
        for i in range(10 ** 9):
            pulled.append(i)
            yield f"e{i}"

    rw = ResumeWork(Work(work(), 0, 1), st, "round-robin")
    positions, elements, _ = rw.take(1)
    assert list(positions) == [3] and elements == ["e3"]
    assert len(pulled) <= 5000


def test_resume_skips_a_record_of_retried_calls(tmp_path):
    elems = [f"e{i}" for i in range(12)]
    # calls 4 and 9 failed at first and were retried together in one batch
    st = _journal_with(tmp_path, [(range(0, 4), elems[0:4], False), (range(5, 9), elems[5:9], False),
                                  ([4, 9], [elems[4], elems[9]], False), (range(10, 12), elems[10:], False)])
    assert remaining(st, elems)[0] == []
    assert remaining(st, elems, spaced=False)[0] == []


def test_where_records_overlap_the_later_wins(tmp_path):
    then = [f"e{i}" for i in range(10)]
    now = list(then)
    now[1] = "changed"
    # run 1 completed 0-4; run 2 found position 1 changed and ran 0-4 again, as two records
    st = _journal_with(tmp_path, [(range(0, 5), then[0:5], False), (range(0, 2), now[0:2], False),
                                  (range(2, 5), now[2:5], False)])
    left, rw = remaining(st, now)
    assert left == list(range(5, 10)) and rw.skipped == 5


@pytest.mark.parametrize("line", [
    '{"t":"ok","pos":"0","c":"00000000000000001"}', '{"t":"ok","pos":[[0,1]],"c":"00000000000000001"}',
    '{"t":"ok","pos":[[0,1,1]],"c":"xyz"}', '{"t":"ok","pos":[[0,2,1]],"d":"00"}', '{"t":"ok","pos":[[-1,1,1]]}',
    '{"t":"fail","pos":"3"}', '{"t":"end","status":7}', '[1,2]', '{"t":"what"}', 'garbage'])
def test_a_malformed_record_is_skipped_and_counted(tmp_path, line):
    st = _journal_with(tmp_path, [(range(0, 2), ["a", "b"], False)])
    path = tmp_path / "unit.journal"
    with open(path, "a") as f:
        f.write(line + "\n")
    st = jmod.read(str(path), for_resume=True)
    assert st.bad == 1 and st.recorded == 2


def test_resume_twice_runs_nothing_the_first_resume_completed(clum, tmp_path):
    clum.script("rr.py", """\
        import os
        def target(x):
            if os.environ.get("RECORD"):
                rec("E", x)
            elif os.environ.get("FAIL") and x % 10 == 0:
                raise ValueError(x)
        args = range(2000)
        """)
    j = tmp_path / "rr.journal"
    assert clum.run("rr.py", "-p", "1", "--journal", j, env={"FAIL": 1}).returncode == 1
    assert clum.run("rr.py", "-p", "1", "--journal", j, "--resume").returncode == 0
    r = clum.run("rr.py", "-p", "1", "--journal", j, "--resume", env={"RECORD": 1})
    assert r.returncode == 0
    assert clum.evidence() == [] and "skipped 2000" in r.stderr


@pytest.mark.parametrize("seed", range(40))
def test_resume_against_a_model(tmp_path, seed):
    """Random journals (records of consecutive or scattered positions, with or without per-call
    digests; elements since changed or gone; replicates): exactly the calls recorded with the
    same elements are skipped, every other call is yielded once."""
    import random

    rnd = random.Random(seed)
    n_then = rnd.randint(1, 80)
    then = [f"e{rnd.randint(0, 5)}" for i in range(n_then)]  # many replicates
    n_now = n_then if rnd.random() < 0.7 else rnd.randint(0, n_then)  # the args may have got shorter
    now = list(then[:n_now])
    for i in rnd.sample(range(n_now), k=min(n_now, rnd.randint(0, 3))):
        now[i] = f"changed{i}"
    done = [p for p in range(n_then) if rnd.random() < 0.8]
    if rnd.random() < 0.5:
        rnd.shuffle(done)  # batches of retries and of resumed runs hold scattered positions
    records, expected_skip = [], set()
    i = 0
    while i < len(done):
        k = rnd.randint(1, 9)
        positions = sorted(done[i:i + k])
        i += k
        elements = [then[p] for p in positions]
        dear = rnd.random() < 0.4
        records.append((positions, elements, dear))
        if not dear:
            if all(p < n_now and now[p] == then[p] for p in positions):
                expected_skip.update(positions)
        else:
            expected_skip.update(p for p in positions if p < n_now and now[p] == then[p])
    st = _journal_with(tmp_path, records)
    for spaced in (True, False):
        left, rw = remaining(st, now, spaced=spaced, n=rnd.randint(1, 10))
        assert len(left) == len(set(left))
        assert set(left) == set(range(n_now)) - expected_skip
        assert rw.skipped == len(expected_skip)


def test_ctrl_c_then_resume_runs_only_what_had_not_finished(clum, tmp_path, procs):
    # One worker: batches [0], [1], then (calls being quick) [2, 3, 4, 5], in which 4 hangs.
    clum.script("mixed.py", """\
        import os, time
        HANG = os.environ.get("HANG") == "1"
        def target(x):
            rec("S", x)
            if HANG and x >= 4:
                time.sleep(60)
            rec("E", x)
        args = range(100)
        """)
    j = tmp_path / "m.journal"
    p = clum.popen("mixed.py", "-p", "1", "--journal", j, env={"HANG": 1})
    code, err = clum.signal_when(
        p, lambda: clum.count_lines(prefix="E") >= 4 and clum.count_lines(prefix="S") >= 5, signal.SIGINT)
    assert code == 130, err
    assert re.search(r"\b4 calls completed", err), err
    assert jmod.read(str(j)).last_status == "interrupted"
    clum.out.unlink()
    r = clum.run("mixed.py", "-p", "1", "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert "skipped 4 calls" in r.stderr
    assert starts(clum.evidence()) == collections.Counter(range(4, 100))
