"""Exit 70 only for cluster-func's own bugs: whatever the user's files or scheduler commands hold,
the message names the file or command (issue 29)."""

import subprocess
import sys
from pathlib import Path


try:
    import cluf_support as cs
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs

DEEP = "[" * 100_000 + "]" * 100_000 + "\n"


def test_a_random_py_beside_a_script_that_imports_random_is_named_in_a_warning(clum):
    clum.script("random.py", "def pick():\n    return 4\n", preamble=False)
    clum.script("s.py", "import random\ndef target(x):\n    rec('ran', x)\nargs = [1, 2]\n")
    r = clum.run("s.py")
    assert r.returncode == 0, r.stderr
    assert f"{clum.dir / 'random.py'} beside the script" in r.stderr and "Rename random.py" in r.stderr, r.stderr


def test_a_script_that_fails_to_import_from_its_own_random_py_is_told_why(clum, clean_error):
    clum.script("random.py", "def pick():\n    return 4\n", preamble=False)
    clum.script("s.py", "from random import pick\ndef target(x):\n    pass\nargs = [1, 2]\n")
    clean_error(clum.run("s.py"), "cannot import name 'pick'", str(clum.dir / "random.py"), "Rename random.py")


def test_cluf_names_a_random_py_beside_the_script_too(clum):
    clum.script("random.py", "def pick():\n    return 4\n", preamble=False)
    clum.script("s.py", "import random\ndef target(x):\n    pass\nargs = [1, 2]\n")
    r = cs.run_cluf("s.py", "-n", "2", "-q", cwd=clum.dir, env=cs.base_env(clum.dir))
    assert r.returncode == 0 and "Rename random.py" in r.stderr, r.stderr


def test_a_journal_line_nested_100000_deep_is_a_torn_line_skipped_and_said(clum):
    clum.script("s.py", "def target(x):\n    rec('ran', x)\nargs = range(4)\n")
    assert clum.run("s.py", "--journal", "s.journal").returncode == 0
    with open(clum.dir / "s.journal", "a") as f:
        f.write(DEEP)
    r = clum.run("s.py", "--journal", "s.journal", "--resume")
    assert r.returncode == 0 and "RecursionError" not in r.stderr, r.stderr
    assert len(clum.evidence()) == 4, "the resumed run ran calls again"
    r = clum.run("s.py", "--journal", "s.journal", "--failed")
    assert r.returncode == 0 and "skipped 1 unreadable line" in r.stdout + r.stderr, (r.stdout, r.stderr)


def test_a_manifest_nested_100000_deep_is_named_as_not_valid_json(clum, clean_error):
    (clum.dir / "s.manifest.json").write_text(DEEP)
    r = cs.run_cluf("--status", clum.dir, cwd=clum.dir, env=cs.base_env(clum.dir))
    clean_error(r, "s.manifest.json", "not valid JSON")


def test_a_defaults_file_nested_100000_deep_is_named(clum, clean_error):
    clum.script("s.py", "def target(x):\n    pass\nargs = [1, 2]\n")
    (clum.dir / "rc.json").write_text('{"a": ' + DEEP.strip() + "}")
    r = cs.run_cluf("s.py", "-n", "2", "-q", cwd=clum.dir, env=cs.base_env(clum.dir, CLUFRC="rc.json"))
    clean_error(r, "defaults file rc.json")


def test_a_scheduler_command_printing_bytes_that_are_not_utf8_is_named_not_a_decode_error(clum):
    clum.script("s.py", "def target(x):\n    pass\nargs = [1, 2]\n")
    bindir = clum.dir / "bin"
    bindir.mkdir()
    for name in ("sbatch", "squeue", "sacct", "scontrol"):
        (bindir / name).write_text("#!/bin/sh\nprintf '\\377\\376 Submitted batch job x\\n'\n")
        (bindir / name).chmod(0o755)
    r = cs.run_cluf("s.py", "-n", "2", "--scheduler", "slurm", cwd=clum.dir, env=cs.base_env(clum.dir, bindir))
    assert r.returncode == 1, r.stderr
    assert "UnicodeDecodeError" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert "sbatch --parsable" in r.stderr and "printed no job id" in r.stderr, r.stderr


def test_a_jobs_python_m_cluster_func_in_a_folder_holding_random_py_runs_the_script(clum):
    # -S: no site, so nothing imports the standard random before cluster-func does (a fresh
    # virtual environment's interpreter is like that); `python -m` puts the working directory first.
    clum.script("random.py", "def pick():\n    return 4\n", preamble=False)
    clum.script("s.py", "import random\ndef target(x):\n    rec('ran', x)\nargs = [1, 2]\n")
    root = str(Path(__file__).resolve().parents[2])
    env = {**clum.env(None, None), "PYTHONPATH": root}
    r = subprocess.run([sys.executable, "-S", "-m", "cluster_func", "s.py"], cwd=clum.dir, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr
    assert len(clum.evidence()) == 2, r.stderr
