"""Two versions of cluster-func side by side, against Pool, in one interleaved run.

    git archive OLD_COMMIT cluster_func | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    git archive HEAD cluster_func | (mkdir -p /tmp/new && tar -x -C /tmp/new)
    python benchmarks/compare.py --before /tmp/old --after /tmp/new --reps 7 \\
        tiny/map,tiny/poolmap-10000,tiny/clum,tiny/pool-10000,cpu/clum,cpu/pool-100

Each ROW is WORKLOAD/RUNNER: RUNNER ``clum`` (``clum W -p 2 --quiet --journal TMP``), ``clum-jsonl``
and ``clum-pkl`` (the same with ``--results TMP.jsonl`` or ``.pkl``) and ``map`` (``runners.py map W``)
run once for each version (PYTHONPATH set to its folder); any other
runner of runners.py (``pool-N``, ``poolmap-N``, ...) runs once.  For each repetition every
command runs in turn, each timed whole from start to exit; the table has the median wall
seconds, the min-max, the median CPU seconds of the command's processes and the other load
(cores' worth of CPU the rest of the machine used meanwhile, from /proc/stat).  Bytecode is
compiled first (as an installed package has it), so no run pays for compiling the source.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLUM = "import sys; from cluster_func._start import clum; sys.argv[0] = 'clum'; clum()"


def commands(rows, trees):
    out = []
    for row in rows:
        workload, runner = row.split("/")
        if runner in ("clum", "clum-jsonl", "clum-pkl", "map"):
            for name in trees:
                if runner.startswith("clum"):
                    cmd = [sys.executable, "-c", CLUM, os.path.join(HERE, "workloads", workload + ".py"), "-p", "2",
                           "--quiet", "--journal", "{journal}"]
                    if runner != "clum":
                        cmd += ["--results", "{journal}.values." + runner.split("-")[1]]
                else:
                    cmd = [sys.executable, os.path.join(HERE, "runners.py"), "map", workload]
                out.append((f"{row} [{name}]", name, cmd))
        else:
            out.append((row, None, [sys.executable, os.path.join(HERE, "runners.py"), runner, workload]))
    return out


def busy_seconds():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def settle(seconds):
    """Wait (at most ``seconds``) for the rest of the machine to use under a quarter of a core."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        b0 = busy_seconds()
        time.sleep(0.3)
        if (busy_seconds() - b0) / 0.3 < 0.25:
            return


def run(cmd, tree):
    scratch = tempfile.mkdtemp()
    cmd = [c.replace("{journal}", os.path.join(scratch, "j")) for c in cmd]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree
    c0, b0, t0 = children_cpu(), busy_seconds(), time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    cpu = children_cpu() - c0
    other = max(0.0, (busy_seconds() - b0 - cpu) / wall)
    shutil.rmtree(scratch, ignore_errors=True)
    if p.returncode:
        sys.stderr.write(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}\n")
    return wall, cpu, other


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", help="comma-separated WORKLOAD/RUNNER")
    ap.add_argument("--before", required=True, help="a folder holding the old cluster_func")
    ap.add_argument("--after", required=True, help="a folder holding the new cluster_func")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=FOLDER",
                    help="one more version to run beside the two (any number of them)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--settle", type=float, default=0.0, metavar="S",
                    help="before each command, wait up to S seconds for the rest of the machine to go quiet")
    opts = ap.parse_args(argv)
    trees = {"before": opts.before, "after": opts.after}
    trees.update(t.split("=", 1) for t in opts.tree)
    for tree in trees.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "cluster_func")], check=True)
    cmds = commands(opts.rows.split(","), trees)
    got = {name: [] for name, _, _ in cmds}
    for rep in range(opts.reps):
        for name, tree, cmd in cmds:
            settle(opts.settle)
            got[name].append(run(cmd, trees.get(tree)))
        sys.stderr.write(f"repetition {rep + 1} of {opts.reps} done\n")
    print(f"{'row':34} {'median s':>9} {'min-max s':>13} {'cpu s':>6} {'other load (median, max)':>25}")
    for name, _, _ in cmds:
        walls = [g[0] for g in got[name]]
        others = [g[2] for g in got[name]]
        print(f"{name:34} {statistics.median(walls):9.3f} {min(walls):6.3f}-{max(walls):6.3f} "
              f"{statistics.median(g[1] for g in got[name]):6.3f} "
              f"{statistics.median(others):17.2f}, {max(others):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
