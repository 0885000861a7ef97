"""cpu: scaling.

CPU_N equal calls (default 400) of pure-Python work, CPU_STEPS loop steps each
(default 260,000, about 10 ms).

    clum benchmarks/workloads/cpu.py
"""
import os

N = int(os.environ.get("CPU_N", 400))
STEPS = int(os.environ.get("CPU_STEPS", 260_000))


def target(i):
    x = i
    for k in range(STEPS):
        x = (x * 31 + k) % 1000003
    return x


args = range(N)
