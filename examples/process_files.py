"""The seed's example: process many files, writing one output file per input.

    clum examples/process_files.py               # all of it, on every core
    clum examples/process_files.py -b 0/3        # a third of it
    cluf examples/process_files.py -n 4 -q -j jobs   # 4 job scripts, not submitted

The input files are made on first use (examples/input/); outputs go to examples/output/.
"""

import os
from collections import Counter

from make_input_files import INPUT_DIR, make_input_files  # the script's folder is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT_DIR = os.path.join(HERE, "output")


def do_stuff_with(in_path):
    with open(in_path) as f:
        counts = Counter(f.read().split())
    return "".join(f"{word} {n}\n" for word, n in counts.most_common())


def target(in_path, out_path):
    processed = do_stuff_with(in_path)
    with open(out_path, "w") as f:
        f.write(processed)


if not os.path.isdir(INPUT_DIR):
    make_input_files()
os.makedirs(OUTPUT_DIR, exist_ok=True)

args = [
    (os.path.join(INPUT_DIR, fname), os.path.join(OUTPUT_DIR, fname))
    for fname in sorted(os.listdir(INPUT_DIR))
]
