"""The checks of options against each other, once every source is merged."""

from __future__ import annotations

from typing import Any, Mapping

from ..core.errors import UserError
from ..core.walltime import grace_seconds, no_time_for_calls
from .values import Refused


def check(opts: Mapping[str, Any]) -> None:
    """The checks of options against each other, for both commands, once every source is merged
    (the command line, ``*_options``, ``~/.clufrc``); before anything is written."""
    if opts.get("hash") is not None and opts.get("key") is not None:
        raise UserError("--hash and --key exclude each other: bin either by a hash of some arguments "
                        "or by an argument that is the bin number, not both (check clum_options/cluf_options).")
    walltime, grace = opts.get("walltime"), opts.get("grace")
    if grace is not None and not walltime:
        raise UserError("--grace only applies with --walltime (how long before the walltime to start no new "
                        "call). Example: --walltime 12:00:00 --grace 300")
    if grace is not None and grace >= walltime:
        raise UserError(f"--grace {grace:g} is not shorter than --walltime ({walltime} s): no call could "
                        f"ever start. Give a grace period shorter than the walltime, or leave it out (5% of it).")
    if walltime and grace is None and grace_seconds(walltime) >= walltime:
        raise UserError(no_time_for_calls(walltime))
    for value in opts.values():  # a value of clum_options cluf cannot take, given no value of its own
        if isinstance(value, Refused):
            raise UserError(value.message)
