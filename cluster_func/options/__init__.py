"""The options of clum and cluf: the table (table.py), each value's parser (values.py), and here
what is made from the table: reading ``*_options`` and ``~/.clufrc``, merging the sources, and the
options each cluf job passes on to its clum; the checks of options against each other (checks.py).

Precedence, lowest first: built-in defaults < ``~/.clufrc`` (cluf only) <
``clum_options`` (cluf reads the keys it shares with clum) < ``cluf_options``
< the command line.  Keys may be written ``jobs-dir`` or ``jobs_dir``.

Where to add an option: one entry in table.py's ``OPTIONS`` (its parser in values.py when none
fits); both parsers, the dicts, the jobs' clum command and the Python API's keywords follow.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from ..core.errors import UserError
from .checks import check as check
from .table import BY_NAME, OPTIONS, Meaning as Meaning, Option as Option
from .values import (MAX_CPUS as MAX_CPUS, MAX_MEMORY as MAX_MEMORY, MAX_NODES as MAX_NODES,
                     MAX_PROCESSES as MAX_PROCESSES, MAX_WALLTIME as MAX_WALLTIME, MIN_TIMEOUT as MIN_TIMEOUT,
                     MEMORY_FORMS as MEMORY_FORMS, WALLTIME_FORMS as WALLTIME_FORMS, OtherForm, Refused as Refused,
                     _directive_word as _directive_word, _int as _int, _key_values as _key_values,
                     one_line as one_line)


def canonical(key: str) -> str:
    return key.strip().replace("_", "-").lstrip("-")


def attr(name: str) -> str:
    return name.replace("-", "_")


def valid_keys(command: str) -> list[str]:
    """The keys of ``command``'s ``*_options`` (and, for cluf, of ``~/.clufrc``)."""
    return [o.name for o in OPTIONS if command in o.commands.split() and o.in_dicts]


def from_dict(d: Mapping[Any, Any], command: str, source: str, ignore_foreign: bool = False,
              written_for: str | None = None) -> dict[str, Any]:
    """Validate a ``*_options`` dict; return {canonical name: parsed value}, each value as
    ``command`` means it.

    ``ignore_foreign``: accept and skip keys that are valid for the other command
    (cluf reading ``clum_options``; clum reading a ``clum_options`` shared with cluf,
    e.g. ``jobs-dir``).  ``written_for="clum"``: cluf reading ``clum_options``, whose values
    mean what they mean to clum (the table says how cluf reads such a value).
    """
    out: dict[str, Any] = {}
    allowed = set(valid_keys(command))
    for key, value in d.items():
        if not isinstance(key, str):
            raise UserError(f"{source} has a key {key!r} that is not a string.")
        name = canonical(key)
        if name not in allowed:
            if ignore_foreign and name in BY_NAME and BY_NAME[name].in_dicts:
                continue
            raise UserError(
                f"{source} has an unknown option {key!r}. Valid keys are: "
                f"{', '.join(sorted(allowed))} (dashes or underscores both work)."
            )
        try:
            out[name] = BY_NAME[name].read(value, command, written_for)
        except OtherForm as e:  # (in its own words, naming where it was given)
            raise UserError(e.said(f"{name!r} in {source}")) from None
        except UserError as e:
            raise UserError(f"In {source}, option {key!r}: {e}") from None
    return out


def load_rc(path: str | None = None) -> dict[str, Any]:
    """The user-wide defaults file ``~/.clufrc`` (JSON, the same keys as cluf_options).  ``CLUFRC=PATH``
    names another, which must exist; ``CLUFRC=`` (empty) or ``CLUFRC=/dev/null``: none."""
    named = path is None and "CLUFRC" in os.environ
    if named and os.environ["CLUFRC"] in ("", os.devnull):
        return {}
    path = path or os.environ.get("CLUFRC") or os.path.expanduser("~/.clufrc")
    if os.path.islink(path) and not os.path.exists(path):
        raise UserError(f"The defaults file {path} is a symbolic link to {os.readlink(path)!r}, which does not "
                        f"exist. Fix or remove it (CLUFRC=path names another).")
    if not os.path.exists(path):
        if named:
            raise UserError(f"CLUFRC names the defaults file {path}, which does not exist (looked in "
                            f"{os.getcwd()}). Fix the path, create the file (a JSON object of option names to "
                            f"values), or set CLUFRC= (empty) for no defaults file.")
        return {}
    if not os.path.isfile(path):  # a FIFO would block the read; a directory cannot be read
        raise UserError(f"The defaults file {path} is not a regular file. It must be a JSON object of option "
                        f"names to values (CLUFRC=path names another).")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"Could not read the defaults file {path}: {e}. It must be a JSON object.") from None
    if not isinstance(data, dict):
        raise UserError(f"The defaults file {path} must hold a JSON object of option names to values.")
    return from_dict(data, "cluf", f"the defaults file {path}")


def merge(command: str, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then each layer over the last; returns {attr_name: value}."""
    merged = {o.name: o.default for o in OPTIONS if command in o.commands.split()}
    for layer in layers:
        for k, v in layer.items():
            if v is None:
                continue
            if k == "env" and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}  # variables add up across layers
            else:
                merged[k] = v
    return {attr(k): v for k, v in merged.items()}


def forwarded(opts: Mapping[str, Any]) -> list[str]:
    """The options each cluf job passes on to its clum (other than --bins and --journal), as
    words: every option of the table with a ``forward``, from its value in ``opts``."""
    words: list[str] = []
    for o in OPTIONS:
        value = opts.get(attr(o.name))
        if o.forward is None or value is None or value is False:
            continue
        more = o.forward(value, opts)
        if more:
            words += [f"--{o.name}", *more]
    return words
