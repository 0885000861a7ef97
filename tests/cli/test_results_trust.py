"""What a run returns is as trustworthy as what it ran (issue 19), through the real ``clum``:
values after full disks, kills and resumes, under --hash with replicates and reordered args;
results files and journals owned, locked and tied to the run that wrote them; a refused
option leaves every file as it was; no worker outlives a killed clum."""

import hashlib
import os
import random
import shutil
import signal

import pytest

import cluster_func
from cluster_func.record import journal as jmod

# args come from the environment: N elements, a permutation seed (PERM) and replicates (REP
# distinct values), so that a test can reorder or shrink them between runs.
ARGS = """\
import os, random, time
N = int(os.environ.get("N", 40))
REP = int(os.environ.get("REP", 0))
elements = [("e", i % REP) if REP else ("e", i) for i in range(N)]
if os.environ.get("PERM"):
    random.Random(int(os.environ["PERM"])).shuffle(elements)
args = elements

def target(name, k):
    rec("E", name, k)
    time.sleep(float(os.environ.get("SLEEP", 0)))
    return {"of": [name, k]}

def other(name, k):
    return "other"
"""


def expected(env):
    """position -> the value target returns for the element now at that position."""
    n, rep = int(env.get("N", 40)), int(env.get("REP", 0))
    elements = [("e", i % rep) if rep else ("e", i) for i in range(n)]
    if env.get("PERM"):
        random.Random(int(env["PERM"])).shuffle(elements)
    return {p: {"of": list(e)} for p, e in enumerate(elements)}


def values(path):
    """position -> value, checking that the file holds exactly one value per position."""
    out = {}
    fmt = str(path).replace(".prev", "").rsplit(".", 1)[1]
    if fmt == "jsonl":
        import json

        with open(path) as f:
            recs = [json.loads(line) for line in f]
        pairs = [(r["pos"], r["value"]) for r in recs]
    else:
        import pickle

        pairs = []
        with open(path, "rb") as f:
            while True:
                try:
                    pairs.append(pickle.load(f))
                except EOFError:
                    break
    for pos, v in pairs:
        assert pos not in out, f"position {pos} has two values in {path}"
        out[pos] = v
    assert out == dict(cluster_func.read_results(str(path)))
    return out


def digest_files(folder):
    return {p: hashlib.sha256(open(os.path.join(folder, p), "rb").read()).hexdigest()
            for p in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, p))}


# --- full disks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "pkl"])
def test_a_disk_that_fills_during_the_run_loses_no_value_and_resume_completes_every_position(
        clum, small_disk, fmt):
    clum.script("w.py", ARGS)
    env = {"N": 3000}
    j, out = small_disk / "w.journal", small_disk / f"v.{fmt}"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3900 * 1024))
    r = clum.run("w.py", "-p", "2", "--journal", j, "--results", out, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "No space left" in r.stderr
    recorded = jmod.read(str(j), for_resume=True).recorded
    assert recorded < 3000
    filler.unlink()
    ran = clum.count_lines(prefix="E")
    r = clum.run("w.py", "-p", "2", "--journal", j, "--results", out, "--resume", "--quiet", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert clum.count_lines(prefix="E") - ran == 3000 - recorded  # nothing recorded ran again
    assert values(out) == expected(env)


@pytest.mark.parametrize("fmt", ["jsonl", "pkl"])
def test_a_disk_too_full_for_the_results_file_keeps_the_values_in_the_journal(clum, small_disk, tmp_path, fmt):
    clum.script("w.py", ARGS)
    env = {"N": 2000}
    j, out = tmp_path / "w.journal", small_disk / f"v.{fmt}"
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # the disk is full to the last byte
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    r = clum.run("w.py", "-p", "2", "--journal", j, "--results", out, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "No space left" in r.stderr and "--resume" in r.stderr
    assert not out.exists() and not [p for p in os.listdir(small_disk) if ".tmp-" in p]
    filler.unlink()
    ran = clum.count_lines(prefix="E")
    r = clum.run("w.py", "--journal", j, "--results", out, "--resume", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert clum.count_lines(prefix="E") == ran  # every value came from the journal
    assert values(out) == expected(env)


# --- positions ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "pkl"])
def test_hash_replicates_killed_and_resumed_have_one_value_at_every_position(clum, tmp_path, fmt):
    clum.script("w.py", ARGS)
    env = {"N": 60, "REP": 1, "SLEEP": 0.02}
    j, out = tmp_path / "w.journal", tmp_path / f"v.{fmt}"
    p = clum.popen("w.py", "-p", "2", "-x", "0", "--journal", j, "--results", out, env=env)
    clum.signal_when(p, lambda: clum.count_lines(prefix="E") >= 20, signal.SIGKILL, group=True)
    r = clum.run("w.py", "-p", "2", "-x", "0", "--journal", j, "--results", out, "--resume", env=env)
    assert r.returncode == 0, r.stderr
    assert values(out) == expected(env)


@pytest.mark.parametrize("binning", [["-x", "1"], []])
def test_values_follow_their_elements_when_args_is_reordered(clum, tmp_path, binning):
    clum.script("w.py", ARGS)
    j, out = tmp_path / "w.journal", tmp_path / "v.jsonl"
    assert clum.run("w.py", *binning, "--journal", j, "--results", out, env={"N": 10}).returncode == 0
    ran = clum.count_lines(prefix="E")
    env = {"N": 10, "PERM": 3}
    r = clum.run("w.py", *binning, "--journal", j, "--results", out, "--resume", env=env)
    assert r.returncode == 0, r.stderr
    if binning:  # matched by content: nothing runs again, and each value moved with its element
        assert clum.count_lines(prefix="E") == ran
    assert values(out) == expected(env)


@pytest.mark.parametrize("binning", [["-x", "1"], []])
def test_after_args_shrinks_no_value_is_left_past_its_end(clum, tmp_path, binning):
    clum.script("w.py", ARGS)
    j, out = tmp_path / "w.journal", tmp_path / "v.jsonl"
    assert clum.run("w.py", *binning, "--journal", j, "--results", out, env={"N": 30}).returncode == 0
    r = clum.run("w.py", *binning, "--journal", j, "--results", out, "--resume", env={"N": 12})
    assert r.returncode == 0, r.stderr
    assert values(out) == expected({"N": 12})


@pytest.mark.parametrize("first", [[], ["--results", "v.pkl"]], ids=["without-results", "other-format"])
def test_a_resume_that_wants_values_runs_again_the_calls_recorded_without_them(clum, tmp_path, first):
    clum.script("w.py", ARGS)
    j = tmp_path / "w.journal"
    assert clum.run("w.py", "--journal", j, *first, env={"N": 20}).returncode == 0
    r = clum.run("w.py", "--journal", j, "--results", "v.jsonl", "--resume", env={"N": 20})
    assert r.returncode == 0, r.stderr
    assert "20 calls recorded as completed carry no jsonl value" in r.stderr
    assert values(tmp_path / "v.jsonl") == expected({"N": 20})


def test_dict_keys_that_json_would_merge_fail_the_call_instead_of_losing_a_value(clum, tmp_path):
    clum.script("d.py", "def target(x):\n    return {1: 'a', '1': 'b'} if x else {2: 'c'}\nargs = [0, 1]\n")
    r = clum.run("d.py", "--results", "v.jsonl")
    assert r.returncode == 1 and "position 1" in r.stderr and ".pkl" in r.stderr, r.stderr
    assert values(tmp_path / "v.jsonl") == {0: {"2": "c"}}
    assert clum.run("d.py", "--results", "v.pkl").returncode == 0
    assert values(tmp_path / "v.pkl") == {0: {2: "c"}, 1: {1: "a", "1": "b"}}


def test_a_torn_results_file_is_read_with_a_warning_that_says_so(clum, tmp_path):
    clum.script("w.py", ARGS)
    assert clum.run("w.py", "--results", "v.jsonl", env={"N": 5}).returncode == 0
    out = tmp_path / "v.jsonl"
    out.write_bytes(out.read_bytes()[:-7])
    with pytest.warns(cluster_func.record.results.TornRecords, match="skipped 1 record"):
        assert len(list(cluster_func.read_results(str(out)))) == 4


def test_a_journal_record_whose_values_were_damaged_is_skipped_and_its_calls_run_again(clum, tmp_path):
    clum.script("w.py", ARGS)
    j, out = tmp_path / "w.journal", tmp_path / "v.jsonl"
    assert clum.run("w.py", "-p", "1", "--journal", j, "--results", out, env={"N": 30}).returncode == 0
    lines = j.read_bytes().split(b"\n")
    k = next(i for i, line in enumerate(lines) if b'"v":"' in line)
    head, v = lines[k].rsplit(b'"v":"', 1)
    lines[k] = head + b'"v":"' + (b"A" if v[:1] != b"A" else b"B") + v[1:]  # one base64 character changed
    j.write_bytes(b"\n".join(lines))
    damaged = len(jmod.decode_positions(__import__("json").loads(head + b'"v":""}')["pos"]))
    ran = clum.count_lines(prefix="E")
    r = clum.run("w.py", "-p", "1", "--journal", j, "--results", out, "--resume", env={"N": 30})
    assert r.returncode == 0 and "skipped 1 unreadable line" in r.stderr, r.stderr
    assert clum.count_lines(prefix="E") - ran == damaged  # exactly its calls ran again
    assert values(out) == expected({"N": 30})


# --- ownership -------------------------------------------------------------------------------------

def test_a_results_file_of_another_run_is_refused_before_anything_changes(clum, clean_error, tmp_path):
    clum.script("a.py", ARGS)
    clum.script("b.py", ARGS)
    assert clum.run("a.py", "--results", "v.jsonl", env={"N": 5}).returncode == 0
    before = digest_files(tmp_path)
    for extra in ([], ["--resume"]):
        clean_error(clum.run("b.py", "--results", "v.jsonl", *extra, env={"N": 5}), "v.jsonl",
                    "not a results file of this run")
    assert digest_files(tmp_path) == before
    # the run that wrote it may replace it (the old one kept as .prev) and resume into it
    assert clum.run("a.py", "--results", "v.jsonl", env={"N": 6}).returncode == 0
    assert clum.run("a.py", "--results", "v.jsonl", "--resume", env={"N": 7}).returncode == 0
    assert values(tmp_path / "v.jsonl") == expected({"N": 7})
    assert values(tmp_path / "v.jsonl.prev") == expected({"N": 5})


def test_a_hand_written_results_like_file_is_never_moved(clum, clean_error, tmp_path):
    clum.script("a.py", ARGS)
    mine = tmp_path / "v.jsonl"
    mine.write_text('{"pos": 0, "value": "mine"}\n')
    clean_error(clum.run("a.py", "--results", mine, env={"N": 3}), "not a results file of this run")
    assert mine.read_text() == '{"pos": 0, "value": "mine"}\n' and not os.path.exists(f"{mine}.prev")


def test_two_runs_at_once_on_one_results_file_the_second_is_refused(clum, clean_error, procs, tmp_path):
    clum.script("a.py", ARGS)
    clum.script("b.py", ARGS)
    p = clum.popen("a.py", "--results", "v.jsonl", env={"N": 200, "SLEEP": 0.05})
    try:
        procs.wait_for(lambda: clum.count_lines(prefix="E") >= 1)  # the first run is under way
        clean_error(clum.run("b.py", "--results", "v.jsonl", env={"N": 3}), "another clum run", "v.jsonl")
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(30)


def test_a_refused_option_leaves_every_file_as_it_was(clum, clean_error, tmp_path):
    clum.script("a.py", ARGS)
    j = tmp_path / "same.jsonl"
    assert clum.run("a.py", "--journal", j, env={"N": 5}).returncode == 0
    before = digest_files(tmp_path)
    clean_error(clum.run("a.py", "--results", j, "--journal", j, env={"N": 5}), "the two must be different files")
    assert digest_files(tmp_path) == before
    r = clum.run("a.py", "--journal", j, "--resume", env={"N": 5})
    assert r.returncode == 0 and "skipped 5 calls" in r.stderr, r.stderr


# --- what ran --------------------------------------------------------------------------------------

def test_resuming_with_another_target_is_refused_and_says_what_differs(clum, clean_error, tmp_path):
    clum.script("m.py", ARGS)
    j = tmp_path / "m.journal"
    assert clum.run("m.py", "--journal", j, env={"N": 5}).returncode == 0
    clean_error(clum.run("m.py", "-t", "other", "--journal", j, "--resume", env={"N": 5}),
                "--target target (this run: other)")
    clean_error(clum.run("m.py", "--journal", j, "--resume", "--", "--lr", "2", env={"N": 5}),
                "script arguments after --")
    # without --journal, another target has a journal of its own
    assert clum.run("m.py", env={"N": 5}).returncode == 0
    r = clum.run("m.py", "-t", "other", "--resume", env={"N": 5})
    assert r.returncode == 0 and "nothing to skip" in r.stderr, r.stderr


def test_a_journal_of_another_script_is_neither_resumed_nor_moved(clum, clean_error, tmp_path):
    clum.script("a.py", ARGS)
    clum.script("b.py", ARGS)
    j = tmp_path / "a.journal"
    assert clum.run("a.py", "--journal", j, env={"N": 5}).returncode == 0
    before = digest_files(tmp_path)
    for extra in ([], ["--resume"]):
        clean_error(clum.run("b.py", "--journal", j, *extra, env={"N": 5}), "belongs to another script")
    assert digest_files(tmp_path) == before


def test_a_folder_moved_with_its_default_journal_resumes_and_another_script_beside_it_is_still_refused(
        clum, clean_error, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "a.py").write_text("def target(x):\n    return x\nargs = range(5)\n")
    assert clum.run(old / "a.py").returncode == 0
    shutil.copytree(old, new)  # copied, as from a cluster's scratch, journal and all
    r = clum.run(new / "a.py", "--resume")
    assert r.returncode == 0 and "skipped 5 calls" in r.stderr and "the folder moved" in r.stderr, r.stderr
    (new / "b.py").write_text("def target(x):\n    return x\nargs = range(5)\n")
    clean_error(clum.run(new / "b.py", "--journal", new / ".cluster_func" / "a.all.journal"),
                "belongs to another script")


def test_a_journal_reached_through_a_symlink_is_the_same_journal_for_the_lock(clum, clean_error, procs, tmp_path):
    clum.script("a.py", ARGS)
    j, link = tmp_path / "a.journal", tmp_path / "link.journal"
    link.symlink_to(j)
    p = clum.popen("a.py", "--journal", j, env={"N": 200, "SLEEP": 0.05})
    try:
        procs.wait_for(lambda: clum.count_lines(prefix="E") >= 1)
        clean_error(clum.run("a.py", "--journal", link, env={"N": 200}), "another clum run")
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(30)
    assert link.is_symlink()
    r = clum.run("a.py", "--journal", link, "--resume", "--quiet", env={"N": 200})
    assert r.returncode == 0 and link.is_symlink() and os.path.isfile(j)


def test_a_lock_path_holding_a_file_of_the_users_is_never_touched(clum, clean_error, tmp_path):
    clum.script("a.py", ARGS)
    j = tmp_path / "a.journal"
    (tmp_path / "a.journal.lock").write_text("my notes\n")
    clean_error(clum.run("a.py", "--journal", j, env={"N": 3}), "a.journal.lock", "not a lock file of clum")
    assert (tmp_path / "a.journal.lock").read_text() == "my notes\n" and not j.exists()


# --- orphans ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_no_worker_runs_a_call_seconds_after_clum_is_killed(clum, procs, tmp_path, method):
    clum.script("w.py", ARGS)
    env = {"N": 400, "SLEEP": 0.1}
    p = clum.popen("w.py", "-p", "2", "--start-method", method, env=env)
    procs.wait_for(lambda: clum.count_lines(prefix="E") >= 4, what="calls to start")
    os.kill(p.pid, signal.SIGKILL)  # clum alone, not its group
    p.wait(10)
    procs.wait_for(lambda: not procs.session(p.pid), timeout=8, what="every worker to end")
    ran = clum.count_lines(prefix="E")
    r = clum.run("w.py", "-p", "2", "--resume", "--quiet", env={"N": 400})
    assert r.returncode == 0, r.stderr
    assert clum.count_lines(prefix="E") - ran <= 400


# --- the invariant, as a model -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_model_every_position_has_its_own_value_after_random_kills_reorderings_and_resumes(clum, tmp_path, seed):
    rnd = random.Random(seed)
    clum.script("w.py", ARGS)
    fmt = rnd.choice(["jsonl", "pkl"])
    binning = rnd.choice([[], ["-x", "0"], ["-x", "1"]])
    method = rnd.choice(["fork", "spawn"])
    j, out = tmp_path / "w.journal", tmp_path / f"v.{fmt}"
    env = {}
    for step in range(4):
        env = {"N": rnd.choice([30, 40, 50]), "REP": rnd.choice([0, 0, 1, 3]), "SLEEP": 0.01}
        if rnd.random() < 0.5:
            env["PERM"] = rnd.randrange(100)
        cmd = ["w.py", "-p", "2", "--start-method", method, *binning, "--journal", j, "--results", out]
        if step:
            cmd.append("--resume")
        ending = rnd.choice(["kill", "int", "complete"])
        if ending == "complete":
            r = clum.run(*cmd, env=env)
            assert r.returncode == 0, r.stderr
            assert values(out) == expected(env)
            continue
        start = clum.count_lines(prefix="E")
        k = rnd.randrange(1, 20)
        p = clum.popen(*cmd, env=env)
        status, err = clum.signal_when(p, lambda: clum.count_lines(prefix="E") - start >= k or p.poll() is not None,
                                       signal.SIGKILL if ending == "kill" else signal.SIGINT, group=True)
        assert "Traceback" not in err, err
        if ending == "int" and out.exists() and status == 130:
            got, want = values(out), expected(env)
            assert all(got[p] == want[p] for p in got)  # what it wrote is right, if not all
    r = clum.run("w.py", "-p", "2", "--start-method", method, *binning, "--journal", j, "--results", out, "--resume",
                 env=env)
    assert r.returncode == 0, r.stderr
    assert values(out) == expected(env)
