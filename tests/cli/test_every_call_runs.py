"""A call runs its target's body or fails; args have one fixed order; an element that cannot be
pickled fails its own call (issue 29: clum, cluf and cluster_func.map alike)."""

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import cluf_support as cs
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs

GENERATOR = "def target(x):\n    rec('ran', x)\n    yield x\nargs = [1, 2, 3]\n"
ASYNC = "async def target(x):\n    rec('ran', x)\nargs = [1, 2, 3]\n"
BODILESS = {"a generator function": (GENERATOR, ["generator function", "return"]),
            "an async def function": (ASYNC, ["async def", "asyncio.run"])}


@pytest.mark.parametrize("kind", list(BODILESS))
def test_clum_refuses_a_target_whose_body_a_call_would_never_run(clum, clean_error, kind):
    source, words = BODILESS[kind]
    clum.script("s.py", source)
    clean_error(clum.run("s.py"), *words, "s.py")
    assert clum.evidence() == []


@pytest.mark.parametrize("kind", list(BODILESS))
def test_cluf_refuses_a_target_whose_body_a_call_would_never_run_before_writing_a_job(clum, clean_error, kind):
    source, words = BODILESS[kind]
    clum.script("s.py", source)
    r = cs.run_cluf("s.py", "-n", "2", "-q", cwd=clum.dir, env=cs.base_env(clum.dir))
    clean_error(r, *words)
    assert not list(clum.dir.glob("*.sh")) and not list(clum.dir.rglob("*.manifest*"))


def _map(code, tmp_path):
    """Run ``code`` (which has cluster_func imported as c) in a fresh interpreter."""
    path = tmp_path / "m.py"
    path.write_text("import cluster_func as c\nif __name__ == '__main__':\n"
                    + "".join("    " + line + "\n" for line in code.splitlines()))
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target,words", [
    ("def t(x):\n    yield x", ["generator function", "return"]),
    ("async def t(x):\n    return x", ["async def", "asyncio.run"])])
def test_map_refuses_a_target_whose_body_a_call_would_never_run_with_a_type_error(tmp_path, target, words):
    code = (target + "\ntry:\n    c.map(t, [1, 2], quiet=True)\nexcept TypeError as e:\n    print('TypeError', e)\n"
            "else:\n    print('accepted')")
    r = _map(code, tmp_path)
    assert r.stdout.startswith("TypeError cluster_func.map:"), r.stdout + r.stderr
    for w in words:
        assert w in r.stdout, r.stdout


UNORDERED = {"a set of strings": "{'a', 'b', 'c'}", "a frozenset": "frozenset([3, 1, 2])",
             "a dict": "{'a': 1, 'b': 2}", "a dict's keys": "{'a': 1}.keys()",
             "a dict's values": "{'a': 1}.values()", "a dict's items": "{'a': 1}.items()"}


@pytest.mark.parametrize("kind", list(UNORDERED))
def test_clum_refuses_unordered_args_with_the_fix(clum, clean_error, kind):
    clum.script("s.py", f"def target(*a):\n    rec('ran', a)\nargs = {UNORDERED[kind]}\n")
    clean_error(clum.run("s.py", "-b", "0/2"), "sorted(")
    assert clum.evidence() == []


@pytest.mark.parametrize("kind", ["a set of strings", "a dict's values"])
def test_cluf_refuses_unordered_args_with_the_fix(clum, clean_error, kind):
    clum.script("s.py", f"def target(*a):\n    pass\nargs = {UNORDERED[kind]}\n")
    r = cs.run_cluf("s.py", "-n", "2", "-q", cwd=clum.dir, env=cs.base_env(clum.dir))
    clean_error(r, "sorted(")


@pytest.mark.parametrize("kind", list(UNORDERED))
def test_map_refuses_unordered_args_with_the_same_fix(tmp_path, kind):
    r = _map(f"try:\n    c.map(str, {UNORDERED[kind]}, quiet=True)\nexcept TypeError as e:\n    print('TypeError', e)\n"
             "else:\n    print('accepted')", tmp_path)
    assert r.stdout.startswith("TypeError cluster_func.map: args is") and "sorted(" in r.stdout, r.stdout + r.stderr


UNPICKLABLE = {"a keyword value": "Arguments(2, lock=threading.Lock())",
               "a positional value": "Arguments(threading.Lock())"}


@pytest.mark.parametrize("kind", list(UNPICKLABLE))
def test_clum_fails_only_the_call_whose_arguments_cannot_be_pickled_and_runs_the_rest(clum, kind):
    clum.script("s.py", f"import threading\nfrom cluster_func import Arguments\n"
                        f"def target(x=0, lock=None):\n    rec('ran', x)\n"
                        f"args = [Arguments(1), {UNPICKLABLE[kind]}, Arguments(3)]\n")
    r = clum.run("s.py", "-p", "1")
    assert r.returncode == 1, r.stderr
    assert "internal error" not in r.stderr and "PicklingError" in r.stderr, r.stderr
    assert "pass plain data" in r.stderr, r.stderr
    assert sorted(line[1] for line in clum.evidence()) == ["1", "3"]


@pytest.mark.parametrize("kind", list(UNPICKLABLE))
def test_map_fails_only_the_call_whose_arguments_cannot_be_pickled_and_returns_the_rest(tmp_path, kind):
    r = _map(f"import threading\nfrom cluster_func import Arguments\ntry:\n"
             f"    c.map(str, [Arguments(1), {UNPICKLABLE[kind]}, Arguments(3)], quiet=True)\n"
             f"except c.MapError as e:\n    print(e.values, list(e.failures), e.failures[1].type)", tmp_path)
    assert r.stdout.strip() == "['1', cluster_func.MISSING, '3'] [1] PicklingError", r.stdout + r.stderr
