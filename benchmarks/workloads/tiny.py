"""tiny: per-call overhead.

TINY_N calls (default 2,000,000) of a function that returns its argument.

    clum benchmarks/workloads/tiny.py
"""
import os

N = int(os.environ.get("TINY_N", 2_000_000))


def target(x):
    return x


args = range(N)
