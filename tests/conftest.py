"""Shared helpers for the clum tests: run the real ``clum`` command, write test
scripts into ``tmp_path``, read the evidence files those scripts append to, and
check that no process of a run outlives it."""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest


def _find_clum():
    here = os.path.join(os.path.dirname(sys.executable), "clum")
    if os.path.exists(here):
        return here
    found = shutil.which("clum")
    if found is None:
        pytest.skip("the clum command is not installed (pip install -e .)")
    return found


# Every test script starts with this: ``rec(...)`` appends one line per call to
# the file named by $CLUM_TEST_OUT (O_APPEND, so lines from several processes
# never interleave); the parts of a line are separated by tabs.
EVIDENCE_PREAMBLE = '''\
import os as _os
_OUT = _os.environ.get("CLUM_TEST_OUT", _os.devnull)

def rec(*parts):
    fd = _os.open(_OUT, _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT, 0o644)
    try:
        _os.write(fd, ("\\t".join(str(p) for p in parts) + "\\n").encode())
    finally:
        _os.close(fd)

'''


def pid_running(pid):
    """True while ``pid`` exists and is not a zombie (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def session_processes(sid):
    """Running (not zombie) processes whose session id is ``sid``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            out.append(int(name))
    return out


def wait_for(predicate, timeout=30.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def assert_all_gone(pids, grace=2.0, sid=None):
    """Every pid (and, given ``sid``, every process of that session) has exited within ``grace`` s."""
    deadline = time.monotonic() + grace
    while True:
        alive = [p for p in pids if pid_running(p)]
        if sid is not None:
            alive += [p for p in session_processes(sid) if p not in alive]
        if not alive:
            return
        if time.monotonic() > deadline:
            for p in alive:  # do not leave them behind for the next test
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            raise AssertionError(f"processes still alive {grace} s after clum exited: {alive}")
        time.sleep(0.02)


class Clum:
    """Runs ``clum`` on scripts written into a temporary folder."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.exe = _find_clum()
        self.out = tmp_path / "evidence.txt"

    def script(self, name, body, folder=None, preamble=True):
        folder = folder or self.dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text((EVIDENCE_PREAMBLE if preamble else "") + textwrap.dedent(body))
        return path

    def env(self, extra=None, out=None):
        env = dict(os.environ)
        env.pop("CLUSTER_FUNC_START_METHOD", None)
        env["CLUM_TEST_OUT"] = str(out or self.out)
        env.update({k: str(v) for k, v in (extra or {}).items()})
        return env

    def run(self, *args, env=None, out=None, cwd=None, timeout=60, **kw):
        return subprocess.run([self.exe, *map(str, args)], cwd=cwd or self.dir, env=self.env(env, out),
                              capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, *args, env=None, out=None, cwd=None, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([self.exe, *map(str, args)], cwd=cwd or self.dir, env=self.env(env, out),
                                text=True, start_new_session=True, **kw)

    def signal_when(self, p, ready, sig, group=False, what="calls to start"):
        """Wait until ready(), send sig to the clum process `p` (or to its whole process group,
        as a terminal's Ctrl-C does), and return (exit status, stderr). Whatever happens, the
        session is killed before returning, so a hang fails instead of leaking processes."""
        try:
            wait_for(ready, what=what)
            (os.killpg if group else os.kill)(p.pid, sig)
            err = p.communicate(timeout=30)[1]
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return p.returncode, err

    def evidence(self, path=None):
        """The evidence lines, each split into its parts (tab-separated)."""
        path = path or self.out
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [line.split("\t") for line in f.read().splitlines() if line]

    def count_lines(self, path=None, prefix=None):
        path = path or self.out
        try:
            with open(path) as f:
                return sum(1 for line in f if prefix is None or line.startswith(prefix))
        except FileNotFoundError:
            return 0


@pytest.fixture
def clum(tmp_path):
    return Clum(tmp_path)


def assert_clean_error(result, *words, status=2):
    """Exit status 2 (by default), the words in stderr, and no traceback from inside the tool."""
    err = result.stderr
    assert result.returncode == status, (result.returncode, err)
    low = err.lower()
    for w in words:
        assert w.lower() in low, f"{w!r} not in stderr:\n{err}"
    assert not re.search(r'File "[^"]*cluster_func[/\\]', err), f"a frame from inside the tool:\n{err}"
    return err


@pytest.fixture
def clean_error():
    return assert_clean_error


@pytest.fixture
def procs():
    """The process helpers, as a fixture (tests import nothing from conftest)."""

    class P:
        running = staticmethod(pid_running)
        session = staticmethod(session_processes)
        wait_for = staticmethod(wait_for)
        all_gone = staticmethod(assert_all_gone)

    return P


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only; CI runs as root)."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def scenario_runs(request, tmp_path_factory):
    """Every selected real-scheduler scenario, started before the session's first test (see
    tests/scenarios.py); None when no selected test checks one."""
    if not any(getattr(getattr(item, "function", None), "scenario", None) for item in request.session.items):
        yield None
        return
    import scenarios  # (tests/ is on sys.path: this conftest's folder)
    runs = scenarios.Scenarios(tmp_path_factory)
    runs.start_selected(request.session.items)
    try:
        yield runs
    finally:
        runs.stop()
