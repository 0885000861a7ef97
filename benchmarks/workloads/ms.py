"""ms: about 1 ms a call.

MS_N calls (default 2,000) of a busy loop of MS_STEPS steps (default 26,000,
about 1 ms of pure Python), each returning a float: the cost of keeping results
(``--results``) against work of a realistic grain.

    clum benchmarks/workloads/ms.py
"""
import os

N = int(os.environ.get("MS_N", 2000))
STEPS = int(os.environ.get("MS_STEPS", 26_000))


def target(i):
    x = i
    for k in range(STEPS):
        x = (x * 31 + k) % 1000003
    return x / 7.0


args = range(N)
