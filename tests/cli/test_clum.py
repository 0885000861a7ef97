"""End to end through the real ``clum`` command (issue 2)."""

import collections
import os
import pty
import re
import signal
import subprocess
import sys

import pytest

from cluster_func.core import bins
from cluster_func.record import journal as jmod

START_METHODS = ["fork", "spawn", "forkserver"]
TOOL_FRAME = re.compile(r'File "[^"]*cluster_func[/\\]')  # a traceback frame from inside the tool


def started_and_ended(ev):
    """Counters of the x of 'S x ...' and 'E x' evidence lines."""
    s = collections.Counter(line[1] for line in ev if line[0] == "S")
    e = collections.Counter(line[1] for line in ev if line[0] == "E")
    return s, e


# --- the command ------------------------------------------------------------------

def test_version(clum):
    r = clum.run("--version")
    assert r.returncode == 0
    from cluster_func import __version__

    assert __version__ in r.stdout + r.stderr and "clum" in r.stdout + r.stderr


def _help_entries(text):
    """{option string: its help text} from argparse's --help output."""
    entries, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            current = m.group(1)
            entries[current] = m.group(2) or ""
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return entries


def test_help_lists_every_option_with_its_default_and_an_example(clum):
    r = clum.run("--help")
    assert r.returncode == 0
    out = r.stdout
    entries = _help_entries(out)
    flat = {}
    for names, text in entries.items():
        for name in re.findall(r"--?[\w-]+", names):
            flat[name] = text
    for opt in ["-t", "--target", "-a", "--args", "-p", "--processes", "-b", "--bins", "--bin", "-x", "--hash",
                "-k", "--key", "--resume", "--retries", "--timeout", "--quiet", "--journal", "--failed",
                "--version", "-h", "--help"]:
        assert opt in flat, f"{opt} missing from --help:\n{out}"
    for opt in ["--target", "--args", "--processes", "--bins", "--hash", "--key", "--timeout", "--retries",
                "--resume", "--quiet", "--journal"]:
        assert "default" in flat[opt].lower(), f"{opt} has no default in --help: {flat[opt]!r}"
    for opt in ["--target", "--args", "--processes", "--bins", "--hash", "--key", "--timeout"]:
        assert "example" in flat[opt].lower(), f"{opt} has no example in --help: {flat[opt]!r}"
    assert str(len(os.sched_getaffinity(0))) in flat["--processes"]
    assert "--" in out and "sys.argv" in out  # the pass-through is explained


def test_help_gives_an_example_for_every_option(clum):
    flat = {}
    for names, text in _help_entries(clum.run("--help").stdout).items():
        for name in re.findall(r"--[\w-]+", names):
            flat[name] = text
    for opt in ["--retries", "--resume", "--quiet", "--journal"]:
        assert "example" in flat[opt].lower(), opt


# --- loading and calling ------------------------------------------------------------

CORE = """\
    import os, sys
    import core_sibling
    ARGV = sys.argv[1:]
    NAME = __name__

    def target(*a):
        rec("CALL", repr(a), NAME, repr(ARGV), os.getpid(), core_sibling.VALUE)

    args = [1, (2, 3), ((4, 5),), "s", [6, 7], ()] + [("n", i) for i in range(60)]

    if __name__ == "__main__":
        rec("MAIN_RAN")
    """


@pytest.mark.parametrize("method", START_METHODS)
def test_every_call_runs_exactly_once(clum, method):
    (clum.dir / "core_sibling.py").write_text("VALUE = 'sib'\n")
    clum.script("core.py", CORE)
    r = clum.run("core.py", "-p", "2", "--", "--data", "x y", "--", "-z", env={"CLUSTER_FUNC_START_METHOD": method})
    assert r.returncode == 0, r.stderr
    ev = clum.evidence()
    assert ["MAIN_RAN"] not in ev
    calls = collections.Counter(line[1] for line in ev)
    expected = ["(1,)", "(2, 3)", "((4, 5),)", "('s',)", "([6, 7],)", "()"] + [f"('n', {i})" for i in range(60)]
    assert calls == collections.Counter(expected)
    for line in ev:
        assert line[2] != "__main__"
        assert line[3] == repr(["--data", "x y", "--", "-z"])
        assert line[5] == "sib"
    assert "66 calls done" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("method", START_METHODS)
def test_failures_and_worker_deaths_are_reported_and_the_rest_runs(clum, method):
    p = clum.script("death.py", """\
        import os, signal
        def target(x):
            rec("S", x, os.getpid())
            if x == 5:
                os._exit(3)
            if x == 11:
                os.kill(os.getpid(), signal.SIGKILL)
            if x == 7:
                raise ValueError("seven is bad")
            rec("E", x)
        args = range(40)
        """)
    r = clum.run("death.py", "-p", "2", env={"CLUSTER_FUNC_START_METHOD": method})
    assert r.returncode == 1, r.stderr
    s, e = started_and_ended(clum.evidence())
    assert s == collections.Counter(str(i) for i in range(40))  # every call started exactly once
    assert set(e) == {str(i) for i in range(40)} - {"5", "7", "11"} and max(e.values()) == 1
    err = r.stderr
    assert re.search(r"position 5 .*\n.*exited with status 3", err), err
    assert re.search(r"position 11 .*\n.*SIGKILL", err), err
    assert re.search(r"position 7 with args 7", err), err
    assert "Traceback" in err and "ValueError: seven is bad" in err
    line = next(i for i, t in enumerate(p.read_text().splitlines(), 1) if "seven is bad" in t)
    assert f'File "{p}", line {line}, in target' in err  # the target's own traceback
    assert "3 of 40 calls failed" in err
    assert not TOOL_FRAME.search(err)


@pytest.mark.parametrize("method,loads", [("fork", 1), ("spawn", 3), ("forkserver", 3)])
def test_the_top_level_runs_once_under_fork_and_in_every_worker_otherwise(clum, method, loads):
    clum.script("loader.py", """\
        import os
        rec("L", os.getpid())
        def target(x):
            rec("C", x)
        args = range(40)
        """)
    r = clum.run("loader.py", "-p", "2", "--start-method", method)
    assert r.returncode == 0, r.stderr
    ev = clum.evidence()
    assert sum(1 for line in ev if line[0] == "L") == loads
    assert sorted(int(line[1]) for line in ev if line[0] == "C") == list(range(40))


@pytest.mark.parametrize("method", START_METHODS)
def test_worker_deaths_inside_big_batches_of_cheap_calls(clum, method):
    """Cheap calls travel in batches of thousands: a death in the middle of one settles it exactly."""
    clum.script("cheapdeath.py", """\
        import os, signal
        _fd = os.open(os.environ["CLUM_TEST_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        def target(x):
            os.write(_fd, b"S\\t%d\\n" % x)
            if x in (1234, 3000):
                os._exit(5)
            if x == 4000:
                os.kill(os.getpid(), signal.SIGKILL)
            if x % 997 == 0:
                raise ValueError(x)
            os.write(_fd, b"E\\t%d\\n" % x)
        args = range(20000)
        """)
    r = clum.run("cheapdeath.py", "-p", "2", env={"CLUSTER_FUNC_START_METHOD": method})
    assert r.returncode == 1
    failed = {1234, 3000, 4000} | set(range(0, 20000, 997))
    assert f"{len(failed)} of 20000 calls failed" in r.stderr
    s, e = started_and_ended(clum.evidence())
    assert s == collections.Counter(str(i) for i in range(20000))
    assert e == collections.Counter(str(i) for i in range(20000) if i not in failed)


def test_a_call_that_raises_names_its_position_and_a_short_repr(clum):
    clum.script("long.py", """\
        def target(s):
            if len(s) > 100:
                raise RuntimeError("too long")
        args = ["ok", "y" * 5000, "fine"]
        """)
    r = clum.run("long.py")
    assert r.returncode == 1
    assert "position 1" in r.stderr and "RuntimeError: too long" in r.stderr
    assert "y" * 5000 not in r.stderr and "yyyy..." in r.stderr
    assert "1 of 3 calls failed" in r.stderr


def test_script_name_without_py_and_script_folder_on_sys_path(clum, tmp_path):
    sub = tmp_path / "proj"
    (sub / "helpers").mkdir(parents=True)
    (sub / "helpers" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    clum.script("example.py", """\
        from helpers import double
        def target(x):
            rec(double(x))
        args = range(5)
        """, folder=sub)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = clum.run("example", cwd=sub)
    assert r.returncode == 0, r.stderr
    r = clum.run(sub / "example", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert sorted(int(line[0]) for line in clum.evidence()) == sorted([2 * x for x in range(5)] * 2)


@pytest.mark.parametrize("args_def", [
    "args = [0, 1, 2, 3, 4, 5, 6]",
    "args = (i for i in range(7))",
    "def args():\n    return (i for i in range(7))",
    "def args():\n    yield from range(7)",
    "args = range(7)",
    "args = iter({0, 1, 2, 3, 4, 5, 6})",
])
def test_args_may_be_any_iterable_or_a_function_returning_one(clum, args_def):
    clum.script("it.py", "def target(x):\n    rec(x)\n" + args_def + "\n")
    r = clum.run("it.py")
    assert r.returncode == 0, r.stderr
    assert sorted(int(line[0]) for line in clum.evidence()) == list(range(7))


def test_return_values_are_ignored(clum):
    clum.script("ret.py", """\
        import threading
        def target(x):
            rec(x)
            return threading.Lock() if x % 2 else (lambda: x)   # not picklable: never sent back
        args = range(10)
        """)
    r = clum.run("ret.py")
    assert r.returncode == 0, r.stderr
    assert len(clum.evidence()) == 10


def test_empty_args_is_fine(clum):
    clum.script("empty.py", "def target(x):\n    rec(x)\nargs = []\n")
    r = clum.run("empty.py")
    assert r.returncode == 0, r.stderr
    assert clum.evidence() == []


def test_target_and_args_names(clum):
    clum.script("names.py", """\
        def target(x):
            rec("wrong", x)
        def run_one(x):
            rec("run_one", x)
        args = [1]
        pairs = [10, 11]
        """)
    assert clum.run("names.py", "-t", "run_one", "-a", "pairs").returncode == 0
    assert clum.run("names.py", "--target=run_one", "--args", "pairs").returncode == 0
    assert sorted(map(tuple, clum.evidence())) == [("run_one", "10"), ("run_one", "10"), ("run_one", "11"),
                                                   ("run_one", "11")]


def test_clum_options_in_the_script_and_the_command_line_wins(clum):
    clum.script("opts.py", """\
        import os, time
        clum_options = {"target": "run_one", "args": "pairs", "processes": 1, "bins": "0/2"}
        def target(x):
            rec("target", x, os.getpid())
        def run_one(x):
            time.sleep(0.02)
            rec("run_one", x, os.getpid())
        pairs = range(12)
        """)
    r = clum.run("opts.py")
    assert r.returncode == 0, r.stderr
    ev = clum.evidence()
    assert sorted(int(line[1]) for line in ev) == [0, 2, 4, 6, 8, 10]  # bins 0/2 from clum_options
    assert {line[0] for line in ev} == {"run_one"}
    assert len({line[2] for line in ev}) == 1  # processes 1
    clum.out.unlink()
    r = clum.run("opts.py", "-b", "1/2", "-p", "2", "-t", "target")
    assert r.returncode == 0, r.stderr
    ev = clum.evidence()
    assert sorted(int(line[1]) for line in ev) == [1, 3, 5, 7, 9, 11]
    assert {line[0] for line in ev} == {"target"}
    assert len({line[2] for line in ev}) == 2  # -p 2 overrides processes 1


def test_clum_options_keys_with_dashes_or_underscores(clum):
    clum.script("dash.py", """\
        clum_options = {"processes": 1, "--retries": 0, "quiet": True}
        def target(x):
            rec(x)
        args = range(3)
        """)
    r = clum.run("dash.py")
    assert r.returncode == 0, r.stderr
    assert "calls done" not in r.stderr  # quiet
    assert len(clum.evidence()) == 3


@pytest.mark.parametrize("key", ["jobs-dir", "jobs_dir"])
def test_clum_options_shared_with_cluf_are_accepted(clum, key):
    clum.script("shared.py", f"""\
        clum_options = {{"{key}": "jobs", "processes": 1}}
        def target(x):
            rec(x)
        args = range(3)
        """)
    r = clum.run("shared.py")
    assert r.returncode == 0, r.stderr
    assert len(clum.evidence()) == 3


def test_processes_defaults_to_the_cpus_this_process_may_use(clum):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    clum.script("aff.py", """\
        import os, time
        def target(x):
            time.sleep(0.01)
            rec(x, os.getpid())
        args = range(20)
        """)
    r = clum.run("aff.py")
    assert r.returncode == 0, r.stderr
    assert len({line[1] for line in clum.evidence()}) == len(os.sched_getaffinity(0))
    clum.out.unlink()
    r = clum.run("aff.py", preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert r.returncode == 0, r.stderr
    assert len({line[1] for line in clum.evidence()}) == 1


# --- bins ---------------------------------------------------------------------------

BINNED = """\
    def target(*a):
        rec(repr(a))
    args = [(i, "k%d" % (i * 7 % 13), i % 4) for i in range(50)]
    """


@pytest.mark.parametrize("specs", [
    ["0/3", "1/3", "2/3"],
    ["0,1/3", "2/3"],
    ["0-2,7/8", "3-6/8"],
    ["0/1"],
])
def test_round_robin_bins_cover_the_work_exactly_once(clum, specs):
    clum.script("binned.py", BINNED)
    data = [(i, "k%d" % (i * 7 % 13), i % 4) for i in range(50)]
    got = []
    for spec in specs:
        before = len(clum.evidence())
        r = clum.run("binned.py", "--bins", spec, "-p", "1")
        assert r.returncode == 0, r.stderr
        s = bins.parse_bin_spec(spec)
        mine = [line[0] for line in clum.evidence()[before:]]
        assert sorted(mine) == sorted(repr(e) for i, e in enumerate(data) if i % s.total in s.bins)
        got += mine
    assert sorted(got) == sorted(repr(e) for e in data)


def test_bin_alias_and_short_option(clum):
    clum.script("binned.py", BINNED)
    assert clum.run("binned.py", "--bin=1/5").returncode == 0
    assert clum.run("binned.py", "-b", "2/5").returncode == 0
    assert sorted(eval(line[0])[0] for line in clum.evidence()) == sorted(
        [i for i in range(50) if i % 5 in (1, 2)])


def test_hash_bins_cover_an_unstable_iterator_exactly_once(clum):
    clum.script("unstable.py", """\
        import os, random
        def target(name, i):
            rec(name, i)
        def args():
            items = [("f%d.txt" % i, i) for i in range(60)]
            random.Random(os.getpid()).shuffle(items)   # a different order in every process
            return iter(items)
        """)
    got = {}
    for b in range(3):
        before = len(clum.evidence())
        r = clum.run("unstable.py", "-x", "0", "-b", f"{b}/3")
        assert r.returncode == 0, r.stderr
        for name, _ in clum.evidence()[before:]:
            assert name not in got
            got[name] = b
    assert set(got) == {"f%d.txt" % i for i in range(60)}
    for name, b in got.items():
        assert bins.hash_bin((name,), (0,), 3) == b
    assert len(set(got.values())) == 3


def test_hash_on_several_positions_and_ranges(clum):
    clum.script("h.py", """\
        def target(a, b, c):
            rec(a, b, c)
        args = [(i, i % 3, "z") for i in range(30)]
        """)
    for b in range(2):
        assert clum.run("h.py", "--hash", "0-1,2", "-b", f"{b}/2").returncode == 0
    ev = clum.evidence()
    assert sorted(int(line[0]) for line in ev) == list(range(30))


def test_key_bins_and_bad_keys_are_counted_and_warned(clum):
    clum.script("keyed.py", """\
        def target(name, k):
            rec(name, k)
        args = [("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", -1), ("f", "1"), ("g", 1.5), ("h", None),
                ("i", 2), ("j", 0)]
        """)
    seen = collections.Counter()
    for b in range(3):
        r = clum.run("keyed.py", "-k", "1", "-b", f"{b}/3")
        assert r.returncode == 0, r.stderr
        assert "warning" in r.stderr and "5 calls" in r.stderr and "key" in r.stderr
        assert "0 to 2" in r.stderr
    for name, k in clum.evidence():
        seen[name] += 1
    assert seen == collections.Counter("abcij")
    by_bin = {name: k for name, k in clum.evidence()}
    assert by_bin == {"a": "0", "b": "1", "c": "2", "i": "2", "j": "0"}


def test_key_without_bins_still_warns_about_keys_out_of_range(clum):
    clum.script("keyed1.py", """\
        def target(name, k):
            rec(name)
        args = [("a", 0), ("b", 1)]
        """)
    r = clum.run("keyed1.py", "--key", "1")
    assert r.returncode == 0
    assert [line[0] for line in clum.evidence()] == ["a"]
    assert "1 calls" in r.stderr and "warning" in r.stderr


@pytest.mark.parametrize("mode", [["-x", "0,1"], ["-k", "1"]])
def test_position_beyond_an_elements_length_is_a_failed_call(clum, mode):
    clum.script("short.py", """\
        def target(*a):
            rec(*a)
        args = [("a", 0), ("short",), ("b", 0), "bare", ("c", 0)]
        """)
    r = clum.run("short.py", *mode)
    assert r.returncode == 1, r.stderr
    assert "position 1" in r.stderr and "position 3" in r.stderr
    assert "2 of 5 calls failed" in r.stderr
    assert sorted(line[0] for line in clum.evidence()) == ["a", "b", "c"]
    assert "Traceback" not in r.stderr


# --- bad input ------------------------------------------------------------------------

OK = "def target(x):\n    pass\nargs = [1, 2]\n"


@pytest.mark.parametrize("argv, words", [
    (["ok.py", "-b", "3/3"], ["bin", "3/3"]),
    (["ok.py", "-b", "0/0"], ["bin", "0/0"]),
    (["ok.py", "-b", "a/b"], ["bin", "a/b"]),
    (["ok.py", "-b", "1"], ["bin", "'1'"]),
    (["ok.py", "--bins=-1/3"], ["bin", "-1/3"]),
    (["ok.py", "-b", "-1/3"], ["bin"]),
    (["ok.py", "-b", "0-/2"], ["bin", "0-/2"]),
    (["ok.py", "-b", "0/\u00b3"], ["bin"]),
    (["ok.py", "--bin", "5/4"], ["bin", "5"]),
    (["ok.py", "-x", "a-b"], ["hash", "'a-b'"]),
    (["ok.py", "--hash=-1"], ["hash", "-1"]),
    (["ok.py", "-x", "1.5"], ["hash", "1.5"]),
    (["ok.py", "-k", "a.b"], ["key", "'a.b'"]),
    (["ok.py", "--key=-1"], ["key", "-1"]),
    (["ok.py", "-k", "0,1"], ["key"]),
    (["ok.py", "-p", "0"], ["processes", "0"]),
    (["ok.py", "--processes=-2"], ["processes", "-2"]),
    (["ok.py", "-p", "lots"], ["processes", "lots"]),
    (["ok.py", "-x", "0", "-k", "0"], ["hash", "key"]),
    (["ok.py", "--retries", "-1"], ["retries"]),
    (["ok.py", "--timeout", "0"], ["timeout"]),
    (["ok.py", "--no-such-option"], ["--no-such-option"]),
    (["ok.py", "-t", "nope"], ["nope", "target"]),
    (["ok.py", "-t", "x"], ["not callable"]),
    (["ok.py", "-a", "nope"], ["nope", "args"]),
    (["ok.py", "-a", "x"], ["not iterable"]),
    (["missing.py"], ["no such script", "missing.py"]),
    (["missing"], ["no such script", "missing.py"]),
    ([], ["script"]),
])
def test_bad_input_exit_2_with_a_clear_message(clum, clean_error, argv, words):
    clum.script("ok.py", OK + "x = 5\n", preamble=False)
    r = clum.run(*argv)
    clean_error(r, *words)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("body, words", [
    ("clum_options = {'proceses': 2}\n" + OK, ["proceses", "processes", "bins", "target"]),
    ("clum_options = {'processes': 0}\n" + OK, ["processes"]),
    ("clum_options = {'bins': '3/3'}\n" + OK, ["bin"]),
    ("clum_options = {'hash': 0, 'key': 1}\n" + OK, ["hash", "key"]),
    ("clum_options = 'processes=2'\n" + OK, ["clum_options", "dict"]),
    ("def target(x):\n    pass\n", ["args"]),
    ("args = [1]\n", ["target"]),
    ("target = 3\nargs = [1]\n", ["not callable"]),
    ("def target(x):\n    pass\nargs = 3\n", ["not iterable"]),
    ("def target(x):\n    pass\ndef args():\n    raise KeyError('nope')\n", ["args()", "KeyError"]),
])
def test_bad_script_exit_2_with_a_clear_message(clum, clean_error, body, words):
    clum.script("s.py", body, preamble=False)
    r = clum.run("s.py")
    clean_error(r, *words)
    if "raise" in body:  # the script's own code failed: its traceback, and only its frames
        assert 's.py", line 4, in args' in r.stderr, r.stderr
    else:
        assert "Traceback" not in r.stderr


def test_command_line_hash_overrides_a_key_in_clum_options(clum):
    clum.script("s.py", "clum_options = {'key': 1}\ndef target(x):\n    rec(x)\nargs = [1, 2]\n")
    r = clum.run("s.py", "-x", "0")
    assert r.returncode == 0, r.stderr
    assert sorted(line[0] for line in clum.evidence()) == ["1", "2"]


def test_script_that_fails_to_import_shows_its_own_file_and_line(clum, clean_error):
    p = clum.script("broken.py", """\
        x = 1
        def target(x):
            pass
        raise RuntimeError("broken at import")
        """, preamble=False)
    err = clean_error(clum.run("broken.py"), "RuntimeError: broken at import")
    assert f'File "{p}", line 4' in err


def test_script_with_a_syntax_error(clum, clean_error):
    p = clum.script("syn.py", "def target(x):\n    return (\nargs = [1]\n", preamble=False)
    err = clean_error(clum.run("syn.py"), "SyntaxError")
    assert str(p) in err and "line 2" in err


def test_script_whose_import_of_a_missing_module_fails(clum, clean_error):
    p = clum.script("imp.py", "import no_such_module_for_clum_tests\n", preamble=False)
    err = clean_error(clum.run("imp.py"), "ModuleNotFoundError", "no_such_module_for_clum_tests")
    assert f'File "{p}", line 1' in err


def test_script_that_exits_while_loading(clum, clean_error):
    clum.script("exits.py", "import sys\nsys.exit(0)\n", preamble=False)
    clean_error(clum.run("exits.py"), "sys.exit", "__main__")


# --- the runner: streaming, signals, progress -------------------------------------------

_RSS = r"""
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
assert r.returncode == 0, r.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_generator_of_millions_runs_in_bounded_memory(clum):
    clum.script("stream.py", """\
        import sys
        N = int(sys.argv[1])
        def target(i, s):
            pass
        def args():
            return ((i, "%08d" % i) for i in range(N))
        """)

    def max_rss_kb(n, *options):
        r = subprocess.run([sys.executable, "-c", _RSS, clum.exe, "stream.py", "-p", "2", *options, "--", str(n)],
                           cwd=clum.dir, env=clum.env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return int(r.stdout)

    small = max_rss_kb(300_000)
    big = max_rss_kb(3_000_000)
    # A list of 3,000,000 such tuples would take hundreds of MB.
    assert big - small < 30 * 1024, (small, big)
    # --resume streams too (it skips every call: all were recorded by the run above)
    resumed = max_rss_kb(3_000_000, "--resume")
    assert resumed - small < 30 * 1024, (small, resumed)


SLOW = """\
    import os, time
    def target(x):
        rec("S", x, os.getpid())
        time.sleep(60 if x >= 6 else 0.05)   # 50 ms: slow enough for batches of one call
        rec("E", x)
    args = range(1000)
    """


def _signal_run(clum, procs, sig, group, method="fork"):
    clum.script("slow.py", SLOW)
    p = clum.popen("slow.py", "-p", "2", env={"CLUSTER_FUNC_START_METHOD": method})
    journal = clum.dir / ".cluster_func" / "slow.all.journal"

    def ready():
        # six quick calls end, then both workers sit in a slow call, and the runner has taken
        # in the results of the six (its journal has them)
        return (clum.count_lines(prefix="E") >= 6
                and len({line[2] for line in clum.evidence() if line[0] == "S" and int(line[1]) >= 6}) >= 2
                and jmod.read(str(journal)).last_done >= 6)

    code, err = clum.signal_when(p, ready, sig, group)
    workers = {int(line[2]) for line in clum.evidence() if line[0] == "S"}
    procs.all_gone(workers, grace=2.0, sid=p.pid)
    return code, err


@pytest.mark.parametrize("sig, group, status", [
    (signal.SIGINT, True, 130),
    (signal.SIGINT, False, 130),
    (signal.SIGTERM, False, 143),
    (signal.SIGTERM, True, 143),
])
def test_ctrl_c_and_sigterm_stop_everything(clum, procs, sig, group, status):
    code, err = _signal_run(clum, procs, sig, group)
    assert code == status, err
    assert re.search(r"\b6 calls completed", err), err
    assert sig.name in err
    assert "Traceback" not in err



@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_sigterm_reaching_the_workers_before_the_runner_stops_their_calls_without_failing_them(
        clum, procs, method):
    # A batch scheduler's cancel sends SIGTERM to every process of the job, the workers (each in
    # a process group of its own) included, in no particular order: the calls in flight are
    # stopped, not failed, and a --resume runs them.
    clum.script("slow.py", SLOW)
    journal = clum.dir / "slow.journal"
    p = clum.popen("slow.py", "-p", "2", "--journal", journal, env={"CLUSTER_FUNC_START_METHOD": method})

    def in_flight():
        return {int(line[2]) for line in clum.evidence() if line[0] == "S" and int(line[1]) >= 6}

    try:
        procs.wait_for(lambda: len(in_flight()) >= 2 and jmod.read(str(journal)).last_done >= 6,
                       what="both workers to sit in a slow call")
        workers = in_flight()
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

        def ended(pid):  # gone, or a zombie its parent has not yet reaped
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                return True

        # (the workers' signal first: give them up to 2 s to die of it, as they did before they
        # left SIGTERM to the runner; not a timing assertion, only the order of delivery)
        for _ in range(100):
            if all(ended(pid) for pid in workers):
                break
            p.wait(timeout=0.02) if p.poll() is not None else __import__("time").sleep(0.02)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 143, err
    assert '"t":"fail"' not in journal.read_text().replace(" ", ""), err
    assert "WorkerDied" not in err and "killed by SIGTERM" not in err, err
    procs.all_gone(in_flight(), grace=2.0, sid=p.pid)


def test_interrupt_counts_calls_finished_inside_an_unfinished_batch(clum, procs):
    # One worker: batches [0], [1], then (calls being quick) [2, 3, 4, 5], in which 4 never ends.
    clum.script("mixed.py", """\
        import os, time
        def target(x):
            rec("S", x, os.getpid())
            if x >= 4:
                time.sleep(60)
            rec("E", x)
        args = range(100)
        """)
    p = clum.popen("mixed.py", "-p", "1")
    code, err = clum.signal_when(
        p, lambda: clum.count_lines(prefix="E") >= 4 and clum.count_lines(prefix="S") >= 5, signal.SIGINT)
    assert code == 130, err
    assert re.search(r"\b4 calls completed", err), err


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_ctrl_c_under_other_start_methods(clum, procs, method):
    code, err = _signal_run(clum, procs, signal.SIGINT, True, method)
    assert code == 130, err
    assert re.search(r"\b6 calls completed", err), err


def test_ctrl_c_stops_workers_that_ignore_sigterm(clum, procs):
    clum.script("stubborn.py", """\
        import os, signal, time
        def target(x):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            rec("S", x, os.getpid())
            time.sleep(60)
        args = range(10)
        """)
    p = clum.popen("stubborn.py", "-p", "2")
    code, err = clum.signal_when(p, lambda: clum.count_lines(prefix="S") >= 2, signal.SIGINT, group=True)
    workers = {int(line[2]) for line in clum.evidence()}
    assert code == 130, err
    procs.all_gone(workers, grace=2.0, sid=p.pid)


def test_sigkill_of_clum_leaves_no_workers(clum, procs):
    clum.script("slow.py", SLOW)
    p = clum.popen("slow.py", "-p", "2", "--quiet", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        procs.wait_for(lambda: len({line[2] for line in clum.evidence() if line[0] == "S" and int(line[1]) >= 6}) >= 2,
                       what="calls to start")
        workers = {int(line[2]) for line in clum.evidence() if line[0] == "S"}
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    procs.all_gone(workers, grace=2.0, sid=p.pid)


def _run_on_pty(clum, *args):
    """Run clum with stderr on a pseudo-terminal; return (status, what the terminal got)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([clum.exe, *args], cwd=clum.dir, env=clum.env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    data = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            data += chunk
        p.wait(timeout=60)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, data.decode(errors="replace")


PROGRESS = """\
    import time
    def target(x):
        time.sleep(0.03)
        if x == 3:
            raise ValueError("three")
    args = {args}
    """


def test_progress_line_on_a_terminal(clum):
    clum.script("prog.py", PROGRESS.format(args="list(range(30))"))
    code, out = _run_on_pty(clum, "prog.py", "-p", "2")
    assert code == 1
    assert re.search(r"\d+ done, \d+ failed of 30, [\d.,]+/s, elapsed \d+:\d\d", out), out
    assert "ETA" in out
    assert "\r" in out


def test_progress_line_without_a_known_total(clum):
    clum.script("prog.py", PROGRESS.format(args="(i for i in range(30))"))
    code, out = _run_on_pty(clum, "prog.py", "-p", "2")
    assert code == 1
    assert re.search(r"\d+ done, \d+ failed, [\d.,]+/s, elapsed", out), out
    progress = [part for part in out.split("\r") if "elapsed" in part]
    assert progress and not any("ETA" in part or " of 30" in part for part in progress), progress


def test_quiet_silences_the_progress_line(clum):
    clum.script("prog.py", PROGRESS.format(args="list(range(30))"))
    code, out = _run_on_pty(clum, "prog.py", "-p", "2", "--quiet")
    assert code == 1
    assert "elapsed" not in out and "ETA" not in out and "\r" not in out.replace("\r\n", "\n")
    assert "1 of 30 calls failed" in out  # the summary still comes


def test_no_progress_line_when_stderr_is_not_a_terminal(clum):
    clum.script("prog.py", PROGRESS.format(args="list(range(30))"))
    r = clum.run("prog.py", "-p", "2")
    assert r.returncode == 1
    assert "elapsed" not in r.stderr and "ETA" not in r.stderr and "\r" not in r.stderr
    assert "\033[" not in r.stderr


# --- things a script might do ---------------------------------------------------------------

def test_unpicklable_element_is_a_failed_call_and_the_rest_runs(clum):
    clum.script("unp.py", """\
        def target(x):
            rec(repr(x))
        args = [1, 2, lambda: 0, 4, 5]
        """)
    r = clum.run("unp.py", "-p", "1")
    assert r.returncode == 1, r.stderr
    assert sorted(line[0] for line in clum.evidence()) == ["1", "2", "4", "5"]
    assert "position 2" in r.stderr and "1 of 5 calls failed" in r.stderr
    assert not TOOL_FRAME.search(r.stderr)


def test_args_generator_that_raises_is_reported(clum):
    p = clum.script("genraise.py", """\
        def target(x):
            rec(x)
        def _gen():
            yield from range(5)
            raise ValueError("generator broke")
        args = _gen()
        """)
    r = clum.run("genraise.py", "-p", "1")
    assert r.returncode != 0
    assert sorted(int(line[0]) for line in clum.evidence()) == [0, 1, 2, 3, 4]
    assert "ValueError: generator broke" in r.stderr and str(p) in r.stderr
    assert not TOOL_FRAME.search(r.stderr)


def test_exceptions_that_cannot_be_printed_or_pickled_are_still_reported(clum):
    clum.script("exc.py", """\
        import threading
        class Weird(Exception):
            def __str__(self):
                raise RuntimeError("no str")
        class Unpicklable(Exception):
            def __init__(self):
                super().__init__()
                self.lock = threading.Lock()
        def target(x):
            rec(x)
            if x == 1:
                raise Weird()
            if x == 2:
                raise Unpicklable()
            if x == 3:
                raise SystemExit(4)
            if x == 4:
                raise KeyboardInterrupt
        args = range(8)
        """)
    r = clum.run("exc.py", "-p", "1")
    assert r.returncode == 1
    assert "4 of 8 calls failed" in r.stderr
    for word in ["Weird", "Unpicklable", "SystemExit", "KeyboardInterrupt"]:
        assert word in r.stderr
    assert sorted(int(line[0]) for line in clum.evidence()) == list(range(8))


def test_an_element_that_cannot_be_pickled_fails_its_call_and_the_rest_run(clum):
    clum.script("lam.py", """\
        def target(x):
            rec("E", x)
        args = [(lambda: 1,), (2,), (3,)]
        """)
    r = clum.run("lam.py", "-p", "1", "--start-method", "spawn")
    assert r.returncode == 1, r.stderr
    assert "position 0" in r.stderr and "cannot be sent to a worker process" in r.stderr
    assert sorted(e[1] for e in clum.evidence()) == ["2", "3"]
