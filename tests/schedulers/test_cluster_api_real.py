"""The cluster from Python (issue 27): ``cluster_func.submit``, ``Run`` and ``map(..., nodes=N)``
against the real Slurm, Grid Engine and OpenPBS of tests/schedulers/up.sh.

Every run is driven by a Python script of its own, run as ``python SCRIPT SCHEDULER`` in a
subprocess (in the scheduler's environment, from the adapters of tests/real_schedulers.py), so
that the targets defined in it are real ``__main__`` functions, closures and lambdas that
cloudpickle must send by value.  A script says what it saw on lines ``RESULT {json}``; its
targets append one JSON line per call (element, event, the scheduler's job id) to
``calls.jsonl`` in its folder, which tells how often each call ran and in which job.

The runs name their scheduler (``scheduler=NAME``) and use one worker per job (the Grid Engine
queue has no parallel environment).  The run that needs more than one walltime is a scenario
(tests/scenarios.py): it starts with the session, in a thread, and its test waits for it.
Skips without a scheduler (fails with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1).  No test leaves a job
behind: the jobs its manifests name are cancelled after it.
"""

import collections
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster_func.cluster import manifest as manifest_mod  # (the manifest with its per-bin records)

try:
    import cluf_support as cs
    import continuation_support as cont
    import real_schedulers
    import scheduler_support as ss
    from scenarios import scenario
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs
    import continuation_support as cont
    import real_schedulers
    import scheduler_support as ss
    from scenarios import scenario

import cluster_func

pytestmark = pytest.mark.timeout(300)

# What every script starts with: its scheduler, note() for the evidence, say() for its results.
PREAMBLE = '''\
import json, os, sys, time
import cluster_func

SCHED = sys.argv[1]
EVIDENCE = os.path.abspath("calls.jsonl")
ON = dict(scheduler=SCHED, processes=1)  # one worker per job


def note(x, event="call"):
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID") or os.environ.get("JOB_ID")
    line = json.dumps({"x": x, "ev": event, "job": job, "pid": os.getpid()})
    fd = os.open(EVIDENCE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def say(**what):
    print("RESULT " + json.dumps(what, default=repr), flush=True)


def map_error(e):
    """A MapError as plain data."""
    return {"failures": {p: {"type": f.type, "message": f.message, "traceback": f.traceback, "args": f.args}
                         for p, f in e.failures.items()},
            "missing": e.missing,
            "values": [None if v is cluster_func.MISSING else v for v in e.values],
            "is_missing": [v is cluster_func.MISSING for v in e.values]}


def status(run):
    s = run.status()
    return {"bins": s.bins, "words": s.words, "done": s.done, "failed": s.failed, "total": s.total,
            "finished": s.finished, "ok": s.ok, "jobs": s.jobs}

'''


@pytest.fixture(scope="module", params=list(real_schedulers.ADAPTERS))
def sched(request):
    """The real scheduler the runs go to (skips when it is not up)."""
    adapter = real_schedulers.ADAPTERS[request.param]
    adapter.require()
    return adapter


def manifest_ids(folder):
    return cont.manifest_ids(folder)


@pytest.fixture(autouse=True)
def _no_job_left_behind(request, tmp_path):
    ss.clear_stale_pyenv_lock()  # a job killed in its login shell's pyenv rehash delays the next ones by 60 s
    yield
    if "sched" in request.fixturenames:
        adapter = request.getfixturevalue("sched")
        adapter.cancel(manifest_ids(tmp_path), check=False)


# --- running Python against a scheduler ---------------------------------------------------------

class Py:
    """Scripts run as ``python SCRIPT SCHEDULER`` in ``folder`` with the scheduler's environment."""

    def __init__(self, sched, folder):
        self.sched, self.dir = sched, Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = sched.env(self.dir)
        self.count = 0

    def script(self, body):
        self.count += 1
        path = self.dir / f"main{self.count}.py"
        path.write_text(PREAMBLE + textwrap.dedent(body))
        return path

    def run(self, body, timeout=240):
        path = self.script(body)
        r = subprocess.run([sys.executable, str(path), self.sched.name], cwd=self.dir, env=self.env,
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Said(r)

    def popen(self, body):
        path = self.script(body)
        return subprocess.Popen([sys.executable, str(path), self.sched.name], cwd=self.dir, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def status(self, jobs_dir="jobs"):
        """``cluster_func.Run(jobs_dir).status()`` from a new process, as plain data."""
        said = self.run(f"say(**status(cluster_func.Run({jobs_dir!r})))\n", timeout=60)
        said.ok()
        return said.one()

    def poll_status(self, until, what, timeout=180, jobs_dir="jobs"):
        """Run(jobs_dir).status() until ``until(status)`` holds; AssertionError after ``timeout`` s."""
        seen = []

        def check():
            seen[:] = [self.status(jobs_dir)]
            return until(seen[0])

        try:
            cs.wait_for(check, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; the last status: {seen[-1] if seen else None}") from None
        return seen[0]

    def calls(self):
        """The evidence lines, as dicts."""
        path = self.dir / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def counts(self, event="call"):
        return collections.Counter(c["x"] for c in self.calls() if c["ev"] == event)

    def manifest(self, jobs_dir="jobs"):
        [path] = (self.dir / jobs_dir).glob("*.manifest.json")
        return manifest_mod.load_manifest(str(path))

    def cluf(self, *args, timeout=120):
        return cs.run_cluf(*map(str, args), cwd=self.dir, env=self.env, timeout=timeout)


class Said:
    """A finished script: its exit status, output, and the RESULT lines it printed."""

    def __init__(self, r):
        self.r = r
        self.results = [json.loads(line[len("RESULT "):]) for line in r.stdout.splitlines()
                        if line.startswith("RESULT ")]

    def __str__(self):
        return f"exit {self.r.returncode}\nstdout:\n{self.r.stdout}\nstderr:\n{self.r.stderr}"

    def ok(self):
        assert self.r.returncode == 0, str(self)
        return self

    def one(self, key=None):
        for d in self.results:
            if key is None or key in d:
                return d if key is None else d[key]
        raise AssertionError(f"the script said no {key or 'RESULT'}:\n{self}")


@pytest.fixture
def py(sched, tmp_path):
    return Py(sched, tmp_path)


def job_ids(manifest):
    return {b: j["id"] for b, j in manifest["jobs"].items()}


# --- the tests ------------------------------------------------------------------------------------

def test_a_closure_and_a_lambda_defined_in_main_return_their_values_in_order(py):
    said = py.run('''\
        def scaled_by(k):
            def scaled(x):
                note(x)
                return x * k
            return scaled

        say(closure=cluster_func.map(scaled_by(3), range(11), nodes=3, jobs_dir="closure", quiet=True, **ON))
        say(lam=cluster_func.map(lambda x: {"x": x, "square": x * x}, range(11, 0, -1), nodes=2,
                                 jobs_dir="lambda", quiet=True, **ON))
        ''').ok()
    assert said.one("closure") == [3 * x for x in range(11)], said
    assert said.one("lam") == [{"x": x, "square": x * x} for x in range(11, 0, -1)], said
    # the closure's calls ran in the jobs, each once
    calls = py.calls()
    assert sorted(c["x"] for c in calls) == list(range(11)), calls
    assert all(c["job"] for c in calls), f"a call ran outside a cluf job: {calls}"
    assert py.manifest("closure")["scheduler"] == py.sched.name


def test_a_generator_as_args_is_called_once_per_element_in_order(py):
    said = py.run('''\
        def odd_squares(n):
            for i in range(n):
                yield 2 * i + 1

        def plus_one(x):
            note(x)
            return x + 1

        say(values=cluster_func.map(plus_one, odd_squares(9), nodes=2, jobs_dir="jobs", quiet=True, **ON))
        ''').ok()
    assert said.one("values") == [2 * i + 2 for i in range(9)], said
    assert py.counts() == {2 * i + 1: 1 for i in range(9)}


def test_arguments_elements_pass_positional_and_keyword_arguments(py):
    said = py.run('''\
        def label(x, scale=1, *, name="?"):
            note(x)
            return f"{name}:{x * scale}"

        A = cluster_func.Arguments
        args = [A(1), A(2, 10), A(3, scale=100), A(4, name="four"), A(5, scale=2, name="five")]
        say(values=cluster_func.map(label, args, nodes=2, jobs_dir="jobs", quiet=True, **ON))
        ''').ok()
    assert said.one("values") == ["?:1", "?:20", "?:300", "four:4", "five:10"], said


def test_failures_are_raised_as_one_map_error_after_the_other_calls_ran(py):
    said = py.run('''\
        def fragile(x):
            note(x)
            if x in (1, 4):
                raise ValueError("element %d is bad" % x)
            return x * 10

        try:
            cluster_func.map(fragile, range(7), nodes=3, jobs_dir="jobs", quiet=True, **ON)
            say(raised=None)
        except cluster_func.MapError as e:
            say(raised=map_error(e), text=str(e))
        ''').ok()
    script = (py.dir / f"main{py.count}.py").read_text().splitlines()
    raise_line = 1 + next(i for i, line in enumerate(script) if "raise ValueError" in line)
    e = said.one("raised")
    assert e is not None, said
    assert sorted(e["failures"]) == ["1", "4"], said  # (JSON keys)
    for p in (1, 4):
        f = e["failures"][str(p)]
        assert (f["type"], f["message"]) == ("ValueError", f"element {p} is bad"), f
        # the traceback text from inside the job: the target's frame, its file, the line of its
        # raise and that line's source (cloudpickle names the code it sends by value
        # "<dynamic-code>"; the payload gives it its file and lines back)
        assert f"main{py.count}.py\", line {raise_line}, in fragile" in f["traceback"], f["traceback"]
        assert "raise ValueError" in f["traceback"], f["traceback"]
        assert f"ValueError: element {p} is bad" in f["traceback"], f
    assert e["missing"] == [], said
    assert e["is_missing"] == [x in (1, 4) for x in range(7)]
    assert [v for v, m in zip(e["values"], e["is_missing"]) if not m] == [0, 20, 30, 50, 60]
    # every other call ran: each element once, the failing ones included
    assert py.counts() == {x: 1 for x in range(7)}
    assert "2 of 7 calls failed" in said.one("text")


def test_the_submitting_process_killed_while_waiting_leaves_a_run_that_a_new_process_attaches_to(py):
    p = py.popen('''\
        def slow_square(x):
            note(x, "start")
            time.sleep(1.5)
            note(x, "end")
            return x * x

        run = cluster_func.submit(slow_square, range(8), nodes=2, jobs_dir="jobs", **ON)
        say(submitted=run.jobs_dir)
        run.wait(progress=True)
        say(waited=True)
        ''')
    try:
        cs.wait_for(lambda: py.counts("start"), 180, "a call to start in a job")
        ended_at_kill = sum(py.counts("end").values())
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == -signal.SIGKILL, (p.returncode, out, err)
    assert "submitted" in out and "waited" not in out, out
    assert ended_at_kill < 8, "every call had ended before the kill: nothing was left to wait for"
    said = py.run('''\
        run = cluster_func.Run("jobs")
        final = run.wait(progress=False)
        say(finished=final.finished, ok=final.ok, values=run.results())
        ''').ok()
    assert said.one("values") == [x * x for x in range(8)], said
    assert said.one("ok") is True, said
    # the jobs went on without the submitter: every call ran once
    assert py.counts("end") == {x: 1 for x in range(8)}


MAP_TWICE = '''\
    def square(x):
        note(x)
        return x * x

    say(values=cluster_func.map(square, range(9), nodes=3, jobs_dir="jobs", quiet=True, **ON))
    '''


def test_map_called_twice_on_one_jobs_dir_runs_no_recorded_call_again(py):
    first = py.run(MAP_TWICE).ok()
    ids = job_ids(py.manifest())
    second = py.run(MAP_TWICE).ok()  # a new process: the same target and args, defined again
    assert first.one("values") == second.one("values") == [x * x for x in range(9)], (first, second)
    assert py.counts() == {x: 1 for x in range(9)}, "a recorded call ran again"
    assert job_ids(py.manifest()) == ids, "the second map submitted jobs for a finished run"


def test_map_called_again_after_a_failure_runs_only_the_failed_call(py):
    body = '''\
        FIXED = os.path.abspath("fixed")

        def touchy(x):
            note(x)
            if x == 4 and not os.path.exists(FIXED):
                raise RuntimeError("not yet")
            return -x

        try:
            say(values=cluster_func.map(touchy, range(9), nodes=3, jobs_dir="jobs", quiet=True, **ON))
        except cluster_func.MapError as e:
            say(raised=map_error(e))
        '''
    first = py.run(body).ok()
    assert list(first.one("raised")["failures"]) == ["4"], first
    (py.dir / "fixed").write_text("")
    second = py.run(body).ok()
    assert second.one("values") == [-x for x in range(9)], second
    assert py.counts() == {x: 2 if x == 4 else 1 for x in range(9)}, "a recorded call ran again"


def test_run_cancel_is_reported_as_cancelled_in_the_status(py):
    said = py.run('''\
        def slow(x):
            note(x)
            time.sleep(1)
            return x

        run = cluster_func.submit(slow, range(120), nodes=2, jobs_dir="jobs", quiet=True, **ON)
        deadline = time.monotonic() + 180
        while run.status().done < 2:
            assert time.monotonic() < deadline, run.status()
            time.sleep(0.5)
        run.cancel()
        deadline = time.monotonic() + 180
        while not run.status().finished:
            assert time.monotonic() < deadline, run.status()
            time.sleep(0.5)
        say(status=status(run))
        try:
            run.results()
            say(raised=None)
        except cluster_func.MapError as e:
            say(raised=map_error(e))
        ''').ok()
    st = said.one("status")
    assert st["bins"] == {"cancelled": [0, 1]}, said
    assert st["finished"] and not st["ok"], said
    assert all("cluf --cancel" in st["words"][b] for b in ("0", "1")), st
    # and the scheduler has no job of the run left
    ids = manifest_ids(py.dir)
    cs.wait_for(lambda: not py.sched.states(ids), 120, f"the jobs {ids} to leave the queue")
    # the calls that did not run are named missing, the rest have their values
    e = said.one("raised")
    # (a call in flight when the scheduler's SIGTERM reached its worker is stopped, not failed)
    assert e and e["missing"], said
    assert not e["failures"], said
    assert len(e["missing"]) < 120
    done = [p for p, m in enumerate(e["is_missing"]) if not m]
    assert [e["values"][p] for p in done] == done


def _submit_slow(py, **options):
    py.run(f'''\
        def slow(x):
            note(x)
            time.sleep(1)
            return x

        cluster_func.submit(slow, range(300), nodes=1, jobs_dir="jobs", quiet=True, **ON, **{options!r})
        ''').ok()
    return py.poll_status(lambda s: s["done"] >= 2, "two calls to complete")


def test_the_schedulers_own_cancel_is_reported_as_cancelled_in_the_status(py):
    # (a run with a walltime: its job script traps the scheduler's SIGTERM and records the cancel)
    st = _submit_slow(py, walltime="00:10:00")
    py.sched.cancel(st["jobs"].values())  # scancel / qdel, not through cluster_func
    if py.sched.name == "sge":
        st = py.poll_status(lambda s: s["finished"], "the run to finish after the cancel")
    else:
        # Polled until the bin says "cancelled", not merely until the run is finished: on PBS,
        # qstat says F (finished) while the job's script is still recording the cancel, and for
        # that moment Run.status() says finished=True with the bin "vanished" (no end in its
        # journal yet) or "failed" (clum's "interrupted" written, the cancel not yet): seen in
        # two of five runs; reported to the lead (a finished status that changes afterwards).
        st = py.poll_status(lambda s: s["finished"] and "cancelled" in s["bins"],
                            "the run to finish after the cancel, its bin's cancel recorded")
    if py.sched.name == "sge":
        # Grid Engine's qdel sends SIGKILL at once: the job cannot record the cancel, so the bin
        # is "vanished" (as for cluf: tests/schedulers/test_requeue_cancel_real.py)
        assert st["bins"] == {"vanished": [0]}, st
    else:
        assert st["bins"] == {"cancelled": [0]}, st
        said = {"slurm": "scancel", "pbs": "qdel"}[py.sched.name]
        assert st["words"]["0"].startswith(said), st
    assert not st["ok"] and st["done"] < 300, st


@pytest.mark.parametrize("sched", ["slurm", "pbs"], indirect=True)
def test_the_schedulers_own_cancel_of_a_run_without_a_walltime_is_reported_as_cancelled(py):
    st = _submit_slow(py)
    py.sched.cancel(st["jobs"].values())
    st = py.poll_status(lambda s: s["finished"] and "cancelled" in s["bins"],
                        "the run to finish after the cancel, its bin's cancel recorded")
    assert st["bins"] == {"cancelled": [0]}, st
    said = {"slurm": "scancel", "pbs": "qdel"}[py.sched.name]
    assert st["words"]["0"].startswith(said), st


def test_cluf_status_and_gather_work_on_a_run_submitted_from_python(py):
    said = py.run('''\
        say(values=cluster_func.map(lambda x: (x, str(x) * 2), range(10), nodes=3, jobs_dir="jobs",
                                    quiet=True, **ON))
        ''').ok()
    values = [tuple(v) for v in said.one("values")]
    assert values == [(x, str(x) * 2) for x in range(10)]
    status = cs.ok(py.cluf("--status", "jobs"))
    rows = cs.status_table(status.stdout)
    assert sorted(rows) == [0, 1, 2], status.stdout
    assert all(r["state"] == "done" and r["failed"] == "0" for r in rows.values()), status.stdout
    assert "calls 10 done, 0 failed of 10" in cs.totals_line(status.stdout), status.stdout
    gather = cs.ok(py.cluf("--gather", "jobs", "-o", "out.pkl"))
    assert "gathered 10 values" in gather.stdout, gather.stdout
    assert list(cluster_func.read_results(str(py.dir / "out.pkl"))) == list(enumerate(values))


def test_a_different_target_args_or_job_count_in_the_same_jobs_dir_is_refused_saying_what_differs(py):
    said = py.run('''\
        def square(x):
            note(x)
            return x * x

        def cube(x):
            note(x)
            return x ** 3

        say(values=cluster_func.map(square, range(4), nodes=2, jobs_dir="jobs", quiet=True, **ON))
        for label, target, args, nodes in [("target", cube, range(4), 2), ("args", square, range(5), 2),
                                           ("nodes", square, range(4), 3)]:
            try:
                cluster_func.submit(target, args, nodes=nodes, jobs_dir="jobs", quiet=True, **ON)
                say(**{label: None})
            except ValueError as e:
                say(**{label: str(e)})
        ''').ok()
    assert said.one("values") == [0, 1, 4, 9], said
    target, args, nodes = said.one("target"), said.one("args"), said.one("nodes")
    assert target and "differs in the target" in target and "'square'" in target and "'cube'" in target, said
    assert args and "differs in the args (4 elements there, 5 now" in args, said
    assert nodes and "differs in the number of jobs (2 there, 3 now)" in nodes, said
    # nothing was submitted or run for the refused ones
    assert py.counts() == {x: 1 for x in range(4)}
    assert len(py.manifest()["jobs"]) == 2 and not any(j["history"] for j in py.manifest()["jobs"].values())


# --- a run whose jobs pass their walltime (a scenario: started with the session) -------------------

CALL = 1.5  # seconds per call
# in the target's name, hence the job names: the session's scenarios end by cancelling the jobs of
# their runs' names (continuation_support.stop_run), which must not be another checkout's or a benchmark's
TOKEN = secrets.token_hex(2)


def passes_walltime(sched, tmp):
    """Two bins, each with work for about two walltimes (continuation_support.TIMING: a job
    starts no call after walltime - grace), by ``cluster_func.map(..., walltime=, grace=)``."""
    t = cont.TIMING[sched.name]
    per_bin = int(t.stop_new / CALL) + 5
    py = Py(sched, tmp)
    said = py.run(f'''\
        def slow_square_{TOKEN}(x):
            note(x, "start")
            time.sleep({CALL!r})
            note(x, "end")
            return x * x

        say(values=cluster_func.map(slow_square_{TOKEN}, range({2 * per_bin}), nodes=2, jobs_dir="jobs", quiet=True,
                                    walltime={t.options[1]!r}, grace={t.grace}, **ON))
        ''', timeout=600)
    return SimpleNamespace(said=said, n=2 * per_bin, calls=py.calls(), manifest=py.manifest())


SCENARIOS = {f.__name__: f for f in (passes_walltime,)}


@pytest.mark.slow
@pytest.mark.timeout(900)
@scenario("passes_walltime")
def test_a_run_whose_jobs_pass_their_walltime_finishes_with_every_value(sched, runs):
    run = runs.get("passes_walltime", sched)
    run.said.ok()
    assert run.said.one("values") == [x * x for x in range(run.n)], run.said
    ends = collections.Counter(c["x"] for c in run.calls if c["ev"] == "end")
    assert ends == {x: 1 for x in range(run.n)}, run.calls
    # each bin went on in a new job of its own (a continuation), the manifest says so
    jobs_of_bin = collections.defaultdict(set)
    for c in run.calls:
        jobs_of_bin[c["x"] % 2].add(c["job"])
    for b in ("0", "1"):
        job = run.manifest["jobs"][b]
        assert job.get("restarts", 0) >= 1 and len(job["history"]) == job["restarts"], job
        assert len(jobs_of_bin[int(b)]) == job["restarts"] + 1, (b, jobs_of_bin)
