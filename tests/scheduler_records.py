"""Recorded scheduler command output (tests/data/schedulers/<scheduler>/), read back.

File format (see the READMEs there): the command's stdout; when it wrote to stderr
or exited non-zero, a line ``--- stderr``, the stderr text, and a line
``--- exit status N``.
"""

import re
from pathlib import Path
from typing import NamedTuple

from cluster_func.schedulers.base import CommandFailed

DATA = Path(__file__).resolve().parent / "data" / "schedulers"


class Recorded(NamedTuple):
    stdout: str
    stderr: str
    status: int


def recorded(scheduler: str, name: str) -> Recorded:
    text = (DATA / scheduler / name).read_text()
    m = re.search(r"(?:^|\n)--- stderr\n(.*?)--- exit status (\d+)\n?$", text, re.S)
    if not m:
        return Recorded(text, "", 0)
    return Recorded(text[:m.start()] + ("\n" if m.start() else ""), m.group(1), int(m.group(2)))


def failure(scheduler: str, name: str, argv=("cmd",)) -> CommandFailed:
    """The CommandFailed that the runner raises for this recorded (failing) command."""
    r = recorded(scheduler, name)
    assert r.status != 0, f"{name} did not fail"
    return CommandFailed(list(argv), r.status, r.stdout, r.stderr)
