"""first_call: how soon the first call starts.

FIRST_N calls (default 200) of about 1 ms of busy work (FIRST_SECONDS).  On its
first call in each process, ``target`` tries to create the file named by
FIRST_CALL_FILE with O_CREAT|O_EXCL and write ``time.time()`` into it: only the
first call overall succeeds, so the file holds the wall-clock time of the run's
first call.  The benchmark notes the time just before it starts the command.

    FIRST_CALL_FILE=/tmp/first clum benchmarks/workloads/first_call.py -p 64
"""
import os
import time

N = int(os.environ.get("FIRST_N", 200))
SECONDS = float(os.environ.get("FIRST_SECONDS", 0.001))
_PATH = os.environ.get("FIRST_CALL_FILE")
_tried = False


def target(i):
    global _tried
    if not _tried:
        _tried = True
        now = time.time()
        if _PATH:
            try:
                fd = os.open(_PATH, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                os.write(fd, repr(now).encode())
                os.close(fd)
    end = time.perf_counter() + SECONDS
    x = 0
    while time.perf_counter() < end:
        x += 1
    return x


args = range(N)
