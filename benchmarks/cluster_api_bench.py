#!/usr/bin/env python3
"""cluster_func from Python against submitit, side by side on the real Slurm (issue 27).

    pip install -r benchmarks/requirements.txt      # submitit
    python benchmarks/cluster_api_bench.py [--reps N] [--only a,b,c] [--cap S]

Needs the Slurm of tests/schedulers/up.sh (partition ``debug``).  Each measurement runs in a
fresh Python process of its own (``--one WAY CASE``), timed inside it from just before the call
to the moment the values are in hand (a list of every value, in order), so each way pays for
its own imports of the moment but not for the interpreter's start.

(a) 100 calls of ``lambda x: x * x`` in 10 jobs; (b) 10,000 calls in 20 jobs.  Three ways:

- ``cluster_func``: ``cluster_func.map(f, xs, nodes=N, processes=1)``;
- ``submitit map_array``: ``AutoExecutor(...).map_array(f, xs)``, one array task per call
  (submitit's unit), then ``[job.result() for job in jobs]``;
- ``submitit batched``: the calls cut by hand into N tasks (``map_array`` of a function that
  runs its chunk), then the chunks' values joined.

(c) A run whose jobs pass their walltime: 2 jobs of 30 calls of 1.5 s (45 s of work each).
cluster_func gets ``walltime="00:00:20"``, ``grace=8``: clum counts that walltime, so each bin
needs three jobs (it hits the walltime twice) and continues itself.  Slurm keeps time limits in
whole minutes (submitit's ``timeout_min`` too), so submitit's tasks get a 1-minute limit and
work for 2.25 of them (135 s: 90 calls of 1.5 s each), the same function and no checkpoint
code; what ``job.result()`` does is recorded.

Ratios are submitit's time over cluster_func's (above 1: cluster_func is faster).  A way that
has not finished after ``--cap`` seconds (default 300) is stopped and shown as ``> cap``; its
jobs are cancelled.  This Slurm has no accounting (``sacct`` says "Slurm accounting storage is
disabled"): submitit then logs "Bypassing sacct error" on each status poll, keeps every job's
state "UNKNOWN", and learns that a task ended only from its result pickle (``Job.done()`` looks
for the file before it asks sacct) -- so it works, as long as every task writes one.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CASES = {  # name: (calls, jobs)
    "a": (100, 10),
    "b": (10_000, 20),
}
WAYS = ["cluster_func", "submitit map_array", "submitit batched"]
WALL_CALLS, WALL_CALL_S, WALL_JOBS = 30, 1.5, 2  # (c): per job, seconds per call, jobs


def square(x):
    return x * x


def _env():
    env = dict(os.environ)
    env.pop("SLURM_CONF", None)
    env["CLUFRC"] = os.devnull  # no ~/.clufrc
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _executor(folder, timeout_min=10, **extra):
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(timeout_min=timeout_min, slurm_partition="debug", cpus_per_task=1,
                         slurm_array_parallelism=1000, **extra)
    return ex


def _chunks(xs, n):
    return [xs[i::n] for i in range(n)]  # round-robin, as cluf bins


def _unchunk(parts, total):
    out = [None] * total
    n = len(parts)
    for i, part in enumerate(parts):
        out[i::n] = part
    return out


# --- one measurement, in a process of its own ------------------------------------------------------

def one(way, case, folder):
    """Run one way of one case in ``folder``; print a JSON line: seconds, ok, what happened."""
    if case == "c":
        return one_walltime(way, folder)
    calls, jobs = CASES[case]
    xs = list(range(calls))
    f = lambda x: x * x  # noqa: E731 - the issue's target, a lambda
    t0 = time.perf_counter()
    if way == "cluster_func":
        import cluster_func

        values = cluster_func.map(f, xs, nodes=jobs, jobs_dir=os.path.join(folder, "jobs"), scheduler="slurm",
                                  processes=1, quiet=True)
    elif way == "submitit map_array":
        handles = _executor(folder).map_array(f, xs)
        values = [h.result() for h in handles]
    elif way == "submitit batched":
        handles = _executor(folder).map_array(lambda part: [f(x) for x in part], _chunks(xs, jobs))
        values = _unchunk([h.result() for h in handles], calls)
    else:
        raise SystemExit(f"unknown way {way!r}")
    took = time.perf_counter() - t0
    print(json.dumps({"seconds": took, "ok": values == [x * x for x in xs], "said": ""}))


def slow_square(x):
    time.sleep(WALL_CALL_S)
    return x * x


def one_walltime(way, folder):
    import cluster_func

    t0 = time.perf_counter()
    if way == "cluster_func":
        xs = list(range(WALL_CALLS * WALL_JOBS))
        values = cluster_func.map(slow_square, xs, nodes=WALL_JOBS, jobs_dir=os.path.join(folder, "jobs"),
                                  scheduler="slurm", processes=1, walltime="00:00:20", grace=8, quiet=True)
        run = cluster_func.Run(os.path.join(folder, "jobs"))
        from cluster_func.cluster import manifest  # (the manifest with its per-bin records)

        m = manifest.load_manifest(run.manifest_path)
        restarts = [j.get("restarts", 0) for j in m["jobs"].values()]
        said = f"every value; each bin continued {restarts} times (jobs per bin: {[r + 1 for r in restarts]})"
        print(json.dumps({"seconds": time.perf_counter() - t0, "ok": values == [x * x for x in xs], "said": said}))
        return
    # submitit: the same function, batched by hand into 2 tasks with work for 2.25 one-minute limits
    xs = list(range(int(WALL_CALLS * 3) * WALL_JOBS))
    handles = _executor(folder, timeout_min=1, slurm_signal_delay_s=30).map_array(
        lambda part: [slow_square(x) for x in part], _chunks(xs, WALL_JOBS))
    said, values = [], []
    for h in handles:
        try:
            values.append(h.result())
        except Exception as e:  # noqa: BLE001 - what submitit raises is the finding
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip() and "---" not in line]
            said.append(f"{type(e).__name__} after {time.perf_counter() - t0:.0f} s: {lines[0][:120]} ... "
                        f"{lines[-1][:200]}")
    took = time.perf_counter() - t0
    print(json.dumps({"seconds": took, "ok": len(values) == WALL_JOBS, "said": "; ".join(said) or "every value"}))


# --- the driver ----------------------------------------------------------------------------------

def measure(way, case, cap):
    folder = tempfile.mkdtemp(prefix=f"cluster-api-bench-{case}-")
    cmd = [sys.executable, os.path.abspath(__file__), "--one", way, case, folder]
    started = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        _cancel_jobs_of(folder)
        return {"seconds": None, "ok": False, "said": f"not finished after {cap} s (stopped; jobs cancelled)",
                "outside": time.perf_counter() - started}
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        _cancel_jobs_of(folder)
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
        return {"seconds": None, "ok": False, "said": f"exit {p.returncode}: {tail[:400]}"}
    out = json.loads(lines[-1])
    warnings = p.stderr.count("Bypassing sacct error")
    if warnings:
        out["said"] = (out["said"] + f" ({warnings} 'Bypassing sacct error' warnings)").strip()
    shutil.rmtree(folder, ignore_errors=True)
    return out


def _cancel_jobs_of(folder):
    """Cancel what a stopped measurement left in the queue (its job ids: cluf's manifest,
    submitit's file names)."""
    ids = set()
    for path in glob.glob(os.path.join(folder, "**", "*.manifest.json"), recursive=True):
        try:
            for job in json.load(open(path))["jobs"].values():
                ids.add(str(job.get("array_id") or job["id"]))
        except (OSError, ValueError, KeyError):
            pass
    for path in glob.glob(os.path.join(folder, "*_submission.sh")) + glob.glob(os.path.join(folder, "*.out")):
        ids.add(os.path.basename(path).split("_")[0])
    ids = sorted(i for i in ids if i and i[0].isdigit())
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


def fmt(s):
    return "-" if s is None else f"{s:.1f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1, help="repetitions of (a) and (b) (default 1)")
    ap.add_argument("--only", default="a,b,c", help="cases: a, b, c (default all)")
    ap.add_argument("--cap", type=float, default=300, help="stop one way after this many seconds (default 300)")
    ap.add_argument("--one", nargs=3, metavar=("WAY", "CASE", "FOLDER"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return one(*a.one)
    if shutil.which("sbatch") is None:
        raise SystemExit("cluster_api_bench: no sbatch: start the test Slurm (tests/schedulers/up.sh slurm)")
    try:
        import submitit
    except ImportError:
        raise SystemExit("cluster_api_bench: pip install -r benchmarks/requirements.txt (submitit)") from None
    import cluster_func

    print(f"# cluster_func {cluster_func.__version__} vs submitit {submitit.__version__} on Slurm "
          f"({os.cpu_count()} CPUs here); {time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    for case in [c for c in ("a", "b") if c in a.only.split(",")]:
        calls, jobs = CASES[case]
        res = {w: [] for w in WAYS}
        for _ in range(a.reps):
            for way in WAYS:
                r = measure(way, case, a.cap)
                res[way].append(r)
                print(f"  ({case}) {way}: {fmt(r['seconds'])} ok={r['ok']} {r['said']}", file=sys.stderr, flush=True)
        rows.append((case, calls, jobs, res))
    if rows:
        print("\n| case | way | seconds (median) | every value | ratio to cluster_func | notes |")
        print("|:--|:--|--:|:--|--:|:--|")
        for case, calls, jobs, res in rows:
            base = _median([r["seconds"] for r in res["cluster_func"]])
            for way in WAYS:
                secs = [r["seconds"] for r in res[way]]
                m = _median(secs)
                shown = fmt(m) if None not in secs else f"> {a.cap:g} s" if any(
                    "not finished" in r["said"] for r in res[way]) else "failed"
                ratio = f"{m / base:.2f}x" if m and base else "-"
                notes = "; ".join(sorted({r["said"] for r in res[way] if r["said"]}))
                print(f"| ({case}) {calls:,} calls in {jobs} jobs | {way} | {shown} | "
                      f"{all(r['ok'] for r in res[way])} | {ratio} | {notes} |")
    if "c" in a.only.split(","):
        print("\n| (c) jobs past their walltime | seconds | every value | what happened |")
        print("|:--|--:|:--|:--|")
        for way in ("cluster_func", "submitit batched"):
            r = measure(way, "c", max(a.cap, 400))
            print(f"| {way} | {fmt(r['seconds'])} | {r['ok']} | {r['said']} |", flush=True)


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


if __name__ == "__main__":
    main()
