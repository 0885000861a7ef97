"""The clum faults of issue 30 (and the advice of issue 29), through the real ``clum``: a stop by
signal at any moment is an orderly stop; a resume never runs a recorded, unchanged call again;
no process a call starts outlives it; a run's results file is known by what it holds; every
command a run advises works as printed."""

import json
import os
import random
import re
import shlex
import shutil
import signal

import pytest

import cluster_func
from cluster_func.record import journal as jmod

SCRIPT = """\
import json, os, time
args = json.load(open(os.environ["ARGS_FILE"])) if os.environ.get("ARGS_FILE") else list(range(int(os.environ.get("N", 40))))

def target(x):
    rec("E", x)
    time.sleep(float(os.environ.get("SLEEP", 0)))
    return x
"""


def values(path):
    return dict(cluster_func.read_results(str(path)))


def advised(stderr):
    """The clum command a run's message advises (the last one quoted), as words."""
    found = re.findall(r"'(clum [^']*)'", stderr)
    assert found, f"no advice in:\n{stderr}"
    return shlex.split(found[-1])[1:]


# --- 2: a stop by signal at any moment ------------------------------------------------------------

def _target(x):
    return x


def test_a_signal_while_a_workers_message_is_being_taken_stops_the_run_in_order(monkeypatch):
    """The signal lands between taking a worker's "done" off its pipe and accounting it, while its
    next "done" already waits: the stop settles both, and every value comes back once."""
    from cluster_func.core import bins
    from cluster_func.engine import Settings
    from cluster_func.local import runner as runner_mod
    from cluster_func.local.reporter import Reporter
    from cluster_func.local.worker import Inherited

    fired = []
    on_message = runner_mod.Runner._on_message

    def signalled(self, w, msg):
        if msg[0] == "done" and not fired:
            fired.append(msg[1])
            w.result_r.poll(30)  # the worker's next message is there too
            os.kill(os.getpid(), signal.SIGTERM)
        on_message(self, w, msg)

    monkeypatch.setattr(runner_mod.Runner, "_on_message", signalled)
    got = []
    work = bins.select(range(200_000), bins.BinSpec((0,), 1))
    r = runner_mod.Runner(Settings(Inherited(_target, None), 1, "fork", values="jsonl"), work, Reporter(progress=False),
                          collect=got.append)
    outcome = r.run()
    assert fired and outcome.interrupted_by == signal.SIGTERM
    positions = [json.loads(line)["pos"] for chunk in got for line in chunk.splitlines()]
    assert len(positions) == len(set(positions)) == outcome.done


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_sigterm_mid_run_exports_the_recorded_values_and_the_advice_resumes_into_the_same_file(
        clum, tmp_path, method):
    clum.script("s.py", SCRIPT)
    env = {"N": 400, "SLEEP": 0.01}
    p = clum.popen("s.py", "-p", "2", "--start-method", method, "--results", "v.jsonl", env=env)
    status, err = clum.signal_when(p, lambda: clum.count_lines(prefix="E") >= 20, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM and "internal error" not in err, err
    recorded = jmod.read(str(tmp_path / ".cluster_func" / "s.all.journal"), for_resume=True).recorded
    assert values(tmp_path / "v.jsonl") == {k: k for k in range(recorded)} or len(values(tmp_path / "v.jsonl")) == recorded
    again = advised(err)
    assert "--results" in again and "--resume" in again, err
    r = clum.run(*again, env=env)
    assert r.returncode == 0, r.stderr
    assert values(tmp_path / "v.jsonl") == {k: k for k in range(400)}


# --- 29: advice that loses values ------------------------------------------------------------------

def test_a_resume_without_results_keeps_collecting_into_the_runs_results_file(clum, tmp_path):
    clum.script("s.py", SCRIPT)
    p = clum.popen("s.py", "-p", "1", "--results", "v.jsonl", env={"N": 200, "SLEEP": 0.01})
    status, err = clum.signal_when(p, lambda: clum.count_lines(prefix="E") >= 10, signal.SIGINT)
    assert status == 130, err
    r = clum.run("s.py", "--resume", env={"N": 200})
    assert r.returncode == 0 and "v.jsonl" in r.stderr, r.stderr
    assert values(tmp_path / "v.jsonl") == {k: k for k in range(200)}
    assert clum.count_lines(prefix="E") <= 201  # (but the call the signal stopped) none ran twice


def test_the_advice_carries_the_target_the_journal_and_the_scripts_arguments(clum, tmp_path):
    clum.script("s.py", SCRIPT + "\nimport sys\ndef other(x):\n    rec('E', x, sys.argv[1:])\n    raise ValueError(x)\n")
    r = clum.run("s.py", "-t", "other", "--journal", "j.journal", "--results", "v.pkl", "--retries", "1",
                 "--", "x1", env={"N": 3})
    assert r.returncode == 1, r.stderr
    words = advised(r.stderr)
    assert words[words.index("-t") + 1] == "other" and os.path.basename(words[words.index("--results") + 1]) == "v.pkl"
    assert words[-2:] == ["--", "x1"] and "--journal" in words and "--retries" in words, words
    r = clum.run(*words, env={"N": 3})
    assert r.returncode == 1 and "position 0" in r.stdout, (r.stdout, r.stderr)


def test_the_torn_records_warnings_advice_is_accepted_as_printed(clum, tmp_path):
    clum.script("s.py", SCRIPT)
    assert clum.run("s.py", "--results", "v.jsonl", env={"N": 5}).returncode == 0
    out = tmp_path / "v.jsonl"
    out.write_bytes(out.read_bytes()[:-7])
    with pytest.warns(cluster_func.record.results.TornRecords) as caught:
        list(cluster_func.read_results(str(out)))
    words = shlex.split(re.search(r"'(clum [^']*)'", str(caught[0].message)).group(1))[1:]
    r = clum.run(*[w if w != "SCRIPT" else "s.py" for w in words], env={"N": 5})
    assert r.returncode == 0, r.stderr
    assert values(out) == {k: k for k in range(5)}


# --- 4: round-robin resumes -------------------------------------------------------------------------

def _resume_and_count(clum, tmp_path, elements, *extra):
    (tmp_path / "args.json").write_text(json.dumps(elements))
    before = clum.count_lines(prefix="E")
    r = clum.run("s.py", "-p", "2", "--results", "v.jsonl", *extra,
                 env={"ARGS_FILE": tmp_path / "args.json", "SLEEP": 0.001}, timeout=120)
    assert r.returncode == 0, r.stderr
    ran = [line[1] for line in clum.evidence()[before:]]
    assert values(tmp_path / "v.jsonl") == dict(enumerate(elements))
    return ran


def test_a_second_resume_with_the_same_args_runs_no_recorded_call_again(clum, tmp_path):
    clum.script("s.py", SCRIPT)
    elements = [f"a{i}" for i in range(300)]
    assert len(_resume_and_count(clum, tmp_path, elements)) == 300
    elements[75:80] = [f"b{i}" for i in range(75, 80)]
    assert sorted(_resume_and_count(clum, tmp_path, elements, "--resume")) == sorted(elements[75:80])
    assert _resume_and_count(clum, tmp_path, elements, "--resume") == []


@pytest.mark.parametrize("seed", range(3))
def test_model_a_recorded_unchanged_position_never_runs_again_over_random_edits_and_resumes(clum, tmp_path, seed):
    """A seeded random sequence of edits (ranges and single elements changed, changes undone)
    and resumes: each resume runs exactly the positions whose element differs from the one
    recorded there."""
    rng = random.Random(seed)
    clum.script("s.py", SCRIPT)
    n = 120
    elements = [f"a{i}" for i in range(n)]
    recorded = list(elements)
    _resume_and_count(clum, tmp_path, elements)
    for step in range(5):
        history = list(elements)
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(["range", "one", "undo"])
            if kind == "range":
                lo = rng.randrange(n)
                for p in range(lo, min(n, lo + rng.randint(1, 12))):
                    elements[p] = f"s{step}-{p}-{rng.random():.6f}"
            elif kind == "one":
                p = rng.randrange(n)
                elements[p] = f"s{step}-{p}-{rng.random():.6f}"
            else:
                p = rng.randrange(n)
                elements[p] = history[p]
        changed = sorted(str(elements[p]) for p in range(n) if elements[p] != recorded[p])
        ran = _resume_and_count(clum, tmp_path, elements, "--resume")
        assert sorted(ran) == changed, f"step {step}: ran {sorted(set(ran) - set(changed))} unchanged"
        recorded = list(elements)


# --- 7, 8: a run's results file is known by what it holds ----------------------------------------

def test_a_copied_run_folder_resumes_into_its_own_results_file(clum, clean_error, tmp_path):
    clum.script("s.py", SCRIPT, folder=tmp_path / "dir")
    clum.script("t.py", SCRIPT, folder=tmp_path / "dir")
    assert clum.run("s.py", "--results", "r.jsonl", env={"N": 30}, cwd=tmp_path / "dir").returncode == 0
    shutil.copytree(tmp_path / "dir", tmp_path / "dir2", symlinks=True)  # as cp -a: new inodes
    r = clum.run("s.py", "--results", "r.jsonl", "--resume", env={"N": 40}, cwd=tmp_path / "dir2")
    assert r.returncode == 0, r.stderr
    assert values(tmp_path / "dir2" / "r.jsonl") == {k: k for k in range(40)}
    # another run's file stays refused, copied or not
    clean_error(clum.run("t.py", "--results", "r.jsonl", "--resume", env={"N": 40}, cwd=tmp_path / "dir2"),
                "not a results file of this run")


def test_a_results_file_whose_export_was_never_recorded_is_accepted_by_the_next_resume(clum, tmp_path):
    """The state a failure between writing the file and recording it leaves: the file in place,
    no record of it in the journal."""
    clum.script("s.py", SCRIPT)
    j = tmp_path / "s.journal"
    assert clum.run("s.py", "--journal", j, "--results", "v.jsonl", env={"N": 30}).returncode == 0
    lines = j.read_bytes().split(b"\n")
    j.write_bytes(b"\n".join(line for line in lines if b'"t":"results"' not in line))
    r = clum.run("s.py", "--journal", j, "--results", "v.jsonl", "--resume", env={"N": 35})
    assert r.returncode == 0, r.stderr
    assert values(tmp_path / "v.jsonl") == {k: k for k in range(35)}


# --- 5: no process a call starts outlives it ----------------------------------------------------------

CHILDREN = """\
import os, subprocess, time
args = range(int(os.environ.get("N", 2)))

def target(x):
    p = subprocess.Popen(["sleep", "300"])
    rec("C", p.pid)
    if os.environ.get("LEAVE"):
        return x  # left running
    p.wait()
"""


def _children(clum):
    return [int(line[1]) for line in clum.evidence() if line[0] == "C"]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_calls_child_process_ends_with_the_calls_timeout(clum, procs, method):
    clum.script("c.py", CHILDREN)
    r = clum.run("c.py", "-p", "2", "--timeout", "1", "--start-method", method, env={"N": 2})
    assert r.returncode == 1 and "timed out" in r.stderr, r.stderr
    kids = _children(clum)
    assert len(kids) == 2
    procs.all_gone(kids)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_no_process_a_call_started_outlives_clum_however_it_is_stopped(clum, procs, method, sig):
    clum.script("c.py", CHILDREN)
    p = clum.popen("c.py", "-p", "2", "--start-method", method, env={"N": 4})
    clum.signal_when(p, lambda: len(_children(clum)) >= 2, sig) if sig != signal.SIGKILL else None
    if sig == signal.SIGKILL:
        try:
            procs.wait_for(lambda: len(_children(clum)) >= 2, what="calls to start")
            os.kill(p.pid, signal.SIGKILL)
            p.wait(30)
        finally:
            p.stdout.close()
            p.stderr.close()
    kids = _children(clum)
    procs.all_gone(kids, grace=10)  # (a forkserver worker notices a killed clum within seconds)
    procs.all_gone([], sid=p.pid, grace=10)


def test_child_processes_left_running_by_calls_end_with_the_run(clum, procs):
    clum.script("c.py", CHILDREN)
    r = clum.run("c.py", "-p", "2", env={"N": 3, "LEAVE": 1})
    assert r.returncode == 0, r.stderr
    procs.all_gone(_children(clum))
