"""cluster_func.map says what is wrong in the words of its parameters, and refuses the runs that
cannot work (a nested map, a spawn script without its __main__ guard) in a few lines (issue 29)."""

import operator
import subprocess
import sys

import pytest

import cluster_func


@pytest.mark.parametrize("kw, error, words", [
    ({"journal": 123}, TypeError, ["journal=123", "path"]),
    ({"journal": ""}, ValueError, ["journal=''"]),
    ({"resume": "yes", "journal": "j"}, TypeError, ["resume='yes'", "True or False"]),
    ({"quiet": "no"}, TypeError, ["quiet='no'"]),
    ({"progress": 3}, TypeError, ["progress=3"]),
    ({"start_method": 5}, TypeError, ["start_method=5"]),
    ({"timeout": 1e-9}, ValueError, ["timeout=1e-09", "floor of 0.01"]),
    ({"timeout": float("inf")}, ValueError, ["timeout=inf", "ten years"]),
])
def test_a_wrong_parameter_raises_a_python_error_naming_it(tmp_path, kw, error, words):
    if "journal" in kw and kw["journal"] == "j":
        kw = {**kw, "journal": str(tmp_path / "j")}
    with pytest.raises(error) as e:
        cluster_func.map(operator.neg, range(3), quiet=kw.pop("quiet", True), **kw)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("kw", [{"start_method": "teleport"}, {"journal": "/"}, {"journal": "DIR"}])
def test_no_command_line_option_is_named_to_a_python_caller(tmp_path, kw):
    if kw.get("journal") == "DIR":
        kw = {"journal": str(tmp_path)}
    with pytest.raises(ValueError) as e:
        cluster_func.map(operator.neg, range(3), quiet=True, **kw)
    assert "--" not in str(e.value), str(e.value)


def _python(tmp_path, source):
    path = tmp_path / "main.py"
    path.write_text(source)
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_spawn_script_without_its_main_guard_is_told_so_in_a_few_lines(tmp_path, method):
    r = _python(tmp_path, f"import cluster_func\ndef t(x):\n    return x\n"
                          f"print(cluster_func.map(t, [1, 2], start_method={method!r}, quiet=True))\n")
    assert r.returncode == 1
    assert 'if __name__ == "__main__":' in r.stderr and "line 4" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) < 15, r.stderr


def test_a_spawn_script_with_its_main_guard_runs(tmp_path):
    r = _python(tmp_path, "import cluster_func\ndef t(x):\n    return x\ndef main():\n"
                          "    print(cluster_func.map(t, [1, 2], start_method='spawn', quiet=True))\n"
                          "if __name__ == '__main__':\n    main()\n")
    assert r.returncode == 0 and r.stdout.strip() == "[1, 2]", r.stderr


def _inner(y):
    return y


def _nested(x):
    return cluster_func.map(_inner, [x], quiet=True)


def test_a_map_inside_a_map_worker_fails_its_call_with_one_clear_message():
    with pytest.raises(cluster_func.MapError) as e:
        cluster_func.map(_nested, [1, 2], processes=1, quiet=True)
    failure = e.value.failures[0]
    assert failure.type == "RuntimeError" and "inside a worker process" in failure.message, failure
    assert "daemonic" not in failure.message


def test_a_map_inside_a_clum_target_fails_each_call_with_one_clear_message(clum):
    clum.script("s.py", "import cluster_func\ndef inner(y):\n    return y\n"
                        "def target(x):\n    cluster_func.map(inner, [x], quiet=True)\nargs = [1, 2]\n")
    r = clum.run("s.py")
    assert r.returncode == 1 and "inside a worker process" in r.stderr, r.stderr
    assert "daemonic" not in r.stderr, r.stderr
