#!/usr/bin/env python3
"""cluster-func benchmarks: clum against the usual alternatives, IterableQueue, cluf.

    python benchmarks/run.py [--quick] [--reps N] [--only WORKLOAD,...]

The first run makes a virtual environment at benchmarks/.venv with joblib,
mpire, iterable-queue 1.2.2, psutil and this project (editable), then runs
itself again inside it.  See benchmarks/README.md for what is measured and how.
"""

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")
RESULTS = os.path.join(HERE, "results")
WORKLOADS = os.path.join(HERE, "workloads")
REQUIREMENTS = ["joblib", "mpire", "iterable-queue==1.2.2", "psutil"]
PROCESSES = 2

MAIN_WORKLOADS = ["tiny", "skewed", "cpu", "stream", "files"]
SECTIONS = MAIN_WORKLOADS + ["startup", "large", "resume", "import", "startup64", "results", "map", "queue",
                             "cluf", "wait", "continue"]
POOL_CHUNKSIZES = [1, 10, 100, 1000, 10000]
# 2,000 elements: larger chunks than 100 leave a worker idle for most of the run
LARGE_RUNNERS = ["serial", "pool-1", "pool-10", "pool-100", "clum"]
RUNNERS = (["serial"] + [f"pool-{c}" for c in POOL_CHUNKSIZES]
           + ["joblib", "mpire", "parallel", "clum"])
RUNNER_LABELS = {
    "serial": "serial loop",
    **{f"pool-{c}": f"Pool.imap_unordered chunksize {c}" for c in POOL_CHUNKSIZES},
    "joblib": "joblib Parallel(n_jobs=2)",
    "mpire": "mpire WorkerPool(2)",
    "parallel": "GNU parallel, python -c per element",
    "clum": "clum -p 2",
}
GIB = 1 << 30

SIZES = {  # full, quick
    "TINY_N": (2_000_000, 200_000),
    "SKEWED_N": (4000, 800),
    "CPU_N": (400, 80),
    "STREAM_N": (2_000_000, 200_000),
    "STREAM_SMALL_N": (200_000, 20_000),
    "FILES_N": (10_000, 2000),
    "COUNT_N": (10_000_000, 1_000_000),
    "COUNT_SMALL_N": (1_000_000, 100_000),
    "PARALLEL_K": (200, 40),
    "STARTUP_SAMPLES": (5, 3),
    "CLUF_NODES": (1000, 1000),
    "LARGE_N": (2000, 400),
    "LARGE_BYTES": (1_000_000, 1_000_000),
    "RESUME_SAMPLES": (3, 1),  # per repetition, of each of the three runs
    "IMPORT_BYTES": (GIB, GIB // 4),
    "IMPORT_N": (200, 200),
    "FIRST_N": (200, 200),
    "STARTUP64_SAMPLES": (3, 2),
    "MS_N": (2000, 400),
    "RESULTS_SAMPLES": (3, 1),
}

# map: cluster_func.map against the runners that return the values too
MAP_WORKLOADS = ["tiny", "skewed", "cpu"]
POOLMAP_CHUNKSIZES = ["auto", 1, 10, 100, 1000, 10000]
MAP_RUNNERS = ["map"] + [f"poolmap-{c}" for c in POOLMAP_CHUNKSIZES] + ["joblib-values"]
MAP_LABELS = {
    "map": "cluster_func.map(target, args, processes=2)",
    **{f"poolmap-{c}": f"Pool(2).map chunksize {c}" for c in POOLMAP_CHUNKSIZES},
    "poolmap-auto": "Pool(2).map, its own chunksize",
    "joblib-values": "joblib Parallel(n_jobs=2) list",
}

# The figures the issue asks for.
FIG_BEST_POOL_FACTOR = 1.10
FIG_STREAM_FLAT = 1.10
FIG_STARTUP_S = 0.100
FIG_CLUF_N_S = 2.0
FIG_CLUF_I_FLAT = 1.10
FIG_RESUME_ALL = 0.5  # resuming a complete journal: at most this times a fresh run
FIG_RESUME_HALF = 1.0  # resuming a half-done journal: at most this times a fresh run
FIG_IMPORT_EXTRA = 1.2e9 - GIB  # summed PSS at most the data + this (1.2 GB for 1 GiB)
FIG_FIRST_CALL_S = 0.5  # -p 64: the first call within this many seconds of the start
FIG_RESULTS_COST = 1.05  # --results on 1 ms calls: at most this times the run without
FIG_RESULTS_TINY = 2.0  # --results on tiny: at most this times the run without (the issue's aim)
FIG_RESULTS_POOL = 1.0  # --results on tiny: at most this times Pool.imap writing JSON lines (issue: 0.38x)

RESULTS_WORKLOADS = ["tiny", "ms"]
RESULTS_PKL_WORKLOADS = ["tiny"]
# Pool.imap + JSON lines: the two best of POOL_CHUNKSIZES on 2,000,000 calls; on 2,000 calls of
# 1 ms, chunks of 1000 or more would leave a worker idle, so 10 and 100 there
RESULTS_POOL_CHUNKSIZES = {"tiny": [1000, 10000], "ms": [10, 100]}

OTHER_LOAD_BUSY = 0.25  # cores' worth of CPU used outside the timed command: a contended run
SHOWN_INFO = ("this_run_ran", "toplevel", "pss_kb", "rss_sum_kb", "procs", "first_call", "results_lines")


def log(text):
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# --- the virtual environment ------------------------------------------------------------------
def venv_python():
    return os.path.join(VENV, "bin", "python")


def in_venv():
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def venv_stamp():
    h = hashlib.sha256()
    h.update(json.dumps([REQUIREMENTS, sys.version_info[:2]]).encode())
    for name in ("setup.py", "pyproject.toml", "setup.cfg"):
        p = os.path.join(ROOT, name)
        if os.path.exists(p):
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def ensure_venv_and_reexec(argv):
    py = venv_python()
    stamp_path = os.path.join(VENV, ".bench-stamp")
    stamp = venv_stamp()
    have = open(stamp_path).read().strip() if os.path.exists(stamp_path) else None
    if not os.path.exists(py) or have != stamp:
        log(f"benchmarks: setting up {os.path.relpath(VENV)} (joblib, mpire, iterable-queue 1.2.2, psutil, "
            f"cluster-func editable) ...")
        if not os.path.exists(py):
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.check_call([sys.executable, "-m", "venv", VENV])
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.check_call(pip + REQUIREMENTS)
        subprocess.check_call(pip + ["-e", ROOT])
        with open(stamp_path, "w") as f:
            f.write(stamp + "\n")
    env = dict(os.environ)
    env["PATH"] = os.path.join(VENV, "bin") + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONHOME", None)
    os.execve(py, [py, os.path.abspath(__file__), *argv], env)


# --- measuring one command --------------------------------------------------------------------
TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


class Sample:
    def __init__(self, wall=None, peak_kb=None, ok=True, note="", other=None, timed_out=None, start=None,
                 info=None, stderr=None):
        self.wall, self.peak_kb, self.ok, self.note = wall, peak_kb, ok, note
        self.other = other  # cores' worth of CPU that other processes used during the run
        self.timed_out = timed_out  # the limit (s) at which the run was stopped, if it was
        self.start = start  # time.time() just before the command was started
        self.info = info if info is not None else {}  # what a section measured besides the time
        self.stderr = stderr  # the command's standard error (tail), when asked for

    def to_json(self):
        return {"wall": self.wall, "peak_kb": self.peak_kb, "ok": self.ok, "note": self.note, "other": self.other,
                "timed_out": self.timed_out, "start": self.start, "info": self.info, "stderr": self.stderr}


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds():
    """CPU seconds the whole machine has spent busy since boot (all CPUs), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice
    v = [int(x) for x in fields[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / CLK_TCK


def children_cpu_seconds():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def other_load_now(window=0.5):
    """Cores' worth of CPU used by the rest of the machine over a short window."""
    b0, c0 = machine_busy_seconds(), children_cpu_seconds()
    if b0 is None:
        return None
    time.sleep(window)
    return max(0.0, (machine_busy_seconds() - b0 - (children_cpu_seconds() - c0)) / window)


def _psutil_sampler(pid, stop, out):
    """Fallback when /usr/bin/time is missing: poll the process tree, keep the largest RSS."""
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    peak = 0
    while not stop():
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        for p in procs:
            try:
                peak = max(peak, p.memory_info().rss)
            except psutil.Error:
                pass
        time.sleep(0.02)
    out.append(peak // 1024)


def measure(cmd, env, tmp, timeout, keep_stderr=False):
    """Run cmd; return a Sample with whole-command wall seconds and the peak RSS (KiB)
    of the largest process in its tree (and, with keep_stderr, the tail of its stderr)."""
    mem_file = os.path.join(tmp, "time.out")
    err_file = os.path.join(tmp, "stderr.out")
    full = [TIME_BIN, "-f", "%M", "-o", mem_file, *cmd] if TIME_BIN else list(cmd)
    sampled = []
    busy0, cpu0 = machine_busy_seconds(), children_cpu_seconds()
    with open(err_file, "wb") as err:
        start = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        sampler = None
        if not TIME_BIN:
            import threading
            sampler = threading.Thread(target=_psutil_sampler, args=(proc.pid, lambda: proc.poll() is not None,
                                                                      sampled), daemon=True)
            sampler.start()
        # A blocking wait (waitpid) returns the moment the command ends; Popen.wait(timeout=...)
        # would poll with sleeps of up to 50 ms and round every time up to that grain.
        # The time limit is a timer that kills the process group.
        import threading
        stopped = []

        def stop():
            stopped.append(True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, stop)
        timer.daemon = True
        timer.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        timer.cancel()
        if stopped:
            return Sample(None, None, False, f"stopped at the {timeout:g} s limit", timed_out=timeout, start=start)
        busy1, cpu1 = machine_busy_seconds(), children_cpu_seconds()
        if sampler:
            sampler.join(2)
    # CPU the machine spent that this command (and its waited-for children) did not:
    # other processes, e.g. tests running at the same time, skew the timing.
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / wall
    # a runner's own stray children (if any) go with it
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    peak = None
    if TIME_BIN and os.path.exists(mem_file):
        lines = [ln.strip() for ln in open(mem_file) if ln.strip()]
        if lines and lines[-1].isdigit():
            peak = int(lines[-1])
        os.unlink(mem_file)
    elif sampled:
        peak = sampled[0]
    stderr = read_tail(err_file) if keep_stderr else None
    if rc != 0:
        tail = [ln.strip() for ln in open(err_file, errors="replace").read().strip().splitlines()[-3:]]
        return Sample(wall, peak, False, f"exit {rc}: " + " | ".join(tail)[-300:], other, start=start,
                      stderr=stderr)
    return Sample(wall, peak, other=other, start=start, stderr=stderr)


def read_tail(path, limit=2000):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text[-limit:]


def measure_tree_pss(cmd, env, tmp, timeout, interval=0.02):
    """Run cmd (not under /usr/bin/time, so the tree is only the command's); a thread samples
    the whole process tree every `interval` seconds and keeps the peak of the SUMMED PSS
    (proportional set size: a page shared by k processes counts 1/k in each, so the sum is the
    memory the tree really holds) and, for comparison, of the summed RSS.  Returns a Sample whose
    info has pss_kb, rss_sum_kb and procs (the number of processes at the PSS peak)."""
    import threading

    import psutil

    err_file = os.path.join(tmp, "stderr.out")
    peak = {"pss": 0, "rss": 0, "procs": 0, "samples": 0}
    halt = threading.Event()

    def sample_tree(pid):
        try:
            root = psutil.Process(pid)
        except psutil.Error:
            return
        while not halt.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            pss = rss = n = 0
            for p in procs:
                try:
                    m = p.memory_full_info()
                except psutil.Error:
                    continue
                pss += m.pss
                rss += m.rss
                n += 1
            peak["samples"] += 1
            if pss > peak["pss"]:
                peak["pss"], peak["procs"] = pss, n
            peak["rss"] = max(peak["rss"], rss)
            halt.wait(interval)

    busy0, cpu0 = machine_busy_seconds(), children_cpu_seconds()
    self0 = sum(os.times()[:2])
    with open(err_file, "wb") as err:
        start = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        sampler = threading.Thread(target=sample_tree, args=(proc.pid,), daemon=True)
        sampler.start()
        stopped = []

        def stop():
            stopped.append(True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, stop)
        timer.daemon = True
        timer.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        timer.cancel()
        halt.set()
        sampler.join(5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    info = {"pss_kb": peak["pss"] // 1024, "rss_sum_kb": peak["rss"] // 1024, "procs": peak["procs"],
            "pss_samples": peak["samples"]}
    if stopped:
        return Sample(None, None, False, f"stopped at the {timeout:g} s limit", timed_out=timeout, start=start,
                      info=info)
    busy1, cpu1 = machine_busy_seconds(), children_cpu_seconds()
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        # less the command's CPU and this process's (the sampler thread)
        other = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (sum(os.times()[:2]) - self0)) / wall
    if rc != 0:
        tail = [ln.strip() for ln in open(err_file, errors="replace").read().strip().splitlines()[-3:]]
        return Sample(wall, None, False, f"exit {rc}: " + " | ".join(tail)[-300:], other, start=start, info=info)
    return Sample(wall, None, other=other, start=start, info=info)


# --- the plan ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.quick = opts.quick
        self.size = {k: v[1] if self.quick else v[0] for k, v in SIZES.items()}
        self.tmp = tempfile.mkdtemp(prefix="clum-bench-")
        self.files_out = os.path.join(self.tmp, "files-out")
        self.py = sys.executable
        self.bin = os.path.dirname(sys.executable)
        self.env = dict(os.environ)
        self.env.update({
            "BENCH_PROCESSES": str(PROCESSES),
            "TINY_N": str(self.size["TINY_N"]),
            "SKEWED_N": str(self.size["SKEWED_N"]),
            "CPU_N": str(self.size["CPU_N"]),
            "STREAM_N": str(self.size["STREAM_N"]),
            "FILES_N": str(self.size["FILES_N"]),
            "FILES_OUT": self.files_out,
            "LARGE_N": str(self.size["LARGE_N"]),
            "LARGE_BYTES": str(self.size["LARGE_BYTES"]),
            "IMPORT_BYTES": str(self.size["IMPORT_BYTES"]),
            "IMPORT_N": str(self.size["IMPORT_N"]),
            "FIRST_N": str(self.size["FIRST_N"]),
            "MS_N": str(self.size["MS_N"]),
        })
        for name in ("FILES_IN", "IMPORT_COUNT_FILE", "FIRST_CALL_FILE", "CLUSTER_FUNC_START_METHOD"):
            self.env.pop(name, None)
        self.results = {}  # (workload, runner) -> [Sample]
        self.expected = {
            "tiny": self.size["TINY_N"], "skewed": self.size["SKEWED_N"], "cpu": self.size["CPU_N"],
            "stream": self.size["STREAM_N"], "stream-small": self.size["STREAM_SMALL_N"],
            "files": self.size["FILES_N"], "startup": 1, "large": self.size["LARGE_N"],
        }
        self.parallel_bin = shutil.which("parallel")
        self.parallel_slices = {}  # workload -> (slice file, n, k)
        self.runs = 0
        self.skip = {}  # (workload, runner) -> why it is not run again
        self.problems = []  # wrong counts, crashes: things to report
        self.sections = {}  # name -> extra results
        self.notes = {}  # section -> [text shown under its table]
        self._clum_help = None
        self.started = time.monotonic()
        self.load_start = loadavg()

    # environment for a workload
    def wenv(self, workload):
        env = dict(self.env)
        if workload == "stream-small":
            env["STREAM_N"] = str(self.size["STREAM_SMALL_N"])
        return env

    @staticmethod
    def script(workload):
        return os.path.join(WORKLOADS, ("stream" if workload == "stream-small" else workload) + ".py")

    def command(self, workload, runner):
        script = self.script(workload)
        if runner == "clum":
            self.runs += 1
            journal = os.path.join(self.tmp, f"journal-{self.runs}.journal")
            return [os.path.join(self.bin, "clum"), script, "-p", str(PROCESSES), "--quiet",
                    "--journal", journal], journal
        if runner == "parallel":
            slice_file, n, k = self.parallel_slice(workload)
            sys.path.insert(0, HERE)
            import runners
            return runners.parallel_command(script, slice_file), None
        return [self.py, os.path.join(HERE, "runners.py"), runner, script], None

    def parallel_slice(self, workload):
        if workload not in self.parallel_slices:
            k = self.size["PARALLEL_K"]
            path = os.path.join(self.tmp, f"slice-{workload}.txt")
            out = subprocess.run([self.py, os.path.join(HERE, "runners.py"), "parallel-slice",
                                  self.script(workload), str(k), path],
                                 env=self.wenv(workload), check=True, capture_output=True, text=True)
            info = json.loads(out.stdout.strip().splitlines()[-1])
            self.parallel_slices[workload] = (path, info["n"], info["k"])
        return self.parallel_slices[workload]

    def settle(self):
        """With --settle S: wait (at most S seconds) for the rest of the machine to go quiet."""
        if self.opts.settle <= 0:
            return
        deadline = time.monotonic() + self.opts.settle
        while time.monotonic() < deadline:
            load = other_load_now(0.3)
            if load is None or load < OTHER_LOAD_BUSY:
                return

    def clear_files_out(self):
        """Move the last run's output aside (deleted once per repetition, see empty_trash) and
        flush the file system, so that no run pays for the writeback or deletion of another's files."""
        if os.path.isdir(self.files_out):
            self.trash_count = getattr(self, "trash_count", 0) + 1
            os.makedirs(os.path.join(self.tmp, "trash"), exist_ok=True)
            os.rename(self.files_out, os.path.join(self.tmp, "trash", str(self.trash_count)))
        os.sync()

    def empty_trash(self):
        shutil.rmtree(os.path.join(self.tmp, "trash"), ignore_errors=True)
        os.sync()

    def prepare(self):
        log(f"benchmarks: scratch folder {self.tmp}")
        if "files" in self.opts.only:
            log(f"benchmarks: making {self.size['FILES_N']} input files (once) ...")
            subprocess.run([self.py, "-c", "import runpy,sys; runpy.run_path(sys.argv[1])", self.script("files")],
                           env=self.env, check=True)
        # compile once, so that no runner pays for writing .pyc files
        subprocess.run([self.py, "-m", "compileall", "-q", HERE, os.path.join(ROOT, "cluster_func")],
                       env=self.env, stdout=subprocess.DEVNULL, check=False)
        subprocess.run([self.py, "-c", "import multiprocessing.pool, joblib, mpire, cluster_func.local.runner"],
                       env=self.env, check=False)

    # one run of one runner on one workload
    def run_one(self, workload, runner, rep):
        key = (workload, runner)
        if key in self.skip:
            return
        if runner == "parallel" and not self.parallel_bin:
            self.skip[key] = "GNU parallel not installed (apt-get install -y parallel)"
            return
        if workload == "files":
            self.clear_files_out()
        cmd, journal = self.command(workload, runner)
        self.settle()
        sample = measure(cmd, self.wenv(workload), self.tmp, self.opts.timeout)
        # correctness: the number of calls made
        expected = self.expected[workload]
        if runner == "parallel":
            expected = self.parallel_slices[workload][2]
        if sample.ok and workload == "files":
            made = len(os.listdir(self.files_out)) if os.path.isdir(self.files_out) else 0
            if made != expected:
                sample.ok = False
                sample.note = f"wrong count: {made} output files, expected {expected}"
        if sample.ok and journal:
            done = journal_done(journal)
            if done != expected:
                sample.ok = False
                sample.note = f"wrong count: journal says {done} calls done, expected {expected}"
        if journal and os.path.exists(journal):
            os.unlink(journal)
        if sample.timed_out and runner not in ("clum", "serial"):
            self.skip[key] = f"stopped at the {sample.timed_out:g} s limit (--timeout)"
        elif not sample.ok:
            self.problems.append(f"{workload} / {runner} (rep {rep + 1}): {sample.note}\n    command: "
                                 f"{' '.join(cmd)}\n    env: " + " ".join(
                                     f"{k}={v}" for k, v in sorted(self.wenv(workload).items())
                                     if k.endswith("_N") or k in ("FILES_OUT", "BENCH_PROCESSES")))
            self.skip[key] = sample.note
        elif sample.wall is not None and sample.wall > self.opts.repeat_limit and rep == 0 and self.opts.reps > 1:
            self.skip[key] = f"1 rep: took over {self.opts.repeat_limit:g} s"
        elif runner == "parallel" and self.opts.reps > 1:
            self.skip[key] = "1 rep (an extrapolation)"
        self.results.setdefault(key, []).append(sample)
        peak = f"{sample.peak_kb / 1024:.0f} MiB" if sample.peak_kb else "?"
        wall = f"{sample.wall:.3f} s" if sample.wall is not None else "-"
        other = f"other load {sample.other:.2f}" if sample.other is not None else ""
        log(f"  rep {rep + 1} {workload:12s} {runner:10s} {wall:>10s} {peak:>8s}  {other}"
            f"{'  ' + sample.note if sample.note else ''}")

    def main_loop(self):
        workloads = [w for w in MAIN_WORKLOADS if w in self.opts.only]
        if "stream" in self.opts.only:
            workloads.insert(workloads.index("stream") + 1, "stream-small")
        startup = "startup" in self.opts.only
        for rep in range(self.opts.reps):
            log(f"benchmarks: repetition {rep + 1} of {self.opts.reps} "
                f"({time.monotonic() - self.started:.0f} s so far; load average {loadavg()})")
            for workload in workloads:
                if workload == "files":
                    self.empty_trash()
                for runner in RUNNERS:
                    if workload == "stream-small" and runner == "parallel":
                        continue
                    self.run_one(workload, runner, rep)
            if "large" in self.opts.only:
                for runner in LARGE_RUNNERS:
                    self.run_one("large", runner, rep)
            if startup:
                for _ in range(self.size["STARTUP_SAMPLES"]):
                    for runner in ("serial", "clum"):
                        self.run_one("startup", runner, rep)
            if "resume" in self.opts.only:
                self.resume_rep(rep)
            if "import" in self.opts.only:
                self.import_rep(rep)
            if "startup64" in self.opts.only:
                self.startup64_rep(rep)
            if "results" in self.opts.only:
                self.results_rep(rep)
            if "map" in self.opts.only:
                self.map_rep(rep)

    # --- the sections that time clum against itself ----------------------------------------
    def clum_bin(self):
        return os.path.join(self.bin, "clum")

    def clum_help(self):
        """`clum --help`'s text ('' if it fails): which options this clum has."""
        if self._clum_help is None:
            try:
                out = subprocess.run([self.clum_bin(), "--help"], env=self.env, capture_output=True, text=True,
                                     timeout=60)
                self._clum_help = out.stdout + out.stderr if out.returncode == 0 else ""
            except (OSError, subprocess.TimeoutExpired):
                self._clum_help = ""
        return self._clum_help

    def clum_has(self, option):
        return option in self.clum_help()

    def clum_cmd(self, workload, *extra, processes=PROCESSES, journal=None):
        """clum WORKLOAD -p P --quiet --journal J EXTRA...; a fresh journal path unless one is given."""
        if journal is None:
            self.runs += 1
            journal = os.path.join(self.tmp, f"journal-{self.runs}.journal")
        return [self.clum_bin(), self.script(workload), "-p", str(processes), "--quiet",
                "--journal", journal, *extra], journal

    def fresh_path(self, stem):
        self.runs += 1
        return os.path.join(self.tmp, f"{stem}-{self.runs}")

    def run_variant(self, section, variant, cmd, env, rep, check=None, measure_fn=measure, **kwargs):
        """Time one run of one of a section's variants; `check(sample)` returns an error text or None
        (and may add to sample.info).  Failures go to "Problems seen" and the variant is not run again;
        one slower than --repeat-limit in the first repetition is not repeated either."""
        key = (section, variant)
        if key in self.skip:
            return None
        self.settle()
        sample = measure_fn(cmd, env, self.tmp, self.opts.timeout, **kwargs)
        if sample.ok and check is not None:
            try:
                bad = check(sample)
            except Exception as e:  # noqa: BLE001 - a broken check is a problem to report, not a crash
                bad = f"check failed: {type(e).__name__}: {e}"
            if bad:
                sample.ok, sample.note = False, bad
        if not sample.ok:
            if not sample.timed_out:
                self.problems.append(f"{section} / {variant} (rep {rep + 1}): {sample.note}\n    command: "
                                     f"{' '.join(cmd)}")
            self.skip[key] = sample.note
        elif sample.wall is not None and sample.wall > self.opts.repeat_limit and rep == 0 and self.opts.reps > 1:
            self.skip[key] = f"1 rep: took over {self.opts.repeat_limit:g} s"
        self.results.setdefault(key, []).append(sample)
        wall = f"{sample.wall:.3f} s" if sample.wall is not None else "-"
        other = f"other load {sample.other:.2f}" if sample.other is not None else ""
        extra = " ".join(f"{k}={v}" for k, v in sample.info.items() if k in SHOWN_INFO)
        log(f"  rep {rep + 1} {section:10s} {variant:18s} {wall:>10s}  {other}  {extra}"
            f"{'  ' + sample.note if sample.note else ''}")
        return sample

    def journal_check(self, journal, n, remove=True):
        """A check: the journal accounts for positions 0..n-1 (info: what the journal says)."""
        def check(sample):
            counts = journal_counts(journal, n)
            if remove:
                for path in (journal, journal + ".lock", journal + ".prev"):
                    if os.path.exists(path):
                        os.unlink(path)
            if counts is None:
                return "no journal written"
            sample.info.update({"journal_calls": counts["in_range"], "journal_ok_sum": counts["ok_sum"],
                                "this_run_ran": counts["last_run"]})
            if counts["in_range"] != n or counts["outside"]:
                return (f"wrong count: the journal accounts for {counts['in_range']:,} of positions 0..{n - 1:,}"
                        + (f" and {counts['outside']:,} positions outside them" if counts["outside"] else ""))
            return None
        return check

    # resume: what the journal costs when resuming
    def resume_rep(self, rep):
        n = self.size["TINY_N"]
        half = n // 2
        env = dict(self.env, TINY_N=str(n))
        if rep == 0:
            # the half-done journal: a complete run over the first half of the args
            cmd, journal = self.clum_cmd("tiny", journal=os.path.join(self.tmp, "resume-half.journal"))
            self.run_variant("resume", "setup-half", cmd, dict(env, TINY_N=str(half)), rep,
                             check=self.journal_check(journal, half, remove=False))
        half_journal = os.path.join(self.tmp, "resume-half.journal")
        for _ in range(self.size["RESUME_SAMPLES"]):
            # (a) a fresh run; its journal, complete, is then resumed by (b)
            cmd, journal = self.clum_cmd("tiny")
            a = self.run_variant("resume", "fresh", cmd, env, rep, check=self.journal_check(journal, n, remove=False))
            full_journal = os.path.join(self.tmp, "resume-full.journal")
            if a is not None and a.ok:
                shutil.copyfile(journal, full_journal)
            for path in (journal, journal + ".lock"):
                if os.path.exists(path):
                    os.unlink(path)
            if os.path.exists(full_journal):
                cmd, journal = self.clum_cmd("tiny", "--resume")
                shutil.copyfile(full_journal, journal)
                self.run_variant("resume", "resume-all", cmd, env, rep, check=self.journal_check(journal, n),
                                 keep_stderr=True)
            elif ("resume", "resume-all") not in self.skip:
                self.skip[("resume", "resume-all")] = "no complete journal to resume (the fresh run failed)"
            # (c) the first half done
            if ("resume", "setup-half") in self.results and self.results[("resume", "setup-half")][0].ok:
                cmd, journal = self.clum_cmd("tiny", "--resume")
                shutil.copyfile(half_journal, journal)
                self.run_variant("resume", "resume-half", cmd, env, rep, check=self.journal_check(journal, n),
                                 keep_stderr=True)
            elif ("resume", "resume-half") not in self.skip:
                self.skip[("resume", "resume-half")] = "no half-done journal (its run failed)"

    # import: a script that loads 1 GiB at its top level
    IMPORT_VARIANTS = ["clum", "clum-spawn", "pool-10"]

    def import_rep(self, rep):
        try:
            import psutil  # noqa: F401 - measure_tree_pss samples the process tree with it
        except ImportError:
            for variant in self.IMPORT_VARIANTS:
                self.skip[("import", variant)] = "n/a: psutil is not installed (--no-venv: pip install psutil)"
            return
        for variant in self.IMPORT_VARIANTS:
            count_file = self.fresh_path("import-count")
            env = dict(self.env, IMPORT_COUNT_FILE=count_file)
            journal = None
            if variant == "clum":
                cmd, journal = self.clum_cmd("import_heavy")
            elif variant == "clum-spawn":
                if not self.clum_has("--start-method"):
                    self.skip[("import", variant)] = "n/a: this clum has no --start-method (clum --help)"
                    continue
                cmd, journal = self.clum_cmd("import_heavy", "--start-method", "spawn")
            else:
                cmd = [self.py, os.path.join(HERE, "runners.py"), variant, self.script("import_heavy")]
            n = self.size["IMPORT_N"]
            journal_check = self.journal_check(journal, n) if journal else None

            def check(sample, count_file=count_file, journal_check=journal_check):
                try:
                    with open(count_file) as f:
                        sample.info["toplevel"] = sum(1 for line in f if line.strip())
                    os.unlink(count_file)
                except FileNotFoundError:
                    sample.info["toplevel"] = 0
                return journal_check(sample) if journal_check else None

            self.run_variant("import", variant, cmd, env, rep, check=check, measure_fn=measure_tree_pss)

    # startup64: from the start of the command to the first call, with 64 workers
    STARTUP64_VARIANTS = ["clum-64", "clum-2", "pool-64", "serial"]

    def startup64_rep(self, rep):
        n = self.size["FIRST_N"]
        for _ in range(self.size["STARTUP64_SAMPLES"]):
            for variant in self.STARTUP64_VARIANTS:
                first_file = self.fresh_path("first-call")
                env = dict(self.env, FIRST_CALL_FILE=first_file)
                journal = None
                if variant.startswith("clum-"):
                    cmd, journal = self.clum_cmd("first_call", processes=int(variant[len("clum-"):]))
                elif variant == "pool-64":
                    env["BENCH_PROCESSES"] = "64"
                    cmd = [self.py, os.path.join(HERE, "runners.py"), "pool-1", self.script("first_call")]
                else:
                    cmd = [self.py, os.path.join(HERE, "runners.py"), "serial", self.script("first_call")]
                journal_check = self.journal_check(journal, n) if journal else None

                def check(sample, first_file=first_file, journal_check=journal_check):
                    try:
                        with open(first_file) as f:
                            sample.info["first_call"] = round(float(f.read()) - sample.start, 4)
                        os.unlink(first_file)
                    except (FileNotFoundError, ValueError):
                        return "no first call recorded in FIRST_CALL_FILE"
                    return journal_check(sample) if journal_check else None

                self.run_variant("startup64", variant, cmd, env, rep, check=check)

    # results: what --results OUT.jsonl costs, against the same run without it and a hand-written Pool
    def results_variants(self, workload):
        """The results section's runs of one workload, in the order they run: clum without values,
        with --results OUT.jsonl (and OUT.pkl on tiny), and Pool.imap writing JSON lines."""
        return (["clum", "clum-jsonl"] + (["clum-pkl"] if workload in RESULTS_PKL_WORKLOADS else [])
                + [f"pool-jsonl-{c}" for c in RESULTS_POOL_CHUNKSIZES[workload]])

    def results_rep(self, rep):
        has = self.clum_has("--results")
        sizes = {"tiny": self.size["TINY_N"], "ms": self.size["MS_N"]}
        for _ in range(self.size["RESULTS_SAMPLES"]):
            for workload in RESULTS_WORKLOADS:
                n = sizes[workload]
                for variant in self.results_variants(workload):
                    key = results_variant(workload, variant)
                    if variant in ("clum-jsonl", "clum-pkl") and not has:
                        self.skip[("results", key)] = "n/a: this clum has no --results (clum --help)"
                        continue
                    fmt = "pkl" if variant == "clum-pkl" else "jsonl"
                    out = self.fresh_path("results") + "." + fmt
                    journal_check = None
                    if variant.startswith("clum"):
                        cmd, journal = self.clum_cmd(workload, *(["--results", out] if variant != "clum" else []))
                        journal_check = self.journal_check(journal, n)
                    else:
                        cmd = [self.py, os.path.join(HERE, "runners.py"), variant, self.script(workload), out]

                    def check(sample, out=out, fmt=fmt, n=n, writes=variant != "clum", journal_check=journal_check):
                        if writes:
                            if not os.path.exists(out):
                                return f"wrote no file {out}"
                            records = count_records(out, fmt)
                            sample.info["results_lines"] = records
                            sample.info["results_mib"] = round(os.path.getsize(out) / 2**20, 1)
                            os.unlink(out)
                            if records != n:
                                return f"wrong count: {records:,} records in {out}, expected {n:,}"
                        return journal_check(sample) if journal_check else None

                    self.run_variant("results", key, cmd, self.env, rep, check=check)

    # map: cluster_func.map, Pool.map and joblib, each returning the list of values
    def map_rep(self, rep):
        for workload in MAP_WORKLOADS:
            n = self.expected[workload]
            for runner in MAP_RUNNERS:
                if workload == "tiny" and runner == "poolmap-1":
                    self.skip.setdefault(("map", f"{workload}/{runner}"),
                                         "not run: chunksize 1 on 2,000,000 calls reaches any time limit (table 1)")
                    continue
                count_file = self.fresh_path("map-count")
                env = dict(self.env, BENCH_COUNT_FILE=count_file)
                cmd = [self.py, os.path.join(HERE, "runners.py"), runner, self.script(workload)]

                def check(sample, count_file=count_file, n=n):
                    try:
                        with open(count_file) as f:
                            got = int(f.read())
                        os.unlink(count_file)
                    except (FileNotFoundError, ValueError):
                        return "no count of values written"
                    return None if got == n else f"wrong count: {got} values, expected {n}"

                self.run_variant("map", f"{workload}/{runner}", cmd, env, rep, check=check)

    # --- IterableQueue -------------------------------------------------------------------
    def queue_section(self):
        path = os.path.join(HERE, "queue_bench.py")
        if not os.path.exists(path):
            self.sections["queue"] = {"notice": "benchmarks/queue_bench.py is not there yet: no IterableQueue table."}
            return
        log("benchmarks: IterableQueue (queue_bench.run) ...")
        t0 = time.monotonic()
        try:
            spec = importlib.util.spec_from_file_location("queue_bench", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules["queue_bench"] = module
            spec.loader.exec_module(module)
            import inspect
            kwargs = {"quick": self.quick}
            if "log" in inspect.signature(module.run).parameters:
                kwargs["log"] = lambda text: log("  queue: " + text)
            rows = module.run(**kwargs)
            self.sections["queue"] = {"rows": [dict(r) for r in rows], "seconds": time.monotonic() - t0}
        except Exception as e:  # noqa: BLE001 - the other tables still count
            import traceback
            self.sections["queue"] = {"notice": f"queue_bench.run failed: {type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc()}
            self.problems.append(f"queue_bench.run(quick={self.quick}) raised:\n{traceback.format_exc()}")

    # --- cluf --wait ----------------------------------------------------------------------
    def wait_section(self):
        """benchmarks/wait_bench.py: one cluf --wait poll of a fake 10,000-bin run."""
        log("benchmarks: cluf --wait (wait_bench.run) ...")
        t0 = time.monotonic()
        try:
            spec = importlib.util.spec_from_file_location("wait_bench", os.path.join(HERE, "wait_bench.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            rows = module.run(quick=self.quick, log=lambda text: log("  wait: " + text))
            ok, text = module.verdict(rows)
            self.sections["wait"] = {"rows": rows, "verdict": [ok, text], "seconds": time.monotonic() - t0}
        except Exception as e:  # noqa: BLE001 - the other tables still count
            import traceback
            self.sections["wait"] = {"notice": f"wait_bench.run failed: {type(e).__name__}: {e}"}
            self.problems.append(f"wait_bench.run(quick={self.quick}) raised:\n{traceback.format_exc()}")

    # --- continuations at scale --------------------------------------------------------
    def continue_section(self):
        """benchmarks/continuation_bench.py: 10,000 bins continuing at the same moment."""
        log("benchmarks: continuations (continuation_bench.run) ...")
        t0 = time.monotonic()
        try:
            spec = importlib.util.spec_from_file_location("continuation_bench",
                                                          os.path.join(HERE, "continuation_bench.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            rows = module.run(quick=self.quick, log=lambda text: log("  continue: " + text))
            ok, text = module.verdict(rows)
            self.sections["continue"] = {"rows": rows, "verdict": [ok, text], "seconds": time.monotonic() - t0}
        except Exception as e:  # noqa: BLE001 - the other tables still count
            import traceback
            self.sections["continue"] = {"notice": f"continuation_bench.run failed: {type(e).__name__}: {e}"}
            self.problems.append(f"continuation_bench.run(quick={self.quick}) raised:\n{traceback.format_exc()}")

    # --- cluf ----------------------------------------------------------------------------
    def cluf_section(self):
        cluf = os.path.join(self.bin, "cluf")
        probe = subprocess.run([cluf, "--help"], env=self.env, capture_output=True, text=True) \
            if os.path.exists(cluf) else None
        if probe is None or probe.returncode != 0:
            why = (probe.stderr.strip().splitlines() or ["?"])[-1] if probe is not None else "no cluf command"
            self.sections["cluf"] = {"notice": f"cluf not available ({why})"}
            log("benchmarks: cluf not available")
            return
        log("benchmarks: cluf ...")
        jobs = os.path.join(self.tmp, "jobs")
        nodes = self.size["CLUF_NODES"]
        rows = []

        def one(label, cmd, env, reps):
            samples, written = [], None
            for _ in range(reps):
                shutil.rmtree(jobs, ignore_errors=True)
                os.makedirs(jobs)
                s = measure(cmd, env, self.tmp, self.opts.timeout)
                written = len(os.listdir(jobs))
                samples.append(s)
                log(f"  {label}: {s.wall if s.wall is None else round(s.wall, 3)} s, "
                    f"{(s.peak_kb or 0) / 1024:.0f} MiB, {written} files{'  ' + s.note if s.note else ''}")
                if not s.ok:
                    self.problems.append(f"cluf: {label}: {s.note}\n    command: {' '.join(cmd)}")
                    break
            rows.append({"task": label, "samples": [s.to_json() for s in samples], "files": written,
                         "command": " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)})

        reps = max(1, self.opts.reps)
        one(f"-q -n {nodes}: write {nodes} job scripts",
            [cluf, self.script("tiny"), "-n", str(nodes), "-q", "-j", jobs], self.env, reps)
        for n_key in ("COUNT_N", "COUNT_SMALL_N"):
            n = self.size[n_key]
            env = dict(self.env, COUNT_N=str(n))
            one(f"-q -i {n // 10}: count {n:,} generator elements (10 jobs)",
                [cluf, self.script("count"), "-i", str(n // 10), "-q", "-j", jobs], env, reps)
        self.sections["cluf"] = {"rows": rows}


def results_variant(workload, variant):
    return f"{workload} {variant}"


def count_records(path, fmt):
    """The records in a results file: its lines (.jsonl) or its pickles (.pkl)."""
    with open(path, "rb") as f:
        if fmt == "jsonl":
            return sum(1 for line in f if line.strip())
        import pickle
        n = 0
        while True:
            try:
                pickle.load(f)
            except EOFError:
                return n
            n += 1


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def journal_done(path):
    """How many calls the journal records as completed: the sum of the counts of the positions of
    its "ok" records (other lines ignored); the last "end" record's 'done' if it has no "ok" record
    at all; None if there is no journal."""
    counts = journal_counts(path)
    if counts is None:
        return None
    return counts["ok_sum"] if counts["ok_records"] else counts["end_done"]


def _position_runs(pos):
    """An "ok" record's pos as (first, count, step) runs: [[first, count, step], ...], tolerating a
    bare position or [first, count] runs."""
    if isinstance(pos, int) and not isinstance(pos, bool):
        return [(pos, 1, 1)]
    runs = []
    if isinstance(pos, list):
        for run in pos:
            if isinstance(run, int) and not isinstance(run, bool):
                runs.append((run, 1, 1))
            elif isinstance(run, (list, tuple)) and len(run) >= 2 and all(isinstance(x, int) for x in run[:3]):
                runs.append((run[0], run[1], run[2] if len(run) > 2 else 1))
    return runs


def journal_counts(path, n=None):
    """What a journal (format 1 or 2, or anything with {"t": "ok", "pos": [[first, count, step], ...]}
    lines) says was completed, in all the runs it holds; None if there is no journal.

    ok_sum: the sum of the counts over all "ok" records; covered: distinct positions among them
    (ok_sum - covered were recorded twice); with n, in_range: distinct positions in 0..n-1 and
    outside: the others; last_run: the count recorded after the last "start" (what the last run,
    e.g. a resumed one, ran itself); end_done: the last "end" record's done."""
    ok_sum = ok_records = last_run = runs = 0
    end_done = None
    intervals = []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            t = rec.get("t")
            if t == "start":
                runs += 1
                last_run = 0
            elif t == "end":
                end_done = rec.get("done")
            elif t == "ok":
                ok_records += 1
                for first, count, step in _position_runs(rec.get("pos")):
                    if count <= 0:
                        continue
                    ok_sum += count
                    last_run += count
                    if step == 1:
                        intervals.append((first, first + count))
                    else:
                        intervals.extend((p, p + 1) for p in range(first, first + count * step, step))
    merged = []  # disjoint [lo, hi) intervals
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    covered = sum(hi - lo for lo, hi in merged)
    out = {"ok_sum": ok_sum, "ok_records": ok_records, "covered": covered, "last_run": last_run, "runs": runs,
           "end_done": end_done}
    if n is not None:
        out["in_range"] = sum(max(0, min(hi, n) - max(lo, 0)) for lo, hi in merged)
        out["outside"] = covered - out["in_range"]
    return out


# --- reporting ---------------------------------------------------------------------------------
def median(samples):
    walls = [s.wall for s in samples if s.ok and s.wall is not None]
    return statistics.median(walls) if walls else None


def peak_mib(samples):
    peaks = [s.peak_kb for s in samples if s.ok and s.peak_kb]
    return max(peaks) / 1024 if peaks else None


def fmt_s(x):
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def fmt_x(x):
    return "-" if x is None else f"{x:.2f}x"


def fmt_mib(x):
    return "-" if x is None else f"{x:.0f}"


def table(headers, rows, align=None):
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def machine_header(bench):
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    versions = []
    from importlib import metadata
    for dist in ("cluster-func", "joblib", "mpire", "iterable-queue"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (missing)")
    commit = "?"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " + uncommitted changes"
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0))
    parallel = bench.parallel_bin and subprocess.run([bench.parallel_bin, "--version"], capture_output=True,
                                                      text=True).stdout.splitlines()[0]
    return (f"Machine: {nproc} CPUs (nproc), {model}, {mem} RAM; Python {platform.python_version()}; "
            f"{platform.system()} {platform.release()}; "
            f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
            f"Versions: {', '.join(versions)}, {parallel or 'GNU parallel not installed'}; "
            f"project commit {commit}")


def report(bench, elapsed):
    o = bench.opts
    size = bench.size
    res = bench.results
    lines = [f"# cluster-func benchmarks{' (--quick)' if o.quick else ''}", "",
             machine_header(bench), "",
             f"Repetitions: {o.reps} (median shown); order: for rep, for workload, for runner. "
             f"Every runner is a separate command, timed as a whole (interpreter start-up included) "
             f"with {PROCESSES} processes. Peak memory: the largest single process's peak RSS "
             + ("(GNU time %M: max RSS over the command and its waited-for children)."
                if TIME_BIN else "(psutil, sampling the process tree every 20 ms)."),
             f"Full run took {elapsed:.0f} s.", "", contention_summary(bench),
             "The 'other load' column is the largest over a row's runs.", ""]
    verdict = []

    # ---- table 1
    if any(w in o.only for w in MAIN_WORKLOADS):
        lines += ["## 1. clum against the alternatives", ""]
        sizes = {"tiny": f"{size['TINY_N']:,} calls of `return x`",
                 "skewed": f"{size['SKEWED_N']:,} calls, last 1% 200x dearer",
                 "cpu": f"{size['CPU_N']:,} calls of ~10 ms pure Python",
                 "stream": f"generator of {size['STREAM_N']:,} (i, 64-char str) tuples",
                 "files": f"{size['FILES_N']:,} small files read, counted, written"}
        for w in MAIN_WORKLOADS:
            if w not in o.only:
                continue
            serial = median(res.get((w, "serial"), []))
            clum = median(res.get((w, "clum"), []))
            rows = []
            for r in RUNNERS:
                samples = res.get((w, r), [])
                note = bench.skip.get((w, r), "")
                m = median(samples)
                label = RUNNER_LABELS[r]
                shown = m
                lo, hi = min_wall(samples), max_wall(samples)
                if r == "parallel" and m is not None:
                    path, n, k = bench.parallel_slices[w]
                    shown, lo, hi = m * n / k, lo * n / k, hi * n / k
                    label += " (extrapolated)"
                    note = (f"measured {k} of {n:,} elements (spread evenly): {m:.3f} s; "
                            f"time x {n / k:,.0f}" + (f"; {note}" if note else ""))
                if not samples and not note:
                    continue
                if samples and not any(s.ok for s in samples):
                    note = samples[-1].note
                limit = next((s.timed_out for s in samples if s.timed_out), None)
                if m is None and limit:
                    rows.append([label, f"> {limit:g}", "-",
                                 f"> {limit / serial:.0f}x" if serial else "-",
                                 f"> {limit / clum:.0f}x" if clum else "-", "-", 0, fmt_other(samples), note])
                    continue
                rows.append([label, ("≈" if r == "parallel" and shown is not None else "") + fmt_s(shown),
                             f"{fmt_s(lo)}–{fmt_s(hi)}" if m is not None else "-",
                             fmt_x(shown / serial if shown is not None and serial else None),
                             fmt_x(shown / clum if shown is not None and clum else None),
                             fmt_mib(peak_mib(samples)), len([s for s in samples if s.ok]),
                             fmt_other(samples), note])
            lines += [f"### {w}: {sizes[w]}", "",
                      table(["runner", "median s", "min–max s", "÷ serial", "÷ clum", "peak MiB", "reps",
                             "other load", "note"],
                            rows, ["l", "r", "r", "r", "r", "r", "r", "r", "l"]), ""]
            if w in ("tiny", "skewed", "cpu"):
                pools = [(median(res.get((w, f"pool-{c}"), [])), c) for c in POOL_CHUNKSIZES]
                pools = [(m, c) for m, c in pools if m is not None]
                best = min(pools) if pools else None
                if clum is not None and best:
                    ok = clum <= FIG_BEST_POOL_FACTOR * best[0]
                    verdict.append((ok, f"`{w}`: clum {clum:.3f} s ≤ {FIG_BEST_POOL_FACTOR}x best Pool "
                                        f"(chunksize {best[1]}: {best[0]:.3f} s, limit "
                                        f"{FIG_BEST_POOL_FACTOR * best[0]:.3f} s); ratio {clum / best[0]:.2f}x"))
                else:
                    verdict.append((None, f"`{w}`: clum vs best Pool: not measured"))
                jl, mp = median(res.get((w, "joblib"), [])), median(res.get((w, "mpire"), []))
                if clum is not None and jl is not None and mp is not None:
                    verdict.append((clum < jl and clum < mp,
                                    f"`{w}`: clum {clum:.3f} s beats joblib {jl:.3f} s and mpire {mp:.3f} s"))
                else:
                    verdict.append((None, f"`{w}`: clum vs joblib and mpire: not measured"))

    # ---- stream memory
    if "stream" in o.only:
        rows = []
        for r in RUNNERS:
            small, big = peak_mib(res.get(("stream-small", r), [])), peak_mib(res.get(("stream", r), []))
            if small is None and big is None:
                continue
            rows.append([RUNNER_LABELS[r], fmt_mib(small), fmt_mib(big),
                         fmt_x(big / small if small and big else None)])
        lines += [f"### stream memory: peak RSS of the largest process at {size['STREAM_SMALL_N']:,} and "
                  f"{size['STREAM_N']:,} elements", "",
                  table(["runner", f"peak MiB @ {size['STREAM_SMALL_N']:,}", f"peak MiB @ {size['STREAM_N']:,}",
                         "ratio"], rows), ""]
        small, big = peak_mib(res.get(("stream-small", "clum"), [])), peak_mib(res.get(("stream", "clum"), []))
        if small and big:
            verdict.append((big <= FIG_STREAM_FLAT * small,
                            f"`stream`: clum peak {big:.1f} MiB at {size['STREAM_N']:,} within 10% of "
                            f"{small:.1f} MiB at {size['STREAM_SMALL_N']:,} (ratio {big / small:.3f})"))
        else:
            verdict.append((None, "`stream`: clum memory: not measured"))

    # ---- start-up
    if "startup" in o.only:
        s, c = res.get(("startup", "serial"), []), res.get(("startup", "clum"), [])
        ms, mc = median(s), median(c)
        rows = [["serial loop: python runners.py serial startup", fmt_s(ms), fmt_mib(peak_mib(s)), len(s)],
                ["clum startup.py -p 2", fmt_s(mc), fmt_mib(peak_mib(c)), len(c)]]
        lines += ["## Start-up: a one-call script", "",
                  table(["command", "median s", "peak MiB", "samples"], rows), ""]
        if ms is not None and mc is not None:
            lines += [f"clum adds {1000 * (mc - ms):.0f} ms over the serial loop.", ""]
            verdict.append((mc - ms <= FIG_STARTUP_S,
                            f"start-up: clum adds {1000 * (mc - ms):.0f} ms over a serial loop "
                            f"({mc:.3f} s vs {ms:.3f} s; limit {1000 * FIG_STARTUP_S:.0f} ms)"))
        else:
            verdict.append((None, "start-up: not measured"))

    # ---- large arguments
    if "large" in o.only:
        report_large(bench, lines, verdict)

    # ---- resume
    if "resume" in o.only:
        report_resume(bench, lines, verdict)

    # ---- import
    if "import" in o.only:
        report_import(bench, lines, verdict)

    # ---- startup64
    if "startup64" in o.only:
        report_startup64(bench, lines, verdict)

    # ---- results
    if "results" in o.only:
        report_results(bench, lines, verdict)

    # ---- map
    if "map" in o.only:
        report_map(bench, lines, verdict)

    # ---- queue
    if "queue" in o.only:
        q = bench.sections.get("queue", {})
        lines += ["## 2. IterableQueue: items a second, 2 producers and 2 consumers", ""]
        if q.get("rows"):
            rows = q["rows"]
            keys = []
            for r in rows:
                for k in r:
                    if k not in keys:
                        keys.append(k)
            lines += [table(keys, [[fmt_cell(r.get(k)) for k in keys] for r in rows]), "",
                      f"(queue_bench.run took {q['seconds']:.0f} s)", ""]
        else:
            lines += [q.get("notice", "not run"), ""]

    # ---- cluf
    if "cluf" in o.only:
        c = bench.sections.get("cluf", {})
        lines += ["## 3. cluf: writing job scripts and counting elements", ""]
        if c.get("rows"):
            rows = []
            for r in c["rows"]:
                ss = [Sample(**s) for s in r["samples"]]
                note = "; ".join(s.note for s in ss if s.note)
                rows.append([r["task"], fmt_s(median(ss)), fmt_mib(peak_mib(ss)), r["files"],
                             len([s for s in ss if s.ok]), f"`{r['command']}`" + (f" {note}" if note else "")])
            lines += [table(["task", "median s", "peak MiB", "files in -j dir", "reps", "command"], rows,
                            ["l", "r", "r", "r", "r", "l"]), ""]
            write = c["rows"][0]
            mw = median([Sample(**s) for s in write["samples"]])
            verdict.append((mw is not None and mw < FIG_CLUF_N_S,
                            f"cluf -q -n {size['CLUF_NODES']}: {fmt_s(mw)} s (limit {FIG_CLUF_N_S:g} s), "
                            f"{write['files']} files written"))
            big = peak_mib([Sample(**s) for s in c["rows"][1]["samples"]])
            small = peak_mib([Sample(**s) for s in c["rows"][2]["samples"]])
            if big and small:
                verdict.append((big <= FIG_CLUF_I_FLAT * small,
                                f"cluf -i: peak {big:.1f} MiB counting {size['COUNT_N']:,} vs {small:.1f} MiB "
                                f"counting {size['COUNT_SMALL_N']:,} (ratio {big / small:.3f}; flat = not holding "
                                f"the elements)"))
            else:
                verdict.append((False, "cluf -i: did not run (see the table)"))
        else:
            lines += [c.get("notice", "not run"), ""]
            verdict.append((None, f"cluf: {c.get('notice', 'not run')}"))

    # ---- cluf --wait
    if "wait" in o.only:
        w = bench.sections.get("wait", {})
        lines += ["## 4. cluf --wait: the cost of one poll (benchmarks/wait_bench.py)", ""]
        if w.get("rows"):
            lines += [table(["what", "seconds", "note"], [[r["what"].strip(), f"{r['seconds']:.3f}", r["note"]]
                                                          for r in w["rows"]], ["l", "r", "l"]), "",
                      f"(wait_bench.run took {w['seconds']:.0f} s)", ""]
            verdict.append(tuple(w["verdict"]))
        else:
            lines += [w.get("notice", "not run"), ""]
            verdict.append((False, f"cluf --wait: {w.get('notice', 'not run')}"))

    # ---- continuations at scale
    if "continue" in o.only:
        w = bench.sections.get("continue", {})
        lines += ["## 5. Bins continuing at the same moment (benchmarks/continuation_bench.py)", ""]
        if w.get("rows"):
            lines += [table(["what", "seconds", "note"], [[r["what"].strip(), f"{r['seconds']:.4f}", r["note"]]
                                                          for r in w["rows"]], ["l", "r", "l"]), "",
                      f"(continuation_bench.run took {w['seconds']:.0f} s)", ""]
            verdict.append(tuple(w["verdict"]))
        else:
            lines += [w.get("notice", "not run"), ""]
            verdict.append((False, f"continuations: {w.get('notice', 'not run')}"))

    # ---- verdict
    lines += ["## Verdict: the issue's figures", ""]
    for ok, text in verdict:
        lines.append(f"- {'PASS' if ok else 'FAIL' if ok is False else 'n/a '}: {text}")
    if o.quick:
        lines += ["", "(--quick: small sizes and 1 repetition; the figures are for the full run.)"]
    if bench.problems:
        lines += ["", "## Problems seen", ""]
        for p in bench.problems:
            lines += ["```", p.rstrip(), "```"]
    lines.append("")
    return "\n".join(lines)


def info_values(samples, key):
    return [s.info[key] for s in samples if s.ok and s.info.get(key) is not None]


def median_info(samples, key):
    v = info_values(samples, key)
    return statistics.median(v) if v else None


def fmt_range(lo, hi):
    return "-" if lo is None else f"{fmt_s(lo)}–{fmt_s(hi)}"


def row_note(bench, key, samples):
    """Why a row has no (or fewer) numbers: a failure, a skip, n/a."""
    note = bench.skip.get(key, "")
    if samples and not any(s.ok for s in samples):
        note = samples[-1].note
    limit = next((s.timed_out for s in samples if s.timed_out), None)
    if limit and not any(s.ok for s in samples):
        note = f"stopped at the {limit:g} s limit (--timeout)"
    return note


def not_measured(bench, keys, text):
    """A verdict line for a figure with no number: FAIL when one of its runs failed (a crash, a wrong
    count, the time limit: see "Problems seen"), n/a when it was not run (e.g. an option clum lacks)."""
    for key in keys:
        samples = bench.results.get(key, [])
        if samples and not any(s.ok for s in samples):
            return (False, f"{text}: {key[1]} failed: {samples[-1].note}"[:400])
    why = next((bench.skip[k] for k in keys if k in bench.skip), "not measured")
    return (None, f"{text}: {why}")


def na_or(text, note):
    return "n/a" if note.startswith("n/a") else text


def report_large(bench, lines, verdict):
    size, res = bench.size, bench.results
    pools = [(median(res.get(("large", f"pool-{c}"), [])), c) for c in (1, 10, 100)]
    pools = [(m, c) for m, c in pools if m is not None]
    best = min(pools) if pools else None
    clum = median(res.get(("large", "clum"), []))
    rows = []
    for r in LARGE_RUNNERS:
        samples = res.get(("large", r), [])
        note = row_note(bench, ("large", r), samples)
        if not samples and not note:
            continue
        m = median(samples)
        rows.append([RUNNER_LABELS[r], fmt_s(m), fmt_range(min_wall(samples), max_wall(samples)),
                     fmt_x(m / best[0] if m is not None and best else None),
                     fmt_x(m / clum if m is not None and clum else None),
                     fmt_mib(peak_mib(samples)), len([s for s in samples if s.ok]), fmt_other(samples), note])
    lines += [f"## Large arguments: {size['LARGE_N']:,} distinct `bytes` of {size['LARGE_BYTES']:,} bytes "
              f"(`large.py`, a generator), `target` takes the length", "",
              table(["runner", "median s", "min–max s", "÷ best Pool", "÷ clum", "peak MiB", "reps", "other load",
                     "note"], rows, ["l", "r", "r", "r", "r", "r", "r", "r", "l"]), "",
              f"{size['LARGE_N'] * size['LARGE_BYTES'] / 1e9:.1f} GB cross to the workers; the serial loop "
              f"shows what making the arguments costs. Chunksizes above 100 leave a worker idle on "
              f"{size['LARGE_N']:,} elements.", ""]
    if clum is not None and best:
        verdict.append((clum <= FIG_BEST_POOL_FACTOR * best[0],
                        f"`large`: clum {clum:.3f} s ≤ {FIG_BEST_POOL_FACTOR}x best Pool (chunksize {best[1]}: "
                        f"{best[0]:.3f} s, limit {FIG_BEST_POOL_FACTOR * best[0]:.3f} s); ratio "
                        f"{clum / best[0]:.2f}x"))
    else:
        verdict.append(not_measured(bench, [("large", "clum")], "`large`: clum vs best Pool"))


def report_resume(bench, lines, verdict):
    size, res = bench.size, bench.results
    n = size["TINY_N"]
    fresh = median(res.get(("resume", "fresh"), []))
    labels = {
        "setup-half": (f"(setup, once) complete run over the first half, TINY_N={n // 2:,}",
                       "clum tiny.py -p 2 --quiet --journal J2"),
        "fresh": ("(a) fresh run", "clum tiny.py -p 2 --quiet --journal J"),
        "resume-all": ("(b) --resume, every call completed", "... --journal copy-of-(a)'s-J --resume"),
        "resume-half": ("(c) --resume, first half completed", "... --journal copy-of-J2 --resume"),
    }
    rows = []
    for v, (label, cmd) in labels.items():
        samples = res.get(("resume", v), [])
        note = row_note(bench, ("resume", v), samples)
        m = median(samples)
        rows.append([label, f"`{cmd}`", fmt_s(m), fmt_range(min_wall(samples), max_wall(samples)),
                     fmt_x(m / fresh if m is not None and fresh else None),
                     fmt_count(median_info(samples, "journal_calls")),
                     fmt_count(median_info(samples, "this_run_ran")),
                     len([s for s in samples if s.ok]), fmt_other(samples), note])
    lines += [f"## Resume: the journal's cost on `tiny` ({n:,} calls of `return x`)", "",
              table(["run", "command", "median s", "min–max s", "÷ (a)", "journal: calls accounted for",
                     "calls the run itself ran", "samples", "other load", "note"], rows,
                    ["l", "l", "r", "r", "r", "r", "r", "r", "r", "l"]), "",
              "Interleaved: (a), (b), (c) in turn, "
              f"{size['RESUME_SAMPLES']} times a repetition. 'Calls accounted for': distinct positions 0..N-1 "
              "in the journal's `ok` records over all its runs (the check: all N); 'ran itself': those "
              "recorded after the resumed run's `start`.", ""]
    for v in ("resume-all", "resume-half"):
        said = next((s.stderr for s in res.get(("resume", v), []) if s.stderr is not None), None)
        if said is not None:
            text = said.strip() or "(nothing)"
            lines += [f"What {labels[v][0][:3]} says on stderr (first sample):", "", "```", text, "```", ""]
    for v, limit in (("resume-all", FIG_RESUME_ALL), ("resume-half", FIG_RESUME_HALF)):
        m = median(res.get(("resume", v), []))
        label = labels[v][0]
        if m is not None and fresh:
            verdict.append((m <= limit * fresh, f"`resume` {label}: {m:.3f} s ≤ {limit}x the fresh run "
                                                f"({fresh:.3f} s, limit {limit * fresh:.3f} s); ratio "
                                                f"{m / fresh:.3f}x"))
        else:
            needs = ["fresh"] + (["setup-half"] if v == "resume-half" else []) + [v]
            verdict.append(not_measured(bench, [("resume", k) for k in needs], f"`resume` {label}"))


def report_import(bench, lines, verdict):
    size, res = bench.size, bench.results
    data = size["IMPORT_BYTES"]
    limit_kb = (data + FIG_IMPORT_EXTRA) / 1024
    labels = {"clum": "clum import_heavy.py -p 2", "clum-spawn": "clum import_heavy.py -p 2 --start-method spawn",
              "pool-10": "multiprocessing.Pool(2) (fork), imap_unordered chunksize 10"}
    rows = []
    for v in Bench.IMPORT_VARIANTS:
        samples = res.get(("import", v), [])
        note = row_note(bench, ("import", v), samples)
        pss = info_values(samples, "pss_kb")
        rss = info_values(samples, "rss_sum_kb")
        top = info_values(samples, "toplevel")
        procs = info_values(samples, "procs")
        na = note.startswith("n/a")
        rows.append([labels[v], "n/a" if na else fmt_mib(max(pss) / 1024 if pss else None),
                     "n/a" if na else fmt_mib(max(rss) / 1024 if rss else None),
                     "n/a" if na else (max(procs) if procs else "-"),
                     "n/a" if na else ("-" if not top else str(top[0]) if min(top) == max(top)
                                       else f"{min(top)}–{max(top)}"),
                     "n/a" if na else fmt_s(median(samples)), len([s for s in samples if s.ok]), note])
    lines += [f"## Import: a script that allocates {data / GIB:g} GiB at its top level (`import_heavy.py`, "
              f"{size['IMPORT_N']} calls)", "",
              table(["runner", "peak summed PSS MiB", "peak summed RSS MiB", "processes at the PSS peak",
                     "top level ran", "median s", "reps", "note"], rows, ["l", "r", "r", "r", "r", "r", "r", "l"]), "",
              "PSS (psutil `memory_full_info().pss`) and RSS summed over the command's whole process tree, "
              "sampled every 20 ms (largest sum over the reps); a page shared by k processes counts 1/k in "
              "each one's PSS, so the summed PSS is the memory the tree really holds, while the summed RSS counts "
              "a shared page once per process. 'Top level ran': lines the script appended to "
              "IMPORT_COUNT_FILE. The time includes the sampling's load.", ""]
    samples = res.get(("import", "clum"), [])
    pss, top = info_values(samples, "pss_kb"), info_values(samples, "toplevel")
    if pss and top:
        peak = max(pss)
        verdict.append((peak <= limit_kb and max(top) == 1,
                        f"`import`: clum's summed PSS {peak / 1024 / 1024:.2f} GiB ({peak * 1024 / 1e9:.2f} GB) ≤ "
                        f"{limit_kb * 1024 / 1e9:.2f} GB (the {data / GIB:g} GiB of data + "
                        f"{FIG_IMPORT_EXTRA / 1e6:.0f} MB), and the top level ran once: it ran "
                        f"{max(top)} time{'s' if max(top) != 1 else ''}"
                        + (f" (data ratio {peak * 1024 / data:.2f}x)" if data else "")))
    else:
        verdict.append(not_measured(bench, [("import", "clum")], "`import`: clum's summed PSS"))


def report_startup64(bench, lines, verdict):
    size, res = bench.size, bench.results
    labels = {"clum-64": "clum first_call.py -p 64", "clum-2": "clum first_call.py -p 2",
              "pool-64": "multiprocessing.Pool(64) (fork), chunksize 1",
              "serial": "serial loop (one process)"}
    rows = []
    for v in Bench.STARTUP64_VARIANTS:
        samples = res.get(("startup64", v), [])
        note = row_note(bench, ("startup64", v), samples)
        first = info_values(samples, "first_call")
        rows.append([labels[v], fmt_s(statistics.median(first) if first else None),
                     fmt_range(min(first) if first else None, max(first) if first else None),
                     fmt_s(median(samples)), fmt_range(min_wall(samples), max_wall(samples)),
                     len([s for s in samples if s.ok]), fmt_other(samples), note])
    lines += [f"## Start-up with 64 workers: time to the first call ({size['FIRST_N']} calls of ~1 ms, "
              f"`first_call.py`)", "",
              table(["command", "first call s (median)", "min–max s", "total s (median)", "min–max s",
                     "samples", "other load", "note"], rows, ["l", "r", "r", "r", "r", "r", "r", "l"]), "",
              "First call: the wall-clock time the first call overall wrote to FIRST_CALL_FILE (O_CREAT|O_EXCL) "
              "less the time taken just before the command was started; both include the interpreter's "
              f"start-up. {size['STARTUP64_SAMPLES']} samples of each a repetition, interleaved.", ""]
    first = info_values(res.get(("startup64", "clum-64"), []), "first_call")
    if first:
        m = statistics.median(first)
        verdict.append((m <= FIG_FIRST_CALL_S, f"`startup64`: clum -p 64 makes its first call {m:.3f} s after "
                                               f"the start (limit {FIG_FIRST_CALL_S:g} s)"))
    else:
        verdict.append(not_measured(bench, [("startup64", "clum-64")], "`startup64`: clum -p 64"))


def report_results(bench, lines, verdict):
    size, res = bench.size, bench.results
    sizes = {"tiny": f"`tiny`: {size['TINY_N']:,} calls of `return x`",
             "ms": f"`ms`: {size['MS_N']:,} calls of ~1 ms returning a float"}
    labels = {"clum": "clum -p 2 (no values)", "clum-jsonl": "clum -p 2 --results OUT.jsonl",
              "clum-pkl": "clum -p 2 --results OUT.pkl",
              **{f"pool-jsonl-{c}": f"Pool(2).imap chunksize {c} + JSON lines"
                 for cs in RESULTS_POOL_CHUNKSIZES.values() for c in cs}}
    figures = {}  # workload -> (without, with --results, best Pool + JSON lines (median, chunksize))
    lines += ["## Results: the cost of `--results OUT`", ""]
    for w in RESULTS_WORKLOADS:
        get = lambda v, w=w: res.get(("results", results_variant(w, v)), [])  # noqa: E731
        pools = [(median(get(f"pool-jsonl-{c}")), c) for c in RESULTS_POOL_CHUNKSIZES[w]]
        pools = [(m, c) for m, c in pools if m is not None]
        best = min(pools) if pools else None
        without = median(get("clum"))
        figures[w] = (without, median(get("clum-jsonl")), best)
        rows = []
        for v in bench.results_variants(w):
            samples = get(v)
            note = row_note(bench, ("results", results_variant(w, v)), samples)
            if not samples and not note:
                continue
            m = median(samples)
            label = labels[v] + (" (best)" if best and v == f"pool-jsonl-{best[1]}" and len(pools) > 1 else "")
            rows.append([label, na_or(fmt_s(m), note), na_or(fmt_range(min_wall(samples), max_wall(samples)), note),
                         na_or(fmt_x(m / without if m is not None and without else None), note),
                         na_or(fmt_x(m / best[0] if m is not None and best else None), note),
                         "-" if v == "clum" else na_or(fmt_count(median_info(samples, "results_lines")), note),
                         "-" if v == "clum" else na_or(fmt_cell(median_info(samples, "results_mib")), note),
                         len([s for s in samples if s.ok]), fmt_other(samples), note])
        lines += [f"### {sizes[w]}", "",
                  table(["runner", "median s", "min–max s", "÷ clum without", "÷ best Pool + JSON lines",
                         "records in OUT", "OUT MiB", "samples", "other load", "note"], rows,
                        ["l", "r", "r", "r", "r", "r", "r", "r", "r", "l"]), ""]
    summary = []
    for w, (without, with_, best) in figures.items():
        parts = []
        if without and with_ is not None:
            parts.append(f"with --results ÷ without {with_ / without:.2f}x")
        if best and with_ is not None:
            parts.append(f"with --results ÷ Pool + JSON lines (chunksize {best[1]}) {with_ / best[0]:.2f}x")
        if parts:
            summary.append(f"`{w}`: " + "; ".join(parts) + ".")
    pool_chunks = "; ".join(f"`{w}` {' and '.join(map(str, cs))}" for w, cs in RESULTS_POOL_CHUNKSIZES.items())
    lines += [" ".join(summary), "",
              f"`clum W -p 2 --quiet --journal J` without values, with `--results OUT.jsonl`"
              f"{' and (on ' + ', '.join(RESULTS_PKL_WORKLOADS) + ') `--results OUT.pkl`' if RESULTS_PKL_WORKLOADS else ''}, "
              f"and a hand-written `multiprocessing.Pool(2).imap(f, args, chunksize)` whose main process writes "
              f"`json.dumps({{\"pos\": i, \"value\": v}})` a line to OUT (`runners.py pool-jsonl-N`; chunksizes "
              f"{pool_chunks}: on `tiny` the two fastest of Pool's in table 1, on `ms` chunks of 1000 or more "
              f"would leave a worker idle). All of a workload's runs in turn, {size['RESULTS_SAMPLES']} times a "
              f"repetition; each OUT must hold one record per call. '÷ best Pool + JSON lines' divides by the "
              f"faster Pool row's median.", ""]
    without, with_, best = figures["tiny"]
    if without and with_ is not None:
        verdict.append((with_ <= FIG_RESULTS_TINY * without,
                        f"`results`: --results on `tiny` {with_:.3f} s ≤ {FIG_RESULTS_TINY}x the run without "
                        f"({without:.3f} s, limit {FIG_RESULTS_TINY * without:.3f} s); ratio {with_ / without:.2f}x"))
    else:
        verdict.append(not_measured(bench, [("results", results_variant("tiny", v)) for v in ("clum", "clum-jsonl")],
                                    "`results` --results on `tiny` against without"))
    if best and with_ is not None:
        verdict.append((with_ <= FIG_RESULTS_POOL * best[0],
                        f"`results`: --results on `tiny` {with_:.3f} s ≤ {FIG_RESULTS_POOL}x Pool.imap writing JSON "
                        f"lines (chunksize {best[1]}: {best[0]:.3f} s); ratio {with_ / best[0]:.2f}x (the issue "
                        f"measured 0.38x)"))
    else:
        verdict.append(not_measured(bench, [("results", results_variant("tiny", v)) for v in
                                            ["clum-jsonl"] + [f"pool-jsonl-{c}" for c in RESULTS_POOL_CHUNKSIZES["tiny"]]],
                                    "`results` --results on `tiny` against Pool + JSON lines"))
    without, with_, _ = figures["ms"]
    if without and with_ is not None:
        ratio = with_ / without
        verdict.append((ratio <= FIG_RESULTS_COST,
                        f"`results`: --results adds {100 * (ratio - 1):.1f}% on the 1 ms workload "
                        f"(ratio {ratio:.3f}, limit {FIG_RESULTS_COST})"))
    else:
        verdict.append(not_measured(bench, [("results", results_variant("ms", v)) for v in ("clum", "clum-jsonl")],
                                    "`results` on the 1 ms workload"))


def report_map(bench, lines, verdict):
    size, res = bench.size, bench.results
    sizes = {"tiny": f"{size['TINY_N']:,} calls of `return x`",
             "skewed": f"{size['SKEWED_N']:,} calls, last 1% 200x dearer",
             "cpu": f"{size['CPU_N']:,} calls of ~10 ms pure Python"}
    lines += ["## cluster_func.map against Pool.map and joblib (each returns the list of values)", "",
              "Each a separate command (`python benchmarks/runners.py RUNNER WORKLOAD`), interpreter start-up "
              "included; every runner returns the values in order and the count is checked.", ""]
    for w in MAP_WORKLOADS:
        m = median(res.get(("map", f"{w}/map"), []))
        rows = []
        for r in MAP_RUNNERS:
            key = ("map", f"{w}/{r}")
            samples = res.get(key, [])
            note = row_note(bench, key, samples)
            med = median(samples)
            if not samples and not note:
                continue
            rows.append([MAP_LABELS[r], na_or(fmt_s(med), note),
                         f"{fmt_s(min_wall(samples))}–{fmt_s(max_wall(samples))}" if med is not None else "-",
                         fmt_x(med / m if med is not None and m else None), len([s for s in samples if s.ok]),
                         fmt_other(samples), note])
        lines += [f"### map, {w}: {sizes[w]}", "",
                  table(["runner", "median s", "min–max s", "÷ map", "reps", "other load", "note"], rows,
                        ["l", "r", "r", "r", "r", "r", "l"]), ""]
        pools = [(median(res.get(("map", f"{w}/poolmap-{c}"), [])), c) for c in POOLMAP_CHUNKSIZES]
        pools = [(t, c) for t, c in pools if t is not None]
        best = min(pools) if pools else None
        if m is not None and best:
            verdict.append((m <= FIG_BEST_POOL_FACTOR * best[0],
                            f"`map {w}`: cluster_func.map {m:.3f} s ≤ {FIG_BEST_POOL_FACTOR}x the best Pool.map "
                            f"(chunksize {best[1]}: {best[0]:.3f} s); ratio {m / best[0]:.2f}x"))
        else:
            verdict.append(not_measured(bench, [("map", f"{w}/map")], f"`map {w}` against Pool.map"))
        jl_samples = res.get(("map", f"{w}/joblib-values"), [])
        jl = median(jl_samples)
        jl_limit = next((s.timed_out for s in jl_samples if s.timed_out), None)
        if m is not None and jl is not None:
            verdict.append((m < jl, f"`map {w}`: cluster_func.map {m:.3f} s beats joblib {jl:.3f} s "
                                    f"(ratio {m / jl:.2f}x)"))
        elif m is not None and jl_limit:
            verdict.append((m < jl_limit, f"`map {w}`: cluster_func.map {m:.3f} s beats joblib, stopped at the "
                                          f"{jl_limit:g} s limit (ratio < {m / jl_limit:.2f}x)"))
        else:
            verdict.append(not_measured(bench, [("map", f"{w}/joblib-values")], f"`map {w}` against joblib"))


def fmt_count(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_other(samples):
    o = [s.other for s in samples if s.other is not None]
    return f"{max(o):.2f}" if o else "-"


def contention_summary(bench):
    o = [s.other for ss in bench.results.values() for s in ss if s.other is not None]
    if not o:
        return "Other load: not measured (no /proc/stat)."
    busy = sum(1 for x in o if x > OTHER_LOAD_BUSY)
    text = (f"Other load (CPU used on this machine outside the timed command, in cores, from /proc/stat less "
            f"the command's own rusage): median {statistics.median(o):.2f}, max {max(o):.2f}; "
            f"{busy} of {len(o)} runs above {OTHER_LOAD_BUSY} cores. Load average at the start "
            f"{bench.load_start}, at the end {loadavg()}.")
    if busy > len(o) * 0.1:
        text += (" **The machine was shared with other work during this run: timings are noisy; "
                 "run again on a quiet machine (or with --settle 10).**")
    return text


def min_wall(samples):
    w = [s.wall for s in samples if s.ok and s.wall is not None]
    return min(w) if w else None


def max_wall(samples):
    w = [s.wall for s in samples if s.ok and s.wall is not None]
    return max(w) if w else None


def fmt_cell(v):
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10000:
        return f"{v:,}"
    return "-" if v is None else str(v)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repetition: a smoke run (under a minute)")
    p.add_argument("--reps", type=int, help="repetitions of every run (default 3; 1 with --quick)")
    p.add_argument("--only", metavar="NAME,...",
                   help=f"only these sections (default all): {','.join(SECTIONS)}")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="stop a single run after this many seconds and show it as '> S' (default 20: "
                        "only hopeless runners reach it, e.g. Pool chunksize 1 on 2,000,000 calls)")
    p.add_argument("--repeat-limit", type=float, default=10.0,
                   help="a run slower than this (seconds) in the first repetition is not repeated (default 10)")
    p.add_argument("--settle", type=float, default=0.0, metavar="S",
                   help="before each run, wait up to S seconds for other processes to leave the CPUs "
                        f"idle (under {OTHER_LOAD_BUSY} cores busy); default 0: do not wait")
    p.add_argument("--no-venv", action="store_true",
                   help="run in this interpreter (it must have joblib, mpire, iterable-queue, cluster-func)")
    o = p.parse_args(argv)
    o.reps = o.reps or (1 if o.quick else 3)
    o.only = SECTIONS if not o.only else [x.strip() for x in o.only.split(",") if x.strip()]
    bad = [x for x in o.only if x not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {','.join(SECTIONS)}")
    return o


def main(argv):
    opts = parse_args(argv)
    if not opts.no_venv and not in_venv():
        ensure_venv_and_reexec(argv)
    bench = Bench(opts)
    if not bench.parallel_bin:
        log("benchmarks: GNU parallel is not installed, so its row is skipped "
            "(Debian/Ubuntu: apt-get install -y parallel)")
    t0 = time.monotonic()
    try:
        bench.prepare()
        bench.main_loop()
        if "queue" in opts.only:
            bench.queue_section()
        if "cluf" in opts.only:
            bench.cluf_section()
        if "wait" in opts.only:
            bench.wait_section()
        if "continue" in opts.only:
            bench.continue_section()
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    elapsed = time.monotonic() - t0
    text = report(bench, elapsed)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "latest.json"), "w") as f:
        json.dump({"options": {k: v for k, v in vars(opts).items()}, "sizes": bench.size, "elapsed": elapsed,
                   "results": {f"{w}/{r}": [s.to_json() for s in ss] for (w, r), ss in bench.results.items()},
                   "sections": bench.sections, "problems": bench.problems}, f, indent=1, default=str)
    log(f"benchmarks: done in {elapsed:.0f} s; written to {os.path.relpath(os.path.join(RESULTS, 'latest.md'))}")


if __name__ == "__main__":
    main(sys.argv[1:])
