"""The rough edges a new user hits in the first hour, through the real commands: scripts that
are not Python files, iterables that raise, bugs in the tool, ambiguous resource values, empty
work, positions beyond the elements, floods of failures, the progress line on a terminal, help
texts, and a sweep of every option with bad values."""

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import cluf_support as cs
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs

TOOL_FRAME = re.compile(r'File "[^"]*cluster_func[/\\]')


@pytest.fixture
def cluf_env(tmp_path):
    """No scheduler on PATH, no ~/.clufrc."""
    return cs.base_env(tmp_path)


def cluf(tmp_path, env, *args):
    return cs.run_cluf(*args, cwd=tmp_path, env=env)


# --- 1. a script that is not a .py file -----------------------------------------------

def test_a_python_file_without_the_py_suffix_loads_and_runs(clum):
    path = clum.script("pyscript", "def target(x):\n    rec('call', x)\nargs = range(3)\n")
    r = clum.run(path)
    assert r.returncode == 0, r.stderr
    assert sorted(int(line[1]) for line in clum.evidence()) == [0, 1, 2]


def test_a_python_file_without_the_py_suffix_loads_in_spawned_workers_too(clum):
    path = clum.script("pyscript", "def target(x):\n    rec('call', x)\nargs = range(3)\n")
    r = clum.run(path, "--start-method", "spawn")
    assert r.returncode == 0, r.stderr
    assert sorted(int(line[1]) for line in clum.evidence()) == [0, 1, 2]


@pytest.mark.parametrize("name, body, what", [
    ("pre.sh", b"#!/bin/bash\necho hi\n", "a script for /bin/bash"),
    ("pre.sh", b"echo hi\nls -l\n", "not valid Python"),
    ("tool", b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00", "a binary file"),
    ("latin1", b"x = '\xe9\xff\xfe'\n", "not python"),
])
def test_a_file_that_is_not_python_is_a_clear_error_naming_it(clum, clean_error, name, body, what):
    path = clum.dir / name
    path.write_bytes(body)
    err = clean_error(clum.run(path), "is not python", what, str(path))
    assert "AttributeError" not in err


def test_a_py_file_with_a_syntax_error_shows_its_own_error_line(clum, clean_error):
    path = clum.script("typo.py", "def target(x):\n    pass\nargs = [1,\n", preamble=False)
    err = clean_error(clum.run(path), "failed while being imported", "SyntaxError", "typo.py\", line 3")
    assert "is not Python" not in err


def test_cluf_refuses_a_shell_script_as_the_script(tmp_path, cluf_env):
    (tmp_path / "pre.sh").write_text("#!/bin/sh\necho hi\n")
    r = cluf(tmp_path, cluf_env, "pre.sh", "-n", 2, "-q")
    cs.assert_clean_error(r, "is not python")
    assert not list(tmp_path.glob("*.pbs"))


# --- 3. an exception from inside the tool is a bug, said so, with its own exit status -----

BUG_STATUS = 70

INJECT = """\
import sys
from cluster_func.{module} import {function} as _unused
import cluster_func.{module} as m
def broken(*a, **k):
    raise KeyError("injected fault")
m.{function} = broken
from cluster_func.cli import {main}
{main}()
"""


@pytest.mark.parametrize("main, module, function, extra", [
    ("clum_main", "local.run", "run", ()),
    ("clum_main", "local.run", "print_failed", ("--failed",)),
    ("cluf_main", "cluster.submission", "run", ("-n", "2", "-q")),
    ("cluf_main", "cluster.jobs", "write", ("-n", "2", "-q")),
])
def test_an_exception_escaping_from_inside_the_tool_is_reported_as_a_bug_with_exit_70(
        tmp_path, main, module, function, extra):
    script = cs.write_target(tmp_path, n=3)
    code = INJECT.format(module=module, function=function, main=main)
    r = subprocess.run([sys.executable, "-c", code, str(script), *extra], cwd=tmp_path, capture_output=True,
                       text=True, env=cs.base_env(tmp_path), timeout=60)
    assert r.returncode == BUG_STATUS, (r.returncode, r.stderr)
    first = r.stderr.splitlines()[0]
    assert "bug in cluster-func" in first and "report" in first, r.stderr
    assert "Traceback (most recent call last)" in r.stderr and "KeyError: 'injected fault'" in r.stderr
    assert "calls failed" not in r.stderr


def test_the_scripts_own_failures_are_never_reported_as_a_bug(clum):
    clum.script("fails.py", "def target(x):\n    raise KeyError(x)\nargs = range(3)\n")
    r = clum.run("fails.py")
    assert r.returncode == 1 and "bug in cluster-func" not in r.stderr, r.stderr
    clum.script("breaks.py", "raise KeyError('at import')\n")
    r = clum.run("breaks.py")
    assert r.returncode == 2 and "bug in cluster-func" not in r.stderr, r.stderr


def test_the_docs_and_the_help_document_exit_status_70():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "clum.md").read_text()
    assert re.search(r"^\| 70 \|", guide, re.M), "docs/clum.md's exit statuses lack 70"
    from cluster_func import cli

    assert "70" in cli.__doc__
    assert "70" in cli.clum_parser().epilog and "70" in cli.cluf_parser().epilog


# --- 7. a flood of failures stays readable; a closed pipe is no storm ---------------------

def test_a_thousand_failures_print_five_tracebacks_then_short_lines_then_only_a_summary(clum):
    clum.script("all_fail.py", """\
        def target(x):
            if x % 4 == 3:
                raise KeyError(x)
            raise ValueError("bad %d" % x)
        args = range(1000)
        """)
    r = clum.run("all_fail.py", "-p", "2")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) < 120, f"{len(lines)} lines of stderr"
    assert r.stderr.count("Traceback (most recent call last)") == 5
    assert len([line for line in lines if re.match(r"clum: call at position \d+ .* failed: \w+Error: ", line)]) == 45
    assert "more than 50 calls failed: the others are only counted" in r.stderr
    last = lines[-1]
    assert "1000 of 1000 calls failed: 750 ValueError (first at position 0), 250 KeyError (first at position 3)" \
        in last, last
    assert "--failed" in last
    listed = clum.run("all_fail.py", "--failed")
    assert len(listed.stdout.splitlines()) == 1000


def test_retries_of_a_thousand_failing_calls_are_not_listed_one_by_one_either(clum):
    clum.script("all_fail.py", "def target(x):\n    raise ValueError(x)\nargs = range(1000)\n")
    r = clum.run("all_fail.py", "-p", "2", "--retries", "1")
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) < 170, len(r.stderr.splitlines())
    assert "1000 of 1000 calls failed: 1000 ValueError (first at position 0)" in r.stderr


def _shell(clum, command, timeout=60):
    return subprocess.run(["bash", "-c", command], cwd=clum.dir, env=clum.env(), capture_output=True, text=True,
                          timeout=timeout)


def test_a_target_printing_into_a_closed_pipe_fails_its_calls_briefly_and_the_run_ends(clum):
    # 1 MB of output in all, far more than a pipe holds: after head exits, writes must fail.
    clum.script("printer.py", """\
        def target(x):
            print("processed item", x, "." * 1000, flush=True)
            rec("E", x)
        args = range(1000)
        """)
    r = _shell(clum, f"{clum.exe} printer.py -p 2 | head -1; exit ${{PIPESTATUS[0]}}")
    assert r.returncode == 1, r.stderr
    assert r.stdout.startswith("processed item")
    assert len(r.stderr.splitlines()) < 120
    assert "BrokenPipeError" in r.stderr.splitlines()[-1] and "head" in r.stderr.splitlines()[-1]
    assert not TOOL_FRAME.search(r.stderr) and "Exception ignored" not in r.stderr, r.stderr


def test_clums_own_output_into_a_closed_pipe_is_dropped_and_the_run_goes_on(clum):
    clum.script("noisy.py", """\
        def target(x):
            rec("E", x)
            raise ValueError(x)
        args = range(300)
        """)
    r = _shell(clum, f"{clum.exe} noisy.py -p 2 2>&1 >/dev/null | head -1; exit ${{PIPESTATUS[0]}}")
    assert r.returncode == 1, r.stderr
    assert len(clum.evidence()) == 300, "every call ran although clum's stderr was closed"
    listed = _shell(clum, f"{clum.exe} noisy.py --failed | head -2; exit ${{PIPESTATUS[0]}}")
    assert listed.returncode == 1 and len(listed.stdout.splitlines()) == 2
    assert listed.stderr == "", listed.stderr


# --- 2. an args iterable that raises: where, the script's traceback, exit 1 / 2 ------------

RAISING_ARGS = """\
import os
N = int(os.environ.get("N_GOOD", "50"))

def target(x):
    rec("E", x)

def broken_args():
    for i in range(N):
        yield i
    raise ValueError("no element %d" % N)

args = broken_args
"""


@pytest.mark.parametrize("good, bins", [(0, []), (1, []), (50, []), (50, ["-b", "1/3"]),
                                        (50, ["-b", "0,2/3"]), (50, ["-x", "0"])])
def test_clum_says_at_which_position_args_raised_and_shows_the_scripts_traceback(clum, good, bins):
    clum.script("gen.py", RAISING_ARGS)
    r = clum.run("gen.py", *bins, env={"N_GOOD": good})
    assert r.returncode == 1, r.stderr
    where = ("before its first element" if good == 0 else
             f"while producing the element at position {good}, after {good} element")
    assert f"raised an exception {where}" in r.stderr, r.stderr
    assert re.search(r'gen.py", line \d+, in broken_args', r.stderr) and f"ValueError: no element {good}" in r.stderr
    assert "before its first selected element" not in r.stderr
    assert not TOOL_FRAME.search(r.stderr), r.stderr


def test_clum_resumed_still_says_where_args_raised(clum):
    clum.script("gen.py", RAISING_ARGS)
    clum.run("gen.py", env={"N_GOOD": 20})
    r = clum.run("gen.py", "--resume", env={"N_GOOD": 30})
    assert r.returncode == 1
    assert "while producing the element at position 30, after 30 elements" in r.stderr, r.stderr


def test_cluf_counting_an_args_that_raises_says_where_shows_its_traceback_and_writes_nothing(tmp_path, cluf_env):
    (tmp_path / "gen.py").write_text(RAISING_ARGS.replace("rec(\"E\", x)", "pass"))
    r = cluf(tmp_path, cluf_env, "gen.py", "-i", 10, "-q", "-j", "jobs")
    assert r.returncode == 2, r.stderr
    assert "cluf: error:" in r.stderr
    assert "while producing the element at position 50, after 50 elements" in r.stderr
    assert 'gen.py", line 10, in broken_args' in r.stderr and "ValueError: no element 50" in r.stderr
    assert not TOOL_FRAME.search(r.stderr) and "During handling" not in r.stderr, r.stderr
    assert not (tmp_path / "jobs").exists()


def test_cluf_with_n_peeks_at_args_and_refuses_one_that_raises_at_once(tmp_path, cluf_env):
    (tmp_path / "gen.py").write_text(RAISING_ARGS.replace("rec(\"E\", x)", "pass"))
    r = cs.run_cluf("gen.py", "-n", 3, "-q", "-j", "jobs", cwd=tmp_path, env={**cluf_env, "N_GOOD": "0"})
    assert r.returncode == 2 and "before its first element" in r.stderr, r.stderr
    assert not (tmp_path / "jobs").exists()


# --- 5. empty work --------------------------------------------------------------------

@pytest.mark.parametrize("source", ["args = []", "args = iter([])", "def args():\n    return (x for x in [])"])
def test_clum_warns_that_an_empty_args_has_nothing_to_do(clum, source):
    clum.script("empty.py", f"def target(x):\n    pass\n{source}\n")
    r = clum.run("empty.py")
    assert r.returncode == 0
    assert "warning: 'args' in" in r.stderr and "is empty: there was nothing to do" in r.stderr, r.stderr
    assert "0 calls done" not in r.stderr


def test_clum_warns_even_when_quiet_that_its_bins_hold_none_of_the_elements(clum):
    clum.script("five.py", "def target(x):\n    pass\nargs = (x for x in range(5))\n")
    r = clum.run("five.py", "-b", "6,7/8", "--quiet")
    assert r.returncode == 0
    assert "warning: bins 6-7/8 hold none of the 5 elements of 'args'" in r.stderr, r.stderr


@pytest.mark.parametrize("source", ["args = []", "args = iter([])"])
def test_cluf_refuses_to_submit_a_run_with_no_calls(tmp_path, cluf_env, source):
    cs.write_target(tmp_path, args=source)
    for how in (["-n", 2], ["-i", 10]):
        r = cluf(tmp_path, cluf_env, "example.py", *how, "-q", "-j", "jobs")
        cs.assert_clean_error(r, "is empty: there are no calls to submit")
    assert not (tmp_path / "jobs").exists()


def test_cluf_refuses_more_jobs_than_calls_and_suggests_how_many(tmp_path, cluf_env):
    cs.write_target(tmp_path, n=5)
    r = cluf(tmp_path, cluf_env, "example.py", "-n", 12, "-q", "-j", "jobs")
    cs.assert_clean_error(r, "-n 12", "only 5 calls", "bins 5-11 of 12 would have nothing to do", "-n 5")
    assert not (tmp_path / "jobs").exists()
    r = cluf(tmp_path, cluf_env, "example.py", "-n", 12, "-b", "0-4/12", "-q", "-j", "jobs")
    cs.ok(r)  # the chosen bins all have calls
    assert len(list((tmp_path / "jobs").glob("example-*-12.*"))) == 5


def test_cluf_with_iterations_never_makes_an_empty_job(tmp_path, cluf_env):
    cs.write_target(tmp_path, args="args = (x for x in range(7))")
    cs.ok(cluf(tmp_path, cluf_env, "example.py", "-i", 3, "-q", "--scheduler", "slurm", "-j", "jobs"))
    assert sorted(p.name for p in (tmp_path / "jobs").glob("*.slurm")) == \
        ["example-0-3.slurm", "example-1-3.slurm", "example-2-3.slurm"]


# --- 6. a --hash/--key position beyond the elements -----------------------------------

@pytest.mark.parametrize("flag, source, words", [
    (["-x", "2"], "args = [(i, i) for i in range(6)]", ["--hash 2", "(0, 0)", "has 2 arguments", "position 2"]),
    (["-x", "0,3"], "args = ((i, i) for i in range(6))", ["--hash 0,3", "position 3"]),
    (["-k", "1"], "args = range(6)", ["--key 1", "has 1 argument", "not a tuple is one argument"]),
    (["-k", "0"], "args = [()] * 3", ["--key 0", "has no arguments"]),
])
def test_cluf_refuses_a_hash_or_key_position_beyond_the_first_element(tmp_path, cluf_env, flag, source, words):
    cs.write_target(tmp_path, args=source)
    r = cluf(tmp_path, cluf_env, "example.py", "-n", 2, *flag, "-q", "-j", "jobs")
    cs.assert_clean_error(r, *words)
    assert not (tmp_path / "jobs").exists()


def test_cluf_accepts_a_hash_position_inside_the_first_element(tmp_path, cluf_env):
    cs.write_target(tmp_path, args="args = [(i, i) for i in range(6)]")
    cs.ok(cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-x", "1", "-q", "-j", "jobs"))


# --- 4. walltime and memory: no ambiguous bare numbers -----------------------------------

WALLTIME_FORMS = ["HH:MM:SS", "D-HH:MM:SS", "90s", "30m", "12h", "2d"]


@pytest.mark.parametrize("value", ["99", "99.5", "30:00", "12:00", "1.5h", "two hours", "", "0:00:00", "1:75:00"])
def test_cluf_refuses_a_walltime_that_is_ambiguous_or_wrong_and_lists_the_accepted_forms(tmp_path, cluf_env, value):
    cs.write_target(tmp_path, n=4)
    r = cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "jobs", "--walltime", value)
    err = cs.assert_clean_error(r, "--walltime")
    if value in ("99", "99.5"):
        assert "minutes to Slurm and seconds to PBS" in err
    if value in ("99", "99.5", "1.5h", "two hours", ""):
        for form in WALLTIME_FORMS:
            assert form in err, (form, err)
    if value in ("30:00", "12:00"):
        assert f"00:{value}" in err and f"{value}:00" in err, err
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("value, expected", [("12:00:00", "12:00:00"), ("1-12:00:30", "36:00:30"), ("90s", "00:01:30"),
                                             ("30m", "00:30:00"), ("12h", "12:00:00"), ("2d", "48:00:00"),
                                             ("1h30m", "01:30:00"), ("100:00:00", "100:00:00")])
def test_cluf_accepts_every_documented_walltime_form(tmp_path, cluf_env, value, expected):
    cs.write_target(tmp_path, n=4)
    cs.ok(cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "slurm",
               "--walltime", value))
    text = (tmp_path / "jobs" / "example-0-2.slurm").read_text()
    assert f"#SBATCH --time={expected}\n" in text, text


@pytest.mark.parametrize("value", ["1024", "4B", "4Q", "lots", "", "0.5K"])
def test_cluf_refuses_a_memory_without_a_unit_and_lists_the_accepted_forms(tmp_path, cluf_env, value):
    cs.write_target(tmp_path, n=4)
    r = cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "jobs", "--memory", value)
    err = cs.assert_clean_error(r, "--memory")
    if value != "0.5K":
        assert "4G" in err and "500M" in err and "16GB" in err, err
    if value == "1024":
        assert "megabytes to Slurm and bytes to PBS" in err


@pytest.mark.parametrize("value, mb", [("4G", 4096), ("4GB", 4096), ("4GiB", 4096), ("500M", 500), ("500mb", 500),
                                       ("1.5G", 1536), ("2T", 2097152), ("4 GB", 4096)])
def test_cluf_accepts_every_documented_memory_form(tmp_path, cluf_env, value, mb):
    cs.write_target(tmp_path, n=4)
    cs.ok(cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "slurm", "--memory", value))
    assert f"#SBATCH --mem={mb}M\n" in (tmp_path / "jobs" / "example-0-2.slurm").read_text()


@pytest.mark.parametrize("where", ["cluf_options", "clufrc"])
@pytest.mark.parametrize("key, value, words", [("walltime", 3600, ["'2h' or '02:00:00'", "bare number"]),
                                               ("memory", 4096, ["as a string", "4G"])])
def test_numbers_in_cluf_options_or_clufrc_are_refused_too_with_what_to_write(tmp_path, cluf_env, where, key, value,
                                                                              words):
    import json

    if where == "cluf_options":
        cs.write_target(tmp_path, n=4, extra=f"cluf_options = {{{key!r}: {value!r}}}\n")
    else:
        cs.write_target(tmp_path, n=4)
        (tmp_path / "rc.json").write_text(json.dumps({key: value}))
        cluf_env = {**cluf_env, "CLUFRC": str(tmp_path / "rc.json")}
    r = cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "jobs")
    cs.assert_clean_error(r, key, *words)


def test_clums_own_walltime_refuses_a_bare_number_too(clum, clean_error):
    clum.script("s.py", "def target(x):\n    pass\nargs = range(3)\n")
    clean_error(clum.run("s.py", "--walltime", "99"), "--walltime", "ambiguous", "90s")


# --- 10. help texts and hints -----------------------------------------------------------

def _help_of(text, option):
    """The help paragraph of one option in argparse's --help output."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if re.match(rf"^  (-\w, )?{re.escape(option)}\b", line) or re.match(rf"^  -\w [A-Z_,.=]+, {re.escape(option)}\b", line):
            out = [line]
            for more in lines[k + 1:]:
                if not more.startswith("    ") or re.match(r"^  -", more):
                    break
                out.append(more)
            return " ".join(x.strip() for x in out)
    raise AssertionError(f"{option} not in help")


def test_clufs_help_says_what_bins_walltime_memory_scheduler_and_array_take_with_examples(tmp_path, cluf_env):
    out = cluf(tmp_path, cluf_env, "--help").stdout
    b = _help_of(out, "--bins")
    assert "of the N jobs" in b and "write and submit" in b and "Example: -n 12 -b 3,7/12" in b, b
    w = _help_of(out, "--walltime")
    assert all(f in w for f in ["HH:MM:SS", "D-HH:MM:SS", "90s", "30m", "12h", "2d", "bare number"]), w
    m = _help_of(out, "--memory")
    assert all(f in m for f in ["K, M, G or T", "1024", "bare number", "Example: --memory 4G"]), m
    assert "Example: --scheduler slurm" in _help_of(out, "--scheduler")
    a = _help_of(out, "--array")
    assert "Example:" in a and "CLUF_BIN=<bin>" in a, a
    assert "jobs/*.pbs" not in out


def test_clufs_help_description_is_wrapped(tmp_path, cluf_env):
    out = cluf(tmp_path, cluf_env, "--help").stdout
    description = out.split("\n\n")[1]
    assert "Split the calls" in description
    assert max(len(line) for line in description.splitlines()) <= 80, description


def test_the_run_by_hand_hint_is_shell_quoted_for_a_jobs_dir_with_spaces(tmp_path, cluf_env):
    script = cs.write_target(tmp_path, n=4)
    for extra in ([], ["--array"]):
        r = cs.ok(cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "my jobs", "--scheduler", "slurm", *extra))
        command = r.stdout.split("by hand with: ")[1].strip()
        res = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (command, res.stderr)
    assert cs.calls(script) == [0, 0, 2, 2]  # bin 0 twice: one job script, one array script


def test_an_array_script_run_by_hand_prints_on_the_terminal(tmp_path, cluf_env):
    cs.write_target(tmp_path, n=4, fail=(2,))
    cs.ok(cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "slurm", "--array"))
    [path] = (tmp_path / "jobs").glob("*.slurm")
    res = cs.run_by_hand(path, env={"CLUF_BIN": "0"})
    assert res.returncode == 1
    assert "ValueError: call 2 fails on purpose" in res.stderr, (res.stdout, res.stderr)
    assert not (tmp_path / "jobs" / "example-0-2.stderr").exists()
    task = cs.run_by_hand(path, env={"SLURM_ARRAY_TASK_ID": "1"})  # as a task: to the bin's files
    assert task.returncode == 0 and task.stderr == ""
    assert (tmp_path / "jobs" / "example-1-2.stderr").exists()


# --- 8. the progress line never corrupts output on the same terminal; 9. with --resume -------

def run_on_a_terminal(clum, *args, stdout=None, timeout=60):
    """Run clum with stderr (and stdout, unless a file is given) on a pseudo-terminal; return
    (exit status, the bytes the terminal received)."""
    master, slave = pty.openpty()
    with open(stdout, "w") if stdout else open(os.devnull) as out_file:
        p = subprocess.Popen([clum.exe, *map(str, args)], cwd=clum.dir, env=clum.env(), stdin=subprocess.DEVNULL,
                             stdout=out_file if stdout else slave, stderr=slave)
        os.close(slave)
        data, deadline = b"", time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if select.select([master], [], [], 0.1)[0]:
                    try:
                        chunk = os.read(master, 1 << 16)
                    except OSError:  # EIO: every writer is gone
                        break
                    if not chunk:
                        break
                    data += chunk
        finally:
            os.close(master)
            if p.poll() is None:
                p.kill()
            p.wait()
    return p.returncode, data


def screen(data):
    """The lines a terminal shows after receiving data (\\r, \\n and ESC[K are interpreted)."""
    lines, col, text, i = [[]], 0, data.decode(errors="replace"), 0
    while i < len(text):
        if text.startswith("\x1b[K", i):
            del lines[-1][col:]
            i += 3
            continue
        c = text[i]
        if c == "\r":
            col = 0
        elif c == "\n":
            lines.append([])
            col = 0
        else:
            line = lines[-1]
            line[col:col + 1] = [c]
            col += 1
        i += 1
    return ["".join(line) for line in lines if line]


PRINTER = """\
import sys, time

def target(x):
    time.sleep(0.04)
    sys.stdout.write("processed item %d tty=%s\\n" % (x, sys.stdout.isatty()))
    sys.stdout.flush()
    if x % 5 == 0:
        sys.stderr.write("note %d\\n" % x)
    if x == 7:
        sys.stdout.write("no newline yet ")
        sys.stdout.flush()
        time.sleep(0.5)
        sys.stdout.write("and now the end of the line\\n")

args = range(40)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_progress_line_never_mixes_with_the_targets_output_on_the_same_terminal(clum, method):
    clum.script("printer.py", PRINTER, preamble=False)
    # One worker: two workers' own lines may mix on a terminal with or without clum.
    status, data = run_on_a_terminal(clum, "printer.py", "-p", "1", "--start-method", method)
    assert status == 0, data
    assert b"done, 0 failed of 40" in data, "the progress line was never drawn: the test proves nothing"
    lines = screen(data)
    items = []
    for line in lines:
        if line.startswith("clum: "):
            assert "processed" not in line and "note" not in line, line
            continue
        m = re.fullmatch(r"processed item (\d+) tty=True|note \d+|no newline yet and now the end of the line", line)
        assert m, f"a corrupted line on the terminal: {line!r}\n{lines}"
        if m.group(1):
            items.append(int(m.group(1)))
    assert sorted(items) == list(range(40)) and lines[-1] == "clum: 40 calls done.", lines


def test_with_stdout_in_a_file_the_targets_stderr_still_never_mixes_with_the_progress_line(clum):
    clum.script("printer.py", PRINTER, preamble=False)
    status, data = run_on_a_terminal(clum, "printer.py", "-p", "2", stdout=clum.dir / "out.txt")
    assert status == 0, data
    for line in screen(data):
        assert line.startswith("clum: ") or re.fullmatch(r"note \d+", line), line
    out = (clum.dir / "out.txt").read_text()
    assert out.count("processed item") == 40 and out.count("tty=False") == 40, "stdout, a file, is left alone"


def test_resumed_the_progress_line_counts_what_is_left_and_the_skipped_calls_are_said_first(clum):
    clum.script("half.py", """\
        import os, time

        def target(x):
            time.sleep(0.01)
            if x >= 10 and not os.environ.get("FIXED"):
                raise ValueError(x)

        args = range(20)
        """)
    assert clum.run("half.py").returncode == 1
    clum.env = lambda extra=None, out=None, _env=clum.env: {**_env(extra, out), "FIXED": "1"}
    status, data = run_on_a_terminal(clum, "half.py", "--resume")
    assert status == 0, data
    lines = screen(data)
    assert lines[0].startswith("clum: --resume: the journal records 10 calls as completed") and \
        "(10 calls to run)" in lines[0], lines
    assert b"0 done, 0 failed of 10," in data, data
    assert b"of 20" not in data


# --- the sweep: every option with wrong, empty, huge and path-like values --------------------

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from cluster_func import cli as _cli  # noqa: E402

DOCUMENTED_STATUSES = {0, 1, 2}  # what bad input may end in: never 70 (a bug), never a hang
PATH_METAVARS = {"PATH", "DIR", "FILES"}
PLAIN_VALUES = {"wrong type": "abc", "empty": "", "huge": "9" * 40, "negative": "-1"}
PATH_VALUES = {"empty": "", "directory": "adir", "dangling link": "dangling", "FIFO": "fifo",
               "missing parent": "nowhere/deeper/x"}


def _value_options(parser):
    """(longest option string, metavar) of every option that takes a value."""
    return [(max(a.option_strings, key=len), a.metavar) for a in parser._actions if a.option_strings and a.nargs != 0]


def _flags(parser):
    return [max(a.option_strings, key=len) for a in parser._actions
            if a.option_strings and a.nargs == 0 and a.dest not in ("help", "version")]


SWEEP = ([(cmd, opt, PATH_VALUES if metavar in PATH_METAVARS else PLAIN_VALUES)
          for cmd, parser in (("clum", _cli.clum_parser()), ("cluf", _cli.cluf_parser()))
          for opt, metavar in _value_options(parser)]
         + [(cmd, flag + "=abc", {"a value given to a flag": None})
            for cmd, parser in (("clum", _cli.clum_parser()), ("cluf", _cli.cluf_parser())) for flag in _flags(parser)])


def _sweep_dir(folder):
    folder.mkdir(parents=True)
    (folder / "s.py").write_text("def target(a, b):\n    pass\n\nargs = [(i, i) for i in range(6)]\n")
    (folder / "adir").mkdir()
    (folder / "dangling").symlink_to(folder / "nowhere" / "x")
    os.mkfifo(folder / "fifo")
    return folder


def _run_case(clum, folder, cmd, argv, extra_env=None):
    env = {**cs.base_env(folder), **(extra_env or {})}
    env.pop("PYTHONUNBUFFERED", None)
    exe = [clum.exe] if cmd == "clum" else cs.CLUF
    try:
        return subprocess.run([*exe, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None


def _check(r, what, words=()):
    assert r is not None, f"{what}: no answer within 60 s (a hang)"
    assert r.returncode in DOCUMENTED_STATUSES, f"{what}: exit {r.returncode}\n{r.stderr}"
    assert not TOOL_FRAME.search(r.stderr), f"{what}: a traceback from inside the tool\n{r.stderr}"
    if r.returncode == 2:
        assert "error:" in r.stderr, f"{what}: exit 2 without an error message\n{r.stderr}"
        low = r.stderr.lower()
        assert any(w.lower() in low for w in words if w), f"{what}: the message names none of {words}\n{r.stderr}"


@pytest.mark.parametrize("cmd, opt, values", SWEEP, ids=[f"{c} {o}" for c, o, _ in SWEEP])
def test_every_option_given_a_bad_value_ends_in_a_clear_message_and_a_documented_status(clum, tmp_path, cmd, opt,
                                                                                       values):
    def one(kind, value):
        folder = _sweep_dir(tmp_path / kind.replace(" ", "-"))
        if value is None:  # a flag given a value
            argv = ["s.py", opt]
        else:
            argv = ["s.py", opt, value]
        if cmd == "clum":
            argv += [] if opt == "--processes" else ["-p", "1"]
        else:
            argv += [] if opt in ("--nodes", "--iterations") else ["-n", "2"]
            argv += ["-q"] + ([] if opt == "--jobs-dir" else ["-j", "jobs"])
            argv += [] if opt == "--scheduler" else ["--scheduler", "slurm"]
        return kind, value, _run_case(clum, folder, cmd, argv)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda kv: one(*kv), values.items()))
    name = opt.split("=")[0].lstrip("-")
    for kind, value, r in results:
        _check(r, f"{cmd} {opt} {value!r} ({kind})", [name, name.replace("-", "_"), value or "", "unrecognized"])


SCRIPTS = {"a directory": "adir", "a device": "/dev/null", "a dangling link": "dangling", "a FIFO": "fifo",
           "an empty name": "", "a long name": "x" * 300, "a trailing slash": "s.py/", "a shell script": "sh"}


@pytest.mark.parametrize("cmd", ["clum", "cluf"])
def test_every_kind_of_wrong_script_path_ends_in_a_clear_message(clum, tmp_path, cmd):
    def one(kind, value):
        folder = _sweep_dir(tmp_path / kind.replace(" ", "-"))
        (folder / "sh").write_text("#!/bin/sh\nls\n")
        argv = [value] + ([] if cmd == "clum" else ["-n", "2", "-q", "-j", "jobs"])
        return kind, value, _run_case(clum, folder, cmd, argv)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda kv: one(*kv), SCRIPTS.items()))
    for kind, value, r in results:
        _check(r, f"{cmd} SCRIPT {kind}", ["script", value[:40]])
        assert r.returncode == 2, (kind, r.stderr)


RC_FILES = {"a directory": "adir", "a dangling link": "dangling", "a FIFO": "fifo", "not JSON": "bad.json",
            "a JSON list": "list.json", "a number for walltime": "num.json"}


def test_every_kind_of_wrong_clufrc_ends_in_a_clear_message(clum, tmp_path):
    def one(kind, value):
        folder = _sweep_dir(tmp_path / kind.replace(" ", "-"))
        (folder / "bad.json").write_text('{"nodes": 2')
        (folder / "list.json").write_text("[1, 2]")
        (folder / "num.json").write_text('{"walltime": 3600}')
        r = _run_case(clum, folder, "cluf", ["s.py", "-n", "2", "-q", "-j", "jobs"],
                      {"CLUFRC": str(folder / value)})
        return kind, value, r

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda kv: one(*kv), RC_FILES.items()))
    for kind, value, r in results:
        _check(r, f"CLUFRC {kind}", ["defaults file", "walltime"])
        assert r.returncode == 2, (kind, r.stderr)


@pytest.mark.parametrize("command", ["--status", "--resubmit", "--cancel", "--gather"])
def test_every_managing_command_given_a_wrong_jobs_dir_ends_in_a_clear_message(clum, tmp_path, command):
    def one(kind, value):
        folder = _sweep_dir(tmp_path / kind.replace(" ", "-"))
        return kind, value, _run_case(clum, folder, "cluf", [command, value])

    values = {"missing": "nowhere", "a file": "s.py", "a device": "/dev/null", "an empty directory": "adir",
              "a dangling link": "dangling", "a FIFO": "fifo"}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda kv: one(*kv), values.items()))
    for kind, value, r in results:
        _check(r, f"cluf {command} {kind}", ["cluf run", "jobs dir", value])
        assert r.returncode == 2, (kind, r.stderr)


# --- the script's code that cluster-func calls itself: never reported as a bug -------------

SCRIPT_CODE_FAILS = {
    "args() raises": ("def args():\n    raise KeyError('no data')\n", 2, "KeyError: 'no data'"),
    "args() exits": ("import sys\ndef args():\n    sys.exit(5)\n", 2, "SystemExit: 5"),
    "__iter__ raises": ("class A:\n    def __iter__(self):\n        raise OSError('disk gone')\nargs = A()\n", 2,
                        "OSError: disk gone"),
    "__len__ raises": ("class A:\n    def __len__(self):\n        raise RuntimeError('no len')\n"
                       "    def __iter__(self):\n        return iter(range(3))\nargs = A()\n", 0, None),
    "the generator exits": ("import sys\ndef args():\n    yield 1\n    sys.exit(5)\n", 1, "SystemExit: 5"),
}


@pytest.mark.parametrize("case", list(SCRIPT_CODE_FAILS))
def test_the_scripts_args_code_failing_is_the_scripts_error_with_its_traceback_never_a_bug(clum, case):
    source, status, words = SCRIPT_CODE_FAILS[case]
    clum.script("s.py", "def target(x):\n    pass\n" + source, preamble=False)
    r = clum.run("s.py")
    assert r.returncode == status, (r.returncode, r.stderr)
    assert "bug in cluster-func" not in r.stderr and not TOOL_FRAME.search(r.stderr), r.stderr
    if words:
        assert words in r.stderr and 's.py", line' in r.stderr, r.stderr


# --- issue 20: bad input never ends in a traceback, silence, a hang or memory in proportion to a number -----

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402

from cluster_func.cluster import manifest as _manifest  # noqa: E402
from cluster_func import options as _options  # noqa: E402
from cluster_func import schedulers as _schedulers  # noqa: E402

MANAGING = ["--status", "--resubmit", "--cancel", "--gather", "--wait"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run submitted with --results to stand-in Slurm commands (nothing is ever queued), both of
    its bins then run by hand: a jobs dir with a real manifest, journals and results files."""
    root = tmp_path_factory.mktemp("finished-run")
    for name, out in (("sbatch", "{id}\n"), ("squeue", ""), ("scancel", "")):
        cs.stand_in(root / "bin", name, out)
    cs.write_target(root, n=6)
    env = cs.base_env(root, root / "bin")
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-j", "jobs", "--scheduler", "slurm", "--results", "jsonl",
                      cwd=root, env=env))
    for i in range(2):
        assert cs.run_by_hand(root / "jobs" / f"example-{i}-2.slurm").returncode == 0
    return root


def _copy_run(finished_run, folder):
    """A copy of the run whose manifest names the copy's paths (they are absolute)."""
    shutil.copytree(finished_run, folder, symlinks=True)
    manifest = folder / MANIFEST
    manifest.write_text(manifest.read_text().replace(str(finished_run), str(folder)))
    return folder, cs.base_env(folder, folder / "bin")


def _manage(folder, env, command):
    try:
        return subprocess.run([*cs.CLUF, command, "jobs"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None


MANIFEST = Path("jobs") / "example-2.manifest.json"


def _wrong_value(types):
    """A JSON value of none of these types."""
    return {"x": 1} if str in types else "x"


def _field_cases():
    """(case name, change(manifest dict), the words the message must hold): every field of the
    manifest's schema given a value of the wrong type, every required one missing, and values of the
    right type that still cannot be (a scheduler cluf does not know, a bin beyond the run...)."""
    sections = [("", _manifest.MANIFEST_SCHEMA), ("plan", _manifest.PLAN_SCHEMA),
                ("plan.resources", _manifest.RESOURCES_SCHEMA), ("jobs.0", _manifest.JOB_SCHEMA)]

    def at(m, section):
        for part in filter(None, section.split(".")):
            m = m[part]
        return m

    cases = []
    for section, schema in sections:
        for name, (types, required) in schema.items():
            wrong = _wrong_value(types)
            cases.append((f"{section}.{name} wrong".lstrip("."),
                          lambda m, s=section, n=name, w=wrong: at(m, s).__setitem__(n, w), [repr(name)]))
            if required:
                cases.append((f"{section}.{name} missing".lstrip("."),
                              lambda m, s=section, n=name: at(m, s).pop(n), [f"has no {name!r}"]))
    cases += [
        ("no scheduler of cluf's", lambda m: m.update(scheduler="nope"), ["'scheduler'", "nope", "slurm"]),
        ("zero nodes", lambda m: m.update(nodes=0), ["'nodes'"]),
        ("a negative count", lambda m: m["jobs"]["0"].update(calls=-3), ["'calls'", "negative"]),
        ("a bin key that is not a number", lambda m: m["jobs"].update(x=m["jobs"]["0"]), ["'x'"]),
        ("a bin beyond the run", lambda m: m["jobs"].update({"7": m["jobs"]["0"]}), ["'7'", "0 to 1"]),
        ("a job's bin is another", lambda m: m["jobs"]["0"].update(bin=1), ["'bin'"]),
        ("a job that is not an object", lambda m: m["jobs"].update({"0": "x"}), ["jobs.0"]),
        ("planned bins beyond the run", lambda m: m.update(planned=[99]), ["'planned'"]),
        ("a results format cluf does not write", lambda m: m["plan"].update(results="csv"), ["'results'"]),
        ("a clum argument that is not a string", lambda m: m["plan"].update(clum_args=[1]), ["clum_args"]),
        ("an env value that is not a string", lambda m: m["plan"].update(env={"A": 1}), ["'env'"]),
        ("a history entry that is not an object", lambda m: m["jobs"]["0"].update(history=[1]), ["'history'"]),
        ("the plan's nodes differ", lambda m: m["plan"].update(nodes=3), ["'nodes'"]),
        ("a resource cluf does not ask for", lambda m: m["plan"]["resources"].update(sockets=2), ["'sockets'"]),
        ("GPUs that are words", lambda m: m["plan"]["resources"].update(gpus="lots"), ["'gpus'", "lots"]),
        ("a cancel by a number", lambda m: m["jobs"]["0"].update(cancelled_by=42), ["'cancelled_by'", "42"]),
    ]
    return cases


FIELD_CASES = _field_cases()
FILE_CASES = {  # what replaces the manifest: bytes, or "dir" / "fifo"
    "truncated": lambda text: text[: len(text) // 2].encode(),
    "empty": lambda text: b"",
    "binary": lambda text: b"\x00\xff\xfe\x89PNG\r\n\x1a\n" * 20,
    "a JSON list": lambda text: b"[1, 2]",
    "null": lambda text: b"null",
    "a directory": lambda text: "dir",
    "a FIFO": lambda text: "fifo",
}


def _check_manifest_error(r, what, words):
    assert r is not None, f"{what}: no answer within 60 s (a hang)"
    err = r.stderr
    assert r.returncode == 2, f"{what}: exit {r.returncode}\n{err}"
    assert not TOOL_FRAME.search(err) and "Traceback" not in err, f"{what}: a traceback\n{err}"
    assert "cluf: error:" in err and "manifest" in err, f"{what}\n{err}"
    assert "move it away and submit the run again" in err and "--resume" in err, f"{what}: no fix offered\n{err}"
    for w in words:
        assert w.lower() in err.lower(), f"{what}: {w!r} not in the message\n{err}"


@pytest.mark.parametrize("command", MANAGING)
def test_a_sound_manifest_of_a_real_run_passes_the_check_under_every_managing_command(finished_run, tmp_path,
                                                                                       command):
    folder, env = _copy_run(finished_run, tmp_path / "run")
    r = _manage(folder, env, command)
    assert r is not None and r.returncode == 0, (command, r and r.stderr)


@pytest.mark.parametrize("command", MANAGING)
def test_a_corrupt_manifest_file_is_named_with_a_fix_under_every_managing_command(finished_run, tmp_path, command):
    def one(kind):
        folder, env = _copy_run(finished_run, tmp_path / kind.replace(" ", "-"))
        path = folder / MANIFEST
        content = FILE_CASES[kind](path.read_text())
        path.unlink()
        if content == "dir":
            path.mkdir()
        elif content == "fifo":
            os.mkfifo(path)
        else:
            path.write_bytes(content)
        return kind, _manage(folder, env, command)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, FILE_CASES))
    for kind, r in results:
        _check_manifest_error(r, f"cluf {command} with a manifest that is {kind}", [str(MANIFEST.name)])


@pytest.mark.parametrize("command", MANAGING)
def test_every_field_of_the_manifest_wrong_is_named_with_a_fix_under_every_managing_command(finished_run, tmp_path,
                                                                                           command):
    def one(case):
        name, change, words = case
        folder, env = _copy_run(finished_run, tmp_path / re.sub(r"\W+", "-", name))
        path = folder / MANIFEST
        m = json.loads(path.read_text())
        change(m)
        path.write_text(json.dumps(m))
        return name, words, _manage(folder, env, command)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, FIELD_CASES))
    for name, words, r in results:
        _check_manifest_error(r, f"cluf {command} with a manifest whose {name}", words)


JOURNAL_CASES = {  # bin 0's journal replaced by: bytes, or "dir" / "fifo"
    "a directory": "dir",
    "a FIFO": "fifo",
    "binary": b"\x00\xff\xfe\x89PNG\r\n\x1a\n" * 20,
    "empty": b"",
}


@pytest.mark.parametrize("command", MANAGING)
def test_a_bins_journal_that_is_not_a_journal_is_named_or_counts_as_vanished_under_every_managing_command(
        finished_run, tmp_path, command):
    def one(kind):
        folder, env = _copy_run(finished_run, tmp_path / kind.replace(" ", "-"))
        path = folder / "jobs" / "example-0-2.journal"
        path.unlink()
        content = JOURNAL_CASES[kind]
        if content == "dir":
            path.mkdir()
        elif content == "fifo":
            os.mkfifo(path)
        else:
            path.write_bytes(content)
        return kind, folder, _manage(folder, env, command)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, JOURNAL_CASES))
    for kind, folder, r in results:
        what = f"cluf {command} with bin 0's journal {kind}"
        _check(r, what, ["example-0-2.journal"])
        if JOURNAL_CASES[kind] in ("dir", "fifo"):
            assert r.returncode == 2 and "Move it away" in r.stderr, (what, r.stderr)
            manifest = json.loads((folder / MANIFEST).read_text())
            assert not any(j.get("cancelled") for j in manifest["jobs"].values()), f"{what}: bins marked cancelled"


RESULTS_CASES = {  # bin 0's results file (3 values when sound) replaced by: (bytes or "dir"/"fifo", exit status)
    "a truncated last line": (lambda text: text[:-7].encode(), 1),
    "binary": (lambda text: b"\x00\xff\xfe\x89PNG\r\n\x1a\n" * 20, 1),
    "empty": (lambda text: b"", 1),
    "positions that are not numbers": (lambda text: b'{"pos": "x", "value": 1}\n{"pos": [1], "value": 2}\n', 1),
    "a directory": (lambda text: "dir", 2),
    "a FIFO": (lambda text: "fifo", 2),
}


def test_a_corrupt_results_file_under_gather_is_a_clear_message_or_counted_as_missing(finished_run, tmp_path):
    def one(kind):
        folder, env = _copy_run(finished_run, tmp_path / kind.replace(" ", "-"))
        path = folder / "jobs" / "example-0-2.results.jsonl"
        make, status = RESULTS_CASES[kind]
        content = make(path.read_text())
        path.unlink()
        if content == "dir":
            path.mkdir()
        elif content == "fifo":
            os.mkfifo(path)
        else:
            path.write_bytes(content)
        return kind, status, folder, _manage(folder, env, "--gather")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, RESULTS_CASES))
    for kind, status, folder, r in results:
        assert r is not None, f"{kind}: a hang"
        assert r.returncode == status, (kind, r.returncode, r.stderr)
        assert not TOOL_FRAME.search(r.stderr) and "Traceback" not in r.stderr, (kind, r.stderr)
        if status == 2:
            assert "example-0-2.results.jsonl" in r.stderr and "Move it away" in r.stderr, (kind, r.stderr)
        else:  # the other bin's values are gathered; what bin 0 lacks is counted
            assert "positions have no value" in r.stdout, (kind, r.stdout)
            gathered = [json.loads(line) for line in (folder / "jobs" / "example-2.results.jsonl").open()]
            assert {rec["pos"] for rec in gathered} >= {1, 3, 5}, (kind, gathered)
            assert all(type(rec["pos"]) is int for rec in gathered), (kind, gathered)


def test_a_hand_edited_manifest_cannot_put_a_newline_into_a_resubmitted_job_script(finished_run, tmp_path):
    folder, env = _copy_run(finished_run, tmp_path / "run")
    path = folder / MANIFEST
    m = json.loads(path.read_text())
    m["plan"]["raw"] = {"qos": "long\nrm -rf ~"}
    (folder / "jobs" / "example-0-2.journal").unlink()  # bin 0 vanished: --resubmit writes its script again
    path.write_text(json.dumps(m))
    r = _manage(folder, env, "--resubmit")
    cs.assert_clean_error(r, "directive", "newline")
    assert "rm -rf" not in (folder / "jobs" / "example-0-2.slurm").read_text()


# Options whose values become directive lines (or are named in the job script's comments): every
# scheduler's raw options, and the portable ones that are one word of a directive.
DIRECTIVE_OPTIONS = [o.name for o in _options.OPTIONS if o.parse in (_options._key_values, _options._directive_word)]
BAD_DIRECTIVE_VALUES = {
    "a newline and a command": "qos=long\nsrun rm -rf ~",
    "a carriage return": "mem=4gb\r#PBS -l evil=1",
    "a newline and a directive": "mem=4gb\n#PBS -l evil=1",
    "a name with spaces": "key with space=1",
    "a value with a space": "a=b c",
}


def test_the_directive_options_are_found_from_the_option_table():
    assert {"queue", "account", *(_schedulers.options_key(n) for n in _schedulers.names())} <= set(DIRECTIVE_OPTIONS)


@pytest.mark.parametrize("option", DIRECTIVE_OPTIONS)
def test_a_value_that_cannot_be_one_directive_is_refused_naming_the_option(clum, tmp_path, option):
    raw = option.endswith("-options")
    values = BAD_DIRECTIVE_VALUES if raw else {"a space": "a b", "a newline": "a\nsrun rm -rf ~", "a NUL": "a\x01b"}

    def one(kind, value, where):
        folder = _sweep_dir(tmp_path / f"{where}-{kind.replace(' ', '-')}")
        extra = {}
        if where == "command line":
            argv = [f"--{option}", value]
        elif where == "cluf_options":
            with (folder / "s.py").open("a") as f:
                f.write(f"cluf_options = {{{option!r}: {value!r}}}\n")
            argv = []
        else:
            (folder / "rc.json").write_text(json.dumps({option: value}))
            extra, argv = {"CLUFRC": str(folder / "rc.json")}, []
        scheduler = option[:-len("-options")] if raw else "slurm"
        r = _run_case(clum, folder, "cluf", ["s.py", "-n", "2", "-q", "-j", "jobs", "--scheduler", scheduler, *argv],
                      extra)
        return kind, where, folder, r

    cases = [(k, v, w) for k, v in values.items() for w in ("command line", "cluf_options", "clufrc")]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: one(*c), cases))
    for kind, where, folder, r in results:
        what = f"--{option} with {kind} ({where})"
        _check(r, what, [option])
        assert r.returncode == 2, (what, r.stderr)
        assert not (folder / "jobs").exists(), f"{what}: job scripts were written"


def test_a_path_that_cannot_stay_on_one_line_of_a_job_script_is_refused(clum, tmp_path):
    folder = _sweep_dir(tmp_path / "f")
    (folder / "pre\nrm -rf ~.sh").write_text("echo hi\n")
    for argv, word in ((["-j", "jobs\nrm -rf ~"], "--jobs-dir"), (["-P", "pre\nrm -rf ~.sh"], "--prepend-script")):
        r = _run_case(clum, folder, "cluf", ["s.py", "-n", "2", "-q", *argv])
        assert r.returncode == 2 and word in r.stderr and "newline" in r.stderr, r.stderr
    assert not list(folder.glob("*.pbs"))


def test_cluf_never_overwrites_a_file_it_did_not_write_that_has_a_job_scripts_name(tmp_path, cluf_env):
    cs.write_target(tmp_path, n=4)
    (tmp_path / "userj").mkdir()
    mine = tmp_path / "userj" / "example-1-2.slurm"
    mine.write_text("my own notes\n")
    r = cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "userj", "--scheduler", "slurm")
    cs.assert_clean_error(r, str(mine), "not written by cluf", "-j DIR")
    assert mine.read_text() == "my own notes\n" and not (tmp_path / "userj" / "example-0-2.slurm").exists()
    mine.unlink()
    for _ in range(2):  # its own job scripts it replaces
        cs.ok(cluf(tmp_path, cluf_env, "example.py", "-n", 2, "-q", "-j", "userj", "--scheduler", "slurm"))


# Bad inputs through the real commands: (command, script source, argv, extra environment, exit status,
# words of the message).  Memory: the range cases run under ulimit -v, so expanding a range in memory
# fails them.
OK_SCRIPT = "def target(x):\n    return x\nargs = range(6)\n"
HUGE = "9" * 5000
BAD_INPUTS = {
    "a bin count beyond any int": ("clum", OK_SCRIPT, ["--bins", "0/99999999999999999999"], {}, 2, ["1,000,000"]),
    "a bin range of 10^11": ("clum", OK_SCRIPT, ["--bins", "0-99999999999/100000000000"], {}, 2, ["bins"]),
    "a bin of 5000 digits": ("clum", OK_SCRIPT, ["--bins", f"{HUGE}/3"], {}, 2, ["numbered 0 to 2"]),
    "a hash range of 10^12": ("clum", OK_SCRIPT, ["-x", "0-999999999999"], {}, 2, ["not an argument position"]),
    "cluf: a hash range of 10^12": ("cluf", OK_SCRIPT, ["-n", "2", "-q", "-x", "0-999999999999"], {}, 2,
                                    ["not an argument position"]),
    "a key of 5000 digits": ("clum", OK_SCRIPT, ["-k", HUGE], {}, 2, ["--key"]),
    "a negative bin spec after a space": ("clum", OK_SCRIPT, ["--bins", "-1/3"], {}, 2, ["Bin spec '-1/3'"]),
    "the script after --": ("clum", OK_SCRIPT, ["--"], {}, 2, ["after '--' goes to the script", "before '--'"]),
    "cluf: the script after --": ("cluf", OK_SCRIPT, ["-n", "2", "--"], {}, 2, ["before '--'"]),
    "a hash position beyond the arguments": ("clum", OK_SCRIPT, ["-x", "9"], {}, 2, ["position 9 does not exist"]),
    "a walltime inside the default grace": ("clum", OK_SCRIPT, ["--walltime", "1s"], {}, 2,
                                            ["leaves no time", "--grace"]),
    "cluf: a walltime inside the default grace": ("cluf", OK_SCRIPT, ["-n", "2", "-q", "--walltime", "5s"], {}, 2,
                                                  ["leaves no time"]),
    "os._exit at import": ("clum", "import os\nos._exit(4)\n", [], {}, 2, ["os._exit(4)", "while being loaded"]),
    "cluf: os._exit at import": ("cluf", "import os\nos._exit(4)\n", ["-n", "2", "-q"], {}, 2, ["os._exit(4)"]),
    "a dict as args": ("clum", "def target(k, v):\n    pass\nargs = {'a': 1, 'b': 2}\n", [], {}, 2,
                       ["is a dict", "sorted(args.items())", "only its keys"]),
    "string keys": ("clum", "def target(k, v):\n    pass\nargs = [('a', 1), ('b', 2)]\n", ["-k", "0"], {}, 2,
                    ["'a'", "not a bin number", "--hash 0"]),
    "cluf: string keys": ("cluf", "def target(k, v):\n    pass\nargs = [('a', 1), ('b', 2)]\n",
                          ["-n", "2", "-q", "-k", "0"], {}, 2, ["not a bin number"]),
    "keys none of which is a bin": ("clum", "def target(k):\n    pass\nargs = (k for k in [5, 7, 9])\n",
                                    ["-k", "0", "-b", "0/3"], {}, 2, ["Nothing ran", "0 to 2"]),
    "a CLUFRC that does not exist": ("cluf", OK_SCRIPT, ["-n", "2", "-q"], {"CLUFRC": "missing.json"}, 2,
                                     ["CLUFRC", "missing.json", "does not exist"]),
    "a results path to cluf": ("cluf", OK_SCRIPT, ["-n", "2", "-q", "--results", "out.jsonl"], {}, 2,
                               ["takes a format", "--gather", "--results jsonl"]),
    "a lambda in args": ("clum", "def target(f):\n    pass\nargs = [lambda: 1]\n", [], {}, 1,
                         ["top level of the script (module level)"]),
    "an open file in args": ("clum", "def target(f):\n    pass\nargs = [open(__file__)]\n", [], {}, 1,
                             ["pass the file's path instead"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_ends_in_one_clear_message_with_the_documented_status_in_bounded_memory(clum, tmp_path, case):
    cmd, source, argv, extra, status, words = BAD_INPUTS[case]
    (tmp_path / "s.py").write_text(source)
    exe = clum.exe if cmd == "clum" else " ".join(map(shlex_quote, cs.CLUF))
    env = {**cs.base_env(tmp_path), **extra}
    words_argv = ["s.py", *argv] if argv[-1:] != ["--"] else [*argv, "s.py"]
    command = f"ulimit -v 2000000; exec {exe} {' '.join(map(shlex_quote, words_argv))}"
    r = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == status, (case, r.returncode, r.stderr)
    assert not TOOL_FRAME.search(r.stderr) and "MemoryError" not in r.stderr, (case, r.stderr)
    for w in words:
        assert w in r.stderr, (case, w, r.stderr)
    if status == 2:
        assert r.stderr.count(f"{cmd}: error:") == 1, r.stderr


def shlex_quote(word):
    import shlex

    return shlex.quote(str(word))


@pytest.mark.parametrize("name", ["random.py", "tempfile.py"])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_script_folder_shadowing_a_standard_module_does_not_break_clum_and_siblings_still_import(
        clum, name, method):
    clum.script(name, "raise ImportError('the user\\'s own module, imported by clum')\n", preamble=False)
    clum.script("helper.py", "VALUE = 7\n", preamble=False)
    clum.script("s.py", """\
        def target(x):
            import helper
            assert "PYTHONSAFEPATH" not in _os.environ  # (set for the forkserver only)
            rec("E", x * helper.VALUE)
        args = range(4)
        """)
    r = clum.run("s.py", "-p", "2", "--start-method", method)
    assert r.returncode == 0, r.stderr
    assert sorted(int(line[1]) for line in clum.evidence()) == [0, 7, 14, 21]


def test_a_rerun_after_a_failed_run_says_so_in_one_short_line_never_mentioning_zero_calls(clum):
    clum.script("f.py", "def target(x):\n    raise ValueError(x)\nargs = range(3)\n")
    clum.run("f.py")
    r = clum.run("f.py")
    [line] = [line for line in r.stderr.splitlines() if "starting over" in line]
    assert "0 completed" not in line and "--resume" not in line, line
    assert len(line.replace(str(clum.dir), "")) < 150, line
    clum.script("g.py", "def target(x):\n    if x == 2:\n        raise ValueError(x)\nargs = range(3)\n")
    clum.run("g.py")
    [line] = [line for line in clum.run("g.py").stderr.splitlines() if "starting over" in line]
    assert "2 calls completed" in line and "--resume skips" in line, line


def test_in_a_cluf_job_the_walltime_stop_message_promises_no_next_line(clum):
    clum.script("slow.py", "import time\ndef target(x):\n    time.sleep(0.3)\nargs = range(40)\n")
    r = clum.run("slow.py", "-p", "1", "--walltime", "2s", "--grace", "1", env={"CLUF_JOB_START": str(int(time.time()))})
    assert r.returncode == 75, r.stderr
    assert "next line" not in r.stderr and "cluf --status" in r.stderr, r.stderr


def test_clufs_help_starts_with_the_most_used_options(tmp_path, cluf_env):
    out = cluf(tmp_path, cluf_env, "--help").stdout
    sections = re.split(r"\n\n(?=\S)", out)
    first = next(s for s in sections if s.startswith("the most used options"))
    for option in ("-n N, --nodes N", "-i K, --iterations K", "-q, --no-q", "-j DIR, --jobs-dir DIR", "SCRIPT"):
        assert option in first, (option, first)
    assert out.index("--nodes") < out.index("--scheduler") < out.index("--retries"), out
    assert out.index("the most used options") < 12 * 80, "the most used options are not near the top"


INFINITE = "import itertools\ndef target(x):\n    pass\ndef args():\n    return itertools.count()\n"


def test_counting_an_endless_args_on_a_terminal_shows_progress_and_ctrl_c_stops_it_cleanly(tmp_path, cluf_env):
    (tmp_path / "infinite.py").write_text(INFINITE)
    master, slave = pty.openpty()
    p = subprocess.Popen([*cs.CLUF, "infinite.py", "-i", "10", "-q"], cwd=tmp_path, env=cluf_env,
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    data = b""
    try:
        deadline = time.monotonic() + 30
        while b"Ctrl-C" not in data and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                data += os.read(master, 1 << 16)
        assert b"counting the calls of 'args'" in data and b"so far" in data and b"Ctrl-C" in data, data
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, data
    assert b"stopped counting" in data and b"-n N" in data and b"Traceback" not in data, data
    assert not list(tmp_path.glob("*.pbs"))


def test_counting_an_endless_args_says_so_when_stderr_is_not_a_terminal(tmp_path, cluf_env):
    (tmp_path / "infinite.py").write_text(INFINITE)
    p = subprocess.Popen([*cs.CLUF, "infinite.py", "-i", "10", "-q"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                         env={**cluf_env, "CLUSTER_FUNC_COUNT_FIRST_WORD": "0.2"}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "counting the calls of 'args'" in line and "Ctrl-C" in line and "\r" not in line, line
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=30)[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130 and "stopped counting" in rest, rest
