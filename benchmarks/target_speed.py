"""How fast the user's own code runs inside each kind of worker: thread CPU time per call, measured
inside the call, so that nothing the runner or the pool does between calls is counted.

    python benchmarks/target_speed.py [WORKLOAD] [--reps N] [--pool-chunksize N]

WORKLOAD (default ``ms``) is a name from benchmarks/workloads/.  Its ``target`` is wrapped in a
function that reads ``time.thread_time()`` before and after the call and appends the difference
to a file per process; the wrapped workload runs, in turn for each repetition, under
``clum -p 2`` with the fork start method (the default), under ``clum -p 2 --start-method
forkserver``, in a plain ``for`` loop in one process, and under ``multiprocessing.Pool(2).imap_unordered``
(fork) with the given chunksize.
The table has, for each, the median over the repetitions of the median CPU milliseconds a call,
and its ratio to Pool's.

Why: on ``cpu`` and ``ms`` clum spends 10-15% more CPU seconds than the best Pool, and a profile
puts almost all of it inside the user's calls (``_PyEval_EvalFrameDefault``), not in the runner or
between calls.  This measures that directly (see docs/performance.md).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CLUM = "import sys; from cluster_func._start import clum; sys.argv[0] = 'clum'; clum()"

WRAPPER = '''\
import os, sys, time
sys.path.insert(0, {workloads!r})
import {name} as _w
_OUT = {out!r}
_fd = None
def target(*a):
    global _fd
    t = time.thread_time()
    v = _w.target(*a)
    d = time.thread_time() - t
    if _fd is None:
        _fd = os.open(os.path.join(_OUT, str(os.getpid())), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(_fd, b"%r\\n" % d)
    return v
args = _w.args
'''


def median_ms(out):
    times = []
    for name in os.listdir(out):
        with open(os.path.join(out, name)) as f:
            times += [float(x) for x in f.read().split()]
        os.unlink(os.path.join(out, name))
    return len(times), 1000 * statistics.median(times) if times else float("nan")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", nargs="?", default="ms")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pool-chunksize", type=int, default=100)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=FOLDER",
                    help="also clum (fork) from the cluster_func in FOLDER (PYTHONPATH), named NAME")
    opts = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times")
        os.mkdir(out)
        script = os.path.join(tmp, "wrapped.py")
        with open(script, "w") as f:
            f.write(WRAPPER.format(workloads=os.path.join(HERE, "workloads"), name=opts.workload, out=out))
        variants = {
            "clum (fork)": [sys.executable, "-c", CLUM, script, "-p", "2", "--quiet"],
            "clum (forkserver)": [sys.executable, "-c", CLUM, script, "-p", "2", "--quiet",
                                  "--start-method", "forkserver"],
            "a plain loop (runners.py serial)": [sys.executable, os.path.join(HERE, "runners.py"), "serial", script],
            f"Pool chunksize {opts.pool_chunksize}": [sys.executable, os.path.join(HERE, "runners.py"),
                                                      f"pool-{opts.pool_chunksize}", script],
        }
        trees = {"clum (fork)": None, "clum (forkserver)": None}
        for t in opts.tree:
            name, folder = t.split("=", 1)
            variants = {f"clum (fork) {name}": variants["clum (fork)"], **variants}
            trees[f"clum (fork) {name}"] = folder
        got = {k: [] for k in variants}
        calls = {}
        for rep in range(opts.reps):
            for name, cmd in variants.items():
                env = dict(os.environ)
                if trees.get(name):
                    env["PYTHONPATH"] = trees[name]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=tmp, env=env)
                calls[name], ms = median_ms(out)
                got[name].append(ms)
            sys.stderr.write(f"repetition {rep + 1} of {opts.reps} done\n")
    pool = statistics.median(got[list(variants)[-1]])
    print(f"{opts.workload}: CPU milliseconds a call, measured inside the call (median of {opts.reps} runs' medians)")
    print(f"{'workers':34} {'calls':>6} {'ms a call':>10} {'runs':>28} {'÷ Pool':>7}")
    for name, values in got.items():
        m = statistics.median(values)
        runs = " ".join(f"{v:.3f}" for v in values)
        print(f"{name:34} {calls[name]:6d} {m:10.3f} {runs:>28} {m / pool:6.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
