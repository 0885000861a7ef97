"""The schedulers cluf can submit to, and how ``--scheduler auto`` picks one.

Every module of this package but ``base`` and ``job`` is a scheduler, named as its module, that
registers its class (:func:`base.register`): a new scheduler is one new file.
Everything that lists schedulers asks this registry.  The modules are imported on
first use of the registry (``SCHEDULERS`` and the functions below but :func:`names`),
so that clum, which only needs the names (for option keys), does not pay for them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import TYPE_CHECKING, Any, List

from ..core.errors import SchedulerError, UserError# noqa: F401

if TYPE_CHECKING:
    from .base import Scheduler

_NOT_SCHEDULERS = ("base", "job")  # the interface, and what a job learns of itself
_LAZY = ("REGISTRY", "JobSpec", "Scheduler", "register", "run")


def _modules() -> List[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_SCHEDULERS]


def names() -> List[str]:
    """The schedulers' names, sorted: the modules' names (without importing them), and any
    class registered otherwise."""
    base = sys.modules.get(f"{__name__}.base")
    return sorted(set(_modules()) | set(base.REGISTRY if base is not None else ()))


def _registry() -> dict[str, type[Scheduler]]:
    from .base import REGISTRY

    missing = [m for m in _modules() if m not in REGISTRY]
    if missing:
        for name in missing:
            importlib.import_module(f"{__name__}.{name}")
        missing = [m for m in _modules() if m not in REGISTRY]
        if missing:
            raise RuntimeError(f"every module in cluster_func/schedulers/ must register one scheduler named "
                               f"as the module: {', '.join(missing)} did not")
    return REGISTRY


def __getattr__(attr: str) -> Any:
    if attr == "SCHEDULERS":  # name -> class, for every registered scheduler
        return _registry()
    if attr in _LAZY:
        from . import base

        return getattr(base, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def in_detection_order() -> list[type[Scheduler]]:
    return sorted(_registry().values(), key=lambda c: (c.detect_order, c.name))


def _fallback() -> type[Scheduler]:
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
    registry = _registry()
    if name not in registry:
        raise UserError(f"--scheduler must be one of auto, {', '.join(names())}, not {name!r}.")
    return registry[name]()


def options_key(name: str) -> str:
    """The option holding a scheduler's raw directives: ``pbs-options``."""
    return f"{name}-options"


def ignored_options(chosen: Scheduler, opts: dict) -> List[str]:
    """Warnings for raw options of other schedulers (opts: attr names, e.g. ``slurm_options``)."""
    return [f"--{options_key(n)} are ignored: the jobs are for {chosen.name}."
            for n in names() if n != chosen.name and opts.get(f"{n}_options")]
