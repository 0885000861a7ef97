"""cluster_func.submit, Run and map(nodes=N) without a real scheduler: the checks, the run's
files, and whole runs through a stand-in sbatch whose job scripts are run by hand (the real
schedulers' tests are in tests/schedulers/test_cluster_api_real.py)."""

import inspect
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import cluf_support as cs
import cluster_func
from cluster_func.api import cluster as capi
from cluster_func.api import payload


@pytest.fixture
def bindir(tmp_path):
    d = tmp_path / "bin"
    cs.stand_in(d, "sbatch", "{id}\n", first_id=500)
    (d / "squeue.out").write_text("")  # the scheduler has nothing queued or running
    cs.stand_in(d, "squeue", "")
    cs.stand_in(d, "scancel", "")
    return d


@pytest.fixture
def env(tmp_path, bindir):
    e = dict(os.environ)
    e["PATH"] = f"{bindir}{os.pathsep}{e['PATH']}"
    e["HOME"] = str(tmp_path)  # no ~/.clufrc of the user's
    return e


def child(tmp_path, env, body, check=True):
    """Run BODY as the __main__ of a new Python process (so that its functions are __main__'s)."""
    script = tmp_path / "notebook.py"
    script.write_text("import cluster_func\n" + textwrap.dedent(body))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def run_jobs(jobs_dir):
    """Run every job script of the jobs dir by hand, as the scheduler would."""
    for path in sorted(jobs_dir.glob("*.slurm")):
        r = cs.run_by_hand(path, env={"PATH": os.environ["PATH"]})
        assert r.returncode == 0, (path, r.stdout, r.stderr)


# --- bad input, in Python's words -----------------------------------------------------------------

@pytest.mark.parametrize("target, args, kw, error, words", [
    (42, [1], {"nodes": 2}, TypeError, "target must be a function"),
    (abs, "abc", {"nodes": 2}, TypeError, "args is a string"),
    (abs, 7, {"nodes": 2}, TypeError, "must be an iterable"),
    (abs, {3, 1, 2}, {"nodes": 2}, TypeError, "sorted("),
    (abs, {1: 2}, {"nodes": 2}, TypeError, "sorted("),
    (abs, [1], {}, ValueError, "nodes=N"),
    (abs, [1], {"nodes": 0}, ValueError, "nodes=0"),
    (abs, [1], {"nodes": 2, "iterations": 3}, ValueError, "not both"),
    (abs, [], {"nodes": 2}, ValueError, "args is empty"),
    (abs, [1], {"nodes": 2, "walltime": "abc"}, ValueError, "walltime="),
    (abs, [1], {"nodes": 2, "memory": "12"}, ValueError, "memory="),
    (abs, [1], {"nodes": 2, "wallclock": "1h"}, TypeError, "unexpected keyword argument 'wallclock'"),
    (abs, [1], {"nodes": 2, "results": "jsonl"}, TypeError, "unexpected keyword argument 'results'"),
])
def test_a_bad_target_args_or_option_raises_in_pythons_words_before_anything_is_written(
        tmp_path, target, args, kw, error, words):
    with pytest.raises(error) as e:
        cluster_func.submit(target, args, jobs_dir=str(tmp_path / "jobs"), scheduler="slurm", **kw)
    assert words in str(e.value)
    assert "--" not in str(e.value).replace("--hash", ""), "cluf's flags are not Python's words"
    assert not (tmp_path / "jobs").exists()


def test_submits_signature_lists_clufs_options_from_the_table_for_help_and_tab_completion():
    params = inspect.signature(cluster_func.submit).parameters
    for name in ("nodes", "iterations", "jobs_dir", "walltime", "memory", "cpus", "gpus", "queue", "account", "env",
                 "prepend_script", "array", "max_running", "max_restarts", "processes", "retries", "timeout",
                 "start_method", "hash", "key", "slurm_options", "pbs_options", "scheduler"):
        assert name in params, name
    assert list(params)[:2] == ["target", "args"]
    for name in ("results", "no_q", "wait", "bins", "resume"):
        assert name not in params, name
    assert "walltime:" in cluster_func.submit.__doc__
    assert {"submit", "Run", "map", "imap", "MapError"} <= set(dir(cluster_func))


def test_clufs_messages_are_said_with_keyword_names():
    said = capi.python_words("Give either -n/--nodes (how many jobs) or --walltime 2h; --no-such stays")
    assert said == "Give either nodes= (how many jobs) or walltime= 2h; --no-such stays"


# --- whole runs through a stand-in scheduler ------------------------------------------------------

def test_a_closure_and_a_lambda_of_main_run_as_clufs_jobs_and_come_back_in_order(tmp_path, env, bindir):
    p = child(tmp_path, env, """
        k = 3
        def times_k(x, y=0):
            return x * k + y
        a = cluster_func.submit(times_k, (cluster_func.Arguments(i, y=1) for i in range(10)), nodes=3,
                                jobs_dir="a", scheduler="slurm", quiet=True)
        b = cluster_func.submit(lambda x: -x, range(7), nodes=2, jobs_dir="b", scheduler="slurm", quiet=True)
        print(a.jobs_dir, b.jobs_dir)
    """)
    a, b = p.stdout.split()
    assert len(cs.stand_in_log(bindir, "sbatch")) == 5
    run_jobs(tmp_path / "a")
    run_jobs(tmp_path / "b")
    p = child(tmp_path, env, f"""
        print(cluster_func.Run({a!r}).results(), cluster_func.Run({b!r}).results())
        print(cluster_func.Run({a!r}).status())
    """)
    first, second = p.stdout.splitlines()
    assert first == str([i * 3 + 1 for i in range(10)]) + " " + str([-i for i in range(7)])
    assert second == "bins: 3 done; calls 10 done, 0 failed of 10"
    r = subprocess.run([sys.executable, "-c", cs.CLUF_CODE, "--status", a], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr


def test_failed_calls_come_back_as_one_map_error_with_their_tracebacks_after_the_rest_ran(tmp_path, env):
    child(tmp_path, env, """
        def f(x):
            if x % 4 == 1:
                raise ValueError(f"bad {x}")
            return x
        cluster_func.submit(f, range(12), nodes=2, jobs_dir="j", scheduler="slurm", quiet=True)
    """)
    (tmp_path / "notebook.py").unlink()  # (as a notebook's cell: no file the jobs could read it from)
    for path in sorted((tmp_path / "j").glob("*.slurm")):
        cs.run_by_hand(path, env={"PATH": os.environ["PATH"]})
    p = child(tmp_path, env, """
        try:
            cluster_func.Run("j").results()
        except cluster_func.MapError as e:
            print(sorted(e.failures), e.missing, [v for v in e.values if v is not cluster_func.MISSING])
            print("ValueError: bad 5" in e.failures[5].traceback, "Traceback" in e.failures[5].traceback)
            print(e.failures[5].traceback)
    """)
    assert p.stdout.splitlines()[:2] == ["[1, 5, 9] [] [0, 2, 3, 4, 6, 7, 8, 10, 11]", "True True"]
    # the code sent by value keeps its file, line and source line in the job's traceback
    tb = "\n".join(p.stdout.splitlines()[2:])
    assert f'File "{tmp_path / "notebook.py"}", line 5, in f' in tb, tb
    assert 'raise ValueError(f"bad {x}")' in tb, tb


def test_positions_of_bins_that_never_ran_are_named_as_missing(tmp_path, env):
    child(tmp_path, env, """
        cluster_func.submit(abs, range(6), nodes=3, jobs_dir="j", scheduler="slurm", quiet=True)
    """)
    cs.run_by_hand(sorted((tmp_path / "j").glob("*.slurm"))[0], env={"PATH": os.environ["PATH"]})
    p = child(tmp_path, env, """
        try:
            cluster_func.Run("j").results()
        except cluster_func.MapError as e:
            print(e.missing, e.values[0], e.values[3])
            print(str(e).splitlines()[0])
    """)
    out = p.stdout.splitlines()
    assert out[0] == "[1, 2, 4, 5] 0 3"
    assert "4 of 6 calls have no value" in out[1]


def test_the_same_call_made_again_attaches_and_submits_nothing_that_completed(tmp_path, env, bindir):
    body = """
        def sq(x):
            return x * x
        run = cluster_func.submit(sq, list(range(8)), nodes=2, scheduler="slurm", quiet=True)
        print(run.jobs_dir)
    """
    jobs = child(tmp_path, env, body).stdout.strip()
    assert jobs.startswith(str(tmp_path / "cluf-jobs" / "sq-"))
    run_jobs(type(tmp_path)(jobs))
    assert child(tmp_path, env, body).stdout.strip() == jobs  # the default jobs dir is the same run's
    assert len(cs.stand_in_log(bindir, "sbatch")) == 2, "every bin is done: nothing is submitted again"
    os.unlink(type(tmp_path)(jobs) / "sq-1-2.journal")  # a bin that vanished
    child(tmp_path, env, body)
    log = cs.stand_in_log(bindir, "sbatch")
    assert len(log) == 3 and log[-1]["argv"][-1].endswith("sq-1-2.slurm")


def test_another_target_or_args_in_the_same_jobs_dir_is_refused_saying_what_differs(tmp_path, env):
    child(tmp_path, env, """
        cluster_func.submit(lambda x: x, range(4), nodes=2, jobs_dir="j", scheduler="slurm", quiet=True)
    """)
    p = child(tmp_path, env, """
        for target, args in ((lambda x: x + 1, range(4)), (lambda x: x, range(5))):
            try:
                cluster_func.submit(target, args, nodes=2, jobs_dir="j", scheduler="slurm", quiet=True)
            except ValueError as e:
                print(e)
    """)
    first, second = p.stdout.splitlines()
    assert "holds another run: it differs in the target" in first and "cluster_func.Run(" in first
    assert "differs in the args (4 elements there, 5 now" in second


def test_a_torn_payload_is_refused_by_the_job_naming_it(tmp_path, env):
    child(tmp_path, env, """
        cluster_func.submit(abs, range(4), nodes=1, jobs_dir="j", scheduler="slurm", quiet=True)
    """)
    path = tmp_path / "j" / "abs.payload"
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    r = cs.run_by_hand(tmp_path / "j" / "abs-0-1.slurm", env={"PATH": os.environ["PATH"]})
    assert r.returncode != 0
    assert "is not a whole payload of cluster_func" in r.stdout + r.stderr


def test_run_of_a_folder_without_a_python_run_says_what_to_give(tmp_path):
    with pytest.raises(ValueError, match="no run submitted from Python"):
        cluster_func.Run(str(tmp_path))
    (tmp_path / "x.run.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read as the record of a run"):
        cluster_func.Run(str(tmp_path))


def test_the_targets_digest_is_the_same_for_the_same_code_redefined_and_differs_for_other_code():
    def make(k):
        def f(x):
            return x * k
        return f
    assert payload.target_digest(make(2)) == payload.target_digest(make(2))
    assert payload.target_digest(make(2)) != payload.target_digest(make(3))
    assert payload.target_digest(lambda x: x + 1) != payload.target_digest(lambda x: x + 2)
    assert payload.target_digest(os.path.join) == payload.target_digest(os.path.join)


def test_map_error_pickles_with_its_missing_positions():
    e = cluster_func.MapError({}, [1, cluster_func.MISSING], 2, [1])
    again = pickle.loads(pickle.dumps(e))
    assert again.missing == [1] and again.completed == {0: 1}
    assert json.dumps(str(again))


def test_map_takes_clufs_options_only_with_nodes_and_refuses_a_journal_on_the_cluster(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'walltime'.*with nodes=N"):
        cluster_func.map(abs, [1], walltime="1h")
    with pytest.raises(ValueError, match="journal= and resume= are for a run on this machine"):
        cluster_func.map(abs, [1], nodes=2, journal=str(tmp_path / "j"))
    assert cluster_func.map is cluster_func.api.local.map


def test_init_worker_travels_with_the_payload_and_runs_in_each_jobs_workers(tmp_path, env):
    child(tmp_path, env, """
        import os
        def init():
            global ready
            ready = os.getpid()
        def f(x):
            return ready == os.getpid()
        cluster_func.submit(f, range(6), nodes=2, jobs_dir="j", scheduler="slurm", quiet=True, init_worker=init)
    """)
    run_jobs(tmp_path / "j")
    p = child(tmp_path, env, 'print(cluster_func.Run("j").results())')
    assert p.stdout.strip() == str([True] * 6)


def test_waiting_wakes_when_a_bins_journal_ends_and_not_for_its_other_records(tmp_path, monkeypatch):
    # Run.wait and cluf --wait poll the scheduler gently, but look at the unfinished bins'
    # journals between polls: a journal gaining its end record wakes them (the run may be done).
    from types import SimpleNamespace

    from cluster_func.cluster import jobs as jobs_mod
    from cluster_func.cluster import status

    plan = SimpleNamespace(path=lambda i, suffix: str(tmp_path / f"b-{i}{suffix}"))
    monkeypatch.setattr(jobs_mod, "plan_from_dict", lambda d: plan)
    runs = [({"plan": {}}, [SimpleNamespace(bin=0, final=False), SimpleNamespace(bin=1, final=True)])]
    j0, j1 = tmp_path / "b-0.journal", tmp_path / "b-1.journal"
    j0.write_text('{"t":"start"}\n{"t":"ok","pos":[[0,1,1]]}\n')
    j1.write_text('{"t":"end","done":1,"failed":0,"status":"complete"}\n')  # final already: not watched
    seen = {}
    assert status.nap(runs, 0.3, seen) is False
    with open(j0, "a") as f:
        f.write('{"t":"ok","pos":[[1,1,1]]}\n')
    assert status.nap(runs, 0.3, seen) is False
    with open(j0, "a") as f:
        f.write('{"t":"end","done":2,"failed":0,"status":"complete"}\n')
    assert status.nap(runs, 60, seen) is True  # (at once, not after 60 s)
    assert seen[str(j0)][1] is True


def test_waiting_never_opens_a_bins_journal_that_is_not_a_file(tmp_path, monkeypatch):
    # (a FIFO put where a journal goes would block a reader that opened it)
    from types import SimpleNamespace

    from cluster_func.cluster import jobs as jobs_mod
    from cluster_func.cluster import status

    plan = SimpleNamespace(path=lambda i, suffix: str(tmp_path / f"b-{i}{suffix}"))
    monkeypatch.setattr(jobs_mod, "plan_from_dict", lambda d: plan)
    os.mkfifo(tmp_path / "b-0.journal")
    runs = [({"plan": {}}, [SimpleNamespace(bin=0, final=False)])]
    assert status.nap(runs, 0.3, {}) is False


@pytest.mark.parametrize("kw, error, words", [
    ({"nodes": 0}, ValueError, "cluster_func.map: nodes=0"),
    ({"nodes": 2, "walltime": "abc"}, ValueError, "In cluster_func.map, option 'walltime'"),
    ({"nodes": 2, "wallclock": "1h"}, TypeError, "cluster_func.map() got an unexpected keyword argument 'wallclock'"),
    ({"nodes": 2, "jobs_dir": 42}, TypeError, "cluster_func.map: jobs_dir must be a path"),
])
def test_map_on_the_cluster_says_its_own_name_in_a_bad_input_message(tmp_path, kw, error, words):
    kw.setdefault("jobs_dir", str(tmp_path / "jobs"))
    with pytest.raises(error) as e:
        cluster_func.map(abs, [1], scheduler="slurm", **kw)
    assert words in str(e.value) and "cluster_func.submit" not in str(e.value), str(e.value)
    assert not (tmp_path / "jobs").exists()


def test_an_option_message_names_submit_once():
    with pytest.raises(ValueError) as e:
        cluster_func.submit(abs, [1], nodes=2, walltime="abc", scheduler="slurm", jobs_dir="/nonexistent/jobs")
    assert str(e.value).startswith("In cluster_func.submit, option 'walltime'"), str(e.value)
    assert str(e.value).count("cluster_func.submit") == 1, str(e.value)


def test_run_of_something_that_is_not_a_path_says_what_to_give():
    with pytest.raises(TypeError, match="cluster_func.Run: jobs_dir must be a path .* not a int"):
        cluster_func.Run(42)
