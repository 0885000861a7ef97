"""The walltime and its grace period, as clum counts them (the same in a cluf job and by hand)."""

from __future__ import annotations


def grace_seconds(walltime: float, grace: float | None = None) -> float:
    """--grace, or 5% of the walltime, at least 10 s and at most 10 minutes."""
    return grace if grace is not None else min(600.0, max(10.0, 0.05 * walltime))


def no_time_for_calls(walltime: float) -> str:
    """The message for a --walltime within its default grace period."""
    return (f"--walltime {walltime} s leaves no time for any call: no new call starts a grace period before the "
            f"walltime, by default 5% of it but at least 10 s. Give a longer --walltime, or a shorter --grace "
            f"(e.g. --walltime {walltime}s --grace {max(walltime / 4, 0.1):g}).")
