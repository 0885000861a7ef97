"""Loading the user's script by path and finding its target, args and options."""

import os
import sys
import textwrap

import pytest

from cluster_func.core import script
from cluster_func.core.errors import ScriptError, UserError


@pytest.fixture(autouse=True)
def _restore_interpreter_state(monkeypatch):
    """load_script changes sys.path, sys.argv and sys.modules: undo after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.delitem(sys.modules, script.MODULE_NAME, raising=False)
    monkeypatch.delitem(sys.modules, "clum_test_sibling", raising=False)


def write(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


def test_script_error_is_a_user_error():
    assert issubclass(ScriptError, UserError) and ScriptError.exit_status == 2


def test_resolve_path_with_and_without_py(tmp_path, monkeypatch):
    p = write(tmp_path / "example.py", "x = 1\n")
    monkeypatch.chdir(tmp_path)
    assert script.resolve_path("example.py") == str(p)
    assert script.resolve_path("example") == str(p)
    assert script.resolve_path(str(p)) == str(p)
    assert os.path.isabs(script.resolve_path("example"))


def test_resolve_path_prefers_the_exact_name(tmp_path, monkeypatch):
    write(tmp_path / "example", "x = 1\n")
    write(tmp_path / "example.py", "x = 2\n")
    monkeypatch.chdir(tmp_path)
    assert script.resolve_path("example") == str(tmp_path / "example")


def test_resolve_path_missing_and_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScriptError) as e:
        script.resolve_path("nope")
    assert "'nope'" in str(e.value) and "'nope.py'" in str(e.value)
    (tmp_path / "adir").mkdir()
    with pytest.raises(ScriptError) as e:
        script.resolve_path("adir")
    assert "directory" in str(e.value)


def test_load_script_not_as_main_with_its_folder_on_path_and_argv(tmp_path):
    write(tmp_path / "pkg" / "clum_test_sibling.py", "VALUE = 42\n")
    p = write(tmp_path / "pkg" / "s.py", """\
        import sys
        import clum_test_sibling
        NAME = __name__
        ARGV = list(sys.argv)
        MAIN_RAN = False
        if __name__ == "__main__":
            MAIN_RAN = True
            raise SystemExit("the __main__ block ran")
        """)
    m = script.load_script(str(p), ["--flag", "v"])
    assert m.NAME != "__main__" and m.NAME == script.MODULE_NAME
    assert m.MAIN_RAN is False
    assert m.clum_test_sibling.VALUE == 42
    assert m.ARGV == [str(p), "--flag", "v"]
    assert sys.argv[1:] == ["--flag", "v"]  # still there when a target reads it at call time
    assert m.__file__ == str(p)
    assert sys.path[0] == str(tmp_path / "pkg")


def test_load_script_import_error_shows_the_scripts_file_and_line(tmp_path):
    p = write(tmp_path / "bad.py", """\
        x = 1
        y = 2
        raise RuntimeError("boom at import")
        """)
    with pytest.raises(ScriptError) as e:
        script.load_script(str(p))
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "RuntimeError: boom at import" in msg
    assert os.path.dirname(script.__file__) not in msg  # no frames from the tool itself


def test_load_script_syntax_error(tmp_path):
    p = write(tmp_path / "syn.py", "def f(:\n    pass\n")
    with pytest.raises(ScriptError) as e:
        script.load_script(str(p))
    assert "SyntaxError" in str(e.value) and str(p) in str(e.value) and "line 1" in str(e.value)


def test_load_script_sys_exit_is_explained(tmp_path):
    p = write(tmp_path / "ex.py", "import sys\nsys.exit(3)\n")
    with pytest.raises(ScriptError) as e:
        script.load_script(str(p))
    assert "sys.exit(3)" in str(e.value) and "__main__" in str(e.value)


def load(tmp_path, body):
    return script.load_script(str(write(tmp_path / "s.py", body)))


def test_get_target(tmp_path):
    m = load(tmp_path, """\
        def target(x): return x
        def other(x): return -x
        value = 3
        """)
    assert script.get_target(m, "target")(2) == 2
    assert script.get_target(m, "other")(2) == -2
    with pytest.raises(ScriptError) as e:
        script.get_target(m, "missing")
    assert "'missing'" in str(e.value) and "other" in str(e.value) and "target" in str(e.value)
    with pytest.raises(ScriptError) as e:
        script.get_target(m, "value")
    assert "not callable" in str(e.value) and "int" in str(e.value)


@pytest.mark.parametrize("body, expected", [
    ("args = [1, (2, 3)]", [1, (2, 3)]),
    ("args = (i for i in range(3))", [0, 1, 2]),
    ("def args():\n    return (i * 2 for i in range(3))", [0, 2, 4]),
    ("def args():\n    yield from 'ab'", ["a", "b"]),
    ("args = range(3)", [0, 1, 2]),
    ("args = sorted({'a': 1})", ["a"]),  # a dict or its view is refused (tests/cli/test_every_call_runs.py)
])
def test_get_args_any_iterable_or_a_function_returning_one(tmp_path, body, expected):
    m = load(tmp_path, body + "\n")
    assert list(script.get_args(m, "args")) == expected


def test_get_args_generator_is_not_consumed(tmp_path):
    m = load(tmp_path, """\
        pulled = []
        def _gen():
            for i in range(10**9):
                pulled.append(i)
                yield i
        args = _gen()
        """)
    a = script.get_args(m, "args")
    assert m.pulled == []
    assert next(iter(a)) == 0


@pytest.mark.parametrize("body, words", [
    ("x = 1", ["no args 'args'"]),
    ("args = 5", ["not iterable", "int"]),
    ("args = 'abc'", ["string"]),
    ("args = b'abc'", ["string"]),
    ("def args():\n    return 5", ["not iterable"]),
    ("def args():\n    raise KeyError('nope')", ["args()", "KeyError", "nope"]),
])
def test_get_args_errors(tmp_path, body, words):
    m = load(tmp_path, body + "\n")
    with pytest.raises(ScriptError) as e:
        script.get_args(m, "args")
    for w in words:
        assert w in str(e.value)


def test_get_options(tmp_path):
    m = load(tmp_path, "clum_options = {'processes': 2}\nbad = [1]\n")
    assert script.get_options(m, "clum_options") == {"processes": 2}
    assert script.get_options(m, "cluf_options") == {}
    with pytest.raises(ScriptError):
        script.get_options(m, "bad")


def test_as_args():
    assert script.as_args((1, 2)) == (1, 2)
    assert script.as_args(((4, 5),)) == ((4, 5),)
    assert script.as_args([1, 2]) == ([1, 2],)
    assert script.as_args("ab") == ("ab",)
    assert script.as_args(None) == (None,)


def test_short_repr():
    assert script.short_repr((1, "a")) == "(1, 'a')"
    long = script.short_repr("x" * 1000, limit=50)
    assert len(long) == 50 and long.endswith("...")

    class Bad:
        def __repr__(self):
            raise ValueError("no repr")

    assert "unrepresentable" in script.short_repr(Bad())


def test_the_standard_librarys_names_are_known_without_pythons_list_as_on_python_3_9(monkeypatch):
    from cluster_func.core import script as script_mod

    names = {"random", "tempfile", "json", "my_helpers", "numpy_like", "test-data"}
    with_list = script_mod._standard_names(names)
    monkeypatch.delattr(sys, "stdlib_module_names", raising=False)
    assert script_mod._standard_names(names) == with_list == {"random", "tempfile", "json"}
