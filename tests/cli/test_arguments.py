"""``cluster_func.Arguments`` elements through clum and cluf's job scripts, and --hash/--key on
a keyword argument (issue 24)."""

import json
import sys
from pathlib import Path

import pytest

from cluster_func import Arguments
from cluster_func.core import bins

try:
    import cluf_support as cs
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs

N = 12
SCRIPT = '''
import json, os
from cluster_func import Arguments

_EVIDENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.evidence")


def target(i, scale=1, label="none"):
    fd = os.open(_EVIDENCE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps([i, scale, label]) + "\\n").encode())
    finally:
        os.close(fd)


args = [Arguments(i, scale=i % 4, label="L%d" % (i % 5)) for i in range({n})]
'''


def write_script(folder, n=N):
    path = Path(folder) / "kw.py"
    path.write_text(SCRIPT.format(n=n))
    return path


def calls(folder):
    path = Path(folder) / "calls.evidence"
    if not path.exists():
        return []
    return sorted(tuple(json.loads(line)) for line in path.read_text().splitlines() if line)


def expected(positions=range(N)):
    return sorted((i, i % 4, f"L{i % 5}") for i in positions)


def element(i):
    return Arguments(i, scale=i % 4, label=f"L{i % 5}")


def test_clum_calls_the_target_with_the_keyword_arguments_of_each_element(clum):
    write_script(clum.dir)
    r = clum.run("kw.py", "-p", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    assert calls(clum.dir) == expected()


def test_a_failed_call_of_arguments_is_reported_as_the_call_reads(clum):
    (clum.dir / "bad.py").write_text(
        "from cluster_func import Arguments\n"
        "def target(i, scale=1):\n    raise ValueError('no')\n"
        "args = [Arguments(1, scale=3, label='x')]\n")
    r = clum.run("bad.py", "-p", 1)
    assert r.returncode == 1
    assert "Arguments(1, scale=3, label='x')" in r.stderr


@pytest.mark.parametrize("flag, name", [("-x", "label"), ("-x", "0,scale"), ("-k", "scale")])
def test_bins_by_a_keyword_argument_cover_the_work_once_and_follow_the_rule(clum, flag, name):
    write_script(clum.dir)
    total = 4
    positions = bins.parse_positions(name, names=True)
    for b in range(total):
        before = calls(clum.dir)
        r = clum.run("kw.py", "-p", 2, "--quiet", flag, name, "-b", f"{b}/{total}",
                     "--journal", clum.dir / f"j{b}")
        assert r.returncode == 0, r.stderr
        got = sorted(set(calls(clum.dir)) - set(before))
        if flag == "-x":
            want = [i for i in range(N) if bins.hash_bin(element(i), positions, total) == b]
        else:
            want = [i for i in range(N) if i % 4 == b]
        assert got == expected(want), (b, got)
    assert calls(clum.dir) == expected(), "every call ran exactly once over the bins"


def test_hash_on_a_keyword_that_the_first_element_lacks_is_refused_before_anything_runs(clum):
    write_script(clum.dir)
    r = clum.run("kw.py", "-p", 2, "-x", "colour", "-b", "0/2")
    assert r.returncode == 2, r.stderr
    assert "keyword argument 'colour' does not exist" in r.stderr and "label, scale" in r.stderr
    assert calls(clum.dir) == []


def test_hash_on_a_keyword_that_a_later_element_lacks_fails_that_call_naming_the_keyword(clum):
    path = write_script(clum.dir)
    path.write_text(path.read_text() + "args.append(Arguments(99, scale=1))\n")
    r = clum.run("kw.py", "-p", 2, "-x", "label")
    assert r.returncode == 1, r.stderr
    assert "position 12" in r.stderr and "keyword argument 'label' does not exist" in r.stderr
    assert len(calls(clum.dir)) == N


def test_resume_skips_completed_calls_of_arguments_under_hash_on_a_keyword(clum):
    write_script(clum.dir)
    assert clum.run("kw.py", "-p", 2, "--quiet", "-x", "label", "--journal", clum.dir / "j").returncode == 0
    (clum.dir / "calls.evidence").unlink()
    r = clum.run("kw.py", "-p", 2, "-x", "label", "--journal", clum.dir / "j", "--resume")
    assert r.returncode == 0, r.stderr
    assert calls(clum.dir) == [] and f"skipped {N} calls" in r.stderr


def test_resume_skips_completed_calls_of_arguments_in_round_robin(clum):
    write_script(clum.dir)
    assert clum.run("kw.py", "-p", 2, "--quiet", "--journal", clum.dir / "j").returncode == 0
    (clum.dir / "calls.evidence").unlink()
    r = clum.run("kw.py", "-p", 2, "--journal", clum.dir / "j", "--resume")
    assert r.returncode == 0 and calls(clum.dir) == [], r.stderr


@pytest.fixture
def cluf_env(tmp_path):
    bindir = tmp_path / "bin"
    for name in ("qsub", "sbatch", "squeue", "scontrol", "qstat", "qdel", "scancel"):
        cs.stand_in(bindir, name, "{id}\n")
    cs.cluf_wrapper(bindir)
    return cs.base_env(tmp_path, bindir)


@pytest.mark.parametrize("extra", [[], ["-x", "label"], ["-k", "scale"]])
def test_cluf_job_scripts_run_by_hand_call_the_target_with_keyword_arguments(tmp_path, cluf_env, extra):
    write_script(tmp_path)
    nodes = 4
    cs.ok(cs.run_cluf("kw.py", "-n", nodes, "-p", 1, "-q", "-j", "jobs", "--scheduler", "slurm", *extra,
                      cwd=tmp_path, env=cluf_env))
    for i in range(nodes):
        script = tmp_path / "jobs" / f"kw-{i}-{nodes}.slurm"
        if extra:
            assert f"{extra[0]} {extra[1]}" in script.read_text().replace("--hash", "-x").replace("--key", "-k")
        res = cs.run_by_hand(script, cwd="/")
        assert res.returncode == 0, (i, res.stdout, res.stderr)
    assert calls(tmp_path) == expected(), "the bins' jobs ran every call once, with its keywords"


def test_cluf_refuses_a_keyword_that_the_first_element_lacks(tmp_path, cluf_env):
    write_script(tmp_path)
    r = cs.run_cluf("kw.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "slurm", "-k", "colour",
                    cwd=tmp_path, env=cluf_env)
    cs.assert_clean_error(r, "--key colour", "keyword argument 'colour' does not exist")
