"""The commands' entry points: ``clum`` and ``cluf`` start here.

Only this small module is imported before the commands install their own signal handling
(cluster_func.cli.guarded), so a Ctrl-C in the first moments, while the rest is imported, ends
the command quietly with status 130 instead of a KeyboardInterrupt traceback.
"""

import sys


def _start(name):
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


def clum():
    _start("clum")


def cluf():
    _start("cluf")
