"""The commands' entry points: ``clum`` and ``cluf`` start here.

Only this small module is imported before the commands install their own signal handling
(cluster_func.cli.guarded), so a Ctrl-C in the first moments, while the rest is imported, ends
the command quietly with status 130 instead of a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import sys


def _start(name: str) -> None:
    try:
        from . import cli

        getattr(cli, f"{name}_main")()
    except KeyboardInterrupt:
        sys.stderr.write(f"{name}: interrupted.\n")
        sys.exit(130)
    except BaseException as e:  # an Interrupted raised before cli.guarded took over the signals
        signum = getattr(e, "signum", None)
        if signum is None:
            raise
        sys.stderr.write(f"{name}: interrupted.\n")
        sys.exit(128 + signum)


def clum() -> None:
    _start("clum")


def cluf() -> None:
    _start("cluf")
