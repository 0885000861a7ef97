"""The rough edges a new user hits in the first hour, through the real commands: scripts that
are not Python files, iterables that raise, bugs in the tool, ambiguous resource values, empty
work, positions beyond the elements, floods of failures, the progress line on a terminal, help
texts, and a sweep of every option with bad values."""

import os
import re
import sys
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
