"""stream: memory and streaming.

A generator of STREAM_N (default 2,000,000) ``(i, 64-character str)`` tuples; the
target only measures the string.  A runner that streams keeps its memory flat
whatever STREAM_N is; one that lists the arguments grows with it.

    clum benchmarks/workloads/stream.py
"""
import os

N = int(os.environ.get("STREAM_N", 2_000_000))


def target(i, text):
    return len(text)


args = ((i, f"{i:064d}") for i in range(N))
