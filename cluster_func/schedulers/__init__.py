"""The schedulers cluf can submit to, and how ``--scheduler auto`` picks one.

Every module of this package is imported here, and each registers its scheduler
class (:func:`base.register`): a new scheduler is one new file.  Everything that
lists schedulers asks this registry.
"""

import importlib
import pkgutil
from typing import Dict, List, Type

from ..errors import SchedulerError, UserError  # noqa: F401
from .base import REGISTRY, JobSpec, Scheduler, register, run  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

# name -> class, for every registered scheduler.
SCHEDULERS: Dict[str, Type[Scheduler]] = REGISTRY


def names() -> List[str]:
    """The registered schedulers' names, sorted."""
    return sorted(REGISTRY)


def in_detection_order() -> List[Type[Scheduler]]:
    return sorted(REGISTRY.values(), key=lambda c: (c.detect_order, c.name))


def _fallback() -> Type[Scheduler]:
    return next(c for c in in_detection_order() if c.detect_fallback)


def detection_text() -> str:
    """How auto-detection decides, for --help and messages."""
    return "; ".join(c.detect_hint for c in in_detection_order() if c.detect_hint) + \
        f"; otherwise {_fallback().name}"


def detect(submitting: bool) -> Scheduler:
    """The first scheduler (in detection order) that says it is here.  With none,
    an error when submitting, else the fallback scheduler (scripts only)."""
    for cls in in_detection_order():
        if cls.detect():
            return cls()
    if submitting:
        raise UserError(
            f"--scheduler auto found no scheduler to submit to: looked on PATH for "
            f"{', '.join(sorted({c.submit_command for c in in_detection_order()}))} "
            f"({'; '.join(c.detect_hint for c in in_detection_order() if c.detect_hint)}) and found none. "
            f"Run cluf on a cluster login node, name one with --scheduler {'|'.join(names())}, or write "
            f"the job scripts without submitting them with -q/--no-q.")
    return _fallback()()


def get(name: str, submitting: bool) -> Scheduler:
    """The scheduler called ``name`` (``auto``: :func:`detect`)."""
    if name == "auto":
        return detect(submitting)
    if name not in REGISTRY:
        raise UserError(f"--scheduler must be one of auto, {', '.join(names())}, not {name!r}.")
    return REGISTRY[name]()


def options_key(name: str) -> str:
    """The option holding a scheduler's raw directives: ``pbs-options``."""
    return f"{name}-options"


def ignored_options(chosen: Scheduler, opts: dict) -> List[str]:
    """Warnings for raw options of other schedulers (opts: attr names, e.g. ``slurm_options``)."""
    return [f"--{options_key(n)} are ignored: the jobs are for {chosen.name}."
            for n in names() if n != chosen.name and opts.get(f"{n}_options")]
