"""large: big arguments.

LARGE_N elements (default 2,000) of LARGE_BYTES each (default 1 MB), each a
distinct ``bytes`` object: a shared base with the element's index written into
its first 8 bytes.  They come from a generator, so at most a few are alive at a
time in the parent; what a runner holds on top of that is its own doing.  The
target only takes the length (and reads the index back), so the time is the cost
of moving the arguments to the workers.

    clum benchmarks/workloads/large.py
"""
import os

N = int(os.environ.get("LARGE_N", 2000))
SIZE = int(os.environ.get("LARGE_BYTES", 1_000_000))
_TAIL = bytes(range(256)) * (max(0, SIZE - 8) // 256) + bytes(max(0, SIZE - 8) % 256)


def target(a):
    return len(a) + a[0]


args = (i.to_bytes(8, "little") + _TAIL for i in range(N))
