"""The results formats (``--results PATH.jsonl``, ``PATH.pkl``): each one class in one module.

Every module of this package but ``base`` is a format, named as its module, whose class
(a :class:`base.ResultsFormat`) registers itself with :func:`base.register`: a new format is one
new file.  Everything that needs to know the formats (the file name's extension, the worker's
encoder, the export, reading a results file, cluf's ``--results FORMAT``) asks this registry.
"""

import importlib
import os
import pkgutil
from typing import Dict, List, Optional

from .base import REGISTRY, ResultsFormat, ValueNotWritable, register  # noqa: F401

_NOT_FORMATS = ("base",)
_found: List[bool] = []  # the package's modules were imported


def _all() -> Dict[str, ResultsFormat]:
    if _found:
        return REGISTRY
    for m in pkgutil.iter_modules(__path__):
        if m.name not in _NOT_FORMATS and m.name not in REGISTRY:
            importlib.import_module(f"{__name__}.{m.name}")
            if m.name not in REGISTRY:
                raise RuntimeError(f"every module in cluster_func/record/formats/ must register one format "
                                   f"named as the module: {m.name} did not")
    _found.append(True)
    return REGISTRY


def names() -> List[str]:
    """The formats' names (``jsonl``, ``pkl``), sorted."""
    return sorted(_all())


def extensions() -> List[str]:
    """The formats' file name extensions (``.jsonl``, ``.pkl``), in the order of :func:`names`."""
    formats = _all()
    return [formats[n].extension for n in sorted(formats)]


def get(name: str) -> ResultsFormat:
    """The format called ``name`` (KeyError if there is none)."""
    return _all()[name]


def of_path(path: str) -> Optional[ResultsFormat]:
    """The format a file name's extension names, or None."""
    ext = os.path.splitext(path)[1].lower()
    for fmt in _all().values():
        if fmt.extension == ext:
            return fmt
    return None
