"""Make a small set of input files for process_files.py (run it, or let process_files.py call it)."""

import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
INPUT_DIR = os.path.join(HERE, "input")


def make_input_files(n=200, folder=INPUT_DIR):
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(42)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    for i in range(n):
        path = os.path.join(folder, f"doc{i:04d}.txt")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(" ".join(rng.choice(words) for _ in range(rng.randint(50, 500))) + "\n")
    return folder


if __name__ == "__main__":
    print(f"wrote input files in {make_input_files()}")
