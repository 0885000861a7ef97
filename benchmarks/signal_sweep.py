#!/usr/bin/env python3
"""Stop clum by signal at random moments and count what a stop must never be.

    python benchmarks/signal_sweep.py [--runs 100] [--methods fork,spawn,forkserver] [--calls 100000]

Each run: ``clum s.py -p 4 --results v.jsonl`` over ``args = range(CALLS)`` with ``target(x):
return x`` (no sleep), under one start method; SIGINT or SIGTERM (alternately) at a random moment
0.4-1.6 s after the start.  Counted per start method: internal errors (exit 70, or a traceback on
stderr), other unexpected exit statuses, and runs whose journal or results file is not what a stop
must leave: the results file holds exactly the values the journal records (every value right, no
position twice), and a ``--resume`` of the run (as the interrupted run advised, with ``--results``)
completes every position with its right value.  Exit 1 when any run went wrong.
"""

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SCRIPT = """\
import os
CALLS = int(os.environ["SWEEP_CALLS"])
args = range(CALLS)

def target(x):
    return x

if __name__ == "__main__":
    pass
"""


def clum_cmd():
    return [sys.executable, "-c", "import sys; from cluster_func._start import clum; sys.exit(clum())"]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def read_values(path):
    out = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec["pos"] in out:
                raise AssertionError(f"position {rec['pos']} twice in {path}")
            out[rec["pos"]] = rec["value"]
    return out


def one_run(method, sig, delay, calls, folder):
    e = env()
    e["SWEEP_CALLS"] = str(calls)
    script = os.path.join(folder, "s.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    results, journal = os.path.join(folder, "v.jsonl"), os.path.join(folder, "s.journal")
    cmd = clum_cmd() + [script, "-p", "4", "--quiet", "--start-method", method, "--journal", journal]
    first = cmd + ["--results", results]
    p = subprocess.Popen(first, cwd=folder, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not sig:  # (an uninterrupted run, to time it)
        p.communicate()
        return "timed", ""
    time.sleep(delay)
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return "hung", err.decode(errors="replace")
    err = err.decode(errors="replace")
    if (p.returncode in (-sig, 128 + sig, 1) and err.rstrip().endswith("KeyboardInterrupt")
            and "cluster_func/" not in err and not os.path.exists(journal)):
        return "ok, stopped in Python's own startup", err  # (site.py, before any code of clum's ran)
    if p.returncode == 70 or "Traceback" in err or "internal error" in err:
        return "internal", err
    if p.returncode in (-sig, 128 + sig) and not os.path.exists(journal):
        return "ok, stopped before it began", err  # (before clum took over the signals, or opened the journal)
    from cluster_func.record import journal as jmod  # (imported from ROOT: see main)

    if p.returncode in (0, -sig, 128 + sig) and jmod.read(journal).last_status == "complete" \
            and os.path.exists(results) and read_values(results) == {k: k for k in range(calls)}:
        return "ok, signal after the end", err  # (the run was over: every call done, the values exported)
    if p.returncode not in (0, 128 + sig):
        return f"exit {p.returncode}", err
    # what the stop left: a results file of exactly the recorded values, each right
    recorded = jmod.read(journal, for_resume=True).recorded
    if not os.path.exists(results):
        return "no results file", err
    got = read_values(results)
    if any(v != k for k, v in got.items()) or len(got) != recorded:
        return f"results file holds {len(got)} values, the journal records {recorded}", err
    again = first + ["--resume"]
    if p.returncode:  # the command the run advised, as printed (but for how clum itself is started)
        advice = re.search(r"'clum ([^']*--resume[^']*)'", err)
        if advice is None:
            return "no --resume advice", err
        again = clum_cmd() + shlex.split(advice.group(1).replace("'\\''", "'"))
    r = subprocess.run(again, cwd=folder, env=e, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return f"resume exit {r.returncode}", r.stderr
    got = read_values(results)
    if got != {k: k for k in range(calls)}:
        return f"after {' '.join(again[3:])} the results file holds {len(got)} values, not {calls} right ones", r.stderr
    return "ok", err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="interrupted runs per start method (default 100)")
    ap.add_argument("--methods", default="fork,spawn,forkserver")
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--min-delay", type=float, default=0.4, help="seconds (default 0.4; see --fit)")
    ap.add_argument("--max-delay", type=float, default=1.6, help="seconds (default 1.6; see --fit)")
    ap.add_argument("--fit", action="store_true",
                    help="draw the moment from 5%%-100%% of an uninterrupted run's time, measured per start "
                         "method (on a fast machine a fork run of 100,000 calls is over before 0.4 s)")
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    rng = random.Random(a.seed)
    import signal

    bad_total = 0
    for method in a.methods.split(","):
        counts = {}
        examples = {}
        lo, hi = a.min_delay, a.max_delay
        if a.fit:
            with tempfile.TemporaryDirectory(prefix="clum-sweep-") as folder:
                t = time.monotonic()
                one_run(method, 0, 0, a.calls, folder)
                whole = time.monotonic() - t
            lo, hi = 0.05 * whole, whole
        t0 = time.monotonic()
        for i in range(a.runs):
            sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
            delay = rng.uniform(lo, hi)
            with tempfile.TemporaryDirectory(prefix="clum-sweep-") as folder:
                kind, err = one_run(method, sig, delay, a.calls, folder)
            counts[kind] = counts.get(kind, 0) + 1
            if kind != "ok":
                examples.setdefault(kind, (signal.Signals(sig).name, round(delay, 2), err.strip()[-600:]))
        bad = a.runs - sum(v for k, v in counts.items() if k.startswith("ok"))
        bad_total += bad
        print(f"{method}: signals at {lo:.2f}-{hi:.2f} s; {a.runs} interrupted runs in {time.monotonic() - t0:.0f} s: "
              f"{counts.get('internal', 0)} internal errors, {bad} not ok; "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
        for kind, (sig, delay, err) in examples.items():
            print(f"  e.g. {kind} ({sig} at {delay} s):\n    " + err.replace("\n", "\n    "), flush=True)
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
