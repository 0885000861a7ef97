"""skewed: load balance.

SKEWED_N calls (default 4,000) of pure-Python work; a cheap call runs
SKEWED_STEPS loop steps (default 2,500, about 0.1 ms), and the last 1% of the
calls run SKEWED_FACTOR (default 200) times as many.  A fixed chunking that
puts those last calls in one chunk leaves one core doing them alone.

    clum benchmarks/workloads/skewed.py
"""
import os

N = int(os.environ.get("SKEWED_N", 4000))
STEPS = int(os.environ.get("SKEWED_STEPS", 2500))
FACTOR = int(os.environ.get("SKEWED_FACTOR", 200))
DEAR_FROM = N - max(1, N // 100)


def target(i):
    x = 0
    for k in range(STEPS * FACTOR if i >= DEAR_FROM else STEPS):
        x = (x * 31 + k) % 1000003
    return x


args = range(N)
