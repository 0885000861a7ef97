#!/usr/bin/env python3
"""How clum and cluf scale: time and peak memory as the calls and the bins grow (issue 31).

    python benchmarks/scaling.py [--calls 1e5,1e6,1e7] [--bins 100,1000,10000] [--values 1e7]
                                 [--processes 2] [--only clum,cluf]

clum, on ``tiny`` (``target`` returns its argument; ``args = range(N)``), for each N: a fresh
run (seconds per call, journal bytes per call), a ``--resume`` with every call done, and a
``--resume`` of a journal cut to its first half of completed calls.  Each is a whole command
(``python -m cluster_func -p P``), timed from start to exit; its peak memory is the largest
``ru_maxrss`` that os.wait4 reports for it (the runner, or its largest worker).

cluf, for each number of bins B, a run of ``--values`` calls (``--results jsonl``):
writing and submitting the B job scripts to a stand-in ``sbatch`` (first on PATH; it prints a
new job id), then, with a stand-in ``squeue`` that lists no job (every bin has ended), each bin's
journal and results file made by the package's own writer and export (one completed-calls
record of 20,000 calls at most, as clum's batches of ``return x`` are, each record carrying its
calls' values; then the results file, the export record and the end record), ``cluf --status``,
``cluf --wait`` (its first poll finds every bin done: the whole command), a later poll (in
process: ``status.poll`` again with the first poll's cache), and ``cluf --gather`` of all the
values.  Every figure is one run; the machine's other load is printed with the table.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from cluster_func.record.fingerprints import elements_check  # noqa: E402
from cluster_func.record.writer import Journal  # noqa: E402

TINY = "import sys\n\ndef target(x):\n    return x\n\nargs = range(int(sys.argv[1]))\n"
BATCH = 20_000  # calls a completed-calls record holds at most (clum's cap)


def run(cmd, cwd, env=None):
    """(seconds, peak MiB, exit status, output) of a whole command."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, ru.ru_maxrss / 1024, p.returncode, out.decode(errors="replace")


def cut_to_half(path, calls):
    """Keep the header, the start record and the completed-calls records of the first half of
    the calls (the rest of the journal goes, as if the run had been killed half way)."""
    with open(path, "rb") as f:
        lines = f.readlines()
    kept, done = [], 0
    for line in lines:
        if line.startswith(b'{"t":"ok"'):
            if done >= calls // 2:
                break
            done += sum(run_[1] for run_ in json.loads(line)["pos"])
        elif line.startswith(b'{"t":"end"'):
            break
        kept.append(line)
    with open(path, "wb") as f:
        f.writelines(kept)
    return done


def clum_rows(sizes, processes, folder, log):
    script = os.path.join(folder, "tiny.py")
    with open(script, "w") as f:
        f.write(TINY)
    rows = []
    for n in sizes:
        journal = os.path.join(folder, f"tiny-{n}.journal")
        base = [sys.executable, "-m", "cluster_func", "-p", str(processes), "--journal", journal]
        fresh = run(base + [script, "--", str(n)], folder)
        assert fresh[2] == 0, fresh[3][-2000:]
        size = os.path.getsize(journal)
        again = run(base + ["--resume", script, "--", str(n)], folder)
        assert again[2] == 0, again[3][-2000:]
        half = cut_to_half(journal, n)
        rest = run(base + ["--resume", script, "--", str(n)], folder)
        assert rest[2] == 0, rest[3][-2000:]
        os.remove(journal)
        rows.append((n, fresh, size, again, half, rest))
        log(f"clum {n:,}: fresh {fresh[0]:.2f} s {fresh[1]:.0f} MiB, resume all {again[0]:.2f} s {again[1]:.0f} MiB, "
            f"half {rest[0]:.2f} s {rest[1]:.0f} MiB; journal {size:,} bytes")
    return rows


def stand_ins(bindir):
    os.makedirs(bindir, exist_ok=True)
    counter = os.path.join(bindir, "ids")
    bodies = {"sbatch": f'n=$(cat {counter} 2>/dev/null || echo 1000); n=$((n+1)); echo $n > {counter}; echo $n',
              "squeue": "exit 0", "scontrol": "echo MaxArraySize=1001"}
    for name, body in bodies.items():
        p = os.path.join(bindir, name)
        with open(p, "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(p, 0o755)


def write_bin(plan_dir, stem, i, nodes, calls, script):
    """Bin i's journal and results file, as a clum run of it with --results jsonl leaves them."""
    jpath = os.path.join(plan_dir, f"{stem}-{i}-{nodes}.journal")
    rpath = os.path.join(plan_dir, f"{stem}-{i}-{nodes}.results.jsonl")
    j = Journal(jpath, script, f"{i}/{nodes}", "round-robin", False, lambda text: None, values="jsonl",
                results_path=os.path.basename(rpath))
    positions = range(i, calls, nodes)
    data = []
    for k in range(0, len(positions), BATCH):
        chunk = positions[k:k + BATCH]
        values = b"".join(b'{"pos":%d,"value":%d}\n' % (p, p) for p in chunk)
        data.append(values)
        j.completed(chunk, list(chunk), check=elements_check(list(chunk)), values=values)
    j.flush()
    whole = b"".join(data)
    with open(rpath, "wb") as f:
        f.write(whole)
    j.exported(os.path.basename(rpath), os.stat(rpath), crc=zlib.crc32(whole))
    j.close(len(positions), 0, "complete")


def later_poll(jobs_dir, env):
    """Seconds of a second status.poll (the first's cache warm), in a process of its own."""
    code = ("import sys, time\nfrom cluster_func.cluster import status\n"
            f"paths = status.manifests_in({jobs_dir!r}); cache = {{}}\n"
            "status.poll(paths, cache, print)\nt = time.perf_counter(); status.poll(paths, cache, print)\n"
            "print(time.perf_counter() - t)\n")
    seconds, mib, code_, out = run([sys.executable, "-c", code], jobs_dir, env)
    assert code_ == 0, out[-2000:]
    return float(out.split()[-1]), mib


def cluf_rows(bins_list, values, folder, log):
    rows = []
    bindir = os.path.join(folder, "bin")
    stand_ins(bindir)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"], CLUFRC=os.devnull,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cluf = [sys.executable, "-c", "from cluster_func.cli import cluf_main; cluf_main()"]
    for nodes in bins_list:
        where = os.path.join(folder, f"run-{nodes}")
        os.makedirs(where)
        script = os.path.join(where, "tiny.py")
        with open(script, "w") as f:
            f.write(TINY.replace("int(sys.argv[1])", str(values)))
        jobs_dir = os.path.join(where, "jobs")
        row = {"bins": nodes}
        row["submit"] = run(cluf + ["tiny.py", "-n", str(nodes), "-j", "jobs", "--scheduler", "slurm",
                                    "--results", "jsonl", "-p", "1"], where, env)
        assert row["submit"][2] == 0, row["submit"][3][-3000:]
        t0 = time.perf_counter()
        for i in range(nodes):
            write_bin(jobs_dir, "tiny", i, nodes, values, script)
        log(f"cluf {nodes:,} bins: submitted in {row['submit'][0]:.1f} s; journals and results files made in "
            f"{time.perf_counter() - t0:.1f} s")
        row["status"] = run(cluf + ["--status", "jobs"], where, env)
        assert row["status"][2] == 0, row["status"][3][-3000:]
        row["wait"] = run(cluf + ["--wait", "jobs"], where, env)
        assert row["wait"][2] == 0, row["wait"][3][-3000:]
        row["later"] = later_poll(jobs_dir, env)
        row["gather"] = run(cluf + ["--gather", "jobs"], where, env)
        assert row["gather"][2] == 0, row["gather"][3][-3000:]
        gathered = os.path.join(jobs_dir, f"tiny-{nodes}.results.jsonl")
        with open(gathered, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        assert lines == values, (lines, values)
        row["journal_bytes"] = sum(os.path.getsize(os.path.join(jobs_dir, n)) for n in os.listdir(jobs_dir)
                                   if n.endswith(".journal"))
        log(f"cluf {nodes:,} bins: submit {row['submit'][1]:.0f} MiB; status {row['status'][0]:.2f} s "
            f"{row['status'][1]:.0f} MiB, wait {row['wait'][0]:.2f} s {row['wait'][1]:.0f} MiB, later poll "
            f"{row['later'][0]:.3f} s, gather {row['gather'][0]:.1f} s {row['gather'][1]:.0f} MiB ({lines:,} values)")
        rows.append(row)
        shutil.rmtree(where)
    return rows


def _num(text):
    return int(float(text))


def print_tables(clum, cluf, processes, values):
    if clum:
        print(f"\nclum -p {processes} on tiny (return x); one run each; s = wall seconds of the whole command, "
              f"MiB = peak RSS of its largest process\n")
        print("| calls | fresh s | µs/call | journal bytes/call | MiB | --resume, all done: s | MiB "
              "| --resume, half done: s | MiB |")
        print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for n, fresh, size, again, half, rest in clum:
            print(f"| {n:,} | {fresh[0]:.2f} | {fresh[0] / n * 1e6:.3f} | {size / n:.4f} | {fresh[1]:.0f} "
                  f"| {again[0]:.2f} | {again[1]:.0f} | {rest[0]:.2f} | {rest[1]:.0f} |")
    if cluf:
        print(f"\ncluf, {values:,} calls with --results jsonl, stand-in sbatch/squeue; s and peak MiB of "
              f"the whole command (a later poll: in process)\n")
        print("| bins | write + submit s | MiB | --status s | MiB | --wait (first poll) s | MiB "
              "| a later poll s | --gather s | MiB |")
        print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for r in cluf:
            print(f"| {r['bins']:,} | {r['submit'][0]:.2f} | {r['submit'][1]:.0f} | {r['status'][0]:.2f} "
                  f"| {r['status'][1]:.0f} | {r['wait'][0]:.2f} | {r['wait'][1]:.0f} | {r['later'][0]:.3f} "
                  f"| {r['gather'][0]:.1f} | {r['gather'][1]:.0f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1e5,1e6,1e7", help="clum sizes (default 1e5,1e6,1e7; 1e8 takes minutes)")
    parser.add_argument("--bins", default="100,1000,10000", help="cluf bin counts")
    parser.add_argument("--values", default="1e7", help="calls (values) of the cluf runs")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--only", default="clum,cluf")
    args = parser.parse_args(argv)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    only = args.only.split(",")
    folder = tempfile.mkdtemp(prefix="cluster-func-scaling-")
    try:
        log(f"load average at start: {os.getloadavg()[0]:.2f}")
        clum = clum_rows([_num(x) for x in args.calls.split(",")], args.processes, folder, log) \
            if "clum" in only else []
        values = _num(args.values)
        cluf = cluf_rows([_num(x) for x in args.bins.split(",")], values, folder, log) if "cluf" in only else []
        log(f"load average at end: {os.getloadavg()[0]:.2f}")
        print_tables(clum, cluf, args.processes, values)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
