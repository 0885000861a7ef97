"""import_heavy: a script whose import is expensive (memory shared across workers).

At import it allocates IMPORT_BYTES (default 1 GiB) and writes every page of it,
as a script that loads a big model or table at its top level would, and appends
one line to the file named by IMPORT_COUNT_FILE (if set), so the number of lines
there is the number of times the top level ran.  ``target(i)`` reads a few bytes
of the data.  A runner that loads the script once and forks its workers after
that shares those pages; one that loads it in every worker holds a copy each.

    IMPORT_COUNT_FILE=/tmp/count clum benchmarks/workloads/import_heavy.py
"""
import os

N = int(os.environ.get("IMPORT_N", 200))
SIZE = int(os.environ.get("IMPORT_BYTES", 1 << 30))

_count = os.environ.get("IMPORT_COUNT_FILE")
if _count:
    with open(_count, "a") as _f:
        _f.write(f"{os.getpid()}\n")

DATA = b"\x01" * SIZE  # every page written (and private to this process)


def target(i):
    k = (i * 4096 * 7919) % max(1, SIZE - 8)
    return sum(DATA[k:k + 8])


args = range(N)
