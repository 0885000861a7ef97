"""Imported by the forkserver (``--start-method forkserver``) before it forks workers.

A worker that the forkserver forked reads its process object from the runner; when the runner
is killed in that moment, the read ends in EOFError, which the forkserver's child would print
as a traceback.  Such a worker has nothing to run and no one to tell: it ends quietly.  Any
other exception still prints as usual.
"""

from __future__ import annotations

import sys
from types import TracebackType

_default_hook = sys.excepthook


def _quiet_when_the_runner_is_gone(exc_type: type[BaseException], value: BaseException,
                                   tb: TracebackType | None) -> None:
    if issubclass(exc_type, (EOFError, BrokenPipeError, ConnectionResetError)):
        return
    _default_hook(exc_type, value, tb)


sys.excepthook = _quiet_when_the_runner_is_gone
