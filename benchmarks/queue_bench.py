#!/usr/bin/env python3
"""IterableQueue throughput: items a second, 2 producers and 2 consumers.

    python benchmarks/queue_bench.py [--quick] [--reps N] [--items N]

Compares, on small items (ints):
  (a) a plain multiprocessing.Queue, with hand-written sentinels (the parent
      joins the producers, then puts one None per consumer);
  (b) cluster_func's IterableQueue (producers close(), consumers iterate);
  (c) the original IterableQueue, PyPI ``iterable-queue`` 1.2.2, if it is
      importable (it is installed only in the benchmark's own environment);
      otherwise its row says it was skipped.

Time runs from releasing all four already-started processes at once to the
last consumer having finished; every run checks that the consumers together
received every item exactly once (count and sum).  The table shows the median
of several repetitions.  ``run(quick=False)`` returns the rows, for the
benchmark suite (benchmarks/run.py).  Uses the "fork" start method (the
processes are started before the clock starts, so start-up is not measured).
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:
    from cluster_func.iterable_queue import IterableQueue
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, ROOT)
    from cluster_func.iterable_queue import IterableQueue

PRODUCERS = 2
CONSUMERS = 2
TIMEOUT = 600.0

# items per run (total over the producers): full, quick
ITEMS = {"plain": (400_000, 40_000), "iterable": (400_000, 40_000),
         "original": (60_000, 10_000)}
REPS = (5, 2)

LABELS = {
    "plain": "multiprocessing.Queue + sentinels",
    "iterable": "cluster_func IterableQueue",
    "original": "iterable-queue 1.2.2 (original)",
}


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


# -- process bodies ----------------------------------------------------------

def _plain_producer(q, lo, hi, go):
    go.wait()
    for i in range(lo, hi):
        q.put(i)


def _plain_consumer(q, go, out):
    go.wait()
    n = s = 0
    while True:
        item = q.get()
        if item is None:
            break
        n += 1
        s += item
    out.put((n, s))


def _iq_producer(q, lo, hi, go):
    go.wait()
    for i in range(lo, hi):
        q.put(i)
    q.close()


def _iq_consumer(q, go, out):
    go.wait()
    n = s = 0
    for item in q:
        n += 1
        s += item
    out.put((n, s))


# -- one timed run -------------------------------------------------------------

def _one_run(kind, total):
    ctx = _context()
    go = ctx.Event()
    out = ctx.Queue()
    bounds = [(k * total // PRODUCERS, (k + 1) * total // PRODUCERS)
              for k in range(PRODUCERS)]
    if kind == "plain":
        q = ctx.Queue()
        producers = [ctx.Process(target=_plain_producer, args=(q, lo, hi, go))
                     for lo, hi in bounds]
        consumers = [ctx.Process(target=_plain_consumer, args=(q, go, out))
                     for _ in range(CONSUMERS)]
    else:
        if kind == "iterable":
            iq = IterableQueue()
        else:
            from iterable_queue import IterableQueue as OriginalIterableQueue
            iq = OriginalIterableQueue()
        producers = [ctx.Process(target=_iq_producer,
                                 args=(iq.get_producer(), lo, hi, go))
                     for lo, hi in bounds]
        consumers = [ctx.Process(target=_iq_consumer,
                                 args=(iq.get_consumer(), go, out))
                     for _ in range(CONSUMERS)]
        iq.close()
    procs = producers + consumers
    for p in procs:
        p.start()
    time.sleep(0.2)                     # let them all reach go.wait()
    t0 = time.perf_counter()
    go.set()
    try:
        if kind == "plain":
            for p in producers:
                p.join(TIMEOUT)
            for _ in consumers:
                q.put(None)
        results = [out.get(timeout=TIMEOUT) for _ in consumers]
        for p in consumers:
            p.join(TIMEOUT)
        elapsed = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    n = sum(r[0] for r in results)
    s = sum(r[1] for r in results)
    if n != total or s != total * (total - 1) // 2:
        raise RuntimeError("%s: consumers got %d items (sum %d), expected %d"
                           % (LABELS[kind], n, s, total))
    return total / elapsed


def _original_available():
    try:
        import iterable_queue  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return "skipped: iterable-queue 1.2.2 is not importable here (%s)" % (
            type(e).__name__)
    return None


def run(quick=False, reps=None, items=None, log=None):
    """Measure every variant; return one dict per variant (table rows).

    The variants take turns, one run each per repetition, so that whatever
    else the machine is doing weighs on all of them alike."""
    q = 1 if quick else 0
    reps = reps or REPS[q]
    kinds = ["plain", "iterable", "original"]
    skipped = {"original": _original_available()}
    rates = {kind: [] for kind in kinds}
    for rep in range(reps):
        for kind in kinds:
            if skipped.get(kind):
                continue
            total = items or ITEMS[kind][q]
            rates[kind].append(_one_run(kind, total))
            if log:
                log("%s: run %d: %.0f items/s" % (LABELS[kind], rep + 1,
                                                  rates[kind][-1]))
    plain_median = statistics.median(rates["plain"])
    rows = []
    for kind in kinds:
        row = {"queue": LABELS[kind]}
        if skipped.get(kind):
            row.update({"items": None, "reps": 0, "items/s (median)": None,
                        "min": None, "max": None, "vs plain Queue": None,
                        "note": skipped[kind]})
            if log:
                log(skipped[kind])
        else:
            median = statistics.median(rates[kind])
            row.update({"items": items or ITEMS[kind][q], "reps": reps,
                        "items/s (median)": round(median),
                        "min": round(min(rates[kind])),
                        "max": round(max(rates[kind])),
                        "vs plain Queue": round(median / plain_median, 2),
                        "note": ""})
        rows.append(row)
    return rows


def _format(rows):
    keys = list(rows[0])
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k in keys]
             for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells))
              for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths))
              for cell in cells]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: fewer items and repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--items", type=int, default=None,
                        help="items per run for every variant")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, reps=args.reps, items=args.items,
               log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(_format(rows))
    ratio = rows[1]["vs plain Queue"]
    print("\nIterableQueue / plain Queue: %.2fx (requirement: >= 0.8x)" % ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
