"""count: a generator of COUNT_N (default 10,000,000) small tuples, for ``cluf -i``.

cluf must count the elements to choose the number of jobs; it should do so
without holding them (its memory should not grow with COUNT_N).

    cluf benchmarks/workloads/count.py -i 1000000 -q -j /tmp/jobs
"""
import os

N = int(os.environ.get("COUNT_N", 10_000_000))


def target(i, j):
    return i + j


args = ((i, i % 7) for i in range(N))
