"""The journal's safety rules (issue 10), through the real ``clum`` command: a call is a
position (replicates are different calls), a journal owns its file, one live run per journal,
write errors stop the run with nothing lost, malformed records are skipped and counted."""

import json
import os
import signal

import pytest

from cluster_func.record import journal as jmod

REPLICATES = """\
    import os, time
    SLEEP = float(os.environ.get("SLEEP", "0"))
    def target(x, i=None):
        rec("S", x)
        if SLEEP:
            time.sleep(SLEEP)
        rec("E", x)
    args = ["config-A"] * int(os.environ.get("N", "20"))
    """


def done_count(ev):
    return sum(1 for line in ev if line[0] == "E")


def kill_after(clum, p, calls):
    """SIGKILL clum (its whole session) once ``calls`` calls have ended."""
    clum.signal_when(p, lambda: clum.count_lines(prefix="E") >= calls, signal.SIGKILL, group=True)


@pytest.mark.parametrize("sleep,n", [(0.05, 20), (0.0, 200_000)], ids=["slow", "cheap"])
def test_replicates_killed_and_resumed_all_run_and_none_twice(clum, tmp_path, sleep, n):
    clum.script("rep.py", REPLICATES)
    j = tmp_path / "rep.journal"
    env = {"SLEEP": sleep, "N": n}
    p = clum.popen("rep.py", "-p", "2", "--journal", j, env=env)
    kill_after(clum, p, 10 if sleep else n // 4)
    before = clum.count_lines(prefix="E")
    recorded = jmod.read(str(j), for_resume=True).recorded
    assert 0 < recorded <= before < n
    r = clum.run("rep.py", "-p", "2", "--journal", j, "--resume", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"skipped {recorded} calls" in r.stderr
    # every replicate ran; only calls that ended after the last journal write can have run twice
    total = clum.count_lines(prefix="E")
    assert total - (before - recorded) == n
    if sleep:
        # slow calls: each result is written as it arrives, so a call that ended was recorded
        # unless it ended in the instant of the kill
        assert total <= n + 2


def test_resume_runs_replicates_that_never_ran_of_a_stopped_generator(clum, tmp_path):
    clum.script("rep.py", """\
        import os
        def target(x):
            rec("E", x)
        def args():
            for i in range(int(os.environ["N"])):
                yield "same"
        """)
    j = tmp_path / "rep.journal"
    assert clum.run("rep.py", "--journal", j, env={"N": 30}).returncode == 0
    r = clum.run("rep.py", "--journal", j, "--resume", env={"N": 50})
    assert r.returncode == 0, r.stderr
    assert "skipped 30 calls" in r.stderr and clum.count_lines(prefix="E") == 50


# --- ownership ------------------------------------------------------------------------------

def test_a_file_that_is_not_a_journal_is_never_renamed_or_appended_to(clum, clean_error, tmp_path):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(5)\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n")
    other = tmp_path / "other.jsonl"
    other.write_text('{"t": "ok", "pos": [[0, 5, 1]]}\n{"event": "x"}\n')
    for path in (notes, other):
        before = path.read_bytes()
        for extra in ([], ["--resume"]):
            err = clean_error(clum.run("ok.py", "--journal", path, *extra), "not a clum journal", str(path))
            assert "--journal" in err
            assert path.read_bytes() == before
            assert not os.path.exists(str(path) + ".prev")
    assert clum.evidence() == []


def test_a_directory_as_journal_is_a_clear_error(clum, clean_error, tmp_path):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(5)\n")
    d = tmp_path / "adir"
    d.mkdir()
    clean_error(clum.run("ok.py", "--journal", d), "is a directory", str(d))
    clean_error(clum.run("ok.py", "--journal", d, "--resume"), "is a directory")
    clean_error(clum.run("ok.py", "--journal", d, "--failed"), "is a directory")
    assert clum.evidence() == [] and os.listdir(d) == []


def test_a_file_that_is_not_a_journal_at_the_prev_path_is_not_overwritten(clum, clean_error, tmp_path):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(5)\n")
    j = tmp_path / "run.journal"
    assert clum.run("ok.py", "--journal", j).returncode == 0
    prev = tmp_path / "run.journal.prev"
    prev.write_text("user data\n")
    clean_error(clum.run("ok.py", "--journal", j), "not a clum journal", str(prev))
    assert prev.read_text() == "user data\n"


def test_the_previous_journal_is_kept_as_prev_and_replaced_by_the_next(clum, tmp_path):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(5)\n")
    j = tmp_path / "run.journal"
    for _ in range(3):
        assert clum.run("ok.py", "--journal", j).returncode == 0
    assert jmod.identify(str(j))[0] == 2 and jmod.identify(str(j) + ".prev")[0] == 2


def test_a_journal_of_format_1_is_refused_for_resume_and_moved_aside_to_start_over(clum, clean_error, tmp_path):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(5)\n")
    j = tmp_path / "old.journal"
    old = ('{"t":"start","v":1,"script":"ok.py","bins":"0/1","mode":"round-robin","time":1,"pid":1}\n'
           '{"t":"ok","pos":[[0,5,1]],"bd":"00"}\n{"t":"end","done":5,"failed":0,"status":"complete"}\n')
    j.write_text(old)
    clean_error(clum.run("ok.py", "--journal", j, "--resume"), "format 1", "without --resume")
    assert j.read_text() == old and clum.evidence() == []
    r = clum.run("ok.py", "--journal", j)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "old.journal.prev").read_text() == old and clum.count_lines(prefix="E") == 5


def test_resume_with_other_bins_or_binning_is_refused(clum, clean_error, tmp_path):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(6)\n")
    j = tmp_path / "run.journal"
    assert clum.run("ok.py", "--journal", j, "-b", "0/2").returncode == 0
    clean_error(clum.run("ok.py", "--journal", j, "-b", "1/2", "--resume"), "bins 0/2", "1/2")
    clean_error(clum.run("ok.py", "--journal", j, "-b", "0/2", "-x", "0", "--resume"), "binning")


# --- one live run per journal -----------------------------------------------------------------------

SLOW = """\
    import os, time
    def target(x):
        rec("S", x)
        time.sleep(float(os.environ.get("SLEEP", "0.05")))
        rec("E", x)
    args = range(int(os.environ.get("N", "400")))
    """


def test_a_second_run_on_a_live_journal_exits_2_naming_the_first(clum, clean_error, procs, tmp_path):
    clum.script("slow.py", SLOW)
    j = tmp_path / "slow.journal"
    p = clum.popen("slow.py", "-p", "1", "--journal", j)
    try:
        procs.wait_for(lambda: clum.count_lines(prefix="E") >= 1, what="a call to end")
        before = j.read_bytes()
        for extra in ([], ["--resume"], ["-p", "2"]):
            err = clean_error(clum.run("slow.py", "--journal", j, *extra), f"pid {p.pid}", "--journal")
            assert "another clum run" in err.lower()
        assert j.read_bytes().startswith(before)  # not moved aside, not truncated
        assert not os.path.exists(str(j) + ".prev")
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    # the hold ends with the holder, even by SIGKILL
    r = clum.run("slow.py", "--journal", j, "--resume", env={"SLEEP": 0, "N": 400})
    assert r.returncode == 0, r.stderr


def test_two_runs_with_the_default_journal_cannot_overlap(clum, clean_error, procs, tmp_path):
    clum.script("slow.py", SLOW)
    p = clum.popen("slow.py", "-p", "1")
    try:
        procs.wait_for(lambda: clum.count_lines(prefix="S") >= 1, what="a call to start")
        clean_error(clum.run("slow.py", "--resume"), "another clum run", "--journal")
        r = clum.run("slow.py", "--journal", tmp_path / "own.journal", env={"N": 3, "SLEEP": 0})
        assert r.returncode == 0, r.stderr  # an independent run with its own journal
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


# --- write errors ---------------------------------------------------------------------------------

def test_a_full_disk_stops_the_run_with_every_reported_call_in_the_journal(clum, small_disk, tmp_path):
    # Under --hash every call gets a per-call digest (16 bytes a call in the journal): 100,000
    # of them need 1.6 MB, which the disk does not have.
    clum.script("many.py", """\
        def target(x):
            rec("E", x)
        args = ["x" * 40 + str(i) for i in range(100_000)]
        """)
    j = small_disk / "many.journal"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3800 * 1024))
    r = clum.run("many.py", "-p", "2", "-x", "0", "--journal", j, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert str(j) in r.stderr and "No space left" in r.stderr and "-x 0 --journal" in r.stderr
    recorded = jmod.read(str(j), for_resume=True).recorded
    said = int(r.stderr.split(" calls completed and are recorded in the journal")[0].rsplit(" ", 1)[1])
    assert said <= recorded < 100_000  # every call it reports as completed is in the journal
    # free the space and resume: exact
    filler.unlink()
    ran_before = clum.count_lines(prefix="E")
    r = clum.run("many.py", "-p", "2", "-x", "0", "--journal", j, "--resume", "--quiet", timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"records {recorded} calls as completed" in r.stderr
    assert clum.count_lines(prefix="E") - ran_before == 100_000 - recorded


# --- bad records -----------------------------------------------------------------------------------

def test_malformed_records_are_skipped_with_one_warning(clum, tmp_path):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(10)\n")
    j = tmp_path / "run.journal"
    assert clum.run("ok.py", "--journal", j).returncode == 0
    lines = j.read_text().splitlines()
    lines.insert(2, '{"t":"ok","pos":"zero","c":"0123"}')
    lines.insert(3, '{"t":"ok","pos":[[0,1,1]],"c":"not hex at all!"}')
    lines.insert(4, '{"t":"fail","pos":[1],"type":"E"}')
    j.write_text("\n".join(lines) + "\n")
    r = clum.run("ok.py", "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("skipped 3 unreadable line(s)") == 1 and "Traceback" not in r.stderr
    r = clum.run("ok.py", "--journal", j, "--failed")
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_journal_header_identifies_the_file(clum, tmp_path):
    clum.script("ok.py", "def target(x):\n    pass\nargs = range(3)\n")
    j = tmp_path / "run.journal"
    assert clum.run("ok.py", "--journal", j).returncode == 0
    first = json.loads(j.read_text().splitlines()[0])
    assert first["cluster_func_journal"] == 2 and first["bins"] == "0/1" and first["mode"] == "round-robin"
    assert not os.path.exists(str(j) + ".lock")  # the lock file goes with its run


def test_a_disk_too_full_for_the_journals_header_is_exit_1_with_the_path(clum, small_disk):
    clum.script("ok.py", "def target(x):\n    rec('E', x)\nargs = range(5)\n")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    j = small_disk / "ok.journal"
    r = clum.run("ok.py", "--journal", j)
    assert r.returncode == 1 and str(j) in r.stderr and "No space left" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and clum.evidence() == []
    assert not j.exists()
