"""Helpers for the ``cluf`` tests (tests/cli/test_cluf.py, tests/schedulers/test_cluf_real.py).

* :func:`write_target` writes a target script into a folder.  Each call appends one
  JSON line (O_APPEND: lines from several processes never interleave) to the
  evidence file ``<stem>.evidence`` *next to the script* - not named by the
  environment, since jobs must not inherit the submitting shell's environment.
  A line holds the element, the script's argv, the variables named ``CLUF_T_*``
  the call saw, and its working directory.
* :func:`run_cluf` runs the real ``cluf`` entry point as
  ``python -c "from cluster_func.cli import cluf_main; cluf_main()"``, with
  ``CLUFRC`` set to /dev/null (no defaults file: the real ``~/.clufrc`` is
  never read) unless the test sets it.
* :func:`stand_in` writes a recording stand-in for a scheduler command
  (``qsub``, ``sbatch``, ``squeue``, ``scontrol``, ...) into a bin dir.
* :func:`normalise` / :func:`assert_golden` compare rendered job scripts with the
  files in tests/pbs/expected/ (``CLUF_UPDATE_GOLDEN=1`` rewrites them).
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cluster_func import __version__
from cluster_func.cluster import manifest as manifest_mod  # (the manifest with its per-bin records)

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "pbs" / "expected"
CLUF_CODE = "from cluster_func.cli import cluf_main; cluf_main()"
CLUF = [sys.executable, "-c", CLUF_CODE]
TEST_VAR_PREFIX = "CLUF_T_"

TARGET = '''\
import json, os, sys, time

_EVIDENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         os.path.splitext(os.path.basename(__file__))[0] + ".evidence")
SLEEP = {sleep!r}
FAIL = {fail!r}


def target(x):
    line = {{"x": x, "argv": sys.argv[1:], "cwd": os.getcwd(),
             "env": {{k: v for k, v in os.environ.items() if k.startswith("{prefix}")}}}}
    fd = os.open(_EVIDENCE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)
    if SLEEP:
        time.sleep(SLEEP)
    if x in FAIL:
        raise ValueError("call %r fails on purpose" % (x,))


{args}
{extra}
'''


def write_target(folder, name="example.py", n=9, sleep=0.0, fail=(), args=None, extra=""):
    """A target script calling target(x) for x in range(n) (or the ``args`` source text)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(TARGET.format(sleep=sleep, fail=tuple(fail), prefix=TEST_VAR_PREFIX,
                                  args=textwrap.dedent(args or f"args = range({n})"),
                                  extra=textwrap.dedent(extra)))
    return path


def evidence_path(script):
    script = Path(script)
    return script.with_name(script.stem + ".evidence")


def evidence(script):
    """The evidence lines of a target script, as dicts (empty before any call)."""
    path = evidence_path(script)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calls(script):
    """The sorted elements the target was called with (repeats kept)."""
    return sorted(e["x"] for e in evidence(script))


def round_robin(n, nodes, i):
    return [x for x in range(n) if x % nodes == i]


# --- running cluf ---------------------------------------------------------------

def base_env(tmp_path, bindir=None, **extra):
    """os.environ with CLUFRC=/dev/null (no defaults file), no CLUF_PBS_FLAVOUR, no test
    variables, and ``bindir`` (stand-ins) first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(TEST_VAR_PREFIX) and k not in ("CLUF_PBS_FLAVOUR", "CLUF_BIN")}
    env["CLUFRC"] = os.devnull
    if bindir is not None:
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cluf(*args, cwd, env, timeout=120):
    return subprocess.run([*CLUF, *map(str, args)], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ok(result):
    """Assert exit status 0, with the output in the message."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def assert_clean_error(result, *words, status=2):
    """Exit status ``status``, each word in stderr (case-insensitive), no traceback."""
    err = result.stderr
    assert result.returncode == status, f"exit {result.returncode}, wanted {status}\nstdout:\n{result.stdout}\nstderr:\n{err}"
    assert "cluf: error" in err, err
    for w in words:
        assert w.lower() in err.lower(), f"{w!r} not in stderr:\n{err}"
    assert "Traceback" not in err and "cluster_func/" not in err, f"a traceback from the tool:\n{err}"
    return err


def run_by_hand(script, cwd="/", env=None, timeout=120):
    """``env -i [VAR=value...] bash SCRIPT`` from ``cwd``: an empty environment."""
    assigns = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(["env", "-i", *assigns, "bash", str(script)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def manifest_path(jobs_dir, stem, nodes):
    return Path(jobs_dir) / f"{stem}-{nodes}.manifest.json"


def read_manifest(jobs_dir, stem="example", nodes=3):
    return manifest_mod.load_manifest(str(manifest_path(jobs_dir, stem, nodes)))


def submitted_lines(stdout):
    """{script path: job id} from 'submitted <script> as job <id>' lines."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"submitted (.+) as job (\S+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def status_table(stdout):
    """Rows of ``cluf --status``: {bin: {"job", "state", "done", "failed", "total"}}.  The
    columns are two or more spaces apart: a state may hold single spaces ("stopped at
    walltime"), and a note in brackets after the last column is left out."""
    rows, header = {}, None
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:3] == ["bin", "job", "state"]:
            header = parts
            continue
        fields = re.split(r"\s{2,}", line.strip())
        if header and parts and parts[0].isdigit() and len(fields) >= len(header):
            rows[int(fields[0])] = dict(zip(header[1:], fields[1:len(header)]))
    return rows


def totals_line(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("total")]
    assert len(lines) == 1, stdout
    return lines[0]


# --- stand-ins for scheduler commands --------------------------------------------

STAND_IN = '''\
#!{python}
# Recording stand-in for `{name}`: logs argv and cwd, prints {name}.out if it exists,
# else the template with n = this call's number; fails on the calls in FAIL_ON.
import json, os, sys
d = os.path.dirname(os.path.abspath(__file__))
counter = os.path.join(d, "{name}.count")
n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
with open(counter, "w") as f:
    f.write(str(n))
FAIL_ON = {fail_on!r}
with open(os.path.join(d, "{name}.log"), "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "n": n, "failed": n in FAIL_ON}}) + "\\n")
if n in FAIL_ON:
    sys.stderr.write("{name}: cannot connect to server (stand-in failure)\\n")
    sys.exit(7)
out = os.path.join(d, "{name}.out")
if os.path.exists(out):
    sys.stdout.write(open(out).read())
else:
    sys.stdout.write({template!r}.format(n=n, id={first_id} + n))
'''


def stand_in(bindir, name, template="", fail_on=(), first_id=1000):
    """Write ``bindir/name``; return its log path. ``template``: e.g. '{id}.server\\n'."""
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text(STAND_IN.format(python=sys.executable, name=name, template=template,
                                    fail_on=tuple(fail_on), first_id=first_id))
    path.chmod(0o755)
    return bindir / f"{name}.log"


def stand_in_log(bindir, name):
    path = Path(bindir) / f"{name}.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def cluf_wrapper(bindir):
    """A `cluf` command in bindir that runs this checkout with this python."""
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / "cluf"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -c "{CLUF_CODE}" "$@"\n')
    path.chmod(0o755)
    return path


# --- golden files -----------------------------------------------------------------

def normalise(text, tmp_path):
    """Replace what varies per run: python's path, tmp_path, the version."""
    text = text.replace(sys.executable, "<PYTHON>")
    text = text.replace(str(tmp_path), "<TMP>")
    text = re.sub(r"^cluf_submission=[0-9a-f]+$", "cluf_submission=<MARK>", text, flags=re.M)
    return text.replace(f"cluster-func {__version__}", "cluster-func <VERSION>")


def assert_golden(name, text):
    path = EXPECTED / name
    if os.environ.get("CLUF_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no expected file {path}: run with CLUF_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text()
    assert text == expected, f"{name} differs from {path}:\n--- got ---\n{text}\n--- expected ---\n{expected}"


def wait_for(predicate, timeout, what):
    """Poll until predicate() is true; an AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
