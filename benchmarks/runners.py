"""The comparison runners: each runs one workload's ``target`` over its ``args``.

    python benchmarks/runners.py RUNNER WORKLOAD

RUNNER is one of:
  serial            a plain for loop in one process
  pool-N            multiprocessing.Pool(P).imap_unordered(f, args, chunksize=N)
  pool-jsonl-N      multiprocessing.Pool(P).imap(f, args, chunksize=N), each value written to
                    OUT (a third argument) as a JSON line {"pos": i, "value": v}: the hand-written
                    counterpart of clum --results OUT.jsonl
  joblib            joblib.Parallel(n_jobs=P)(delayed(target)(...) for a in args)
  mpire             mpire.WorkerPool(n_jobs=P).map_unordered(target, args)
  clum              exec: clum WORKLOAD -p P --quiet (for a manual run; run.py calls clum itself)
  map               values = cluster_func.map(target, args, processes=P, quiet=True)
  poolmap-N         values = multiprocessing.Pool(P).map(f, args, chunksize=N) (N "auto": Pool's own choice)
  joblib-values     values = joblib.Parallel(n_jobs=P)(delayed(target)(...) for a in args)
WORKLOAD is a name from benchmarks/workloads/ (tiny, skewed, cpu, stream, files,
startup, count, large, import_heavy, first_call, ms) or the path of any clum-style script.  P is $BENCH_PROCESSES (default 2).

The runners that return values (map, poolmap-N, joblib-values) write how many they got to
$BENCH_COUNT_FILE when it is set, so that run.py can check them.

Each runner is written the way a person would hand-write it: the loop calls
``target(*a)`` when the elements are tuples and ``target(a)`` otherwise (decided
from the first element, as a person who knows their data would), and results
are consumed and dropped, as clum drops them.

Two helpers serve the GNU parallel runner, which run.py times on its own:
  python benchmarks/runners.py parallel-slice WORKLOAD K FILE
      write K elements, spread evenly over the args, one repr() a line, to FILE
  python benchmarks/runners.py parallel-command WORKLOAD FILE
      print (as JSON) the parallel command line that runs one Python one-liner per line of FILE
"""

import importlib.util
import itertools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = os.path.join(HERE, "workloads")
PROCESSES = int(os.environ.get("BENCH_PROCESSES", "2"))

TARGET = None  # set by load(); the pool functions below find it in the forked workers


def workload_path(name):
    if os.path.sep in name or name.endswith(".py"):
        return os.path.abspath(name)
    return os.path.join(WORKLOADS, name + ".py")


def load(name):
    """Import the workload script by path, as clum does; return (target, args)."""
    global TARGET
    path = workload_path(name)
    sys.path.insert(0, os.path.dirname(path))
    # Imported under its own name with its folder on sys.path, so that a pool
    # that starts fresh interpreters (joblib's loky) can import it there too.
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    TARGET = module.target
    args = module.args
    if callable(args) and not hasattr(args, "__iter__"):
        args = args()
    return module.target, args


def peek(args):
    """(first element or None, an iterator over all the elements, first included)."""
    it = iter(args)
    for first in it:
        return first, itertools.chain((first,), it)
    return None, iter(())


def call_star(a):
    return TARGET(*a)


def call_one(a):
    return TARGET(a)


# --- runners ---------------------------------------------------------------------------
def run_serial(target, args):
    first, it = peek(args)
    if isinstance(first, tuple):
        for a in it:
            target(*a)
    else:
        for a in it:
            target(a)


def run_pool(target, args, chunksize):
    import multiprocessing

    first, it = peek(args)
    fn = call_star if isinstance(first, tuple) else call_one
    with multiprocessing.Pool(PROCESSES) as pool:
        for _ in pool.imap_unordered(fn, it, chunksize):
            pass


def run_pool_jsonl(target, args, chunksize, out):
    import multiprocessing

    first, it = peek(args)
    fn = call_star if isinstance(first, tuple) else call_one
    with multiprocessing.Pool(PROCESSES) as pool, open(out, "w") as f:
        for i, v in enumerate(pool.imap(fn, it, chunksize)):
            f.write(json.dumps({"pos": i, "value": v}) + "\n")


def run_joblib(target, args):
    from joblib import Parallel, delayed

    first, it = peek(args)
    if isinstance(first, tuple):
        Parallel(n_jobs=PROCESSES)(delayed(target)(*a) for a in it)
    else:
        Parallel(n_jobs=PROCESSES)(delayed(target)(a) for a in it)


def count_values(values):
    path = os.environ.get("BENCH_COUNT_FILE")
    if path:
        with open(path, "w") as f:
            f.write(f"{len(values)}\n")


def run_map(target, args):
    import cluster_func

    count_values(cluster_func.map(target, args, processes=PROCESSES, quiet=True))


def run_poolmap(target, args, chunksize):
    import multiprocessing

    first, it = peek(args)
    fn = call_star if isinstance(first, tuple) else call_one
    with multiprocessing.Pool(PROCESSES) as pool:
        count_values(pool.map(fn, it, chunksize))


def run_joblib_values(target, args):
    from joblib import Parallel, delayed

    first, it = peek(args)
    if isinstance(first, tuple):
        count_values(Parallel(n_jobs=PROCESSES)(delayed(target)(*a) for a in it))
    else:
        count_values(Parallel(n_jobs=PROCESSES)(delayed(target)(a) for a in it))


def run_mpire(target, args):
    from mpire import WorkerPool

    # mpire unpacks a tuple element into the function's arguments, like clum.
    with WorkerPool(n_jobs=PROCESSES) as pool:
        pool.map_unordered(target, args)


def run_clum(workload):
    clum = os.path.join(os.path.dirname(sys.executable), "clum")
    argv = [clum if os.path.exists(clum) else "clum", workload_path(workload), "-p", str(PROCESSES), "--quiet"]
    os.execvp(argv[0], argv)


# --- GNU parallel ------------------------------------------------------------------------
ONE_LINER = (
    "import ast,sys,importlib.util as u;"
    "s=u.spec_from_file_location('w',{path!r});m=u.module_from_spec(s);s.loader.exec_module(m);"
    "a=ast.literal_eval(sys.argv[1]);m.target(*a) if type(a) is tuple else m.target(a)"
)


def parallel_slice(workload, k, out_file):
    """Write k elements spread evenly over the args (so a skewed tail is sampled too)."""
    _, args = load(workload)
    try:
        n = len(args)
        pick = sorted({j * n // k for j in range(k)})
        elements = [args[i] for i in pick] if hasattr(args, "__getitem__") else None
    except TypeError:
        n, elements = None, None
    if elements is None:
        items = list(args)  # a generator: count it, then sample it
        n = len(items)
        elements = [items[j * n // k] for j in range(k)]
        del items
    with open(out_file, "w") as f:
        for e in elements:
            text = repr(e)
            assert "\n" not in text
            f.write(text + "\n")
    print(json.dumps({"n": n, "k": len(elements)}))


def parallel_command(workload, slice_file):
    code = ONE_LINER.format(path=workload_path(workload))
    return ["parallel", "--will-cite", "-j", str(PROCESSES), "-q", "-a", slice_file,
            sys.executable, "-c", code, "{}"]


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    runner, workload = argv[0], argv[1]
    if runner == "parallel-slice":
        return parallel_slice(workload, int(argv[2]), argv[3])
    if runner == "parallel-command":
        return print(json.dumps(parallel_command(workload, argv[2])))
    if runner == "clum":
        return run_clum(workload)
    target, args = load(workload)
    if runner == "serial":
        run_serial(target, args)
    elif runner.startswith("pool-jsonl-"):
        if len(argv) < 3:
            sys.exit(f"{runner} needs the output file: runners.py {runner} WORKLOAD OUT.jsonl")
        run_pool_jsonl(target, args, int(runner[len("pool-jsonl-"):]), argv[2])
    elif runner.startswith("pool-"):
        run_pool(target, args, int(runner[len("pool-"):]))
    elif runner == "joblib":
        run_joblib(target, args)
    elif runner == "mpire":
        run_mpire(target, args)
    elif runner == "map":
        run_map(target, args)
    elif runner.startswith("poolmap-"):
        size = runner[len("poolmap-"):]
        run_poolmap(target, args, None if size == "auto" else int(size))
    elif runner == "joblib-values":
        run_joblib_values(target, args)
    else:
        sys.exit(f"unknown runner {runner!r}; see: python {argv[0] if argv else 'runners.py'} --help")


if __name__ == "__main__":
    main(sys.argv[1:])
