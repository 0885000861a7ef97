"""Tests of the ``cluf`` command that need no scheduler daemon: job scripts written with
-q (all three schedulers), run by hand in an empty environment; options from the
command line, the script's cluf_options and the CLUFRC file; bad input; PBS job
scripts against tests/pbs/expected/*.pbs; submission, partial failure, arrays,
--status/--resubmit/--cancel against recording stand-in commands on PATH.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import cluf_support as cs
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs

SCHEDULERS = ("pbs", "slurm", "sge")
EXT = {"pbs": ".pbs", "slurm": ".slurm", "sge": ".sge"}
NAME_RE = {"pbs": r"^#PBS -N (.+)$", "slurm": r"^#SBATCH --job-name=(.+)$", "sge": r"^#\$ -N (.+)$"}
# PBS replaces its -o/-e files with each job: they are the scheduler's own, and the script
# appends to the bin's files itself.
OUT_LINES = {"pbs": ('if [ -n "${{PBS_JOBID:-}}" ]; then exec >>{} 2>>', '#PBS -e {}'),
             "slurm": ("#SBATCH --output={}", "#SBATCH --error={}"),
             "sge": ("#$ -o {}", "#$ -e {}")}
SUBMIT_COMMANDS = ("qsub", "sbatch", "scontrol", "squeue", "qstat", "qconf", "qdel", "scancel")


@pytest.fixture
def bindir(tmp_path):
    """Recording stand-ins for every scheduler command, first on PATH: a test that
    should submit nothing can check that none was called, and nothing real is."""
    d = tmp_path / "bin"
    for name in SUBMIT_COMMANDS:
        cs.stand_in(d, name, "{id}\n")
    cs.cluf_wrapper(d)
    return d


@pytest.fixture
def env(tmp_path, bindir):
    return cs.base_env(tmp_path, bindir, CLUF_PBS_FLAVOUR="pbspro")


def called(bindir):
    return {name: cs.stand_in_log(bindir, name) for name in SUBMIT_COMMANDS if cs.stand_in_log(bindir, name)}


def directive_values(text, regex):
    return [m.group(1) for m in re.finditer(regex, text, re.M)]


# ------------------------------------------------------------------ -q: writing scripts


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_q_writes_one_executable_script_per_node_and_submits_nothing(tmp_path, env, bindir, sched):
    cs.write_target(tmp_path, n=7)
    r = cs.ok(cs.run_cluf("example.py", "-n", 3, "-q", "-j", "jobs", "--scheduler", sched, cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    names = [f"example-{i}-3{EXT[sched]}" for i in range(3)]
    assert sorted(p.name for p in jobs.iterdir()) == names
    for i, name in enumerate(names):
        path = jobs / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        text = path.read_text()
        assert text.startswith("#!/bin/bash\n")
        assert directive_values(text, NAME_RE[sched]) == [f"example-{i}-3"]
        out, err = OUT_LINES[sched]
        own = ".scheduler" if sched == "pbs" else ""
        if sched == "pbs":
            assert any(line.startswith(out.format(jobs / f"example-{i}-3.stdout")) for line in text.splitlines())
        else:
            assert out.format(jobs / f"example-{i}-3.stdout") in text.splitlines()
        assert err.format(jobs / f"example-{i}-3{own}.stderr") in text.splitlines()
        assert f"--bins {i}/3" in text
    assert str(jobs / names[0]) in r.stdout  # says how to run one by hand
    assert called(bindir) == {}, "-q must submit nothing"
    assert not list(jobs.glob("*.manifest.json"))


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_job_script_runs_by_hand_from_anywhere_with_an_empty_environment(tmp_path, env, sched):
    src = tmp_path / "src"
    script = cs.write_target(src, n=7, fail=(4,))  # bin 1 of 3 holds 1 and 4: one call fails
    marks = tmp_path / "marks"
    (tmp_path / "pre.sh").write_text(f'echo "pre:$CLUF_T_SET:$(pwd)" >> {marks}\n')
    (tmp_path / "pre2.sh").write_text(f"echo pre2 >> {marks}")
    (tmp_path / "post.sh").write_text(f"echo post >> {marks}\nfalse\n")  # its status must not count
    env = dict(env, CLUF_T_COPY="copied $x 'q'", CLUF_T_LEAK="leaked")
    passthrough = ["one", "two words", "it's", '"dq"', "$HOME", "$bin", "`x`"]
    cs.ok(cs.run_cluf("src/example.py", "-n", 3, "-q", "-j", "jobs", "--scheduler", sched, "-p", 1,
                      "-e", "CLUF_T_SET=a b", "-e", "CLUF_T_COPY", "-P", "pre.sh,pre2.sh", "-A", "post.sh",
                      "--", *passthrough, cwd=tmp_path, env=env))
    for i in range(3):
        res = cs.run_by_hand(tmp_path / "jobs" / f"example-{i}-3{EXT[sched]}", cwd="/")
        assert res.returncode == (1 if i == 1 else 0), (i, res.stdout, res.stderr)
    lines = cs.evidence(script)
    assert sorted(e["x"] for e in lines) == list(range(7))
    for e in lines:
        assert e["argv"] == passthrough
        assert e["env"] == {"CLUF_T_SET": "a b", "CLUF_T_COPY": "copied $x 'q'"}
        assert e["cwd"] == str(tmp_path), "the job cds to the submission dir"
    assert marks.read_text().splitlines() == [f"pre:a b:{tmp_path}", "pre2", "post"] * 3


def test_iterations_counts_with_len_or_by_iterating(tmp_path, env):
    gen = """\
    def args():
        for i in range(10):
            yield i
    """
    cs.write_target(tmp_path, name="gen.py", args=gen)
    r = cs.ok(cs.run_cluf("gen.py", "-i", 3, "-q", "-j", "jobs", "--scheduler", "slurm", cwd=tmp_path, env=env))
    assert re.search(r"\b10\b", r.stdout) and re.search(r"\b4 jobs\b", r.stdout), r.stdout
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == [f"gen-{i}-4.slurm" for i in range(4)]

    # len() where it exists: this one cannot be iterated.
    sized = """\
    class Sized:
        def __len__(self):
            return 25
        def __iter__(self):
            return self
        def __next__(self):
            raise RuntimeError("cluf iterated instead of using len()")
    args = Sized()
    """
    cs.write_target(tmp_path, name="sized.py", args=sized)
    r = cs.ok(cs.run_cluf("sized.py", "-i", 10, "-q", "-j", "jobs2", "--scheduler", "slurm", cwd=tmp_path, env=env))
    assert re.search(r"\b25\b", r.stdout) and re.search(r"\b3 jobs\b", r.stdout), r.stdout
    assert len(list((tmp_path / "jobs2").glob("sized-*-3.slurm"))) == 3


def test_bins_select_which_of_the_jobs_to_write(tmp_path, env):
    cs.write_target(tmp_path, n=30)
    cs.ok(cs.run_cluf("example.py", "-n", 12, "-b", "3,7/12", "-q", "-j", "jobs", "--scheduler", "pbs",
                      cwd=tmp_path, env=env))
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["example-3-12.pbs", "example-7-12.pbs"]


def test_jobs_dir_defaults_to_the_current_dir_and_is_created(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    run = tmp_path / "run"
    run.mkdir()
    cs.ok(cs.run_cluf("../example.py", "-n", 2, "-q", "--scheduler", "slurm", cwd=run, env=env))
    assert sorted(p.name for p in run.iterdir()) == ["example-0-2.slurm", "example-1-2.slurm"]
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "a/b/c", "--scheduler", "sge", cwd=tmp_path, env=env))
    assert sorted(p.name for p in (tmp_path / "a/b/c").iterdir()) == ["example-0-2.sge", "example-1-2.sge"]
    text = (run / "example-0-2.slurm").read_text()
    assert f"--output={run}/example-0-2.stdout" in text  # absolute


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_job_names_are_made_valid_for_the_scheduler(tmp_path, env, sched):
    cs.write_target(tmp_path, name="1st run@home.py", n=4)
    cs.ok(cs.run_cluf("1st run@home.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", sched, cwd=tmp_path, env=env))
    for i in range(2):
        text = (tmp_path / "jobs" / f"1st run@home-{i}-2{EXT[sched]}").read_text()
        [name] = directive_values(text, NAME_RE[sched])
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name), name
        assert f"-{i}-2" in name
        if sched in ("pbs", "sge"):  # may not start with a digit
            assert name[0].isalpha(), name


def test_options_precedence_clufrc_below_script_below_command_line(tmp_path, env):
    cs.write_target(tmp_path, n=4, extra="""\
    cluf_options = {"walltime": "02:00:00", "queue": "scriptq", "nodes": 2, "no_q": True,
                    "scheduler": "slurm", "jobs-dir": "jobs"}
    """)
    rc = tmp_path / "elsewhere" / "clufrc.json"
    rc.parent.mkdir()
    rc.write_text(json.dumps({"walltime": "01:00:00", "queue": "rcq", "account": "rcacct", "memory": "1G",
                              "scheduler": "pbs"}))
    env = dict(env, CLUFRC=str(rc))
    cs.ok(cs.run_cluf("example.py", "--queue", "cliq", cwd=tmp_path, env=env))
    text = (tmp_path / "jobs" / "example-0-2.slurm").read_text()
    lines = text.splitlines()
    assert "#SBATCH --time=02:00:00" in lines  # script over rc
    assert "#SBATCH --partition=cliq" in lines  # command line over script
    assert "#SBATCH --account=rcacct" in lines  # rc alone
    assert "#SBATCH --mem=1024M" in lines
    assert not (tmp_path / "jobs" / "example-0-2.pbs").exists()


def test_command_line_iterations_wins_over_nodes_from_cluf_options(tmp_path, env):
    """-n and -i are one setting; the command line wins over the script (as for --hash/--key)."""
    cs.write_target(tmp_path, n=10, extra='cluf_options = {"nodes": 2}\n')
    r = cs.ok(cs.run_cluf("example.py", "-i", 5, "-q", "-j", "jobs", "--scheduler", "slurm", cwd=tmp_path, env=env))
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["example-0-2.slurm", "example-1-2.slurm"], r.stdout
    cs.ok(cs.run_cluf("example.py", "-i", 2, "-q", "-j", "jobs5", "--scheduler", "slurm", cwd=tmp_path, env=env))
    assert len(list((tmp_path / "jobs5").glob("example-*-5.slurm"))) == 5


def test_cpus_default_to_processes(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-p", 3, "-q", "-j", "a", "--scheduler", "slurm", cwd=tmp_path, env=env))
    assert "#SBATCH --cpus-per-task=3" in (tmp_path / "a/example-0-2.slurm").read_text().splitlines()
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-p", 3, "--cpus", 2, "-q", "-j", "b", "--scheduler", "slurm",
                      cwd=tmp_path, env=env))
    text = (tmp_path / "b/example-0-2.slurm").read_text()
    assert "#SBATCH --cpus-per-task=2" in text.splitlines() and "--processes 3" in text
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-p", 3, "-q", "-j", "c", "--scheduler", "pbs", cwd=tmp_path, env=env))
    assert "#PBS -l nodes=1:ppn=3" in (tmp_path / "c/example-0-2.pbs").read_text().splitlines()


def test_raw_slurm_and_sge_directives(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    r = cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "s", "--scheduler", "slurm",
                          "--slurm-options", "qos=long,constraint=avx2,exclusive", "--sge-options", "h_vmem=1G",
                          cwd=tmp_path, env=env))
    lines = (tmp_path / "s/example-0-2.slurm").read_text().splitlines()
    for want in ("#SBATCH --qos=long", "#SBATCH --constraint=avx2", "#SBATCH --exclusive"):
        assert want in lines
    assert not any("h_vmem" in line for line in lines)
    assert "sge-options" in r.stderr and "ignored" in r.stderr  # says so
    cs.write_target(tmp_path, name="opts.py", n=4, extra='cluf_options = {"sge_options": {"h_vmem": "4G", "exclusive": None}}\n')
    cs.ok(cs.run_cluf("opts.py", "-n", 2, "-q", "-j", "g", "--scheduler", "sge", cwd=tmp_path, env=env))
    lines = (tmp_path / "g/opts-0-2.sge").read_text().splitlines()
    assert "#$ -l h_vmem=4G" in lines and "#$ -l exclusive" in lines


def test_raw_pbs_options_from_the_command_line(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "p", "--scheduler", "pbs",
                      "-o", "vmem=8gb,ppn=8,queue=short,name=custom", cwd=tmp_path, env=env))
    lines = (tmp_path / "p/example-0-2.pbs").read_text().splitlines()
    for want in ("#PBS -l vmem=8gb", "#PBS -l nodes=1:ppn=8", "#PBS -q short", "#PBS -N custom"):
        assert want in lines, lines


# ------------------------------------------------------------------ bad input


def _bad(tmp_path, env, *args, cwd=None):
    cs.write_target(tmp_path, n=6)
    return cs.run_cluf(*args, cwd=cwd or tmp_path, env=env)


BAD_INPUT = {
    "neither -n nor -i": (["example.py", "-q"], ["-n", "-i"]),
    "both -n and -i": (["example.py", "-n", "2", "-i", "3", "-q"], ["-n", "-i"]),
    "-n 0": (["example.py", "-n", "0", "-q"], ["nodes"]),
    "walltime minutes": (["example.py", "-n", "2", "-q", "--walltime", "1:75:00"], ["walltime"]),
    "walltime words": (["example.py", "-n", "2", "-q", "--walltime", "two hours"], ["walltime"]),
    "memory unit": (["example.py", "-n", "2", "-q", "--memory", "4Q"], ["memory"]),
    "memory words": (["example.py", "-n", "2", "-q", "--memory", "lots"], ["memory"]),
    "unknown scheduler": (["example.py", "-n", "2", "-q", "--scheduler", "moab"], ["scheduler", "moab"]),
    "missing prepend file": (["example.py", "-n", "2", "-q", "-P", "nope.sh"], ["nope.sh"]),
    "missing append file": (["example.py", "-n", "2", "-q", "-A", "post.sh,nope2.sh"], ["nope2.sh"]),
    "bins total is not the node count": (["example.py", "-n", "2", "-b", "0/3", "-q"], ["bins"]),
    "-e of an unset variable": (["example.py", "-n", "2", "-q", "-e", "CLUF_T_UNSET"], ["CLUF_T_UNSET"]),
    "--max-running 0": (["example.py", "-n", "2", "-q", "--array", "--max-running", "0"], ["max-running"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_a_clear_message(tmp_path, env, bindir, case):
    args, words = BAD_INPUT[case]
    (tmp_path / "post.sh").write_text("true\n")
    r = _bad(tmp_path, env, *args, "-j", "jobs")
    cs.assert_clean_error(r, *words)
    assert not (tmp_path / "jobs").exists(), "nothing may be written on bad input"
    assert called(bindir) == {}


def test_unknown_cluf_options_key_is_an_error(tmp_path, env):
    cs.write_target(tmp_path, n=4, extra='cluf_options = {"nodes": 2, "walltme": "1:00:00"}\n')
    r = cs.run_cluf("example.py", "-q", cwd=tmp_path, env=env)
    cs.assert_clean_error(r, "walltme", "cluf_options")


def test_unknown_clufrc_key_is_an_error(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    rc = tmp_path / "rc.json"
    rc.write_text('{"wallclock": "1:00:00"}')
    r = cs.run_cluf("example.py", "-n", 2, "-q", cwd=tmp_path, env=dict(env, CLUFRC=str(rc)))
    cs.assert_clean_error(r, "wallclock", str(rc))


@pytest.mark.parametrize("sched", ["auto", "pbs", "slurm", "sge"])
def test_no_submit_command_on_path_is_a_usage_error(tmp_path, sched):
    """PATH holds only python's bin dir: no sbatch, no qsub. The entry point must still run."""
    cs.write_target(tmp_path, n=4)
    env = {"PATH": os.path.dirname(sys.executable), "CLUFRC": os.devnull}
    r = subprocess.run([*cs.CLUF, "example.py", "-n", "2", "-j", "jobs", "--scheduler", sched],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    cs.assert_clean_error(r, "-q")
    assert not list(tmp_path.glob("jobs/*.manifest.json"))
    # ... and with -q the same command writes the scripts.
    r = subprocess.run([*cs.CLUF, "example.py", "-n", "2", "-j", "jobs", "-q", "--scheduler", sched],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "jobs").iterdir())) == 2


# ------------------------------------------------------------------ PBS golden files


def _golden_case(tmp_path, env, *args, name, script="example.py", files=()):
    cs.ok(cs.run_cluf(script, "-q", "-j", "jobs", "--scheduler", "pbs", *args, cwd=tmp_path, env=env))
    for fname in files:
        cs.assert_golden(f"{name}-{fname}", cs.normalise((tmp_path / "jobs" / fname).read_text(), tmp_path))


def test_pbs_golden_plain(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    _golden_case(tmp_path, env, "-n", 2, name="plain", files=["example-0-2.pbs", "example-1-2.pbs"])


def test_pbs_golden_resources_env_prepend_append_passthrough(tmp_path, env):
    cs.write_target(tmp_path, n=9)
    (tmp_path / "pre.sh").write_text("module load python\nexport STAGE=pre\n")
    (tmp_path / "post.sh").write_text("echo cleaning up   # no trailing newline")
    _golden_case(tmp_path, env, "-n", 3, "-b", "1/3", "--walltime", "1-12:00:00", "--memory", "4G",
                 "--queue", "long", "--account", "proj42", "--cpus", 4, "-p", 2, "--retries", 1,
                 "--timeout", 600, "-e", "OMP_NUM_THREADS=4", "-e", "GREETING=hello world, it's me",
                 "-P", "pre.sh", "-A", "post.sh", "-o", "vmem=8gb,place=scatter",
                 "--", "two words", "it's", '"quoted"', "$HOME", "--flag=a;b",
                 name="resources", files=["example-1-3.pbs"])
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["example-1-3.pbs"]


def test_pbs_golden_pbs_options_from_the_script(tmp_path, env):
    cs.write_target(tmp_path, name="opts.py", n=4, extra="""\
    cluf_options = {"pbs_options": {"name": "custom", "queue": "short", "ppn": 8, "naccesspolicy": "singlejob",
                                    "stdout": "/elsewhere/out.txt", "stderr": "/elsewhere/err.txt"},
                    "hash": "0"}
    """)
    # the raw name, stdout, stderr, queue, ppn replace cluf's own -N, -o, -e, -q, ppn lines
    _golden_case(tmp_path, env, "-n", 2, "--cpus", 2, "--queue", "long", script="opts.py", name="script-options",
                 files=["opts-0-2.pbs"])


@pytest.mark.parametrize("flavour", ["pbspro", "torque"])
def test_pbs_golden_array(tmp_path, env, flavour):
    cs.write_target(tmp_path, n=7)
    env = dict(env, CLUF_PBS_FLAVOUR=flavour)
    r = cs.run_cluf("example.py", "-n", 3, "--array", "--max-running", 2, "-p", 1, "--walltime", "1:00:00",
                    "-e", "A=1", "-q", "-j", "jobs", "--scheduler", "pbs", "--", "x y", cwd=tmp_path, env=env)
    cs.ok(r)
    [path] = (tmp_path / "jobs").glob("*.pbs")
    cs.assert_golden(f"array-{flavour}.pbs", cs.normalise(path.read_text(), tmp_path))
    if flavour == "pbspro":  # no running-subjob limit there: says so
        assert "--max-running" in r.stderr and "ignored" in r.stderr
    else:
        assert r.stderr == ""


# ------------------------------------------------------------------ PBS submission (stand-in qsub)


def test_pbs_submission_command_ids_and_manifest(tmp_path, env, bindir):
    cs.stand_in(bindir, "qsub", "{id}.server\n")
    cs.write_target(tmp_path, n=7)
    r = cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "pbs", "-p", 1, cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    log = cs.stand_in_log(bindir, "qsub")
    assert [c["argv"] for c in log] == [[str(jobs / f"example-{i}-3.pbs")] for i in range(3)]
    assert all(c["cwd"] == str(tmp_path) for c in log)
    assert cs.submitted_lines(r.stdout) == {str(jobs / f"example-{i}-3.pbs"): f"{1001 + i}.server" for i in range(3)}
    m = cs.read_manifest(jobs)
    assert {b: (j["id"], j["script"]) for b, j in m["jobs"].items()} == {
        str(i): (f"{1001 + i}.server", str(jobs / f"example-{i}-3.pbs")) for i in range(3)}
    assert m["scheduler"] == "pbs"


def test_pbs_submission_output_that_is_not_an_id_fails(tmp_path, env, bindir):
    cs.stand_in(bindir, "qsub", "qsub: job submitted somewhere\n")
    cs.write_target(tmp_path, n=7)
    r = cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "pbs", cwd=tmp_path, env=env)
    assert r.returncode == 1, r
    assert len(cs.stand_in_log(bindir, "qsub")) == 1, "stops at the first failure"
    assert "Traceback" not in r.stderr and "not submitted: bins 0-2" in r.stderr


PARTIAL = {
    # argv, bins expected, bins submitted before the failure (the 2nd qsub fails)
    "script first, option last": (["example.py", "-n", "4", "-j", "jobs", "--scheduler", "pbs", "-p", "1",
                                   "--", "a b"], [0, 1, 2, 3], [0]),
    "script last": (["-n", "4", "-j", "jobs", "--scheduler", "pbs", "example.py", "--", "a b"], [0, 1, 2, 3], [0]),
    "with --bins": (["example.py", "-n", "5", "-b", "0,2-4/5", "-j", "jobs", "--scheduler", "pbs", "-p", "1"],
                    [0, 2, 3, 4], [0]),
}


@pytest.mark.parametrize("case", list(PARTIAL))
def test_partial_submission_failure_prints_the_command_that_submits_the_rest(tmp_path, env, bindir, case):
    argv, expected, before = PARTIAL[case]
    nodes = int(argv[argv.index("-n") + 1])
    cs.stand_in(bindir, "qsub", "{id}.server\n", fail_on=(2,))
    cs.write_target(tmp_path, n=20)
    r = cs.run_cluf(*argv, cwd=tmp_path, env=env)
    assert r.returncode == 1, r
    err = r.stderr
    assert "Traceback" not in err
    assert "submitted: bin 0 as job 1001.server" in err, err
    rest = expected[len(before):]
    assert re.search(rf"not submitted: bins {re.escape(_fmt(rest))} of {nodes}", err), err
    m = re.search(r"run:\n\s+(.+)$", err, re.M)
    assert m, err
    command = m.group(1)
    assert command.startswith("cluf ")
    # The manifest has the one job submitted.
    assert {b: j["id"] for b, j in cs.read_manifest(tmp_path / "jobs", nodes=nodes)["jobs"].items()} == {"0": "1001.server"}
    # Running the printed command (qsub works again) submits exactly the rest.
    again = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, (command, again.stdout, again.stderr)
    ok_calls = [c for c in cs.stand_in_log(bindir, "qsub") if not c["failed"]]
    submitted = [int(re.search(r"-(\d+)-\d+\.pbs$", c["argv"][-1]).group(1)) for c in ok_calls]
    assert sorted(submitted) == expected, f"{command!r} submitted bins {submitted}"
    jobs = cs.read_manifest(tmp_path / "jobs", nodes=nodes)["jobs"]
    assert sorted(map(int, jobs)) == expected
    assert all(not j["history"] for j in jobs.values()), "a bin was submitted twice"
    if "--" in argv:  # pass-through args survive into the rest's job scripts
        assert "-- 'a b'" in (tmp_path / "jobs" / f"example-{rest[-1]}-{nodes}.pbs").read_text()


def _fmt(bins):
    from cluster_func.core.bins import format_positions
    return format_positions(bins)


# ------------------------------------------------------------------ arrays


ARRAY_LINES = {
    ("slurm", None): ["#SBATCH --array=0-2%2"],
    ("sge", None): ["#$ -t 1-3", "#$ -tc 2"],
    ("pbs", "torque"): ["#PBS -t 0-2%2"],
    ("pbs", "pbspro"): ["#PBS -J 0-2"],
}


@pytest.mark.parametrize("sched,flavour", list(ARRAY_LINES))
def test_array_writes_one_script_with_the_array_directive(tmp_path, env, bindir, sched, flavour):
    cs.write_target(tmp_path, n=7)
    if flavour:
        env = dict(env, CLUF_PBS_FLAVOUR=flavour)
    r = cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "--max-running", 2, "-q", "-j", "jobs",
                          "--scheduler", sched, cwd=tmp_path, env=env))
    [path] = list((tmp_path / "jobs").iterdir())
    assert path.suffix == EXT[sched] and os.access(path, os.X_OK)
    lines = path.read_text().splitlines()
    for want in ARRAY_LINES[sched, flavour]:
        assert want in lines, lines
    if (sched, flavour) == ("pbs", "pbspro"):
        assert not any("%" in line for line in lines if line.startswith("#PBS"))
        assert "--max-running" in r.stderr
    assert called(bindir) == {}


BY_HAND = [
    ("slurm", None, "SLURM_ARRAY_TASK_ID", "2", 2),
    ("sge", None, "SGE_TASK_ID", "3", 2),  # Grid Engine counts tasks from 1
    ("pbs", "pbspro", "PBS_ARRAY_INDEX", "2", 2),
    ("pbs", "torque", "PBS_ARRAYID", "1", 1),
    ("slurm", None, "CLUF_BIN", "1", 1),
    ("sge", None, "CLUF_BIN", "0", 0),
    ("pbs", "pbspro", "CLUF_BIN", "2", 2),
]


@pytest.mark.parametrize("sched,flavour,var,value,bin_", BY_HAND)
def test_array_script_takes_its_bin_from_the_task_index_or_cluf_bin(tmp_path, env, sched, flavour, var, value, bin_):
    script = cs.write_target(tmp_path, n=7)
    env = dict(env, CLUF_PBS_FLAVOUR=flavour or "pbspro")
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "-p", 1, "-q", "-j", "jobs", "--scheduler", sched,
                      "-e", "CLUF_T_SET=1", "--", "p q", cwd=tmp_path, env=env))
    [path] = list((tmp_path / "jobs").iterdir())
    res = cs.run_by_hand(path, cwd="/", env={var: value})
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert cs.calls(script) == cs.round_robin(7, 3, bin_)
    assert all(e["argv"] == ["p q"] and e["env"] == {"CLUF_T_SET": "1"} for e in cs.evidence(script))
    jobs = tmp_path / "jobs"
    if var == "CLUF_BIN":  # run by hand: the output stays on the terminal
        assert "calls done" in res.stderr and not (jobs / f"example-{bin_}-3.stderr").exists()
    else:  # a task: stdout/stderr per task keep the <script-name>-<i>-<n> names
        assert (jobs / f"example-{bin_}-3.stdout").exists()
        assert "calls done" in (jobs / f"example-{bin_}-3.stderr").read_text()
    assert (jobs / f"example-{bin_}-3.journal").exists()


def test_array_bin_is_not_changed_by_prepend_text_or_env_that_use_the_name_bin(tmp_path, env):
    """The array script keeps its bin in a shell variable; the user's prepend text and -e
    variables run after it is set and may well use a variable called bin."""
    script = cs.write_target(tmp_path, n=7)
    (tmp_path / "tools.sh").write_text('bin="$HOME/bin"\nexport PATH="$bin:$PATH"\n')
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "-p", 1, "-q", "-j", "jobs", "--scheduler", "slurm",
                      "-P", "tools.sh", cwd=tmp_path, env=env))
    [path] = list((tmp_path / "jobs").iterdir())
    res = cs.run_by_hand(path, env={"SLURM_ARRAY_TASK_ID": "1", "HOME": str(tmp_path)})
    assert res.returncode == 0 and cs.calls(script) == [1, 4], (res.stderr, (tmp_path / "jobs/example-1-3.stderr").read_text())
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "-p", 1, "-q", "-j", "jobs2", "--scheduler", "sge",
                      "-e", "bin=0", cwd=tmp_path, env=env))
    [path] = list((tmp_path / "jobs2").iterdir())
    res = cs.run_by_hand(path, env={"SGE_TASK_ID": "3"})
    assert res.returncode == 0 and cs.calls(script) == [1, 2, 4, 5], "task 3 must run bin 2"


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_array_script_without_an_index_says_how_to_run_it(tmp_path, env, sched):
    script = cs.write_target(tmp_path, n=7)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "-q", "-j", "jobs", "--scheduler", sched, cwd=tmp_path, env=env))
    [path] = list((tmp_path / "jobs").iterdir())
    extra = {"SGE_TASK_ID": "undefined"} if sched == "sge" else {}  # what SGE sets outside an array
    res = cs.run_by_hand(path, cwd="/", env=extra)
    assert res.returncode == 2 and "CLUF_BIN" in res.stderr, (res.stdout, res.stderr)
    assert cs.evidence(script) == []


SPLIT = {
    "slurm": ("scontrol", "Configuration data as of 2026-01-01T00:00:00\nMaxArraySize            = 2\n"
              "MaxJobCount             = 10000\n", "sbatch", "{id}\n", "SLURM_ARRAY_TASK_ID"),
    "sge": ("qconf", "execd_spool_dir              /var/spool\nmax_aj_instances             2000\n"
            "max_aj_tasks                 2\nmax_u_jobs                   0\n", "qsub", "{id}.1-2:1\n", "SGE_TASK_ID"),
}


@pytest.mark.parametrize("sched", list(SPLIT))
def test_array_larger_than_the_limit_is_split_into_several(tmp_path, env, bindir, sched):
    config_cmd, config, submit_cmd, template, var = SPLIT[sched]
    cs.stand_in(bindir, config_cmd)
    (bindir / f"{config_cmd}.out").write_text(config)
    cs.stand_in(bindir, submit_cmd, template, first_id=100)
    script = cs.write_target(tmp_path, n=11)
    r = cs.ok(cs.run_cluf("example.py", "-n", 5, "--array", "-p", 1, "-j", "jobs", "--scheduler", sched,
                          cwd=tmp_path, env=env))
    assert "split" in r.stdout and "3 arrays" in r.stdout, r.stdout
    submits = cs.stand_in_log(bindir, submit_cmd)
    assert len(submits) == 3
    jobs = cs.read_manifest(tmp_path / "jobs", nodes=5)["jobs"]
    assert sorted(map(int, jobs)) == [0, 1, 2, 3, 4]
    first = 0 if sched == "slurm" else 1
    sep = "_" if sched == "slurm" else "."
    for b, job in jobs.items():
        assert job["array_id"] in ("101", "102", "103")
        base, index = job["id"].split(sep)
        assert base == job["array_id"]
        assert first <= int(index) < first + 2, f"task index {index} of bin {b} is above the limit"
        text = Path(job["script"]).read_text()
        assert ("--array=0-" if sched == "slurm" else "-t 1-") in text
    # Each bin, run by hand with its task index, does exactly its own calls.
    for b, job in sorted(jobs.items(), key=lambda kv: int(kv[0])):
        res = cs.run_by_hand(job["script"], env={var: job["id"].split(sep)[1]})
        assert res.returncode == 0, (b, res.stderr)
    assert cs.calls(script) == list(range(11))


def test_pbs_array_submission_ids(tmp_path, env, bindir):
    cs.stand_in(bindir, "qsub", "{id}[].server\n")
    cs.write_target(tmp_path, n=7)
    r = cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "-j", "jobs", "--scheduler", "pbs", cwd=tmp_path, env=env))
    [call] = cs.stand_in_log(bindir, "qsub")
    jobs = cs.read_manifest(tmp_path / "jobs")["jobs"]
    assert call["argv"] == [jobs["0"]["script"]]
    assert {b: (j["id"], j["array_id"]) for b, j in jobs.items()} == {
        str(i): (f"1001[{i}].server", "1001[].server") for i in range(3)}
    assert "1001[].server" in r.stdout


# ------------------------------------------------------------------ --status, --resubmit, --cancel (stand-ins)


def test_status_resubmit_cancel_against_stand_in_slurm(tmp_path, env, bindir):
    cs.stand_in(bindir, "sbatch", "{id}\n", first_id=100)
    (bindir / "squeue.out").write_text("")
    script = cs.write_target(tmp_path, n=8, fail=(5,))  # bin 1 of 4: calls 1, 5; 5 fails
    jobs = tmp_path / "jobs"
    cs.ok(cs.run_cluf("example.py", "-n", 4, "-j", "jobs", "--scheduler", "slurm", "-p", 1, cwd=tmp_path, env=env))
    assert {b: j["id"] for b, j in cs.read_manifest(jobs, nodes=4)["jobs"].items()} == {
        "0": "101", "1": "102", "2": "103", "3": "104"}
    # bins 0 and 1 "ran" (by hand); bin 2 vanished; bin 3 is running.
    assert cs.run_by_hand(jobs / "example-0-4.slurm").returncode == 0
    assert cs.run_by_hand(jobs / "example-1-4.slurm").returncode == 1
    (bindir / "squeue.out").write_text("104 RUNNING\n999 PENDING\n77_3 RUNNING\n")

    r = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    rows = cs.status_table(r.stdout)
    assert rows == {
        0: {"job": "101", "state": "done", "done": "2", "failed": "0", "total": "2"},
        1: {"job": "102", "state": "done", "done": "1", "failed": "1", "total": "2"},
        2: {"job": "103", "state": "vanished", "done": "-", "failed": "-", "total": "2"},
        3: {"job": "104", "state": "running", "done": "-", "failed": "-", "total": "2"},
    }, r.stdout
    total = cs.totals_line(r.stdout)
    assert "3 done" in total and "1 failed" in total and "of 8" in total, total
    assert len(cs.stand_in_log(bindir, "squeue")) == 1, "one query for all the run's jobs"
    # from inside the jobs dir, with no argument
    r2 = cs.run_cluf("--status", cwd=jobs, env=env)
    assert r2.returncode == 1 and cs.status_table(r2.stdout) == rows

    r = cs.ok(cs.run_cluf("--resubmit", "jobs", cwd=tmp_path, env=env))
    resubmitted = [c["argv"][-1] for c in cs.stand_in_log(bindir, "sbatch")[4:]]
    assert resubmitted == [str(jobs / "example-1-4.slurm"), str(jobs / "example-2-4.slurm")], r.stdout
    for b in (1, 2):
        assert "--resume" in (jobs / f"example-{b}-4.slurm").read_text()
    m = cs.read_manifest(jobs, nodes=4)["jobs"]
    assert (m["1"]["id"], [h["id"] for h in m["1"]["history"]]) == ("105", ["102"])
    assert (m["2"]["id"], [h["id"] for h in m["2"]["history"]]) == ("106", ["103"])
    assert (m["3"]["id"], m["3"]["history"]) == ("104", [])
    assert (m["0"]["id"], m["0"]["history"]) == ("101", [])

    # the resubmitted bin 1 runs (with --resume: only the failed call again)
    (bindir / "squeue.out").write_text("104 RUNNING\n105 PENDING\n")
    r = cs.ok(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env))
    [cancel] = cs.stand_in_log(bindir, "scancel")
    assert sorted(cancel["argv"]) == ["104", "105"]
    assert cs.calls(script) == [0, 1, 4, 5]


def _hold_submitting(path, text="cluf pid 4242\n"):
    """Hold the submission lock of the manifest at PATH, as a cluf submitting would."""
    import fcntl
    fd = os.open(str(path) + ".submitting", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text.encode())
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
    return fd


def test_a_cluf_submitting_beside_another_into_the_same_jobs_dir_is_refused_and_submits_nothing(tmp_path, env, bindir):
    cs.stand_in(bindir, "sbatch", "{id}\n", first_id=100)
    (bindir / "squeue.out").write_text("")
    cs.write_target(tmp_path, n=6)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    manifest = jobs / "example-3.manifest.json"
    fd = _hold_submitting(manifest)
    try:
        for extra in ([], ["--array"]):
            r = cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "slurm", *extra, cwd=tmp_path, env=env)
            err = cs.assert_clean_error(r, "another cluf (cluf pid 4242)", "submitting into", "twice", "-j DIR")
            assert str(jobs) in err
        assert not cs.stand_in_log(bindir, "sbatch") and not manifest.exists()
    finally:
        os.close(fd)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "slurm", cwd=tmp_path, env=env))
    assert len(cs.stand_in_log(bindir, "sbatch")) == 3
    assert (jobs / "example-3.manifest.json.submitting").read_text().startswith("cluf pid ")
    # --resubmit takes the same lock
    fd = _hold_submitting(manifest)
    try:
        cs.assert_clean_error(cs.run_cluf("--resubmit", "jobs", cwd=tmp_path, env=env), "another cluf", "submitting")
    finally:
        os.close(fd)
    assert len(cs.stand_in_log(bindir, "sbatch")) == 3


def test_clufs_started_at_the_same_moment_submit_each_bin_once(tmp_path, env, bindir):
    cs.stand_in(bindir, "sbatch", "{id}\n", first_id=100)
    (bindir / "squeue.out").write_text("".join(f"{i} PENDING\n" for i in range(101, 113)))  # all queued
    cs.write_target(tmp_path, n=6)
    argv = [sys.executable, "-c", cs.CLUF_CODE, "example.py", "-n", "3", "-j", "jobs", "--scheduler", "slurm"]
    ps = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for _ in range(4)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in ps]
    assert all(rc in (0, 2) for rc, _, _ in outs), outs
    for rc, _, err in outs:  # each either submitted, found the lock held, or found the bins queued
        assert rc == 0 or "another cluf" in err.lower() or "already queued or running" in err, err
    assert sum(rc == 0 for rc, _, _ in outs) == 1, outs
    assert sorted(c["argv"][-1] for c in cs.stand_in_log(bindir, "sbatch")) == [
        str(tmp_path / "jobs" / f"example-{i}-3.slurm") for i in range(3)]


def test_a_users_own_file_at_the_submission_lock_path_is_left_alone(tmp_path, env, bindir):
    cs.write_target(tmp_path, n=6)
    (tmp_path / "jobs").mkdir()
    mine = tmp_path / "jobs" / "example-3.manifest.json.submitting"
    mine.write_text("my notes\n")
    r = cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "slurm", cwd=tmp_path, env=env)
    cs.assert_clean_error(r, "is not a lock file of cluf", "move it away")
    assert mine.read_text() == "my notes\n" and not cs.stand_in_log(bindir, "sbatch")


def test_status_without_a_run_is_a_usage_error(tmp_path, env):
    for action in ("--status", "--resubmit", "--cancel"):
        r = cs.run_cluf(action, tmp_path, cwd=tmp_path, env=env)
        cs.assert_clean_error(r, "manifest")


# ------------------------------------------------------------------ more: auto, rc file, arrays that fail part way


AUTO = {
    "sbatch on PATH: slurm": (("sbatch", "qsub"), {"SGE_ROOT": "/nonexistent"}, ".slurm"),
    "qsub and SGE_ROOT: sge": (("qsub",), {"SGE_ROOT": "/nonexistent"}, ".sge"),
    "qsub alone: pbs": (("qsub",), {}, ".pbs"),
    "nothing, with -q: pbs": ((), {}, ".pbs"),
}


@pytest.mark.parametrize("case", list(AUTO))
def test_scheduler_auto_detection(tmp_path, case):
    commands, extra, ext = AUTO[case]
    only = tmp_path / "only"
    for name in commands:
        cs.stand_in(only, name, "{id}\n")
    only.mkdir(exist_ok=True)
    cs.write_target(tmp_path, n=4)
    env = {"PATH": f"{only}{os.pathsep}{os.path.dirname(sys.executable)}", "CLUFRC": os.devnull,
           **extra}
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "jobs", cwd=tmp_path, env=env))
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == [f"example-0-2{ext}", f"example-1-2{ext}"]


def test_clufrc_that_is_not_json_is_an_error(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    rc = tmp_path / "rc.json"
    rc.write_text("{walltime: 1}")
    r = cs.run_cluf("example.py", "-n", 2, "-q", cwd=tmp_path, env=dict(env, CLUFRC=str(rc)))
    cs.assert_clean_error(r, str(rc))


def test_array_submission_failing_part_way_then_resubmit_submits_the_rest(tmp_path, env, bindir):
    cs.stand_in(bindir, "scontrol")
    (bindir / "scontrol.out").write_text("MaxArraySize            = 2\n")
    cs.stand_in(bindir, "sbatch", "{id}\n", fail_on=(2,), first_id=100)
    cs.write_target(tmp_path, n=11)
    r = cs.run_cluf("example.py", "-n", 5, "--array", "-p", 1, "-j", "jobs", "--scheduler", "slurm",
                    cwd=tmp_path, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    assert "--resubmit" in r.stderr
    jobs = cs.read_manifest(tmp_path / "jobs", nodes=5)["jobs"]
    assert {b: j["id"] for b, j in jobs.items()} == {"0": "101_0", "1": "101_1"}
    # the first array is queued; --resubmit submits the bins that have no job, and only those
    (bindir / "squeue.out").write_text("101_0 PENDING\n101_1 RUNNING\n")
    cs.ok(cs.run_cluf("--resubmit", "jobs", cwd=tmp_path, env=env))
    ok_calls = [c for c in cs.stand_in_log(bindir, "sbatch") if not c["failed"]]
    assert len(ok_calls) == 4, ok_calls
    jobs = cs.read_manifest(tmp_path / "jobs", nodes=5)["jobs"]
    assert sorted(map(int, jobs)) == [0, 1, 2, 3, 4]
    assert {b: j["id"] for b, j in jobs.items() if b in ("0", "1")} == {"0": "101_0", "1": "101_1"}
    assert all(not j["history"] for j in jobs.values())


def test_max_running_holds_across_arrays_split_by_the_size_limit(tmp_path, env, bindir):
    """--max-running K limits the tasks running at once; split arrays must not allow K per array."""
    cs.stand_in(bindir, "scontrol")
    (bindir / "scontrol.out").write_text("MaxArraySize            = 2\n")
    cs.stand_in(bindir, "sbatch", "{id}\n", first_id=100)
    cs.write_target(tmp_path, n=11)
    r = cs.ok(cs.run_cluf("example.py", "-n", 6, "--array", "--max-running", 2, "-p", 1, "-j", "jobs",
                          "--scheduler", "slurm", cwd=tmp_path, env=env))
    scripts = sorted({j["script"] for j in cs.read_manifest(tmp_path / "jobs", nodes=6)["jobs"].values()})
    assert len(scripts) == 3
    limits = [re.search(r"^#SBATCH --array=\S+%(\d+)$", Path(s).read_text(), re.M) for s in scripts]
    dependent = [re.search(r"^#SBATCH --dependency=", Path(s).read_text(), re.M) for s in scripts]
    # Either the arrays run one after another, or the limit is shared out between them.
    shared = sum(int(m.group(1)) for m in limits if m) if all(limits) else None
    assert all(dependent[1:]) or (shared is not None and shared <= 2) or "max-running" in r.stderr, \
        [Path(s).read_text().splitlines()[:14] for s in scripts]


QSTAT_HEADER = """\
server.example:
                                                            Req'd  Req'd   Elap
Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time
--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----
"""


@pytest.mark.parametrize("array", [False, True])
def test_pbs_status_reads_qstat_and_treats_finished_jobs_as_gone(tmp_path, env, bindir, array):
    """Torque lists completed jobs as C for a while; PBS Pro's qstat -t lists finished subjobs as X."""
    cs.stand_in(bindir, "qsub", "{id}[].server\n" if array else "{id}.server\n")
    script = cs.write_target(tmp_path, n=7)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "pbs", "-p", 1,
                      *(["--array"] if array else []), cwd=tmp_path, env=env))
    jobs = cs.read_manifest(tmp_path / "jobs")["jobs"]
    ids = [jobs[str(i)]["id"] for i in range(3)]
    # bin 0 has run (by hand) and is listed as finished; bin 1 runs; bin 2 waits
    res = cs.run_by_hand(jobs["0"]["script"], env={"CLUF_BIN": "0"} if array else {})
    assert res.returncode == 0, res.stderr
    finished = "X" if array else "C"
    lines = [f"{ids[0]:<15} root     workq    example-0  1234   1   1    --  01:00 {finished} 00:01",
             f"{ids[1]:<15} root     workq    example-1  1235   1   1    --  01:00 R 00:01",
             f"{ids[2]:<15} root     workq    example-2    --   1   1    --  01:00 Q   -- "]
    if array:
        lines.insert(0, "1001[].server   root     workq    example-a    --   1   1    --  01:00 B   -- ")
    (bindir / "qstat.out").write_text(QSTAT_HEADER + "\n".join(lines) + "\n")
    r = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    rows = cs.status_table(r.stdout)
    assert [rows[i]["state"] for i in range(3)] == ["done", "running", "queued"], r.stdout
    assert cs.calls(script) == [0, 3, 6]


@pytest.mark.parametrize("sched,query", [("pbs", "qstat"), ("slurm", "squeue"), ("sge", "qstat")])
def test_a_failing_scheduler_query_resubmits_nothing(tmp_path, env, bindir, sched, query):
    """If the scheduler cannot be asked, queued jobs must not look vanished and be submitted again."""
    submit = {"pbs": "qsub", "slurm": "sbatch", "sge": "qsub"}[sched]
    cs.stand_in(bindir, submit, "{id}.server\n" if sched == "pbs" else "{id}\n")
    cs.stand_in(bindir, query, "", fail_on=range(1, 100))
    cs.write_target(tmp_path, n=6)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", sched, "-p", 1, cwd=tmp_path, env=env))
    for action in ("--status", "--resubmit", "--cancel"):
        r = cs.run_cluf(action, "jobs", cwd=tmp_path, env=env)
        cs.assert_clean_error(r, sched)
    assert len(cs.stand_in_log(bindir, submit)) == 3, "nothing was submitted again"
    assert cs.stand_in_log(bindir, "qdel") == cs.stand_in_log(bindir, "scancel") == []


@pytest.mark.parametrize("spelling, expected", [
    (["-no-q"], None),
    (["-no-q", "-hash=0"], "--hash 0"),
    (["-no-q", "-key=0"], "--key 0"),
])
def test_the_seeds_single_dash_spellings_work(tmp_path, env, bindir, spelling, expected):
    """The seed writes `cluf example -n4 -no-q`, `-hash=0-3,7` and `-key=0`."""
    cs.write_target(tmp_path, n=6)
    r = cs.ok(cs.run_cluf("example.py", "-n4", *spelling, "-j", "jobs", "--scheduler", "pbs",
                          cwd=tmp_path, env=env))
    scripts = sorted(p.name for p in (tmp_path / "jobs").glob("*.pbs"))
    assert scripts == [f"example-{i}-4.pbs" for i in range(4)], (r.stdout, r.stderr)
    assert not cs.stand_in_log(bindir, "qsub")  # -no-q: nothing submitted
    if expected:
        assert expected in (tmp_path / "jobs" / "example-0-4.pbs").read_text()


# ------------------------------------------------------------------ issue 30: a jobs dir's state is its current submission's


def _pythonpath():
    """PYTHONPATH for a job script run by hand in an empty environment (this checkout, when set)."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


def _run_bins_by_hand(jobs, nodes, stem="example", ext=".slurm"):
    for i in range(nodes):
        res = cs.run_by_hand(jobs / f"{stem}-{i}-{nodes}{ext}", env=_pythonpath())
        assert res.returncode == 0, (i, res.stdout, res.stderr)


def _gathered(path):
    return {rec["pos"]: rec["value"] for rec in map(json.loads, path.read_text().splitlines())}


def test_a_new_submission_into_the_same_jobs_dir_never_reports_the_old_submissions_results(tmp_path, env, bindir):
    cs.stand_in(bindir, "sbatch", "{id}\n", first_id=100)
    (bindir / "squeue.out").write_text("")
    extra = "def target(x):\n    return x * 3\n"
    cs.write_target(tmp_path, n=9, extra=extra)
    jobs = tmp_path / "jobs"
    submit = ("example.py", "-n", 3, "-j", "jobs", "--scheduler", "slurm", "-p", 1, "--results", "jsonl")
    cs.ok(cs.run_cluf(*submit, cwd=tmp_path, env=env))
    _run_bins_by_hand(jobs, 3)
    cs.ok(cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env))
    assert _gathered(jobs / "example-3.results.jsonl") == {x: x * 3 for x in range(9)}

    cs.write_target(tmp_path, n=9, extra=extra.replace("x * 3", "x * 5"))  # the script fixed, submitted again
    cs.ok(cs.run_cluf(*submit, cwd=tmp_path, env=env))
    (bindir / "squeue.out").write_text("104 PENDING\n105 PENDING\n106 PENDING\n")
    r = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert {b: (row["state"], row["done"]) for b, row in cs.status_table(r.stdout).items()} == {
        0: ("queued", "-"), 1: ("queued", "-"), 2: ("queued", "-")}, r.stdout
    r = cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1 and "gathered 0 values" in r.stdout, (r.stdout, r.stderr)
    assert _gathered(jobs / "example-3.results.jsonl") == {}

    # the new jobs vanish before they start: vanished, not done; --wait ends with that, not with the old values
    (bindir / "squeue.out").write_text("")
    r = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1
    assert {row["state"] for row in cs.status_table(r.stdout).values()} == {"vanished"}, r.stdout
    r = cs.run_cluf("--wait", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1 and {row["state"] for row in cs.status_table(r.stdout).values()} == {"vanished"}

    # once they have run, the new values are the run's
    _run_bins_by_hand(jobs, 3)
    r = cs.ok(cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env))
    assert {row["state"] for row in cs.status_table(r.stdout).values()} == {"done"}, r.stdout
    cs.ok(cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env))
    assert _gathered(jobs / "example-3.results.jsonl") == {x: x * 5 for x in range(9)}


@pytest.fixture
def gathered_run(tmp_path, env, bindir):
    """A round-robin run of 9 calls in 3 bins with --results (x * 3 at position x), its bins run by hand."""
    (bindir / "squeue.out").write_text("")
    cs.write_target(tmp_path, n=9, extra="def target(x):\n    return x * 3\n")
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "slurm", "-p", 1, "--results", "jsonl",
                      cwd=tmp_path, env=env))
    _run_bins_by_hand(tmp_path / "jobs", 3)
    return tmp_path / "jobs"


def _edit(path, old, new, keep_mtime=False):
    st = path.stat()
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


GATHER_DAMAGE = {
    "a position moved into another bin": (0, '"pos":3,', '"pos":4,'),
    "a value changed": (2, '"value":24', '"value":25'),
    "a position twice": (1, '"pos":4,', '"pos":7,'),
}


@pytest.mark.parametrize("case", list(GATHER_DAMAGE))
def test_gather_checks_each_bins_results_file_and_names_the_damaged_one(gathered_run, tmp_path, env, case):
    jobs = gathered_run
    b, old, new = GATHER_DAMAGE[case]
    damaged = jobs / f"example-{b}-3.results.jsonl"
    _edit(damaged, old, new)
    r = cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"bin {b}" in r.stderr and str(damaged) in r.stderr, r.stderr
    lost = cs.round_robin(9, 3, b)
    assert "positions without a value: " + ", ".join(map(str, lost)) in r.stdout, r.stdout
    assert _gathered(jobs / "example-3.results.jsonl") == {x: x * 3 for x in range(9) if x not in lost}
    # the fix the message gives works as printed
    fix = re.search(r"Move it away and run the bin's job script again \('([^']+)'", r.stderr).group(1)
    damaged.rename(tmp_path / "damaged.jsonl")
    res = subprocess.run(fix, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(_pythonpath(), PATH=os.environ["PATH"]))
    assert res.returncode == 0, res.stderr
    cs.ok(cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env))
    assert _gathered(jobs / "example-3.results.jsonl") == {x: x * 3 for x in range(9)}


def test_gather_checks_the_positions_of_a_results_file_whose_journal_records_no_checksum(gathered_run, tmp_path,
                                                                                          env):
    """A journal of an earlier version records the file's size and time, not its CRC-32: the
    positions are still checked against the bin's."""
    jobs = gathered_run
    journal = jobs / "example-0-3.journal"
    journal.write_text(re.sub(r',"crc":"[0-9a-f]+"', "", journal.read_text()))
    _edit(jobs / "example-0-3.results.jsonl", '"pos":3,', '"pos":4,', keep_mtime=True)
    r = cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1 and "position 4 is not one of bin 0's" in r.stderr, (r.stdout, r.stderr)
    assert "positions without a value: 0, 3, 6" in r.stdout, r.stdout


# ------------------------------------------------------------------ issue 30: cluf's own files damaged


def _dir_at(path):
    if path.exists() or path.is_symlink():
        path.unlink()
    path.mkdir(parents=True)


def _dangling_link_at(path):
    if path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.parent / "gone-away")


def _binary_at(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x80\xfe\x00\xff" * 16)


def _cut_short_at(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"bin": 0, "script": "/some/whe')


OWN_FILE_DAMAGE = {  # (the file, what is done to it, the commands that read it)
    "a per-bin manifest record that is a binary file":
        ("example-3.manifest.bins/0.json", _binary_at, ("--status", "--gather", "--wait", "--resubmit", "--cancel")),
    "a per-bin manifest record cut short":
        ("example-3.manifest.bins/0.json", _cut_short_at, ("--status", "--gather", "--wait", "--resubmit",
                                                           "--cancel")),
    "a per-bin manifest record that is a directory":
        ("example-3.manifest.bins/0.json", _dir_at, ("--status", "--gather", "--wait", "--resubmit", "--cancel")),
    "a manifest lock that is a directory":
        ("example-3.manifest.json.lock", _dir_at, ("--cancel",)),  # (--resubmit: nothing to submit)
    "a manifest lock that is a dangling link":
        ("example-3.manifest.json.lock", _dangling_link_at, ("--cancel",)),
    "a manifest that is a dangling link":
        ("example-3.manifest.json", _dangling_link_at, ("--status", "--gather", "--wait", "--resubmit", "--cancel")),
}


@pytest.mark.parametrize("case", list(OWN_FILE_DAMAGE))
def test_a_damaged_file_of_clufs_own_is_named_with_a_fix_never_an_internal_error(gathered_run, tmp_path, env, case):
    name, damage, readers = OWN_FILE_DAMAGE[case]
    path = gathered_run / name
    damage(path)
    for command in ("--status", "--gather", "--wait", "--resubmit", "--cancel"):
        r = cs.run_cluf(command, "jobs", cwd=tmp_path, env=env)
        assert r.returncode != 70 and "Traceback" not in r.stderr, (command, r.stderr)
        if command in readers:
            err = cs.assert_clean_error(r, path.name, status=2)
            assert "move it away" in err.lower() or "submit the run again" in err.lower(), (command, err)
    assert not (gathered_run / "gone-away").exists(), "a file was made through a dangling link"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its permissions")
@pytest.mark.parametrize("name", ["example-3.manifest.bins/0.json", "example-3.manifest.bins",
                                  "example-3.manifest.json.lock", "example-0-3.journal"])
def test_a_file_of_clufs_own_that_cannot_be_read_is_named_never_an_internal_error(gathered_run, tmp_path, env, name):
    path = gathered_run / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cs.read_manifest(gathered_run)["jobs"]["0"]))
    path.chmod(0)
    try:
        for command in ("--status", "--gather", "--resubmit", "--cancel"):
            r = cs.run_cluf(command, "jobs", cwd=tmp_path, env=env)
            assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr, (command, r.stderr)
    finally:
        path.chmod(0o755)


# ------------------------------------------------------------------ issue 30: no writing through a symbolic link


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_a_started_mark_that_is_a_symbolic_link_is_replaced_never_written_through(tmp_path, env, sched):
    script = cs.write_target(tmp_path, n=6)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", sched, cwd=tmp_path, env=env))
    mine = tmp_path / "my-notes.txt"
    mine.write_text("my own words\n")
    mark = tmp_path / "jobs" / "example-0-2.started"
    mark.symlink_to(mine)
    res = cs.run_by_hand(tmp_path / "jobs" / f"example-0-2{EXT[sched]}", env=_pythonpath())
    assert res.returncode == 0, res.stderr
    assert mine.read_text() == "my own words\n"
    assert not mark.is_symlink() and mark.read_text().strip(), "the mark is a file of the job's own"
    assert cs.calls(script) == [0, 2, 4]
    # run again, the script finds its own mark and resumes: nothing runs twice
    res = cs.run_by_hand(tmp_path / "jobs" / f"example-0-2{EXT[sched]}", env=_pythonpath())
    assert res.returncode == 0, res.stderr
    assert cs.calls(script) == [0, 2, 4]


# ------------------------------------------------------------------ issue 31: a submission's cost grows with its bins


WATCHING_SBATCH = '''\
#!{python}
# A stand-in sbatch that, before it answers, notes what a reader of the manifest sees now:
# the manifest file's inode (a whole rewrite replaces it) and the job ids it holds.
import json, os, sys
sys.path.insert(0, {root!r})
from cluster_func.cluster import manifest
d = os.path.dirname(os.path.abspath(__file__))
path = {manifest!r}
m = manifest.load_manifest(path)
seen = {{"inode": os.stat(path).st_ino, "ids": {{k: j["id"] for k, j in m["jobs"].items()}}}}
with open(os.path.join(d, "seen.log"), "a") as f:
    f.write(json.dumps(seen) + "\\n")
print(2000 + len(seen["ids"]))
'''


@pytest.mark.parametrize("array", [False, True], ids=["single jobs", "arrays"])
def test_a_submission_records_each_job_before_the_next_without_rewriting_the_whole_manifest(
        tmp_path, env, bindir, array):
    """Each job is on disk (in its bin's record, merged by every reader) before the next is
    submitted, and the manifest itself is written once before the first submission and once after
    the last: N jobs cost O(N) bytes of records, not N whole manifests."""
    nodes = 12
    jobs_dir = tmp_path / "jobs"
    path = cs.manifest_path(jobs_dir, "example", nodes)
    root = str(Path(__file__).resolve().parents[2])
    (bindir / "sbatch").write_text(WATCHING_SBATCH.format(python=sys.executable, root=root,
                                                         manifest=str(path)))
    cs.stand_in(bindir, "scontrol")
    (bindir / "scontrol.out").write_text("MaxArraySize            = 3\n")  # (arrays of 3 bins)
    cs.write_target(tmp_path, n=30)
    extra = ["--array"] if array else []
    cs.ok(cs.run_cluf("example.py", "-n", nodes, *extra, "-p", 1, "-j", "jobs", "--scheduler", "slurm",
                      cwd=tmp_path, env=env))
    seen = [json.loads(line) for line in (bindir / "seen.log").read_text().splitlines()]
    per_job = 3 if array else 1
    assert len(seen) == nodes // per_job
    for k, s in enumerate(seen):
        assert len(s["ids"]) == k * per_job, (k, s)  # every earlier job is recorded, none later
    assert len({s["inode"] for s in seen}) == 1, "the manifest was rewritten between two submissions"
    m = cs.read_manifest(jobs_dir, nodes=nodes)  # the records folded into the manifest at the end
    assert sorted(map(int, m["jobs"])) == list(range(nodes))
    assert not list(Path(str(path)[:-len(".json")] + ".bins").glob("*.json"))


def _without_checksums(jobs):
    """The bins' journals as an earlier version wrote them: an export's size and time, no CRC-32
    (so that a results file's records can be reordered, keeping its size and time)."""
    for journal in jobs.glob("*.journal"):
        journal.write_text(re.sub(r',"crc":"[0-9a-f]+"', "", journal.read_text()))


def _reorder(path, order):
    st = path.stat()
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(order(lines)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_gather_merges_a_bins_results_file_whose_records_are_out_of_order(gathered_run, tmp_path, env):
    """A resume lists the values of the calls it skipped after its own: gather still writes every
    position once, in order."""
    jobs = gathered_run
    _without_checksums(jobs)
    _reorder(jobs / "example-0-3.results.jsonl", lambda lines: lines[::-1])
    cs.ok(cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env))
    text = (jobs / "example-3.results.jsonl").read_text()
    assert [json.loads(line)["pos"] for line in text.splitlines()] == list(range(9))
    assert _gathered(jobs / "example-3.results.jsonl") == {x: x * 3 for x in range(9)}


def test_gather_names_a_position_twice_in_a_bins_file_even_out_of_order(gathered_run, tmp_path, env):
    jobs = gathered_run
    _without_checksums(jobs)
    damaged = jobs / "example-1-3.results.jsonl"
    _edit(damaged, '"pos":7,', '"pos":1,', keep_mtime=True)  # (bin 1 holds 1, 4, 7: now 1, 4, 1)
    r = cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1 and "position 1 is in it twice" in r.stderr, (r.stdout, r.stderr)
    assert "positions without a value: 1, 4, 7" in r.stdout, r.stdout
    assert _gathered(jobs / "example-3.results.jsonl") == {x: x * 3 for x in range(9) if x % 3 != 1}


def test_gather_of_bins_larger_than_its_buffers_writes_every_value_once_in_order(tmp_path, env, bindir):
    """Each bin's values go through a spill file read back a small buffer at a time (the memory of
    --gather grows with the bins, not the values): bins of many buffers, one of them out of order."""
    (bindir / "squeue.out").write_text("")
    n = 90_000  # (bins of ~1.4 MB: more than the largest buffer, 1 MiB)
    cs.write_target(tmp_path, n=n, extra="def target(x):\n    return 'v' * 20 + str(x)\n")
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "slurm", "-p", 1, "--results", "jsonl",
                      cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    _run_bins_by_hand(jobs, 3)
    _without_checksums(jobs)
    _reorder(jobs / "example-2-3.results.jsonl", lambda lines: lines[len(lines) // 2:] + lines[:len(lines) // 2])
    assert (jobs / "example-2-3.results.jsonl").stat().st_size > 1 << 20
    cs.ok(cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env))
    lines = (jobs / "example-3.results.jsonl").read_text().splitlines()
    assert [json.loads(line)["pos"] for line in lines] == list(range(n))
    assert all(json.loads(line)["value"] == "v" * 20 + str(k) for k, line in enumerate(lines))


FILLING_SBATCH = '''\
#!/bin/sh
# A stand-in sbatch whose second submission fills the disk under the jobs dir.
d=$(dirname "$0"); n=$(cat "$d/count" 2>/dev/null || echo 100); n=$((n+1)); echo $n > "$d/count"
if [ $n = 102 ]; then dd if=/dev/zero of={filler} bs=64k 2>/dev/null; fi
echo $n
'''


def test_a_job_submitted_but_not_recorded_on_a_full_disk_is_named_with_its_cancel_and_the_rest(
        small_disk, tmp_path, env, bindir):
    filler = small_disk / "filler"
    (bindir / "sbatch").write_text(FILLING_SBATCH.format(filler=filler))
    cs.write_target(small_disk, n=8)
    r = cs.run_cluf("example.py", "-n", 4, "-j", "jobs", "--scheduler", "slurm", "-p", 1, cwd=small_disk, env=env)
    err = cs.assert_clean_error(r, "bin 1 was submitted as job 102", "No space left on device", status=1)
    assert "scancel 102" in err and "submitted: bin 0 as job 101" in err, err
    filler.unlink()
    # the manifest names bin 0's job, and the printed command submits bins 1-3 once the space is back
    assert {b: j["id"] for b, j in cs.read_manifest(small_disk / "jobs", nodes=4)["jobs"].items()} == {"0": "101"}
    command = re.search(r"\n    (cluf .*--bins 1-3/4)$", err, re.M).group(1)
    cs.ok(subprocess.run(command, shell=True, cwd=small_disk, env=env, capture_output=True, text=True, timeout=120))
    jobs = cs.read_manifest(small_disk / "jobs", nodes=4)["jobs"]
    assert sorted(map(int, jobs)) == [0, 1, 2, 3] and jobs["0"]["id"] == "101"


def test_gather_on_a_full_disk_says_so_and_leaves_no_file_behind(small_disk, tmp_path, env, bindir):
    """--gather's spill file and the merged file are the disk's: a full one is a clear error, the
    bins' files as they were and no half-written merged file."""
    (bindir / "squeue.out").write_text("")
    cs.write_target(small_disk, n=9, extra="def target(x):\n    return x * 3\n")
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "slurm", "-p", 1, "--results", "jsonl",
                      cwd=small_disk, env=env))
    jobs = small_disk / "jobs"
    _run_bins_by_hand(jobs, 3)
    before = {p.name: p.read_bytes() for p in jobs.iterdir() if p.is_file()}
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    r = cs.run_cluf("--gather", "jobs", cwd=small_disk, env=env)
    cs.assert_clean_error(r, "example-3.results.jsonl", "No space left on device")
    after = {p.name: p.read_bytes() for p in jobs.iterdir() if p.is_file()}
    assert after == before, set(after) ^ set(before)
    filler.unlink()
    cs.ok(cs.run_cluf("--gather", "jobs", cwd=small_disk, env=env))
    assert _gathered(jobs / "example-3.results.jsonl") == {x: x * 3 for x in range(9)}
