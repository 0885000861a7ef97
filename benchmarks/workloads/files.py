"""files: real I/O, the seed README's example.

Reads each of FILES_N (default 10,000) small text files from FILES_IN, processes
the text, writes the result under the same name to FILES_OUT:

    def target(in_path, out_path):
        processed = do_stuff_with(in_path)
        open(out_path, 'w').write(processed)

    args = [('input/dir/' + fname, 'output/dir/' + fname) for fname in os.listdir('input/dir')]

The input files are made on first use (FILES_IN/.complete marks a finished set).
Defaults: FILES_IN=$TMPDIR/cluster-func-bench/files-in-N, FILES_OUT=$TMPDIR/cluster-func-bench/files-out.

    clum benchmarks/workloads/files.py
"""
import os
import random
import tempfile

N = int(os.environ.get("FILES_N", 10_000))
BASE = os.path.join(tempfile.gettempdir(), "cluster-func-bench")
IN = os.environ.get("FILES_IN") or os.path.join(BASE, f"files-in-{N}")
OUT = os.environ.get("FILES_OUT") or os.path.join(BASE, "files-out")
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega").split()


def make_inputs(folder=IN, n=N):
    """Write n files of 20-60 lines of words (about 1-3 KB each), once."""
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(12345)
    for k in range(n):
        lines = (" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(rng.randint(20, 60)))
        with open(os.path.join(folder, f"doc{k:06d}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    open(marker, "w").close()


def do_stuff_with(in_path):
    with open(in_path) as f:
        text = f.read()
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return "".join(f"{w}\t{c}\n" for w, c in sorted(counts.items()))


def target(in_path, out_path):
    processed = do_stuff_with(in_path)
    with open(out_path, "w") as f:
        f.write(processed)


make_inputs()
os.makedirs(OUT, exist_ok=True)
args = [(os.path.join(IN, fname), os.path.join(OUT, fname))
        for fname in sorted(os.listdir(IN)) if not fname.startswith(".")]
